"""One simulated run, and a sweep of designs x CPU counts."""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import cowctx.designs
from cowctx.clients.referenced import folio_referenced
from cowctx.concurrency import runtime as rt
from cowctx.contend.costs import CostModel
from cowctx.contend.count import Counter
from cowctx.contend.drivers import Plan, start_machine, walker_body, worker_body
from cowctx.contend.sim import Simulator
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.scenario import schema as S
from cowctx.scenario.runner import run_scenario, run_step

BRIDGED_LOCKS = frozenset(
    {
        "cow_context.list_write_lock",
        "cow_context.remap_lock",
        "cow_context.concurrent_unmap_lock",
        "rcu",
    }
)
"""Ledger lock names bridged into simulated locks for a design whose own code
calls no synchronisation hook (:func:`design_calls_hooks`)."""

DESIGN_PACKAGE = cowctx.designs.__name__ + "."
"""A hook called from a module under here is the design's own."""


class _HookProbe(Counter):
    """A counting runtime that also counts the synchronisation hooks (locks,
    RCU) called from a design's own modules (the caller of the runtime function)."""

    def __init__(self) -> None:
        super().__init__()
        self.design_hooks = 0

    def _from_design(self) -> None:
        # this frame <- the hook method <- the runtime function <- its caller
        caller = sys._getframe(3).f_globals.get("__name__", "")
        if caller.startswith(DESIGN_PACKAGE):
            self.design_hooks += 1

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        self._from_design()
        return super().lock(kind, obj, mode, try_only)

    def unlock(self, kind: str, obj: object, mode: str) -> None:
        self._from_design()
        super().unlock(kind, obj, mode)

    def rcu_read_lock(self) -> None:
        self._from_design()
        super().rcu_read_lock()

    def rcu_read_unlock(self) -> None:
        self._from_design()
        super().rcu_read_unlock()


PROBE = S.Scenario(
    format="cowctx-scenario/1",
    name="contend-hook-probe",
    steps=[
        S.MmapStep(op="mmap", proc="p0", page=0, pages=4, prot="rw"),
        S.WriteStep(op="write", proc="p0", page=0, pages=4),
    ],
)
"""The set-up of :func:`design_calls_hooks`; then a fork, a CoW write in the
child, a reclaim walk of a shared folio and the child's exit run under the probe."""


@cache
def design_calls_hooks(design: str) -> bool:
    """Whether ``design``'s own code calls the runtime's lock or RCU hooks: run
    a fork, a CoW fault, an rmap walk and an exit on it under a probe and see
    whether any such hook comes from a design module.  A design that calls none
    gets its ledger lock records bridged (:meth:`Simulator.bridge_ledger`);
    one that does is simulated through its hooks alone (bridging it too would
    take each lock twice)."""
    run = run_scenario(PROBE, design, check=False)
    probe = _HookProbe()
    prev, rt.current = rt.current, probe  # type: ignore[assignment]
    try:
        run_step(run, S.ForkStep(op="fork", proc="p0", child="c0"))
        run_step(run, S.WriteStep(op="write", proc="c0", page=0, pages=1))
        m = run.machine
        folio = m.folio_at(run.procs["p0"], 1 << PAGE_SHIFT)
        if folio is not None:
            folio_referenced(m, folio)
        run_step(run, S.ExitStep(op="exit", proc="c0"))
    finally:
        rt.current = prev
    return probe.design_hooks > 0


@dataclass
class RunSpec:
    cpus: int
    duration_ns: int
    seed: int = 1
    walkers: tuple[str, ...] = ("reclaim",)
    workers: int | None = None
    """Default: one per CPU left after the walkers (at least one)."""
    walker_pace_ns: int = 0
    quantum_ns: int = 0

    def n_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, self.cpus - len(self.walkers))


@dataclass
class RunResult:
    design: str
    cpus: int
    workers: int
    stats: dict[str, Any]
    violations: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0


def simulate(
    plan: Plan, design: str, spec: RunSpec, costs: CostModel, trace: Any | None = None
) -> RunResult:
    """``plan`` on ``design`` with ``spec.cpus`` CPUs for ``spec.duration_ns``."""
    t0 = time.perf_counter()
    workers = spec.n_workers()
    run = start_machine(plan, design, workers)
    sim = Simulator(spec.cpus, costs, trace, spec.quantum_ns)
    bridged = not design_calls_hooks(design)
    if bridged:
        sim.bridge_ledger(run.machine.ledger, BRIDGED_LOCKS)
    rng = random.Random(spec.seed)
    starts = []
    for i in range(workers):
        sim.add_thread(f"w{i}", "worker", worker_body(sim, run, plan, f"w{i}"))
        starts.append(rng.randrange(1000))
    for j, kind in enumerate(spec.walkers):
        n = 1 << 30
        body = walker_body(sim, run, plan, kind, rng.randrange(n), spec.walker_pace_ns)
        sim.add_thread(f"{kind}{j}", kind, body)
        starts.append(rng.randrange(1000))
    sim.run(spec.duration_ns, starts)
    stats = sim.stats.to_json()
    stats["ledger_bridged"] = bridged
    return RunResult(design, spec.cpus, workers, stats, sim.violations, time.perf_counter() - t0)


def sweep(
    plan: Plan,
    designs: list[str],
    cpus: list[int],
    spec: RunSpec,
    costs: CostModel,
    progress: Callable[[str], None] | None = None,
) -> list[RunResult]:
    out = []
    for design in designs:
        for n in cpus:
            one = dataclasses.replace(spec, cpus=n)
            r = simulate(plan, design, one, costs)
            if progress is not None:
                progress(f"{design} cpus={n}: {r.stats['throughput_per_s']}/s ({r.wall_s:.1f}s)")
            out.append(r)
    return out
