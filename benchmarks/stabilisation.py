"""The stabilisation suite's throughput (issue 11, item 5): a slice of the race
suite on one process and on a local process pool, jobs and executions per second,
and whether both gave the same results (they must: only wall-clock fields differ).

Run by `make bench` or alone: ``python benchmarks/stabilisation.py [--jobs N]
[--case GLOB] [--design D,...]``.  The whole suite is `make fuzz`'s last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fnmatch import fnmatchcase

from cowctx.concurrency.suite import stabilisation_suite
from cowctx.concurrency.suite.run import Options, Result, run_suite, strip_wall_clock


def _run(cases: list, designs: list[str], jobs: int) -> tuple[list[Result], float]:
    t0 = time.perf_counter()
    results = list(run_suite("stabilisation", cases, designs, Options(), jobs=jobs))
    return results, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--case", default="referenced×*@fork2", help="cases to run (a glob on the name)"
    )
    ap.add_argument("--design", default="anon_vma,cow_context")
    args = ap.parse_args()
    cases = [c for c in stabilisation_suite() if fnmatchcase(c.name, args.case)]
    designs = args.design.split(",")
    one, t1 = _run(cases, designs, 1)
    many, tn = _run(cases, designs, args.jobs)
    executions = sum(r["explore"]["executions"] for r in one if "explore" in r)
    same = [json.dumps(strip_wall_clock(r), sort_keys=True) for r in one] == [
        json.dumps(strip_wall_clock(r), sort_keys=True) for r in many
    ]
    print(
        f"[stabilisation suite: {len(cases)} cases x {len(designs)} designs, "
        f"{executions} executions]"
    )
    for label, seconds in (("1 process", t1), (f"{args.jobs} processes", tn)):
        print(
            f"  {label:14s} {seconds:8.1f} s  {len(one) / seconds:8.2f} jobs/s  "
            f"{executions / seconds:10,.0f} executions/s"
        )
    print(f"  same results on both: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
