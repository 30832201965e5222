"""One simulated run, and a sweep of designs x CPU counts."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cowctx.contend.costs import CostModel
from cowctx.contend.drivers import Plan, start_machine, walker_body, worker_body
from cowctx.contend.sim import Simulator

BRIDGED_LOCKS = frozenset(
    {
        "cow_context.list_write_lock",
        "cow_context.remap_lock",
        "cow_context.concurrent_unmap_lock",
        "rcu",
    }
)
"""Ledger lock names of designs with no runtime hooks of their own (CoW context)."""


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
    if not design.startswith("anon_vma"):
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
    return RunResult(
        design, spec.cpus, workers, sim.stats.to_json(), sim.violations, time.perf_counter() - t0
    )


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
