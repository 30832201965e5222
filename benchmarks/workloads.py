"""The simulator's own time and peak memory for every workload, at the default
(real) size and at 10x, on the anon_vma and corrected CoW context designs.

Each run is a fresh Python process (so peak RSS is that run's), running the
workload with the oracle off; the end-of-run walk measurement of `cowctx
compare` is timed separately at the default size.  A run that exceeds the time
limit is reported as such, not retried.

    python benchmarks/workloads.py [--scales 1,10] [--timeout 900] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from cowctx.workloads import build_workload
from cowctx.scenario.runner import run_scenario
from cowctx.report.compare import measure_walks
name, design, scale, measure = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
params = {"apps": 1000} if name == "zygote-1000" else {}
scenario = build_workload("zygote" if name == "zygote-1000" else name, params, scale)
t = time.perf_counter()
run = run_scenario(scenario, design, check=False)
run_s = time.perf_counter() - t
walk_s = None
if measure:
    t = time.perf_counter()
    measure_walks(run.machine)
    walk_s = time.perf_counter() - t
print(json.dumps({"steps": len(scenario.steps), "run_s": run_s, "walk_s": walk_s,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def one(name: str, design: str, scale: float, measure: bool, timeout: float) -> dict:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, name, design, str(scale), "1" if measure else "0"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout)


def main() -> int:
    from cowctx.workloads import WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--designs", default="anon_vma,cow_context")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    rows = []
    names = [*WORKLOADS, "zygote-1000"]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    print(
        f"{'workload':18s} {'design':12s} {'scale':>5s} {'steps':>7s} {'run s':>8s} "
        f"{'walks s':>8s} {'peak MiB':>9s}"
    )
    for name in names:
        for design in args.designs.split(","):
            for scale in scales:
                if name == "zygote-1000" and scale != 1:
                    continue
                r = one(name, design, scale, scale == 1 and name != "zygote-1000", args.timeout)
                rows.append({"workload": name, "design": design, "scale": scale, **r})
                if "timeout" in r or "error" in r:
                    print(f"{name:18s} {design:12s} {scale:5g} {r}")
                    continue
                walks = "" if r["walk_s"] is None else f"{r['walk_s']:8.1f}"
                print(
                    f"{name:18s} {design:12s} {scale:5g} {r['steps']:7d} {r['run_s']:8.2f} "
                    f"{walks:>8s} {r['peak_mib']:9.0f}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
