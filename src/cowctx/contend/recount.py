"""Re-count a calibration's model steps with today's model and fit again.

A calibration file keeps, for each measured scenario step, the kernel's times and
the model's step counts by class *as the model was then*.  When the model gains
steps (more points, locks, the ``points`` of one MMU store), the stored fit
charges the old per-step costs for the new, larger counts.  The kernel's times
stay valid: this counts the same scenarios again (:func:`step_counts`) and refits
(:func:`cowctx.linux.timing.fit_costs`), no kernel needed.

    python -m cowctx.contend.recount data/calibration/6.18-amd-epyc-vm.json [OUT]

prints each (operation, class) whose count changed and writes the recounted file
to OUT (default: print only).  Exit 2 on a file it cannot read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cowctx.contend.count import step_counts
from cowctx.linux.timing import SERIES, fit_costs, scenario_of


def recount(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """``data`` with every raw row's counts re-counted and the fit redone, and a
    line per (op, class) whose counts changed (rows changed, an example)."""
    by_name = {s.name: s for s in SERIES}
    counted: dict[tuple[str, int], list[dict[str, int]]] = {}
    changed: dict[tuple[str, str], list[str]] = {}
    out = json.loads(json.dumps(data))
    for i, row in enumerate(out["raw"]):
        series = by_name.get(row["series"])
        if series is None:
            raise ValueError(f"{source}: raw[{i}].series: unknown series {row['series']!r}")
        key = (row["series"], int(row["size"]))
        if key not in counted:
            counted[key] = step_counts(scenario_of(series, key[1]))
        new = counted[key][int(row["step"])]
        for c, v in new.items():
            if row["counts"].get(c) != v:
                changed.setdefault((row["op"], c), []).append(
                    f"{row['series']}={row['size']}: {row['counts'].get(c)} -> {v}"
                )
        row["counts"] = new
    out.update(fit_costs(out["raw"], float(out["wakeup"]["median_ns"])))
    lines = [f"{op} {c}: {len(ex)} rows, e.g. {ex[0]}" for (op, c), ex in sorted(changed.items())]
    return out, lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        data = json.loads(path.read_text())
        new, lines = recount(data, str(path))
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as exc:
        print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for line in lines or ["no count changed"]:
        print(line)
    for op in sorted(new["fit"]["step_ns"]):
        print(
            f"fit {op}: base {new['fit']['base_ns'].get(op, 0):.0f} ns, {new['fit']['step_ns'][op]}"
        )
    if len(argv) == 2:
        Path(argv[1]).write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
