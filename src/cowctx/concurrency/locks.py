"""Kernel lock kinds, whether they sleep, and the rmap lock order.

The order is the comment at the top of mm/rmap.c (Linux 6.18): inode->i_rwsem >
mmap_lock > invalidate_lock > folio_lock > vma_start_write > i_mmap_rwsem >
anon_vma->rwsem > page table lock.  A blocking acquisition of a lower-ranked
kind while holding a higher-ranked one is a ``lock_order`` violation; trylocks
are allowed against the order (that is how the kernel gets around it, e.g.
``folio_lock_anon_vma_read()``'s ``down_read_trylock``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LockKind:
    name: str
    rank: int
    """Position in the mm/rmap.c order (lower is taken first)."""
    sleeps: bool
    """A sleeping lock (rwsem, mutex, folio lock): illegal to wait for in atomic context."""
    shared: bool
    """Has a read mode (rwsem)."""


KINDS: dict[str, LockKind] = {
    k.name: k
    for k in (
        LockKind("i_rwsem", 0, True, True),
        LockKind("mmap_lock", 1, True, True),
        LockKind("invalidate_lock", 2, True, True),
        LockKind("folio_lock", 3, True, False),
        LockKind("vma_lock", 4, True, True),
        LockKind("i_mmap_rwsem", 5, True, True),
        LockKind("anon_vma", 6, True, True),
        LockKind("cow_context", 6, True, True),
        LockKind("ptl", 7, False, False),
        LockKind("spinlock", 8, False, False),
    )
}
"""``vma_lock``: the per-VMA lock (``vma_start_read``/``vma_start_write``);
``anon_vma``: the root's ``rwsem``; ``cow_context``: the per-context rwsem of
the ``cow_context_poc[stab_rwsem]`` scheme, where anon_vma's would be;
``ptl``: a page table's spinlock; ``spinlock``: any other spinlock (innermost)."""


def held_rank(kind: LockKind, mode: str) -> int:
    """The rank a held lock has in the order: the per-VMA lock held for reading
    (``vma_start_read()`` in ``lock_vma_under_rcu()``) stands in for the mmap
    lock of a fault, so a fault under it may take what one under ``mmap_read_lock()``
    may (``folio_lock_or_retry()`` in ``do_swap_page()``); the order's
    ``vma_start_write`` is the write side."""
    if kind.name == "vma_lock" and mode == "read":
        return KINDS["mmap_lock"].rank
    return kind.rank


@dataclass
class LockState:
    """One lock instance: who holds it, in which mode."""

    kind: LockKind
    label: str
    readers: dict[int, int] = field(default_factory=dict)
    """Thread id -> read holds."""
    writer: int | None = None
    lock_key: tuple[str, str, int] = ("lock", "", 0)
    """The dependence key of acquisitions (``("lock", kind, oid)``)."""
    unlocked_key: tuple[str, str, int] = ("unlocked", "", 0)
    """The dependence key of releases, read by trylocks."""
    labels: dict[str, str] = field(default_factory=dict)
    """Step labels by operation (``lock``, ``down_read_trylock``, ...), made once."""
    ptl_mm: int | None = None
    """For a page-table lock: the id of the mm whose page table it locks."""

    def op_label(self, op: str) -> str:
        label = self.labels.get(op)
        if label is None:
            label = self.labels[op] = f"{op} {self.label}"
        return label

    def can_take(self, tid: int, mode: str) -> bool:
        return self.can_read() if mode == "read" else self.can_write()

    def can_read(self) -> bool:
        return self.writer is None

    def can_write(self) -> bool:
        return self.writer is None and not self.readers

    def take(self, tid: int, mode: str) -> None:
        if mode == "read":
            self.readers[tid] = self.readers.get(tid, 0) + 1
        else:
            self.writer = tid

    def release(self, tid: int, mode: str) -> bool:
        """False when ``tid`` does not hold it in ``mode`` (unlocking a lock one
        does not hold: the kernel's rwsem would be corrupted)."""
        if mode == "read":
            held = self.readers.get(tid, 0)
            if not held:
                return False
            if held == 1:
                del self.readers[tid]
            else:
                self.readers[tid] = held - 1
            return True
        if self.writer != tid:
            return False
        self.writer = None
        return True

    def holders(self) -> list[int]:
        return sorted({*self.readers, *([self.writer] if self.writer is not None else [])})
