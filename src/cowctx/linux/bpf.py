"""Read kernel memory through a BPF ``iter/task_vma`` program assembled here, at run time.

Why assembled by the project rather than built with clang/libbpf/bpftool (docs/kernel-graph.md):
the program is 40-odd instructions, every constant in it (struct offsets, helper numbers, the
attach id) comes from the running kernel's BTF anyway, and generating it in Python needs no
compiler, no object file and no CO-RE relocation: nothing to install, nothing to keep in step.

The program does two things, chosen by a word in a one-element array map:

- mode DUMP: for every VMA of the task the link is attached to, write the ``vm_area_struct``
  pointer to the iterator's seq_file (8 bytes: the struct's bytes are peeked after, so that
  the whole output of one iterator fits the seq_file buffer in one read: an iterator whose
  output needs several reads was seen to restart the task's VMAs for ever, see ``_read``);
- always, on the iterator's last call (``vma == NULL``): for each of the ``n`` addresses in the
  map, ``bpf_probe_read_kernel()`` ``PEEK_BYTES`` bytes and write (return code, bytes).

The graph reader (graph.py) chases pointers with rounds of peeks; the scenario processes are
blocked in ``recvmsg()`` meanwhile, so nothing it reads changes between rounds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from dataclasses import dataclass

from cowctx.linux.btf import Btf, vmlinux_btf

SYS_BPF = 321  # x86-64
PEEK_BYTES = 128
"""Bytes read per peek: covers ``struct anon_vma``'s fields up to ``parent`` (offset 72)."""
MAX_PEEKS = 128
"""Peeks per iterator read: 128 x 136 bytes stays well inside the 32 KiB seq buffer."""
MODE_PEEK, MODE_DUMP = 0, 1
MAX_ITER_BYTES = 8 * 4096
"""The seq_file buffer of a BPF iterator (8 pages): one read's worth.  DUMP writes 8
bytes per VMA (4,096 VMAs), PEEK at most MAX_PEEKS x (8 + PEEK_BYTES)."""
LICENSE = b"GPL\0"  # bpf_probe_read_kernel() is GPL-only

# instruction classes, sizes, modes, ops (include/uapi/linux/bpf.h, bpf_common.h)
LDX, ST, STX, ALU64, JMP = 0x01, 0x02, 0x03, 0x07, 0x05
DW, W = 0x18, 0x00
MEM, IMM = 0x60, 0x00
K, X = 0x00, 0x08
ADD, LSH, MOV = 0x00, 0x60, 0xB0
JA, JEQ, JGE, CALL, EXIT = 0x00, 0x10, 0x30, 0x80, 0x90
PSEUDO_MAP_FD = 1
R0, R1, R2, R3, R6, R7, R8, R9, R10 = 0, 1, 2, 3, 6, 7, 8, 9, 10


class BpfError(RuntimeError):
    """A bpf() call failed; the message names the call and, for a load, the verifier's log."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def mov_imm(dst: int, imm: int) -> bytes:
    return _insn(ALU64 | MOV | K, dst, imm=imm)


def mov_reg(dst: int, src: int) -> bytes:
    return _insn(ALU64 | MOV | X, dst, src)


def add_imm(dst: int, imm: int) -> bytes:
    return _insn(ALU64 | ADD | K, dst, imm=imm)


def add_reg(dst: int, src: int) -> bytes:
    return _insn(ALU64 | ADD | X, dst, src)


def lsh_imm(dst: int, imm: int) -> bytes:
    return _insn(ALU64 | LSH | K, dst, imm=imm)


def ldx(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn(LDX | MEM | size, dst, src, off)


def stx(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn(STX | MEM | size, dst, src, off)


def st_imm(size: int, dst: int, off: int, imm: int) -> bytes:
    return _insn(ST | MEM | size, dst, 0, off, imm)


def ld_map_fd(dst: int, fd: int) -> bytes:
    """``BPF_LD_IMM64`` with ``BPF_PSEUDO_MAP_FD``: two instruction slots."""
    return _insn(0x18, dst, PSEUDO_MAP_FD, 0, fd) + _insn(0, 0, 0, 0, 0)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> bytes:
    return _insn(JMP | op | K, dst, 0, off, imm)


def jmp_reg(op: int, dst: int, src: int, off: int) -> bytes:
    return _insn(JMP | op | X, dst, src, off)


def call(helper: int) -> bytes:
    return _insn(JMP | CALL, imm=helper)


def exit_insn() -> bytes:
    return _insn(JMP | EXIT)


@dataclass(frozen=True, slots=True)
class IterLayout:
    """What the program needs from BTF."""

    ctx_meta: int
    ctx_vma: int
    meta_seq: int
    vma_bytes: int
    helper_map_lookup: int
    helper_probe_read_kernel: int
    helper_seq_write: int

    @classmethod
    def from_btf(cls, btf: Btf, vma_bytes: int) -> IterLayout:
        return cls(
            ctx_meta=btf.offsetof("bpf_iter__task_vma", "meta"),
            ctx_vma=btf.offsetof("bpf_iter__task_vma", "vma"),
            meta_seq=btf.offsetof("bpf_iter_meta", "seq"),
            vma_bytes=vma_bytes,
            helper_map_lookup=btf.enum_value("bpf_func_id", "BPF_FUNC_map_lookup_elem"),
            helper_probe_read_kernel=btf.enum_value("bpf_func_id", "BPF_FUNC_probe_read_kernel"),
            helper_seq_write=btf.enum_value("bpf_func_id", "BPF_FUNC_seq_write"),
        )


def assemble(lay: IterLayout, map_fd: int) -> bytes:
    """The iterator program (see the module docstring).  Registers: r6 seq_file, r7 map
    value, r8 peek index, r9 peek count; stack: [-8] map key, [-16-X] output records."""
    if lay.vma_bytes % 8 or not 8 <= lay.vma_bytes <= PEEK_BYTES:
        raise BpfError(f"vma_bytes {lay.vma_bytes} must be a multiple of 8 in [8, {PEEK_BYTES}]")
    vrec = -16  # vma record: the pointer
    prec = -(16 + 8 + PEEK_BYTES)  # peek record: return code, then the bytes
    body: list[bytes] = []
    labels: dict[str, int] = {}
    fixups: list[tuple[int, str]] = []

    def emit(*insns: bytes) -> None:
        body.extend(insns)

    def jump(insn_fn: object, *args: int, to: str) -> None:
        fixups.append((len(body), to))
        body.append(insn_fn(*args, 0))  # type: ignore[operator]

    def label(name: str) -> None:
        labels[name] = len(body)

    emit(ldx(DW, R2, R1, lay.ctx_meta))  # meta = ctx->meta
    emit(ldx(DW, R7, R1, lay.ctx_vma))  # vma = ctx->vma (NULL on the last call)
    emit(ldx(DW, R6, R2, lay.meta_seq))  # seq = meta->seq
    emit(st_imm(W, R10, -8, 0))  # key = 0
    emit(ld_map_fd(R1, map_fd))
    body.append(b"")  # ld_map_fd is two slots: keep indexes equal to slot numbers
    emit(mov_reg(R2, R10), add_imm(R2, -8), call(lay.helper_map_lookup))
    jump(jmp_imm, JEQ, R0, 0, to="out")
    emit(mov_reg(R8, R0))  # r8 = map value while deciding
    jump(jmp_imm, JEQ, R7, 0, to="peek")
    # a VMA: dump it in DUMP mode
    emit(ldx(W, R1, R8, 0))
    jump(jmp_imm, JEQ, R1, MODE_PEEK, to="out")
    emit(stx(DW, R10, R7, vrec))
    emit(mov_reg(R1, R6), mov_reg(R2, R10), add_imm(R2, vrec), mov_imm(R3, 8))
    emit(call(lay.helper_seq_write))
    jump(jmp_imm, JA, 0, 0, to="out")
    label("peek")
    emit(mov_reg(R7, R8), ldx(W, R9, R7, 4), mov_imm(R8, 0))
    label("loop")
    jump(jmp_reg, JGE, R8, R9, to="out")
    jump(jmp_imm, JGE, R8, MAX_PEEKS, to="out")
    emit(mov_reg(R1, R8), lsh_imm(R1, 3), add_reg(R1, R7), ldx(DW, R3, R1, 8))
    emit(mov_reg(R1, R10), add_imm(R1, prec + 8), mov_imm(R2, PEEK_BYTES))
    emit(call(lay.helper_probe_read_kernel))
    emit(stx(DW, R10, R0, prec))
    emit(mov_reg(R1, R6), mov_reg(R2, R10), add_imm(R2, prec), mov_imm(R3, 8 + PEEK_BYTES))
    emit(call(lay.helper_seq_write))
    emit(add_imm(R8, 1))
    jump(jmp_imm, JA, 0, 0, to="loop")
    label("out")
    emit(mov_imm(R0, 0), exit_insn())
    for at, to in fixups:
        code, regs, _, imm = struct.unpack("<BBhi", body[at])
        body[at] = struct.pack("<BBhi", code, regs, labels[to] - at - 1, imm)
    return b"".join(body)


class _Bpf:
    """bpf(2) through libc's syscall(): attr structs packed by hand (uapi layouts)."""

    def __init__(self, btf: Btf) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.cmd = {
            name: btf.enum_value("bpf_cmd", f"BPF_{name}")
            for name in ("MAP_CREATE", "MAP_UPDATE_ELEM", "PROG_LOAD", "LINK_CREATE", "ITER_CREATE")
        }

    def __call__(self, cmd: str, attr: bytes | ctypes.Array[ctypes.c_char]) -> int:
        buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(attr)
        rc = self.libc.syscall(SYS_BPF, self.cmd[cmd], buf, ctypes.c_uint(len(buf)))
        if rc < 0:
            e = ctypes.get_errno()
            raise BpfError(f"bpf(BPF_{cmd}) failed: {os.strerror(e)} (errno {e})")
        return int(rc)


class KernelPeek:
    """The loaded program and its map; ``vmas(pid)`` and ``peek(addrs)`` read the kernel.

    Use as a context manager: leaving it closes the program, map and any links (the kernel
    frees a BPF program when its last fd goes, so a killed controller leaves nothing)."""

    def __init__(self, vma_bytes: int = 96, btf: Btf | None = None) -> None:
        self.btf = btf or vmlinux_btf()
        self.lay = IterLayout.from_btf(self.btf, vma_bytes)
        self.bpf = _Bpf(self.btf)
        self.value_size = 8 + 8 * MAX_PEEKS
        self.map_fd = -1
        self.prog_fd = -1
        self.links: dict[int, int] = {}
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        btf = self.btf
        array = btf.enum_value("bpf_map_type", "BPF_MAP_TYPE_ARRAY")
        self.map_fd = self.bpf("MAP_CREATE", struct.pack("<IIII", array, 4, self.value_size, 1))
        prog = assemble(self.lay, self.map_fd)
        try:
            self.prog_fd = self._prog_load(prog, log_size=0)
        except BpfError as exc:
            # again with the verifier's log, to say why
            try:
                self._prog_load(prog, log_size=1 << 22)
            except BpfError as logged:
                raise logged from None
            raise exc from None

    def _prog_load(self, prog: bytes, log_size: int) -> int:
        btf = self.btf
        insns = ctypes.create_string_buffer(prog, len(prog))
        lic = ctypes.create_string_buffer(LICENSE, len(LICENSE))
        log = ctypes.create_string_buffer(max(log_size, 1))
        attr = bytearray(144)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            btf.enum_value("bpf_prog_type", "BPF_PROG_TYPE_TRACING"),
            len(prog) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(lic),
            1 if log_size else 0,
            log_size,
            ctypes.addressof(log) if log_size else 0,
        )
        attr[48:64] = b"cowctx_peek".ljust(16, b"\0")
        struct.pack_into("<I", attr, 68, btf.enum_value("bpf_attach_type", "BPF_TRACE_ITER"))
        struct.pack_into("<I", attr, 108, btf.func_id("bpf_iter_task_vma"))
        try:
            return self.bpf("PROG_LOAD", bytes(attr))
        except BpfError as exc:
            text = log.value.decode(errors="replace").strip()
            raise BpfError(f"{exc}; verifier log (end):\n{text[-3000:]}") from None

    def _set(self, mode: int, addrs: list[int]) -> None:
        value = struct.pack(
            f"<II{MAX_PEEKS}Q", mode, len(addrs), *addrs, *[0] * (MAX_PEEKS - len(addrs))
        )
        key = ctypes.create_string_buffer(struct.pack("<I", 0), 4)
        val = ctypes.create_string_buffer(value, len(value))
        attr = struct.pack(
            "<IIQQQ", self.map_fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0
        )
        self.bpf("MAP_UPDATE_ELEM", attr)

    def _link(self, tid: int) -> int:
        fd = self.links.get(tid)
        if fd is None:
            info = ctypes.create_string_buffer(struct.pack("<IIII", tid, 0, 0, 0), 16)
            attr = struct.pack(
                "<IIIIQI4x",
                self.prog_fd,
                0,
                self.btf.enum_value("bpf_attach_type", "BPF_TRACE_ITER"),
                0,
                ctypes.addressof(info),
                16,
            )
            fd = self.links[tid] = self.bpf("LINK_CREATE", attr)
        return fd

    def _read(self, tid: int) -> bytes:
        """One iterator's whole output.  It must come in one read: on this kernel an
        ``iter/task_vma`` iterator whose output overflows the seq_file buffer (so that
        read() returns part of it and is called again) starts the task's VMAs over
        instead of going on, for ever (measured: 337 VMAs of 8 + 88 bytes never reach
        EOF).  The program's records are small enough for :data:`MAX_ITER_BYTES`."""
        it = self.bpf("ITER_CREATE", struct.pack("<II", self._link(tid), 0))
        try:
            chunks = []
            total = 0
            while True:
                data = os.read(it, 1 << 16)
                if not data:
                    break
                chunks.append(data)
                total += len(data)
                if total > MAX_ITER_BYTES:
                    raise BpfError(
                        f"the task_vma iterator of tid {tid} gave more than {MAX_ITER_BYTES} "
                        "bytes: its output overflowed one read and it restarted"
                    )
        finally:
            os.close(it)
        return b"".join(chunks)

    def vmas(self, tid: int) -> list[tuple[int, bytes]]:
        """(vm_area_struct address, its first ``vma_bytes`` bytes) for every VMA of ``tid``:
        the addresses from the iterator, the bytes by peeking them."""
        self._set(MODE_DUMP, [])
        data = self._read(tid)
        if len(data) % 8:
            raise BpfError(f"iterator output of {len(data)} bytes is not whole VMA pointers")
        ptrs = [int(p) for p in struct.unpack(f"<{len(data) // 8}Q", data)]
        if len(set(ptrs)) != len(ptrs):
            raise BpfError(f"the task_vma iterator of tid {tid} listed a VMA twice (restarted)")
        out = []
        for ptr, raw in zip(ptrs, self.peek(tid, ptrs), strict=True):
            if raw is None:
                raise BpfError(f"cannot read the vm_area_struct at {ptr:#x} of tid {tid}")
            out.append((ptr, raw[: self.lay.vma_bytes]))
        return out

    def peek(self, tid: int, addrs: list[int]) -> list[bytes | None]:
        """``PEEK_BYTES`` at each address (None where the read faulted); ``tid`` is any
        live task (the program runs inside that task's VMA iterator)."""
        out: list[bytes | None] = []
        rec = 8 + PEEK_BYTES
        for lo in range(0, len(addrs), MAX_PEEKS):
            batch = addrs[lo : lo + MAX_PEEKS]
            self._set(MODE_PEEK, batch)
            data = self._read(tid)
            if len(data) != rec * len(batch):
                raise BpfError(f"peek of {len(batch)} addresses returned {len(data)} bytes")
            for i in range(len(batch)):
                (rc,) = struct.unpack_from("<q", data, i * rec)
                out.append(None if rc else data[i * rec + 8 : (i + 1) * rec])
        return out

    def keep_links(self, tids: set[int]) -> None:
        """Close the links of every task not in ``tids`` (a link finds its task by number
        when iterated, so a link is only worth keeping while its scenario runs)."""
        for tid in [t for t in self.links if t not in tids]:
            os.close(self.links.pop(tid))

    def close(self) -> None:
        for fd in [*self.links.values(), self.prog_fd, self.map_fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.links.clear()
        self.prog_fd = self.map_fd = -1

    def __enter__(self) -> KernelPeek:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
