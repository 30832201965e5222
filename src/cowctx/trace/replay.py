"""``cowctx replay``: a recording rebuilt as machine operations, run on one design.

Records are taken in order (docs/record-replay.md):

- a syscall is applied at its ``exit`` record, with the kernel's result: a mapping
  lands at the address the kernel returned (MAP_FIXED there), a failed call is not
  replayed;
- ``newtask`` is the fork (CLONE_VM: a task sharing the mm; CLONE_FILES: the fd table);
- ``exec`` builds the new image (:mod:`cowctx.mm.exec_elf`) from the recorded ELF
  headers, placing what the kernel placed itself at the recorded
  ``vm_unmapped_area`` addresses; the faults taken during the execve (padzero,
  create_elf_tables) are applied to the new image afterwards;
- ``fault`` is a user access (write when the error code says so; a fault below a
  VM_GROWSDOWN VMA grows it first);
- ``exit_task`` is ``do_exit()``;
- ``kmem`` records are the kernel's counts (:mod:`cowctx.trace.kernel_counts`); an
  mm is torn down in the task whose frees of its chains show the kernel's last
  ``mmput()`` (:mod:`cowctx.trace.mm_keys`), which may not be the model's own order.

Each task's records are cut into segments (a syscall, a fault, an execve with its
faults); the model's and the kernel's anon_vma / anon_vma_chain deltas are kept per
segment, and the first segment where they differ is where the replay went wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cowctx.designs import make_machine
from cowctx.linux.tracefs import KINDS
from cowctx.mm import fork as _fork
from cowctx.mm.clone import clone_vm
from cowctx.mm.constants import (
    MADV_BY_NAME,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_STACK,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
)
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.exec_elf import ElfImage, ElfLoad, load_elf_binary
from cowctx.mm.file import File
from cowctx.mm.machine import Machine
from cowctx.mm.madvise_more import ADVICES, do_madvise_more
from cowctx.mm.mlock import MCL_FUTURE, do_mlock, do_mlockall, do_munlock
from cowctx.mm.mm_types import MmStruct, TaskStruct
from cowctx.mm.stack import expand_stack
from cowctx.scenario.results import (
    Counts,
    FinalState,
    OracleReport,
    ScenarioResult,
    ledger_locks,
    ledger_walks,
)
from cowctx.trace import fdtable
from cowctx.trace import syscalls as sc
from cowctx.trace.events import FAULT_WRITE, Record, Recording, signed_arg
from cowctx.trace.fdtable import FdTable
from cowctx.trace.images import is_self_exe, resolve
from cowctx.trace.kernel_counts import DELTA_KEYS, EXECVE_NRS, KernelCounts, joins_tree
from cowctx.trace.mm_keys import MmKeys, teardowns

FILE_PAGES = 1 << 32
"""A recorded file's size is unknown: files are taken to be large enough for every
mapping (a fault beyond EOF would be SIGBUS in the kernel and is not replayed)."""
_MADVISE_MODEL = frozenset(MADV_BY_NAME.values())
PROT_GROWS = 0x03000000
"""PROT_GROWSDOWN | PROT_GROWSUP: mprotect extends to the stack's end; not modelled."""


Pause = Callable[["Replay"], None]


class ReplayError(ValueError):
    """A recording that cannot be replayed at all (inconsistent records)."""


@dataclass
class ExecWindow:
    """What happens between an execve's entry and its sched_process_exec."""

    faults: list[Record] = field(default_factory=list)
    placements: list[list[int]] = field(default_factory=list)


@dataclass
class Held:
    """An mm the model would have torn down, kept alive (``mmget()``) because the
    kernel's teardown of it ran later in another task (:mod:`cowctx.trace.mm_keys`)."""

    mm: MmStruct
    pid: int
    """The task whose exit or exec the model would have torn it down at."""
    event: str
    index: int


@dataclass
class Segment:
    index: int
    """Record index that opened the segment."""
    pid: int
    what: str
    kernel: Counter[str] = field(default_factory=Counter)
    model: Counter[str] = field(default_factory=Counter)


class Replay:
    """One recording replayed on one design."""

    def __init__(self, rec: Recording, design: str, source: str = "<trace>") -> None:
        self.rec = rec
        self.header = rec.header
        self.source = source
        self.design = design
        self.m: Machine = make_machine(design)
        self.tasks: dict[int, TaskStruct] = {}
        self.fdt: dict[int, FdTable] = {}
        self.pending: dict[int, Record] = {}
        self.windows: dict[int, ExecWindow] = {}
        self.segments: list[Segment] = []
        self.current: dict[int, Segment] = {}
        self.kernel = KernelCounts()
        self.exiting: dict[int, TaskStruct] = {}
        """Tasks past sched_process_exit whose mm is not yet put (:meth:`_finish_exit`)."""
        self.keys = MmKeys()
        """The kernel's mms, followed record by record (which mm a chain freed is of)."""
        self.teardowns = teardowns(rec)
        """Where the kernel tore each mm down (the whole recording, read ahead)."""
        self.held: dict[int, Held] = {}
        """mm key -> the mm the replay holds for the task that will tear it down."""
        self.deferred: list[dict[str, Any]] = []
        """Each mm torn down by another task than the model's own order would have."""
        self.active: set[int] = set()
        """Tasks whose rmap allocations are the program's."""
        self.ops: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.special_files: dict[str, File] = {}
        self.image_files: dict[str, File] = {}
        self.exe: dict[int, str] = {}
        """Each task's program (what /proc/self/exe names)."""
        self._next_file = 0
        self.foreign = Segment(-1, 0, "frees run by tasks outside the tree")
        self.idx = 0
        """The record being replayed."""

    # --- bookkeeping -----------------------------------------------------------------

    def _counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        objs = self.m.ledger.objects
        for k in KINDS:
            s = objs.get(k)
            if s is not None:
                c[f"{k}.allocated"] = s.allocated
                c[f"{k}.freed"] = s.freed
        return c

    def _open(self, idx: int, pid: int, what: str) -> Segment:
        seg = Segment(idx, pid, what)
        self.segments.append(seg)
        self.current[pid] = seg
        return seg

    def _segment(self, idx: int, pid: int) -> Segment:
        seg = self.current.get(pid)
        return seg if seg is not None else self._open(idx, pid, "(start)")

    def _file(self, name: str, writable: bool = True) -> File:
        self._next_file += 1
        base = self.m.contents.unique_block(FILE_PAGES)
        f = File(f"{name}#{self._next_file}", FILE_PAGES, lambda index: base + index)
        f.f_mode_write = writable
        return f

    def _note(self, what: str) -> None:
        self.notes[what] += 1

    # --- the loop --------------------------------------------------------------------

    def run(self, pause_at: int | None = None, on_pause: Pause | None = None) -> None:
        """Replay every record; with ``on_pause``, call it once before record
        ``pause_at`` (or at the end) with the run as it stands there: a comparison
        measures the designs at the recording's peak (:func:`kernel_counts.live_peak`)."""
        root = self.header["root_pid"]
        for idx, r in enumerate(self.rec.records):
            if on_pause is not None and idx == pause_at:
                on_pause(self)
                on_pause = None
            self.idx = idx
            joined = joins_tree(r, root)
            if joined is not None:
                self.active.add(joined)
            if r[0] == "kmem":
                if r[2] in self.exiting:  # exit_mmap() has begun
                    self._finish_exit(r[2])
                key = self.keys.feed(idx, r)
                if key is not None:
                    self._chain_freed(idx, r[2], key)
                self._kmem(idx, r)
                continue
            if self.exiting and not (r[0] == "fault" and r[2] in self.exiting):
                for pid in list(self.exiting):
                    self._finish_exit(pid)
            before = self._counts()
            seg = self._dispatch(idx, r, root)
            self.keys.feed(idx, r)
            if seg is not None:
                self._charge(seg, before)
        self.idx = len(self.rec.records)
        for pid in list(self.exiting):
            self._finish_exit(pid)
        for key in list(self.held):
            self._never_torn_down(key)
        if on_pause is not None:
            on_pause(self)

    def _charge(self, seg: Segment, before: Counter[str]) -> None:
        """Add the model's counts since ``before`` to ``seg``."""
        after = self._counts()
        for key in DELTA_KEYS:
            d = after[key] - before[key]
            if d:
                seg.model[key] += d

    def _finish_exit(self, pid: int) -> None:
        """``exit_mm()``: runs after sched_process_exit, and mm_release()'s
        clear_child_tid store can still fault first; done at the exiting task's first
        rmap free or before any other task's next event, whichever comes first."""
        task = self.exiting.pop(pid)
        before = self._counts()
        self.ops["exit"] += 1
        self._hold_if_torn_down_later(pid, pid, task.mm, "exit")
        self.m.exit(task)
        seg = self.current.get(pid)
        if seg is not None:
            self._charge(seg, before)

    def _dispatch(self, idx: int, r: Record, root: int) -> Segment | None:
        kind, pid = r[0], r[2]
        if kind == "enter":
            nr = r[3]
            self.pending[pid] = r
            if nr in EXECVE_NRS:
                self.windows[pid] = ExecWindow()
            return self._open(idx, pid, f"{sc.NAMES.get(nr, nr)}()")
        if kind == "exit":
            enter = self.pending.pop(pid, None)
            seg = self._segment(idx, pid)
            if r[3] in EXECVE_NRS:
                self.windows.pop(pid, None)
            if enter is None or enter[3] != r[3]:
                return seg
            if pid in self.tasks:
                self._syscall(pid, enter[3], enter[4], r[4])
            return seg
        if kind == "fault":
            window = self.windows.get(pid)
            if window is not None:
                window.faults.append(r)
                return self._segment(idx, pid)
            seg = self._open(idx, pid, f"fault {r[3]:#x}{' write' if r[4] & FAULT_WRITE else ''}")
            self._fault(pid, r[3], bool(r[4] & FAULT_WRITE))
            return seg
        if kind == "newtask":
            seg = self._segment(idx, pid)
            self._newtask(pid, r[3], r[4], r[5])
            return seg
        if kind == "exec":
            old_pid = r[3]
            seg = self._segment(idx, old_pid)
            self._exec(pid, old_pid, r[4])
            return seg
        if kind == "exit_task":
            seg = self._segment(idx, pid)
            task = self.tasks.get(pid)
            if task is not None and not task.exit_state:
                self.exiting[pid] = task
            self.pending.pop(pid, None)
            self.windows.pop(pid, None)
            peer = self.keys.exec_peer(pid)
            if peer is not None and peer in self.windows:
                # de_thread(): the exec'ing thread takes the leader's pid over
                # (exchange_tid()); the execve's later records carry this pid
                self.windows[pid] = self.windows[peer]
                if peer in self.current:
                    self.current[pid] = self.current[peer]
            return seg  # stays open: exit_mmap() runs after sched_process_exit
        if kind == "unmapped":
            window = self.windows.get(pid)
            if window is not None:
                window.placements.append([r[3], r[4]])
            return None
        return None  # fork (task_newtask carries it), free_task

    def _kmem(self, idx: int, r: Record) -> None:
        pid = r[2]
        ours = pid in self.active
        key = self.kernel.account(bool(r[3]), r[4], r[5], r[6], ours, pid)
        withdrawn = self.kernel.take_withdrawn()
        if key is None and not withdrawn:
            return
        seg = self._kmem_segment(idx, pid)
        if key is not None:
            seg.kernel[key] += 1
        for k in withdrawn:  # a lost __anon_vma_prepare() race, counted here
            seg.kernel[k] -= 1

    def _kmem_segment(self, idx: int, pid: int) -> Segment:
        """The segment a kmem record of ``pid`` counts in."""
        if pid in self.active or pid in self.current:
            return self._segment(idx, pid)
        return self.foreign

    # --- who tears an mm down ----------------------------------------------------------

    def _hold_if_torn_down_later(
        self, pid: int, key_pid: int, mm: MmStruct | None, event: str
    ) -> None:
        """The model is about to drop the last ``mm_users`` of ``mm`` (``pid``'s exit
        or execve: ``mmput()`` → ``exit_mmap()``).  If the kernel tore that mm down
        later, in another task (:mod:`cowctx.trace.mm_keys`), that task held a
        reference the model does not see (``get_task_mm()`` by a /proc reader,
        ptrace, or a vfork parent whose own ``mmput()`` came after the child's
        ``exec_mmap()``): the replay takes it (``mmget()``) and drops it where the
        kernel's teardown begins (:meth:`_chain_freed`)."""
        if mm is None or mm.mm_users != 1:
            return
        key = self.keys.key_of(key_pid)
        if key is None:
            return
        t = self.teardowns.get(key)
        if t is None or t.index < self.idx or t.pid in (pid, key_pid):
            return
        mm.mm_users += 1  # mmget()
        self.held[key] = Held(mm, pid, event, self.idx)

    def _users(self, key: int) -> list[tuple[int, TaskStruct]]:
        """The tasks whose mm, in the model, is the kernel's mm ``key``."""
        return [
            (p, t)
            for p, t in self.tasks.items()
            if not t.exit_state and t.mm is not None and self.keys.key_of(p) == key
        ]

    def _chain_freed(self, idx: int, pid: int, key: int) -> None:
        """The kernel freed an anon_vma_chain of mm ``key`` in ``pid``.  In a task that
        does not use that mm any more, that is ``exit_mmap()`` after its last
        ``mmput()``: every other user has put the mm already in the kernel.  The
        model's users left are tasks inside an execve, past ``exec_mmap()`` in the
        kernel (its ``mmput(old_mm)`` comes before ``sched_process_exec``, where the
        model builds the new image): their puts are done now; a held mm is
        dropped; the teardown counts where the kernel's frees do."""
        users = self._users(key)
        if any(p == pid for p, _ in users) or pid in self.windows:
            return  # its own munmap, or an execve's own teardown (de_thread()'s pid)
        held = self.held.get(key)
        if held is None and not users:
            return
        for p, _ in users:
            if p in self.exiting:  # its exit_mm() has run in the kernel
                self._finish_exit(p)
        users = self._users(key)
        held = self.held.pop(key, None)
        stuck = [p for p, _ in users if p not in self.windows]
        if stuck:
            self._note(f"mm of pid {stuck[0]} torn down by pid {pid} while the model still uses it")
            if held is not None:
                self.held[key] = held
            return
        seg = self._kmem_segment(idx, pid)
        before = self._counts()
        for _, task in users:  # exec_mmap(): mmput(old_mm)
            old, task.mm = task.mm, None
            assert old is not None
            with self.m.operation("exec"):
                _fork.mmput(self.m, old)
        if held is not None:
            with self.m.operation("exit"):  # the holder's mmput() → exit_mmap()
                _fork.mmput(self.m, held.mm)
        self._charge(seg, before)
        if users:
            seg_of = self.current.get(users[0][0])
            self._deferred(users[0][0], "execve", seg_of.index if seg_of else idx, pid, idx)
        elif held is not None:
            self._deferred(held.pid, held.event, held.index, pid, idx)

    def _deferred(self, of: int, event: str, at: int, by: int, by_at: int) -> None:
        """Note an mm torn down by another task than the model's own order gives."""
        by_task = self.tasks.get(by)
        if by not in self.active and by not in self.current:
            how = "a task outside the tree"
        elif by_task is not None and (by_task.exit_state or by in self.exiting):
            how = "its exit"
        else:
            how = "the mmput() of a reference it held"
        self._note(f"old mm of pid {of} ({event}) torn down later by pid {by} ({how})")
        self.deferred.append(
            {
                "mm_of": of,
                "event": event,
                "record": at + 2,
                "torn_down_by": by,
                "torn_down_at_record": by_at + 2,
                "how": how,
            }
        )

    def _never_torn_down(self, key: int) -> None:
        """A held mm whose teardown the recording never showed: put at the end, in a
        segment of its own (where the kernel counted nothing)."""
        held = self.held.pop(key)
        seg = Segment(held.index, held.pid, f"mm held after {held.event}, never torn down")
        self.segments.append(seg)
        before = self._counts()
        with self.m.operation("exit"):
            _fork.mmput(self.m, held.mm)
        self._charge(seg, before)
        self._note(f"old mm of pid {held.pid} ({held.event}) held, never torn down")

    # --- tasks -----------------------------------------------------------------------

    def _newtask(self, parent_pid: int, child_pid: int, flags: int, comm: str) -> None:
        parent = self.tasks.get(parent_pid)
        if parent is None:
            self._note("fork by a task with no known mm")
            return
        if flags & sc.CLONE_VM:
            self.ops["clone_vm"] += 1
            child = clone_vm(self.m, parent, comm)
        else:
            self.ops["fork"] += 1
            child = self.m.fork(parent, comm)
        self.tasks[child_pid] = child
        if parent_pid in self.exe:
            self.exe[child_pid] = self.exe[parent_pid]
        table = self.fdt.setdefault(parent_pid, FdTable())
        self.fdt[child_pid] = table if flags & sc.CLONE_FILES else table.copy()

    def _exec(self, pid: int, old_pid: int, filename: str) -> None:
        window = self.windows.pop(old_pid, ExecWindow())
        self.windows.pop(pid, None)
        self.pending.pop(old_pid, None)
        if pid != old_pid:  # a non-leader thread exec'd: it takes the leader's pid
            self.tasks[pid] = self.tasks.pop(old_pid)
            self.fdt[pid] = self.fdt.pop(old_pid, FdTable())
        task = self.tasks.get(pid)
        if task is None:
            task = self._root_task(pid)
        images = self.header["images"]
        if is_self_exe(filename):
            filename = self.exe.get(pid, filename)
        self.exe[pid] = filename
        try:
            path, image = resolve(images, filename)
            interp = None
            if image.get("interp"):
                interp = self._image(*resolve(images, image["interp"]))
            exe = self._image(path, image)
        except KeyError as exc:
            raise ReplayError(f"{self.source}: exec of {filename} by pid {pid}: {exc}") from None
        placements = list(window.placements)

        def place(length: int) -> int | None:
            for i, (addr, plen) in enumerate(placements):
                if plen == length:
                    del placements[i]
                    return addr
            return None

        special = [
            (name, pages, self._special(name, pages))
            for name, pages in self.header["special_mappings"]
        ]
        self.ops["exec"] += 1
        self._hold_if_torn_down_later(pid, old_pid, task.mm, "execve")
        with self.m.operation("exec"):
            load_elf_binary(self.m, task, exe, interp, special, place)
        task.comm = Path(filename).name[:15]
        self.fdt[pid] = self._table(pid).after_exec()
        for f in window.faults:
            self._fault(pid, f[3], bool(f[4] & FAULT_WRITE))

    def _root_task(self, pid: int) -> TaskStruct:
        """The first task: the recorder's gated child, whose pre-exec mm is not the
        program's (an empty mm stands for it)."""
        task = self.m.spawn("root")
        self.tasks[pid] = task
        self.active.add(pid)
        return task

    def _image(self, path: str, image: dict[str, Any]) -> ElfImage:
        if "loads" not in image:
            raise KeyError(f"{path} was not readable when recorded")
        file = self.image_files.get(path)
        if file is None:
            file = self.image_files[path] = self._file(path, writable=False)
        loads = tuple(ElfLoad(*p) for p in image["loads"])
        return ElfImage(image["type"], loads, bool(image["exec_stack"]), file)

    def _special(self, name: str, pages: int) -> File:
        f = self.special_files.get(name)
        if f is None:
            f = self.special_files[name] = self._file(name, writable=False)
        return f

    # --- faults ----------------------------------------------------------------------

    def _fault(self, pid: int, addr: int, write: bool) -> None:
        task = self.tasks.get(pid)
        if task is None or task.mm is None:
            if pid == self.header["root_pid"] and pid not in self.tasks:
                self._note("fault of the recorder's child before its exec (not the program's)")
            else:
                self._note("fault of a task with no known mm")
            return
        self.ops["fault"] += 1
        mm = task.mm
        if mm.vma_lookup(addr) is None:
            with self.m.operation("fault"):
                vma = expand_stack(self.m, mm, addr)
            if vma is None:
                self._note("fault outside every VMA (SIGSEGV in the model)")
                return
        try:
            self.m.access(task, addr, write)
        except AccessFault as exc:
            self._note(f"fault refused by the model: {exc.errno} ({exc.why})")

    # --- syscalls --------------------------------------------------------------------

    def _syscall(self, pid: int, nr: int, a: list[int], ret: int) -> None:
        name = sc.NAMES.get(nr, str(nr))
        if name in fdtable.OPENERS or name in fdtable.CHANGERS:
            fdtable.apply(self._table(pid), name, a, ret, self._file)
            return
        if ret < 0:
            return
        task = self.tasks[pid]
        if task.exit_state or task.mm is None:
            return
        self.ops[name] += 1
        try:
            self._mm_syscall(pid, task, name, a, ret)
        except SyscallError as exc:
            self._note(f"{name} succeeded in the kernel, failed in the model: {exc}")

    def _mm_syscall(self, pid: int, task: TaskStruct, name: str, a: list[int], ret: int) -> None:
        m = self.m
        if name == "mmap":
            length, prot, flags, fd, off = a[1], a[2], a[3], signed_arg(a[4]), a[5]
            map_type = flags & 0xF
            shared = map_type in (MAP_SHARED, 0x3)  # MAP_SHARED_VALIDATE
            keep = MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE | MAP_STACK | MAP_GROWSDOWN
            mflags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_FIXED | (flags & keep)
            file = None
            if not flags & MAP_ANONYMOUS:
                file = self._fd_file(pid, fd)
            got = m.mmap(task, ret, length, prot, mflags, file, off >> PAGE_SHIFT)
            if got != ret:
                self._note("mmap placed elsewhere by the model")
        elif name == "munmap":
            m.munmap(task, a[0], a[1])
        elif name in ("mprotect", "pkey_mprotect"):
            if a[2] & PROT_GROWS:
                self._note("mprotect with PROT_GROWSDOWN/GROWSUP not modelled")
            m.mprotect(task, a[0], a[1], a[2] & ~PROT_GROWS)
        elif name == "mremap":
            old, old_len, new_len, flags, new_addr = a[0], a[1], a[2], a[3], a[4]
            if ret != old and not flags & MREMAP_FIXED:
                flags |= MREMAP_FIXED | MREMAP_MAYMOVE
                new_addr = ret
            got = m.mremap(task, old, old_len, new_len, flags, new_addr)
            if got != ret:
                self._note("mremap result differs from the kernel's")
        elif name == "brk":
            got = m.brk(task, a[0])
            if got != ret:
                self._note("brk result differs from the kernel's")
        elif name == "madvise":
            if a[2] in _MADVISE_MODEL:
                m.madvise(task, a[0], a[1], a[2])
            elif a[2] in ADVICES:
                with m.operation("madvise"):
                    assert task.mm is not None
                    do_madvise_more(m, task.mm, a[0], a[1], a[2])
            else:
                self._note(f"madvise advice {a[2]} not modelled")
        elif name in ("mlock", "mlock2", "munlock", "mlockall", "munlockall"):
            self._mlock(task, name, a)
        elif name in ("msync", "prctl", "shmctl", "shmget", "mbind") or nr_lifecycle(name):
            pass  # no change to VMAs or anon memory, or replayed from its own records
        else:
            self._note(f"{name} not modelled")

    def _mlock(self, task: TaskStruct, name: str, a: list[int]) -> None:
        mm = task.mm
        assert mm is not None
        with self.m.operation(name):
            if name == "mlock":
                do_mlock(self.m, mm, a[0], a[1], 0)
            elif name == "mlock2":
                do_mlock(self.m, mm, a[0], a[1], a[2])
            elif name == "munlock":
                do_munlock(self.m, mm, a[0], a[1])
            elif name == "munlockall":
                do_mlockall(self.m, mm, 0)
            else:
                if a[0] & MCL_FUTURE:
                    self._note("mlockall(MCL_FUTURE) not modelled: later mappings are not locked")
                do_mlockall(self.m, mm, a[0])

    # --- file descriptors ------------------------------------------------------------

    def _table(self, pid: int) -> FdTable:
        return self.fdt.setdefault(pid, FdTable())

    def _fd_file(self, pid: int, fd: int) -> File:
        file, seen = self._table(pid).file(fd, self._file)
        if not seen:
            self._note("mmap of an fd the recording did not see opened")
        return file

    # --- result ----------------------------------------------------------------------

    def first_difference(self) -> dict[str, Any] | None:
        """The first segment where the kernel's and the model's deltas differ."""
        for seg in self.segments:
            k = {key: seg.kernel[key] for key in DELTA_KEYS}
            mo = {key: seg.model[key] for key in DELTA_KEYS}
            if k != mo:
                r = self.rec.records[seg.index] if seg.index >= 0 else None
                return {
                    "record": seg.index + 2 if seg.index >= 0 else None,
                    "pid": seg.pid,
                    "comm": self._comm(seg.pid),
                    "event": seg.what,
                    "ts_ns": r[1] if r is not None else None,
                    "kernel": {key: v for key, v in k.items() if v},
                    "model": {key: v for key, v in mo.items() if v},
                }
        return None

    def _comm(self, pid: int) -> str | None:
        t = self.tasks.get(pid)
        return t.comm if t is not None else None

    def procs(self) -> dict[str, TaskStruct]:
        """The tasks alive now, named ``comm[pid]`` (what the reports draw)."""
        return {
            f"{t.comm}[{pid}]": t
            for pid, t in sorted(self.tasks.items())
            if not t.exit_state and t.mm is not None
        }

    def scenario_result(self) -> ScenarioResult:
        """The run as the model's result type (SCENARIO.md's shape, no steps, maps or
        pages: a recording has no scenario window); what ``cowctx compare`` reads."""
        ledger = self.m.ledger
        locks = ledger_locks(ledger)
        walks = ledger_walks(ledger)
        return ScenarioResult(
            scenario=" ".join(self.header["command"]),
            design=self.design,
            steps=[],
            final=FinalState(
                {k: Counts(s.allocated, s.freed, s.live) for k, s in ledger.objects.items()},
                {},
                {},
                bytes=ledger.bytes_live(),
                estimated=sorted(k for k, kind in ledger.kinds.items() if kind.estimate),
            ),
            locks=locks,
            walks=walks,
            oracle=OracleReport(False, [], []),
        )

    def result(self) -> dict[str, Any]:
        """``cowctx replay --json``: :meth:`scenario_result` plus the recording's kernel
        counts, ``agree``, where the first difference arose, and the replay's notes."""
        res = self.scenario_result()
        kernel = self.kernel.totals()
        zero = Counts(0, 0, 0)
        model = {k: res.final.objects.get(k, zero).to_json() for k in KINDS}
        first = self.first_difference() if self.design == "anon_vma" else None
        agree = None
        if self.design == "anon_vma":
            agree = first is None and all(kernel[k] == model[k] for k in KINDS)
        if agree is False and first is None:
            first = {"event": "totals only (frees run outside the tree)", **self.foreign.kernel}
        return {
            **res.to_json(),
            "trace": self.source,
            "kernel": {
                **kernel,
                "other": dict(sorted(self.kernel.other.items())),
                "lost_events": self.header["lost_events"],
                "flags": self.header["flags"],
            },
            "agree": agree,
            "first_difference": first if agree is False else None,
            "replay": {
                "records": len(self.rec.records),
                "ops": dict(sorted(self.ops.items())),
                "notes": dict(sorted(self.notes.items())),
                "deferred_teardowns": self.deferred,
                "tasks_alive_at_end": sorted(
                    pid for pid, t in self.tasks.items() if not t.exit_state
                ),
            },
        }


def nr_lifecycle(name: str) -> bool:
    """clone/fork/exec/exit are replayed from task_newtask, sched_process_exec and
    sched_process_exit, which carry what the syscall records do not."""
    return name in sc.LIFECYCLE.values()


def replay(rec: Recording, design: str, source: str = "<trace>") -> dict[str, Any]:
    """Replay ``rec`` on ``design``; the result dict (``cowctx replay --json``)."""
    r = Replay(rec, design, source)
    r.run()
    return r.result()
