"""Which mm each of the kernel's anon_vma_chains belongs to, and which task tore
each mm down: read from the recording alone, so that the replay can put an mm where
the kernel did (docs/record-replay.md, "Who tears an mm down").

The kmem records name no mm, but an anon_vma_chain belongs to exactly one VMA of one
mm, and where it was allocated says which: in a task's fault or syscall, that task's
mm; during an execve (from its ``sys_enter`` to ``sched_process_exec``), the new mm
(``bprm_mm_init()`` onward: the old mm is never extended by an exec); during a fork
before ``task_newtask`` (``dup_mmap()`` runs inside ``copy_process()``, which emits
``task_newtask`` at its end), ``anon_vma_fork()`` / ``anon_vma_clone()`` build the
child's mm.  An mm is named by a key: a number given when it is created (at an
execve's entry, at a fork) and shared by every task created with CLONE_VM.

``exit_mmap()`` frees every anon_vma_chain still linked in the mm, in the context of
the task whose ``mmput()`` dropped the last ``mm_users``: the last free of an mm's
chains, once none is left, is its teardown, and its pid is that task.  Nothing else
frees a chain of an mm but a task using that mm (``unlink_anon_vmas()`` on munmap,
merge, split failure), so a chain freed by a task that no longer uses the mm is the
teardown too.  An mm that had no chain left when it went leaves no trace: nothing of
it is counted either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cowctx.linux.tracefs import RMAP_ALLOC_SITES
from cowctx.trace import syscalls as sc
from cowctx.trace.events import Record, Recording
from cowctx.trace.kernel_counts import EXECVE_NRS

FORK_NRS = frozenset(sc.BY_NAME[n] for n in ("clone", "clone3", "fork", "vfork"))
FORK_SITES = frozenset({"anon_vma_fork", "anon_vma_clone"})
"""``dup_mmap()``'s call sites (``anon_vma_fork()`` calls ``anon_vma_clone()``)."""


@dataclass(frozen=True)
class Teardown:
    """Where the kernel tore an mm down: its last anon_vma_chain free."""

    index: int
    """Record index of that free."""
    pid: int
    """The task it ran in: the one whose ``mmput()`` was the last."""


@dataclass
class MmKeys:
    """The kernel's mms as keys, followed record by record (:meth:`feed`)."""

    task: dict[int, int] = field(default_factory=dict)
    """pid -> key of its mm (kept after the task exits: its exit puts that mm)."""
    exec_window: dict[int, int] = field(default_factory=dict)
    """pid in an execve -> key of the mm it is building."""
    fork_window: dict[int, int] = field(default_factory=dict)
    """pid in a fork -> key of the child's mm ``dup_mmap()`` is building."""
    tgid: dict[int, int] = field(default_factory=dict)
    """pid -> its thread group (CLONE_THREAD), for ``de_thread()``."""
    chains: dict[int, int] = field(default_factory=dict)
    """Live anon_vma_chain pointer -> key of its mm."""
    live: Counter[int] = field(default_factory=Counter)
    """key -> its anon_vma_chains live."""
    last_free: dict[int, Teardown] = field(default_factory=dict)
    _next: int = 0

    def _new(self) -> int:
        self._next += 1
        return self._next

    def key_of(self, pid: int) -> int | None:
        """The key of ``pid``'s current mm (before an execve in progress replaces it)."""
        return self.task.get(pid)

    def exec_peer(self, pid: int) -> int | None:
        """The thread whose execve is under way when the group leader ``pid`` exits:
        ``de_thread()`` kills the leader and the exec'ing thread takes its pid over
        (``exchange_tid()``), so the execve's later records carry ``pid``."""
        if self.tgid.get(pid, pid) != pid:
            return None  # not a leader
        for other in self.exec_window:
            if other != pid and self.tgid.get(other) == pid:
                return other
        return None

    def feed(self, idx: int, r: Record) -> int | None:
        """Fold record ``idx`` in; for an anon_vma_chain free of a known mm, its key."""
        kind, pid = r[0], r[2]
        if kind == "kmem":
            return self._kmem(idx, pid, bool(r[3]), r[4], r[5], r[6])
        if kind == "enter":
            if r[3] in EXECVE_NRS:
                self.exec_window[pid] = self._new()
            elif r[3] in FORK_NRS:
                self.fork_window[pid] = self._new()
        elif kind == "exit":
            if r[3] in EXECVE_NRS:
                self.exec_window.pop(pid, None)  # failed: the new mm went with it
            self.fork_window.pop(pid, None)
        elif kind == "newtask":
            child_key = self.fork_window.pop(pid, None)
            if r[4] & sc.CLONE_VM:
                child_key = self.task.get(pid)
            self.task[r[3]] = child_key if child_key is not None else self._new()
            child: int = r[3]
            group = self.tgid.get(pid)
            self.tgid[child] = (group or pid) if r[4] & sc.CLONE_THREAD else child
        elif kind == "exec":
            old_pid = r[3]
            new = self.exec_window.pop(old_pid, None)
            self.exec_window.pop(pid, None)
            if old_pid != pid:
                self.task.pop(old_pid, None)
            self.task[pid] = new if new is not None else self._new()
        elif kind == "exit_task":
            self.exec_window.pop(pid, None)
            self.fork_window.pop(pid, None)
            peer = self.exec_peer(pid)
            if peer is not None:
                self.exec_window[pid] = self.exec_window[peer]
        return None

    def _kmem(self, idx: int, pid: int, alloc: bool, kind: str, func: str, ptr: int) -> int | None:
        if kind != "anon_vma_chain":
            return None
        if alloc:
            if func not in RMAP_ALLOC_SITES:
                return None  # another object of the merged 64-byte cache
            key = self.exec_window.get(pid)
            if key is None and func in FORK_SITES:
                key = self.fork_window.get(pid)
            if key is None:
                key = self.task.get(pid)
            if key is not None:
                self.chains[ptr] = key
                self.live[key] += 1
            return None
        key = self.chains.pop(ptr, None)
        if key is None:
            return None
        self.live[key] -= 1
        self.last_free[key] = Teardown(idx, pid)
        return key

    def teardowns(self) -> dict[int, Teardown]:
        """Per key, its teardown, for the mms whose chains were all freed."""
        return {key: t for key, t in self.last_free.items() if self.live[key] == 0}


def teardowns(rec: Recording) -> dict[int, Teardown]:
    """Where the kernel tore each mm of the recording down (keys as :class:`MmKeys`
    gives them when fed the same records in order)."""
    keys = MmKeys()
    for idx, r in enumerate(rec.records):
        keys.feed(idx, r)
    return keys.teardowns()
