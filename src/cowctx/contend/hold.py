"""Hold-time calibration: how long fork and exit hold the root anon_vma for writing.

The cost model is fitted per operation (:mod:`cowctx.linux.timing`): a fork's or
exit's time is spread over its steps by class, and in the model many of those
steps are taken under ``anon_vma_lock_write()`` (the AVC links of
``anon_vma_clone()`` and ``anon_vma_fork()``, the interval-tree removals of
``unlink_anon_vmas()``), so the simulated write holds are as long as those
steps' share of the whole operation.  Contention depends on the holds, not on
the operation's total.

The kernel gives a bound.  ``try_to_unmap()`` takes the root for reading
*blocking*; a MADV_PAGEOUT walk that finds it write-held (or a writer queued)
sleeps, and ``lock:contention_begin`` (READ) records it
(:func:`cowctx.linux.harness.pageout_experiment`).  With the forker on the other
CPU at ``f`` fork+exit cycles per second and a fraction ``p`` of the pager's
walks sleeping, the root is write-held (or waited for) ``p`` of the time:
at most ``p / f`` per cycle (an upper bound: a walk also sleeps behind a writer
that is queued, not holding).  The model's hold per cycle at scale 1 is measured
by simulating the same pair on one CPU (no contention).  ``hold.scale`` =
kernel bound / model, capped at 1: the share of the locked steps' cost spent
inside the lock (:meth:`cowctx.contend.sim.Simulator._defer_past_hold`).

    python -m cowctx.contend.hold VALIDATION.json CALIBRATION.json [OUT]

writes the calibration (OUT, default CALIBRATION) with its ``hold`` block.
Exit 2 on a file it cannot use.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from cowctx.contend.costs import CostFileError, CostModel, from_json
from cowctx.contend.validate import simulate_pageout

SIM_NS = 100_000_000


def fit_hold_scale(measured: dict[str, Any], costs: CostModel, source: str) -> dict[str, Any]:
    """The ``hold`` block from a validation file's ``measured`` (pageout runs
    with lock waits) and the cost model it will go into."""
    try:
        two = measured["2cpu"]
        waits = sum(int(w["READ"]["n"]) for w in two["lock_waits"])
        walks = len(two["runs"]) * int(measured["iters"]) * int(measured["pages"])
        forks = float(statistics.median(two["forks_per_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: measured.2cpu: {type(exc).__name__}: {exc}") from exc
    if not walks or forks <= 0:
        raise ValueError(f"{source}: measured.2cpu: no walks or no forks")
    rate = waits / walks
    kernel_ns = rate / forks * 1e9
    one = dataclasses.replace(costs, hold_scale=1.0)
    sim = simulate_pageout(
        "anon_vma", 1, one, int(measured["pages"]), int(measured["sleepers"]), SIM_NS, True
    )
    held = sim["locks"].get("anon_vma:write", {})
    units = int(sim["forker_units"])
    model_ns = int(held.get("hold_total_ns", 0)) / units if units else 0.0
    scale = min(1.0, kernel_ns / model_ns) if model_ns else 1.0
    return {
        "scale": round(max(scale, 1e-6), 6),
        "kernel_read_waits": waits,
        "kernel_walks": walks,
        "kernel_forks_per_s": forks,
        "kernel_hold_per_cycle_ns_at_most": round(kernel_ns, 1),
        "model_hold_per_cycle_ns": round(model_ns, 1),
        "source": Path(source).name,
    }


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    vpath, cpath = Path(argv[0]), Path(argv[1])
    out = Path(argv[2]) if len(argv) == 3 else cpath
    try:
        measured = json.loads(vpath.read_text())["measured"]
        data = json.loads(cpath.read_text())
        costs = from_json(data, str(cpath))
        block = fit_hold_scale(measured, costs, str(vpath))
    except (OSError, KeyError, ValueError, CostFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data["hold"] = block
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps(block, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
