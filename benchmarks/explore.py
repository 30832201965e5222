"""Explorer speed (issue 10): executions per second for two threads of about 50
steps each, and the DPOR reduction against naive enumeration on the race suite.

Run by `make bench` (benchmarks/run.py) or alone: ``python benchmarks/explore.py``.
Goal: 2,000 executions/s for two threads of about 50 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cowctx.concurrency.explorer import explore, random_walks
from cowctx.concurrency.program import ScenarioProgram
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


def bench_speed(runs: int = 2000) -> dict[str, float]:
    """Seeded random schedules of the two-thread program: executions/s and steps."""
    scenario = parse_scenario(TWO_BY_FIFTY, "bench")
    p = ScenarioProgram(scenario, "anon_vma")
    report = random_walks(p, p.names, runs, seed=1)
    ex = p.start()
    ex.run(lambda ex, enabled: enabled[0])
    return {
        "explorer executions/s (2 threads, random)": report.executions / report.seconds,
        "steps per execution": float(len(ex.trace)),
    }


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
    figures = {**bench_speed(), **bench_reduction()}
    for key, value in figures.items():
        print(f"  {key:60s} {value:14,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
