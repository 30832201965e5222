"""``cowctx record``: run a command tree under a private tracefs recording.

Two private instances (reference/kernel-oracle.md, src/cowctx/linux/tracefs.py):

- ``cowctx-<pid>-rec`` follows the target tree (``set_event_pid`` + ``options/event-fork``):
  raw syscalls of the address-space, lifecycle and fd families, ``task_newtask``,
  ``sched_process_fork/exec/exit``, user faults and kernel faults on user addresses,
  ``mmap/vm_unmapped_area`` and the anon_vma / anon_vma_chain kmem events;
- ``cowctx-<pid>-kmem`` has no pid filter: the anon_vma / anon_vma_chain frees that run in
  another task (kcompactd, a task dropping the last reference) and ``sched_process_free``
  (an RCU callback, in whatever task runs it).

The target is started gated: a child waits on a pipe until the instance is armed with its
pid, then execs, so its first instruction is recorded.  It runs with ADDR_NO_RANDOMIZE
(``setarch -R``) so that exec's own placements (load bias, stack top) are the kernel's
fixed ones, which the replay recomputes from the ELF headers.  The recorder is a child
subreaper: it waits for every descendant, and on SIGINT/SIGTERM/SIGHUP (or any error)
kills the ones still running, then removes both instances.  Instances left by a recorder
that was killed outright are removed by the next run (``remove_stale_instances``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cowctx.linux.tracefs import (
    EVENT_FILTER,
    INSTANCE_PREFIX,
    TraceError,
    remove_stale_instances,
    tracefs_root,
)
from cowctx.trace import syscalls
from cowctx.trace.events import Record, parse

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
ADDR_NO_RANDOMIZE = 0x0040000
TASK_SIZE_FILTER = "address < 0x800000000000"

REC_EVENTS: dict[str, str | None] = {
    "raw_syscalls/sys_enter": syscalls.syscall_filter(),
    "raw_syscalls/sys_exit": syscalls.syscall_filter(),
    "task/task_newtask": None,
    "sched/sched_process_fork": None,
    "sched/sched_process_exec": None,
    "sched/sched_process_exit": None,
    "exceptions/page_fault_user": None,
    "exceptions/page_fault_kernel": TASK_SIZE_FILTER,
    "mmap/vm_unmapped_area": None,
    "kmem/kmem_cache_alloc": EVENT_FILTER,
    "kmem/kmem_cache_free": EVENT_FILTER,
}
"""The target tree's instance: event -> filter."""
KMEM_EVENTS: dict[str, str | None] = {
    "kmem/kmem_cache_free": EVENT_FILTER,
    "sched/sched_process_free": None,
}
"""The unfiltered instance: frees that may run in another task."""
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """The recorder got SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Instance:
    """One private tracefs instance with a set of events; removed by :meth:`remove`."""

    def __init__(
        self, root: Path, name: str, events: dict[str, str | None], buffer_kb: int
    ) -> None:
        self.path = root / "instances" / name
        self.events = events
        self.buffer_kb = buffer_kb
        self.pipe: int | None = None
        self._partial = b""
        self.created = False

    def create(self) -> None:
        # marked first: a signal between mkdir and the mark must not leak the instance
        # (the name holds this process's pid, so nothing else owns it)
        self.created = True
        self.path.mkdir()
        p = self.path
        _write(p / "tracing_on", "0")  # a new instance starts with tracing on
        _write(p / "buffer_size_kb", str(self.buffer_kb))
        _write(p / "options" / "overwrite", "0")
        _write(p / "options" / "hash-ptr", "0")
        _write(p / "trace_clock", "global")
        for event, filt in self.events.items():
            d = p / "events" / event
            if not d.is_dir():
                raise TraceError(f"tracepoint {event} is missing")
            if filt is not None:
                _write(d / "filter", filt)
        self.pipe = os.open(p / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def follow(self, pid: int) -> None:
        """Record ``pid`` and, through event-fork, every task it creates."""
        _write(self.path / "options" / "event-fork", "1")
        _write(self.path / "set_event_pid", str(pid))

    def enable(self) -> None:
        for event in self.events:
            _write(self.path / "events" / event / "enable", "1")
        _write(self.path / "tracing_on", "1")

    def read(self) -> list[str]:
        """Complete lines available now."""
        if self.pipe is None:
            return []
        chunks = [self._partial]
        while True:
            try:
                data = os.read(self.pipe, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        raw = b"".join(chunks)
        cut = raw.rfind(b"\n") + 1
        self._partial = raw[cut:]
        return raw[:cut].decode(errors="replace").splitlines()

    def lost(self) -> int:
        """Events dropped by the ring buffer (overwrite=0: the writer lost them)."""
        lost = 0
        for stats in sorted((self.path / "per_cpu").glob("cpu*/stats")):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("overrun", "commit overrun", "dropped events"):
                    lost += int(value.split()[0])
        return lost

    def remove(self) -> None:
        """Tracing off, events off, pid filter cleared, instance removed; idempotent."""
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self.pipe)
            self.pipe = None
        if not self.created:
            return
        p = self.path
        with contextlib.suppress(OSError):
            _write(p / "tracing_on", "0")
        for event in self.events:
            with contextlib.suppress(OSError):
                _write(p / "events" / event / "enable", "0")
        with contextlib.suppress(OSError):
            _write(p / "set_event_pid", "")
        last: OSError | None = None
        for _ in range(200):
            try:
                p.rmdir()
                self.created = False
                return
            except FileNotFoundError:
                self.created = False
                return
            except OSError as exc:  # EBUSY while a reader is still leaving
                last = exc
                time.sleep(0.005)
        raise TraceError(f"cannot remove tracefs instance {p}: {last}")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/*/stat), parents first."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_descendants() -> None:
    """SIGKILL and reap every process this recorder started (directly or not: as a
    subreaper it inherits every orphan of the tree), until none is left."""
    me = os.getpid()
    for _ in range(100):
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
    raise TraceError("descendants of the recorder survive SIGKILL")


def _start_watchdog(root: Path, names: list[str]) -> int:
    """A detached process that cleans up if this recorder dies without doing so
    (SIGKILL): it kills the target's process group and removes the instances.
    Returns the pipe to it: ``T <pid>`` names the target, ``done`` dismisses it."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - child
        try:
            os.close(w)
            if os.fork() == 0:
                _watchdog(r, root, names)
        finally:
            os._exit(0)
    os.close(r)
    os.waitpid(first, 0)
    return w


def _watchdog(fd: int, root: Path, names: list[str]) -> None:  # pragma: no cover - child
    """The watchdog's body (never returns): wait for EOF on ``fd``."""
    try:
        os.setsid()
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        os.closerange(0, fd)
        os.closerange(fd + 1, 1 << 16)
        buf = b""
        while True:
            data = os.read(fd, 256)
            if not data:
                break
            buf += data
        if b"done" in buf:
            return
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith("T "):
                pgid = int(line[2:])
                for _ in range(200):
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
        for name in names:
            inst = Instance(root, name, {**REC_EVENTS, **KMEM_EVENTS}, 0)
            inst.created = inst.path.exists()
            with contextlib.suppress(Exception):
                inst.remove()
    finally:
        os._exit(0)


def _gated_child(path: str, argv: list[str], gate: int) -> None:  # pragma: no cover - child
    """In the forked child: wait for the gate, then exec the target (never returns)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.personality(libc.personality(0xFFFFFFFF) | ADDR_NO_RANDOMIZE)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        if os.read(gate, 1) == b"g":
            os.execv(path, argv)
    finally:
        os._exit(127)


@dataclass
class Recording:
    """What :func:`record` produced (the trace file's content)."""

    header: dict[str, Any]
    records: list[Record] = field(default_factory=list)


def record(
    argv: list[str],
    buffer_kb: int = 4096,
    progress: Callable[[str], None] | None = None,
) -> Recording:
    """Run ``argv`` and its descendants under recording; returns the recording.

    Raises :class:`Interrupted` on SIGINT/SIGTERM/SIGHUP after cleaning up,
    :class:`~cowctx.linux.tracefs.TraceError` when tracefs cannot be used.
    """
    path = shutil.which(argv[0])
    if path is None:
        raise FileNotFoundError(f"command not found: {argv[0]}")
    root = tracefs_root()
    remove_stale_instances(root)
    me = os.getpid()
    rec = Instance(root, f"{INSTANCE_PREFIX}{me}-rec", REC_EVENTS, buffer_kb)
    kmem = Instance(root, f"{INSTANCE_PREFIX}{me}-kmem", KMEM_EVENTS, max(1024, buffer_kb // 4))

    def on_signal(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    watchdog = _start_watchdog(root, [rec.path.name, kmem.path.name])
    old = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    lines_rec: list[str] = []
    lines_kmem: list[str] = []
    child = -1
    status = None
    try:
        rec.create()
        kmem.create()
        gate_r, gate_w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - child
            os.close(gate_w)
            os.close(watchdog)
            _gated_child(path, argv, gate_r)
        os.close(gate_r)
        os.write(watchdog, f"T {child}\n".encode())
        try:
            rec.follow(child)
            kmem.enable()
            rec.enable()
            os.write(gate_w, b"g")
        finally:
            os.close(gate_w)
        started = time.monotonic()
        last_note = started
        busy = True
        while busy:
            pipes = [i.pipe for i in (rec, kmem) if i.pipe is not None]
            select.select(pipes, [], [], 0.05)
            lines_rec.extend(rec.read())
            lines_kmem.extend(kmem.read())
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    busy = False
                    break
                if pid == 0:
                    break
                if pid == child:
                    status = os.waitstatus_to_exitcode(st)
            now = time.monotonic()
            if progress is not None and now - last_note >= 1.0:
                last_note = now
                progress(f"recording: {now - started:.0f}s, {len(lines_rec)} events")
        time.sleep(0.02)  # the last frees (RCU callbacks) of the tree
        _write(rec.path / "tracing_on", "0")
        _write(kmem.path / "tracing_on", "0")
        lines_rec.extend(rec.read())
        lines_kmem.extend(kmem.read())
        lost = {"rec": rec.lost(), "kmem": kmem.lost()}
    finally:
        with contextlib.suppress(Exception):
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            if child > 0:
                kill_descendants()
        finally:
            try:
                rec.remove()
            finally:
                kmem.remove()
                with contextlib.suppress(OSError):
                    os.write(watchdog, b"done\n")
                os.close(watchdog)
                libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
                for sig, handler in old.items():
                    signal.signal(sig, handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return _assemble(argv, path, child, status, lost, lines_rec, lines_kmem)


def _assemble(
    argv: list[str],
    path: str,
    root_pid: int,
    status: int | None,
    lost: dict[str, int],
    lines_rec: list[str],
    lines_kmem: list[str],
) -> Recording:
    """Parse both instances' lines into one ordered record list plus the header."""
    records: list[Record] = []
    for line in lines_rec:
        r = parse(line)
        if r is not None and r[0] != "free_task":
            records.append(r)
    traced = {r[2] for r in records} | {root_pid}
    traced |= {r[3] for r in records if r[0] in ("newtask", "fork")}
    allocated = {r[6] for r in records if r[0] == "kmem" and r[3]}
    extra: list[Record] = []
    for line in lines_kmem:
        r = parse(line)
        if r is None:
            continue
        if r[0] == "free_task" and r[2] in traced:
            extra.append(r)
        elif r[0] == "kmem" and not r[3] and r[2] not in traced and r[6] in allocated:
            extra.append(r)  # a free of the tree's object that ran in another task
    merged = sorted(
        [(r[1], 0, i, r) for i, r in enumerate(records)]
        + [(r[1], 1, i, r) for i, r in enumerate(extra)]
    )
    out = [r for *_, r in merged]
    flags: list[str] = []
    for name, n in lost.items():
        if n:
            flags.append(f"lost-events: the {name} instance's ring buffer dropped {n} events")
    unreplayable: dict[str, list[int]] = {}
    entered: dict[int, Record] = {}
    for r in out:
        if r[0] == "enter":
            entered[r[2]] = r
        elif r[0] == "exit" and r[4] >= 0:
            e = entered.pop(r[2], None)
            what = syscalls.UNREPLAYABLE.get(r[3])
            is_prctl = e is not None and r[3] == syscalls.BY_NAME["prctl"]
            if is_prctl and e is not None and e[4][0] == syscalls.PR_SET_VMA:
                what = "prctl(PR_SET_VMA)"
            if what is not None:
                unreplayable.setdefault(what, []).append(r[2])
    for what, pids in unreplayable.items():
        flags.append(
            f"unreplayable: {what} succeeded {len(pids)} times "
            f"(pids {', '.join(str(p) for p in sorted(set(pids))[:5])}"
            f"{', ...' if len(set(pids)) > 5 else ''}): its effect on memory is not recorded"
        )
    from cowctx.trace.images import load_images  # pyelftools: only once recorded

    execs = sorted({r[4] for r in out if r[0] == "exec"})
    images, image_flags = load_images(execs)
    flags.extend(image_flags)
    header: dict[str, Any] = {
        "format": "cowctx-trace",
        "version": 1,
        "command": argv,
        "path": path,
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "aslr": False,
        "root_pid": root_pid,
        "exit_status": status,
        "events": len(out),
        "lost_events": lost,
        "flags": sorted(set(flags)),
        "special_mappings": special_mappings(),
        "images": images,
    }
    return Recording(header, out)


def special_mappings() -> list[list[Any]]:
    """[name, pages] of exec's special mappings in address order (``[vvar]``,
    ``[vvar_vclock]``, ``[vdso]`` on this kernel), read from the recorder's own maps."""
    out: list[list[Any]] = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] in ("[vvar]", "[vvar_vclock]", "[vdso]"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append([parts[5], (hi - lo) >> 12])
    return out


def recording_unavailable_reason() -> str | None:
    """Why this machine cannot record (no root, no tracefs, a missing tracepoint), or None."""
    if os.geteuid() != 0:
        return "recording needs root (tracefs instances, set_event_pid)"
    try:
        root = tracefs_root()
    except TraceError as exc:
        return f"recording needs tracefs: {exc}"
    for event in {**REC_EVENTS, **KMEM_EVENTS}:
        if not (root / "events" / event).is_dir():
            return f"recording needs the tracepoint {event}, which this kernel lacks"
    return None
