"""The historical anchors in the simulation of the anon_vma design
(../shared/reference/concurrency.md section 5), with figures for docs/.

- AIM7's fork/exit storm (Nov 2009, linux-mm): every task is a descendant of one
  ancestor, so each fork (``anon_vma_fork()``) and exit (``unlink_anon_vmas()``)
  write-locks the same root anon_vma.  Throughput against CPUs, with and without
  a reclaim walker, beside CoW context.
- Commit 5beb49305251 ("mm: change anon_vma linking to fix multi-process server
  scalability issue") (v2.6.34): 1,000 children of 1,000 pages put a million
  pages in one anon_vma; one CPU walks 1,000 page tables per page while the
  others wait for the lock.  Here: C children share the root's pages (C from 1 to
  1,000; 64 pages: the walk length depends on C, not on the pages), 7 workers fork
  and reap in the same hierarchy, one walker (compaction's migration: a blocking
  read lock, like 2.6.33's page_referenced() on the anon_vma spinlock) on 8 CPUs.

``python -m cowctx.contend.anchors OUTDIR [--quick]`` writes the figures (SVG)
and the numbers (``anchors.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cowctx.contend.costs import CostModel, load
from cowctx.contend.drivers import Plan, make_plan
from cowctx.contend.run import RunResult, RunSpec, simulate
from cowctx.report.contention import line_svg
from cowctx.scenario import schema as S
from cowctx.scenario.loader import parse_scenario


def fanout_plan(children: int, pages: int = 64) -> Plan:
    """A root with ``pages`` faulted pages and ``children`` children that keep them
    mapped; workers fork and reap children of their own in the same hierarchy."""
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "page": 0, "pages": pages},
        {"op": "write", "page": 0, "pages": pages},
    ]
    steps += [{"op": "fork", "child": f"s{i}"} for i in range(children)]
    setup = parse_scenario(
        {"format": S.FORMAT, "name": f"fanout-{children}", "steps": steps},
        f"<5beb49305251 set-up, {children} children>",
    )
    unit: list[S.Step] = [
        S.ForkStep(op="fork", proc="p0", child="c"),
        S.ExitStep(op="exit", proc="c"),
    ]
    return Plan(
        "5beb49305251",
        f"{children} children of {pages} pages share the root anon_vma",
        setup,
        "p0",
        "c",
        unit,
    )


def five_beb(costs: CostModel, children: list[int], duration_ns: int) -> list[dict[str, Any]]:
    rows = []
    for c in children:
        r = simulate(fanout_plan(c), "anon_vma", RunSpec(8, duration_ns, 1, ("migrate",)), costs)
        locks = r.stats["locks"].get("anon_vma:write", {})
        waits = locks.get("wait", {})
        walks = r.stats["walks"].get("migrate", {})
        rows.append(
            {
                "children": c,
                "walk_p50_ns": walks.get("p50_ns", 0),
                "walk_max_ns": walks.get("max_ns", 0),
                "folios_walked": walks.get("folios", 0),
                "writer_wait_mean_ns": waits.get("mean_ns", 0),
                "writer_wait_max_ns": waits.get("max_ns", 0),
                "writer_wait_behind": locks.get("wait_by_holder_ns", {}),
                "units_per_s": r.stats["throughput_per_s"],
                "wall_s": round(r.wall_s, 1),
            }
        )
    return rows


def aim7(
    costs: CostModel, cpus: list[int], duration_ns: int, walkers: tuple[str, ...]
) -> list[RunResult]:
    plan = make_plan("fork-exit-storm")
    out = []
    for design in ("anon_vma", "cow_context"):
        for n in cpus:
            out.append(simulate(plan, design, RunSpec(n, duration_ns, 1, walkers), costs))
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m cowctx.contend.anchors OUTDIR [--quick]", file=sys.stderr)
        return 2
    out = Path(argv[0])
    quick = "--quick" in argv
    out.mkdir(parents=True, exist_ok=True)
    costs = load()
    cpus = [1, 2, 4, 8] if quick else [1, 2, 4, 8, 16, 32, 64]
    dur = 2_000_000 if quick else 10_000_000
    numbers: dict[str, Any] = {"costs": Path(costs.source).name, "duration_ns": dur}
    for label, walkers in (("aim7", ()), ("aim7_reclaim", ("reclaim",))):
        runs = aim7(costs, cpus, dur, walkers)
        series: dict[str, list[tuple[int, float]]] = {}
        for r in runs:
            series.setdefault(r.design, []).append((r.cpus, float(r.stats["throughput_per_s"])))
        title = "AIM7-style fork/exit storm" + (" + one reclaim walker" if walkers else "")
        (out / f"contend-{label}.svg").write_text(
            line_svg(title, "fork+exit units per simulated s", series) + "\n"
        )
        numbers[label] = [
            {
                "design": r.design,
                "cpus": r.cpus,
                "units_per_s": r.stats["throughput_per_s"],
                "anon_vma_write_wait_ns": r.stats["locks"]
                .get("anon_vma:write", {})
                .get("wait", {})
                .get("total_ns", 0),
                "rotation_rate": r.stats["walks"].get("reclaim", {}).get("rotation_rate", 0.0),
            }
            for r in runs
        ]
    kids = [1, 10, 100] if quick else [1, 10, 100, 1000]
    rows = five_beb(costs, kids, dur)
    numbers["5beb49305251"] = rows
    series = {
        "migration walk p50 (us)": [(r["children"], r["walk_p50_ns"] / 1000) for r in rows],
        "fork/exit wait for the lock, mean (us)": [
            (r["children"], r["writer_wait_mean_ns"] / 1000) for r in rows
        ],
    }
    (out / "contend-5beb49305251.svg").write_text(
        line_svg(
            "one walker, everyone waiting (8 CPUs)", "microseconds", series, width=560
        ).replace(">CPUs<", ">children sharing the anon_vma<")
        + "\n"
    )
    (out / "anchors.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    print(json.dumps(numbers["5beb49305251"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
