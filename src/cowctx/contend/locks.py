"""Locks with the kernel's semantics, as state machines the simulator drives.

- rwsem (``mmap_lock``, the per-VMA lock, ``anon_vma->root->rwsem``): a reader
  gets in only when no writer holds it *and nobody waits* (``RWSEM_READ_FAILED_MASK``
  includes ``RWSEM_FLAG_WAITERS``): a waiting writer keeps new readers out (writer
  preference); ``down_read_trylock()``/``down_write_trylock()`` fail in the same
  cases.  On release to a free lock the head waiter is handed the lock: a writer
  alone, or, when the head is a reader, every reader in the queue up to
  ``MAX_READERS_WAKEUP`` (256), writers behind staying queued
  (``rwsem_mark_wake()``, since commit d3681e269fff ("locking/rwsem: Wake up
  almost all readers in wait queue") (v5.3)).
  A sleeping writer at the head is woken rather than handed the lock: a writer
  spinning on its CPU behind it takes the lock first (lock stealing), until the
  head has waited ``HANDOFF_NS`` (the handoff bit, ``RWSEM_FLAG_HANDOFF``).
- mutex / folio lock: exclusive, FIFO, the same stealing and hand-off.
- spinlock / page-table lock (qspinlock): exclusive, FIFO; waiters keep their
  CPU and spin.

Deliberate differences: optimistic spinners wait in the queue (the kernel keeps
them on the OSQ, outside the wait list), so a spinning writer keeps new readers
out as a queued one does; a stolen lock goes to the first spinning writer in
the queue, not to whichever CPU wins the cmpxchg.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from cowctx.concurrency.locks import LockKind

MAX_READERS_WAKEUP = 256
HANDOFF_NS = 4_000_000
"""``RWSEM_WAIT_TIMEOUT`` (4 jiffies at HZ=1000; mutexes hand off at once when a
waiter asks, approximated by the same bound): after waiting this long the first
waiter has the lock handed to it, no longer stolen."""


@dataclass
class Waiter:
    tid: int
    mode: str
    since: int
    """Simulated ns when it started waiting."""
    token: Any = None
    """The simulator's wake-up handle."""
    spinning: bool = False
    """Waiting on its CPU (a spinlock, or an optimistic spin)."""


class SimLock:
    """One lock instance."""

    __slots__ = ("kind", "readers", "waiters", "writer")

    def __init__(self, kind: LockKind) -> None:
        self.kind = kind
        self.readers: dict[int, int] = {}
        self.writer: int | None = None
        self.waiters: deque[Waiter] = deque()

    def free_for(self, mode: str) -> bool:
        """Whether ``mode`` could be taken now ignoring the queue."""
        if mode == "read" and self.kind.shared:
            return self.writer is None
        return self.writer is None and not self.readers

    def can_take(self, mode: str) -> bool:
        """The fast path and the trylocks: fail while anyone waits."""
        return not self.waiters and self.free_for(mode)

    def take(self, tid: int, mode: str) -> None:
        if mode == "read" and self.kind.shared:
            self.readers[tid] = self.readers.get(tid, 0) + 1
        else:
            if self.writer is not None or self.readers:
                raise RuntimeError(f"lock taken for write while held (tid {tid})")
            self.writer = tid

    def holders(self) -> list[int]:
        return sorted({*self.readers, *([self.writer] if self.writer is not None else [])})

    def idle(self) -> bool:
        return self.writer is None and not self.readers and not self.waiters

    def release(self, tid: int, mode: str, now: int = 0) -> list[Waiter]:
        """Release ``tid``'s hold; the waiters handed the lock (already holders).
        Raises ValueError when ``tid`` does not hold it in ``mode``."""
        if mode == "read" and self.kind.shared:
            held = self.readers.get(tid, 0)
            if not held:
                raise ValueError(f"tid {tid} releases a read hold it does not have")
            if held == 1:
                del self.readers[tid]
            else:
                self.readers[tid] = held - 1
        else:
            if self.writer != tid:
                raise ValueError(f"tid {tid} releases a lock it does not hold")
            self.writer = None
        return self.hand_off(now)

    def hand_off(self, now: int = 0) -> list[Waiter]:
        if not self.waiters or self.writer is not None or self.readers:
            return []
        head = self.waiters[0]
        if head.mode != "read" or not self.kind.shared:
            taker = head
            if not head.spinning and now - head.since < HANDOFF_NS:
                # the sleeping head is only woken: a writer spinning on its CPU
                # takes the lock first (lock stealing), unless the head has waited
                # long enough to have set the handoff bit
                taker = next((w for w in self.waiters if w.spinning and w.mode != "read"), head)
            self.waiters.remove(taker)
            self.take(taker.tid, taker.mode)
            return [taker]
        granted: list[Waiter] = []
        keep: deque[Waiter] = deque()
        for w in self.waiters:
            if w.mode == "read" and len(granted) < MAX_READERS_WAKEUP:
                self.take(w.tid, "read")
                granted.append(w)
            else:
                keep.append(w)
        self.waiters = keep
        return granted
