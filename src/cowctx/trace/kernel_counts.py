"""The kernel's anon_vma / anon_vma_chain counts in a recording, per replay segment.

Classification as src/cowctx/linux/tracefs.py does it: an allocation counts when its
call site is an rmap function (the anon_vma_chain cache is merged with fs_cache and
eventpoll_pwq) and it ran in a task of the tree; a free counts when its pointer is a
live object of the tree, whichever task ran it.  Allocations of the first task before
its first execve are the recorder's own process, not the program's.

One concurrency artefact is left out: two threads faulting on the same VMA both
enter ``__anon_vma_prepare()``, both allocate an anon_vma_chain (and an anon_vma, when
none is mergeable), and the one that finds ``vma->anon_vma`` set under
``page_table_lock`` frees what it allocated (``put_anon_vma()``,
``anon_vma_chain_free()``: the chain's free has ``__anon_vma_prepare`` as its call
site).  The replay is sequential and cannot lose that race: the loser's objects are
withdrawn from the counts and named in ``other``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cowctx.linux.tracefs import KINDS, RMAP_SITES
from cowctx.trace import syscalls as sc
from cowctx.trace.events import Record, Recording

PREPARE = "__anon_vma_prepare"
LOST_RACE = f"free:{PREPARE}:lost-race-to-another-thread"
DELTA_KEYS = tuple(f"{k}.{w}" for k in KINDS for w in ("allocated", "freed"))
EXECVE_NRS = frozenset((sc.BY_NAME["execve"], sc.BY_NAME["execveat"]))


def joins_tree(r: Record, root: int) -> int | None:
    """The pid that becomes one of the program's tasks at record ``r``, if any: the
    first task at its execve (before it, it is the recorder's own child), and every
    task the tree creates (``task_newtask``)."""
    if r[0] == "newtask":
        return int(r[3])
    if r[0] == "enter" and r[2] == root and r[3] in EXECVE_NRS:
        return root
    return None


@dataclass
class KernelCounts:
    live: dict[int, str] = field(default_factory=dict)
    allocated: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    """Events left out, by reason and call site."""
    prepare: dict[int, list[int | None]] = field(default_factory=dict)
    """pid -> [chain, anon_vma] its last ``__anon_vma_prepare()`` allocated."""
    withdrawn: list[str] = field(default_factory=list)
    """Delta keys counted earlier and withdrawn by the last :meth:`account`
    (:meth:`take_withdrawn`)."""

    def take_withdrawn(self) -> list[str]:
        """What the last :meth:`account` call withdrew from earlier counts."""
        out, self.withdrawn = self.withdrawn, []
        return out

    def account(
        self, alloc: bool, kind: str, func: str, ptr: int, ours: bool, pid: int = 0
    ) -> str | None:
        """Fold one kmem record (run in ``pid``) in; returns the delta key it counted
        under, or None."""
        if alloc:
            if not ours:
                self.other[f"alloc:{func}:before-exec-or-foreign"] += 1
                return None
            if func not in RMAP_SITES:
                self.other[f"alloc:{func}:foreign-site"] += 1
                return None
            if ptr in self.live:
                self.other[f"alloc:{func}:live-pointer-reused"] += 1
            self.live[ptr] = kind
            self.allocated[kind] += 1
            if func == PREPARE:
                if kind == "anon_vma_chain":
                    self.prepare[pid] = [ptr, None]
                elif pid in self.prepare and self.prepare[pid][1] is None:
                    self.prepare[pid][1] = ptr
            return f"{kind}.allocated"
        owned = self.live.pop(ptr, None)
        if owned is None:
            self.other[f"free:{func}:foreign-object"] += 1
            return None
        if func == PREPARE and owned == "anon_vma_chain":
            self._lost_race(pid, ptr)
            return None
        self.freed[owned] += 1
        return f"{owned}.freed"

    def _lost_race(self, pid: int, chain: int) -> None:
        """``__anon_vma_prepare()`` freed the chain it allocated: another thread set
        ``vma->anon_vma`` first.  Its chain, and the anon_vma it allocated with it
        (freed just before by ``put_anon_vma()``), are withdrawn."""
        self.other[LOST_RACE] += 1
        self.allocated["anon_vma_chain"] -= 1
        self.withdrawn.append("anon_vma_chain.allocated")
        last = self.prepare.pop(pid, None)
        if last is None or last[0] != chain or last[1] is None:
            return
        anon_vma = last[1]
        self.allocated["anon_vma"] -= 1
        self.withdrawn.append("anon_vma.allocated")
        if self.live.pop(anon_vma, None) is None:  # freed already: withdraw that too
            self.freed["anon_vma"] -= 1
            self.withdrawn.append("anon_vma.freed")

    def totals(self) -> dict[str, dict[str, int]]:
        live = Counter(self.live.values())
        return {
            k: {"allocated": self.allocated[k], "freed": self.freed[k], "live": live[k]}
            for k in KINDS
        }


def live_peak(rec: Recording) -> int:
    """Where a comparison measures a recording: the index of the record before which
    the program's live anon_vma + anon_vma_chain count in the kernel is at its
    greatest (the first such moment) among the moments the replay is in step with the
    kernel; ``len(rec.records)`` when nothing is ever live there.

    A finished program has freed everything, so its end shows no objects and nothing
    to walk: the peak is where its rmap is largest.  In step means that no event is
    half done: the kernel allocates during a syscall (fork, execve, mmap) and the replay
    applies it at its exit record; it frees after sched_process_exit and the replay's
    exit is one step (until sched_process_free, the task is half done); a fault's kmem
    records follow it (the moment is before a record that is not kmem)."""
    root = rec.header["root_pid"]
    counts = KernelCounts()
    tree: set[int] = set()
    pending: set[int] = set()
    busy: set[int] = set()
    best, at = 0, len(rec.records)
    for idx, r in enumerate(rec.records):
        kind, pid = r[0], r[2]
        if kind != "kmem" and not busy and len(counts.live) > best:
            best, at = len(counts.live), idx
        joined = joins_tree(r, root)
        if joined is not None:
            tree.add(joined)
        if kind == "kmem":
            counts.account(bool(r[3]), r[4], r[5], r[6], pid in tree, pid)
            if pid in pending:
                busy.add(pid)
        elif kind == "enter":
            pending.add(pid)
        elif kind == "exit":
            pending.discard(pid)
            busy.discard(pid)
        elif kind == "exec" and r[3] != pid:  # de_thread(): the thread takes the pid
            for held in (pending, busy):
                if r[3] in held:
                    held.discard(r[3])
                    held.add(pid)
        elif kind == "exit_task":
            pending.discard(pid)
            busy.add(pid)
        elif kind == "free_task":
            busy.discard(pid)
    if not busy and len(counts.live) > best:
        at = len(rec.records)
    return at
