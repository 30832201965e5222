"""Explorer speed (issue 10): executions per second for two threads of about 50
steps each, and the DPOR reduction against naive enumeration on the race suite.

Run by `make bench` (benchmarks/run.py) or alone: ``python benchmarks/explore.py``.
Goal: 2,000 executions/s for two threads of about 50 steps.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.explorer import _Uniform, explore, random_walks
from cowctx.concurrency.program import ScenarioProgram
from cowctx.concurrency.scheduler import Execution
from cowctx.scenario.loader import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
RACES = ROOT / "scenarios" / "races"
SWITCH = {
    "anon-vma-prepare-lock.yaml": ("revert_prepare_lock", 2),
    "anon-vma-root-recheck.yaml": ("revert_root_recheck", 2),
    "fork-vma-lock.yaml": ("revert_fork_vma_lock", 2),
    "mremap-rmap-locks.yaml": ("revert_mremap_rmap_locks", 2),
    "vma-adjust-lock.yaml": ("revert_vma_adjust_lock", 2),
}

TWO_BY_FIFTY = {
    "format": "cowctx-scenario/1",
    "name": "bench-two-threads",
    "steps": [
        {"op": "mmap", "page": 0, "pages": 4},
        {"op": "write", "page": 0, "pages": 4},
        {"op": "fork", "child": "c1"},
    ],
    "threads": {
        "parent": [{"op": "write", "page": 0, "pages": 2}, {"op": "read", "page": 3}],
        "migrator": [{"op": "migrate", "page": 2}, {"op": "read", "page": 3}],
    },
}
"""Two threads of about 50 steps each (65 and 61 since the fault path's points
grew; 54 and 52 when the goal was set): two CoW faults and a read against a
migration and a read, after a fork."""

EARLIER = {
    **TWO_BY_FIFTY,
    "name": "bench-two-threads-8",
    "steps": [
        {"op": "mmap", "page": 0, "pages": 8},
        {"op": "write", "page": 0, "pages": 8},
        {"op": "fork", "child": "c1"},
    ],
    "threads": {
        "parent": [
            {"op": "write", "page": 0, "pages": 3},
            {"op": "referenced", "page": 4},
        ],
        "reclaimer": [{"op": "migrate", "page": 5}, {"op": "referenced", "page": 6}],
    },
}
"""The program this bench used before (87 and 64 steps since stores go through
the MMU model), for comparison with earlier figures."""


def _speed(doc: Mapping[str, Any], runs: int) -> tuple[float, float, list[int]]:
    """Best of 3 rounds of ``runs`` seeded random schedules: executions per second
    of wall-clock time and of this process's CPU time (the figure that other jobs
    on the two vCPUs do not dilute), and the steps of each thread in one execution."""
    p = ScenarioProgram(parse_scenario(doc, "bench"), "anon_vma")
    wall = cpu = 0.0
    for _ in range(3):
        c0 = time.process_time()
        report = random_walks(p, p.names, runs, seed=1)
        cpu = max(cpu, report.executions / (time.process_time() - c0))
        wall = max(wall, report.executions / report.seconds)
    ex = p.start()
    ex.run(lambda ex, enabled: enabled[0])
    steps = [sum(1 for e in ex.trace if e.tid == t.tid) for t in ex.threads]
    return wall, cpu, steps


def bench_speed(runs: int = 1000) -> dict[str, float]:
    """Seeded random schedules of the two-thread programs: executions/s and steps."""
    out: dict[str, float] = {}
    for label, doc in (("2 x ~50 steps", TWO_BY_FIFTY), ("earlier program", EARLIER)):
        wall, cpu, steps = _speed(doc, runs)
        out[f"explorer executions/s ({label}, random)"] = wall
        out[f"explorer executions/CPU-s ({label}, random)"] = cpu
        out[f"  steps of each thread ({label})"] = float(steps[0])
        out[f"  steps of each thread ({label}), second"] = float(steps[1])
    return out


class _Cell:
    """A toy shared object for the bare scheduler's threads."""


def bench_bare_scheduler(runs: int = 2000, steps: int = 63) -> dict[str, float]:
    """The scheduler alone: two threads of ``steps`` points each (a store every
    third), no model, uniform random schedules; CPU microseconds per step."""
    a, b = _Cell(), _Cell()

    def body(cell: _Cell) -> Callable[[], None]:
        def run() -> None:
            for i in range(steps):
                rt.point("load", cell, "x", i % 3 == 0)

        return run

    best = float("inf")
    for _ in range(3):
        rng = random.Random(1)
        c0 = time.process_time()
        for _ in range(runs):
            Execution([("a", body(a)), ("b", body(b))]).run(_Uniform(rng))
        best = min(best, (time.process_time() - c0) / runs / (2 * steps))
    return {"bare scheduler, CPU us per step (2 x 63 points, random)": best * 1e6}


def bench_reduction() -> dict[str, float]:
    """Executions of DPOR and naive enumeration at the same bound, per race file
    with its switch on."""
    out: dict[str, float] = {}
    for name, (switch, bound) in sorted(SWITCH.items()):
        scenario = load_scenario(RACES / name)
        design = f"anon_vma[{switch}]"
        p = ScenarioProgram(scenario, design)
        d = explore(p, p.names, bound=bound)
        n = explore(ScenarioProgram(scenario, design), p.names, bound=bound, naive=True)
        out[f"{name}: DPOR executions (bound {bound})"] = d.executions
        out[f"{name}: naive executions (bound {bound})"] = n.executions
        out[f"{name}: reduction (naive/DPOR)"] = n.executions / max(d.executions, 1)
    return out


def main() -> int:
    figures = {**bench_speed(), **bench_bare_scheduler(), **bench_reduction()}
    for key, value in figures.items():
        print(f"  {key:60s} {value:14,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
