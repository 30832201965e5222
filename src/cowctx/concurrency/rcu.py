"""RCU as a scheduler rule (reference/concurrency.md section 2).

A grace period that starts at time t completes only after every reader that was
inside ``rcu_read_lock()`` at t has left that read-side section.
``synchronize_rcu()`` blocks its thread until then; ``call_rcu()``/``kfree_rcu()``
callbacks run as soon as it has completed (as early as the kernel may run them,
which is when a use-after-free shows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class GracePeriod:
    waits_for: dict[int, int]
    """Reader thread id -> the number of the read-side section it was in at the start."""


@dataclass
class Rcu:
    depth: dict[int, int] = field(default_factory=dict)
    """Thread id -> nesting depth of rcu_read_lock()."""
    section: dict[int, int] = field(default_factory=dict)
    """Thread id -> how many outermost read-side sections it has entered."""
    callbacks: list[tuple[GracePeriod, object, Callable[[], None]]] = field(default_factory=list)

    def read_lock(self, tid: int) -> None:
        d = self.depth.get(tid, 0)
        if d == 0:
            self.section[tid] = self.section.get(tid, 0) + 1
        self.depth[tid] = d + 1

    def read_unlock(self, tid: int) -> bool:
        """False for an unbalanced ``rcu_read_unlock()``."""
        d = self.depth.get(tid, 0)
        if not d:
            return False
        self.depth[tid] = d - 1
        return True

    def in_reader(self, tid: int) -> bool:
        return self.depth.get(tid, 0) > 0

    def start(self) -> GracePeriod:
        return GracePeriod({t: self.section[t] for t, d in self.depth.items() if d})

    def completed(self, gp: GracePeriod) -> bool:
        return all(
            not self.depth.get(t, 0) or self.section[t] != s for t, s in gp.waits_for.items()
        )

    def blocking(self, gp: GracePeriod) -> list[int]:
        """The readers a grace period still waits for."""
        return sorted(
            t for t, s in gp.waits_for.items() if self.depth.get(t, 0) and self.section[t] == s
        )

    def due(self) -> list[tuple[object, Callable[[], None]]]:
        """Callbacks whose grace period has completed, in queueing order."""
        ready = [(obj, cb) for gp, obj, cb in self.callbacks if self.completed(gp)]
        if ready:
            self.callbacks = [c for c in self.callbacks if not self.completed(c[0])]
        return ready
