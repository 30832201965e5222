"""The model's steps of each class, counted per scenario step.

A runtime that never blocks (every lock is free: one thread) and counts each hook
by class (:func:`cowctx.contend.costs.classify`).  The calibration regresses the
kernel's time of a scenario step on these counts for the same step, so the fitted
cost per class is what the kernel spends per model step of that class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cowctx.concurrency import runtime as rt
from cowctx.contend.costs import CLASSES, classify
from cowctx.scenario import schema as S
from cowctx.scenario.runner import run_scenario, run_step


@dataclass
class _Me:
    """The one thread the counter runs (what the runtime reads of a thread)."""

    tid: int = 0
    name: str = "counter"
    local: dict[str, object] = field(default_factory=dict)
    walk: object = None


class Counter:
    """A runtime hook object (duck-types the explorer's Execution) that counts."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(CLASSES, 0)
        self.running = _Me()
        self.violations: list[tuple[str, str]] = []
        self.mappings_of: Callable[[int], set[tuple[int, int]]] | None = None
        """No walk is checked (the runtime's walk hooks ask this)."""

    def reset(self) -> dict[str, int]:
        out, self.counts = self.counts, dict.fromkeys(CLASSES, 0)
        return out

    def point(self, kind: str, obj: object, fld: object, write: bool) -> None:
        self.counts[classify(obj, fld)] += 1

    def points(self, kind: str, accesses: list[tuple[object, object, bool]]) -> None:
        """One step, of the first access's class (the simulator charges it so)."""
        if accesses:
            obj, fld, _ = accesses[0]
            self.counts[classify(obj, fld)] += 1

    def pte(self, mm: object, vpn: int, write: bool, folios: tuple[object, ...]) -> None:
        """One ``pte`` step (the class of its first access, the PTE)."""
        self.counts["pte"] += 1

    def guarded_store(self, obj: object, fld: str, kind: str, lock_obj: object) -> None:
        self.counts[classify(obj, fld)] += 1

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        self.counts["lock"] += 1
        return True

    def unlock(self, kind: str, obj: object, mode: str) -> None:
        self.counts["lock"] += 1

    def rcu_read_lock(self) -> None:
        self.counts["lock"] += 1

    def rcu_read_unlock(self) -> None:
        return None

    def synchronize_rcu(self) -> None:
        return None

    def call_rcu(self, obj: object, callback: Callable[[], None]) -> None:
        callback()

    def may_sleep(self, where: str) -> None:
        return None

    def slab_alloc(self, cache: str) -> object | None:
        self.counts["rmap"] += 1
        return None

    def slab_free(self, cache: str, obj: object, typesafe: bool) -> None:
        self.counts["rmap"] += 1

    def wait_until(self, kind: str, obj: object, fld: object, ready: Callable[[], bool]) -> None:
        return None

    def walk_begin(self, folio: object) -> None:
        return None

    def walk_visit(self, mm_id: int, address: int) -> None:
        return None

    def walk_end(self, complete: bool) -> None:
        return None

    def violation(self, kind: str, detail: str) -> None:
        self.violations.append((kind, detail))


def step_counts(scenario: S.Scenario, design: str = "anon_vma") -> list[dict[str, int]]:
    """The class counts of every step of ``scenario`` run sequentially on ``design``
    (MADV_PAGEOUT with swap on, as the kernel referee runs it)."""
    run = run_scenario(scenario.model_copy(update={"steps": []}), design, check=False)
    run.machine.swap_enabled = True
    counter = Counter()
    out = []
    prev, rt.current = rt.current, counter  # type: ignore[assignment]
    try:
        for step in scenario.steps:
            counter.reset()
            run_step(run, step)
            out.append(counter.reset())
    finally:
        rt.current = prev
    return out
