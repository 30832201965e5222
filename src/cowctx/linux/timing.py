"""Timings of this kernel for the contention simulation's cost model.

Scenarios that vary one size at a time (pages, VMAs, processes, mappers of a
folio) run on the kernel referee (:mod:`cowctx.linux.executor`, pinned to one
CPU, ``time_ns`` measured in the worker around each syscall, touch or clone;
for ``exit`` from the command to the zombie).  Each runs ``repeats`` times;
the median is fitted, the spread (interquartile range over median) recorded as
the noise: the machine's two cores are shared with other work.  The model runs
the same scenarios and counts its steps per class (:mod:`cowctx.contend.count`);
:func:`fit_costs` regresses time on counts, per operation, with non-negative
least squares.  The walker's per-mapper cost comes from the MADV_PAGEOUT series
that varies only the number of processes sharing the folio's anon_vma:
differences to the smallest size, so the per-folio part (swap slot, I/O
submission) drops out.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowctx.contend.costs import CLASSES
from cowctx.contend.count import step_counts
from cowctx.contend.fit import fit
from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import FORMAT, Scenario

Steps = list[dict[str, Any]]


def _fork_pages(p: int) -> Steps:
    return [
        {"op": "mmap", "page": 0, "pages": p},
        {"op": "write", "page": 0, "pages": p},
        {"op": "fork", "child": "c1"},
        {"op": "exit", "proc": "c1"},
    ]


def _fork_vmas(v: int) -> Steps:
    steps: Steps = []
    for i in range(v):
        steps += [
            {"op": "mmap", "page": 5 * i, "pages": 4},
            {"op": "write", "page": 5 * i, "pages": 4},
        ]
    return [*steps, {"op": "fork", "child": "c1"}, {"op": "exit", "proc": "c1"}]


def _fork_procs(k: int) -> Steps:
    steps: Steps = [
        {"op": "mmap", "page": 0, "pages": 64},
        {"op": "write", "page": 0, "pages": 64},
    ]
    steps += [{"op": "fork", "child": f"s{i}"} for i in range(k)]
    return [*steps, {"op": "fork", "child": "c1"}, {"op": "exit", "proc": "c1"}]


def _faults(p: int) -> Steps:
    return [
        {"op": "mmap", "page": 0, "pages": p},
        {"op": "write", "page": 0, "pages": p},
        {"op": "munmap", "page": 0, "pages": p},
    ]


def _reads(p: int) -> Steps:
    return [{"op": "mmap", "page": 0, "pages": p}, {"op": "read", "page": 0, "pages": p}]


def _pageout_pages(p: int) -> Steps:
    """Zero-filled folios: swap-out marks the zeromap, no I/O (commit 0ca0c24e3211
    (v6.12)): the timing is the CPU's, not the disk's."""
    return [
        {"op": "mmap", "page": 0, "pages": p},
        {"op": "write", "page": 0, "pages": p, "value": 0},
        {"op": "madvise", "page": 0, "pages": p, "advice": "pageout"},
    ]


PAGEOUT_PAGES = 32


def _pageout_mappers(k: int) -> Steps:
    """Folios of a parent walked past ``k`` other processes' page tables: the parent
    maps 2P pages, writes them, forks ``k`` children, unmaps its first half (its
    VMA now starts at pgoff P, the children's at 0: they come first in the
    anon_vma's interval tree) and writes its second half (CoW: new folios of its
    own, in the root anon_vma).  MADV_PAGEOUT of those probes ``k`` children's
    page tables (misses) before the parent's (the shape of commit 5beb49305251)."""
    p = PAGEOUT_PAGES
    steps: Steps = [
        {"op": "mmap", "page": 0, "pages": 2 * p},
        {"op": "write", "page": 0, "pages": 2 * p},
    ]
    steps += [{"op": "fork", "child": f"s{i}"} for i in range(k)]
    return [
        *steps,
        {"op": "munmap", "page": 0, "pages": p},
        {"op": "write", "page": p, "pages": p, "value": 0},
        {"op": "madvise", "page": p, "pages": p, "advice": "pageout"},
    ]


@dataclass(frozen=True)
class Series:
    name: str
    build: Callable[[int], Steps]
    sizes: tuple[int, ...]
    what: str


SERIES: tuple[Series, ...] = (
    Series("fork_pages", _fork_pages, (1, 64, 256, 1024, 4096), "pages of one VMA"),
    Series("fork_vmas", _fork_vmas, (1, 8, 32, 128), "VMAs of 4 pages"),
    Series("fork_procs", _fork_procs, (0, 8, 32, 96), "live siblings sharing the anon_vma"),
    Series("faults", _faults, (16, 256, 1024, 4096), "pages faulted, then unmapped"),
    Series("reads", _reads, (16, 256, 1024, 4096), "pages read (zero page)"),
    Series("pageout_pages", _pageout_pages, (16, 64, 256), "pages paged out"),
    Series("pageout_mappers", _pageout_mappers, (0, 4, 16, 48), "processes in the anon_vma tree"),
)

SMALL: tuple[Series, ...] = (
    Series("fork_pages", _fork_pages, (1, 256), "pages of one VMA"),
    Series("pageout_mappers", _pageout_mappers, (0, 8), "processes in the anon_vma tree"),
)
"""A tiny slice for the kernel test."""


def scenario_of(series: Series, size: int) -> Scenario:
    data = {
        "format": FORMAT,
        "name": f"calib-{series.name}-{size}".replace("_", "-"),
        "description": f"calibration: {series.what} = {size}",
        "steps": series.build(size),
    }
    return parse_scenario(data, f"<calibration {series.name} {size}>")


def measure(
    series: tuple[Series, ...] = SERIES,
    repeats: int = 7,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every size of every series ``repeats`` times on the kernel; per step:
    the samples, their median and spread, and the model's class counts."""
    from cowctx.linux.executor import KernelSession

    rows: list[dict[str, Any]] = []
    with KernelSession(graph=False) as session:
        for s in series:
            for size in s.sizes:
                sc = scenario_of(s, size)
                samples: list[list[int]] = [[] for _ in sc.steps]
                for _ in range(repeats):
                    result = session.run(sc)
                    for i, st in enumerate(result.steps):
                        if st.time_ns is not None:
                            samples[i].append(int(st.time_ns))
                counts = step_counts(sc)
                for i, step in enumerate(sc.steps):
                    xs = sorted(samples[i])
                    if not xs:
                        continue
                    med = statistics.median(xs)
                    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [med, med, med]
                    rows.append(
                        {
                            "series": s.name,
                            "size": size,
                            "step": i,
                            "op": step.op,
                            "samples_ns": xs,
                            "median_ns": med,
                            "iqr_over_median": round((q[2] - q[0]) / med, 4) if med else 0.0,
                            "counts": counts[i],
                        }
                    )
                if progress is not None:
                    progress(f"{s.name} {size}")
    return rows


MEASURED_OPS = {
    "fork": ("fork_pages", "fork_vmas", "fork_procs"),
    "exit": ("fork_pages", "fork_vmas", "fork_procs"),
    "write": ("faults", "pageout_pages", "fork_pages", "fork_vmas"),
    "read": ("reads",),
    "munmap": ("faults",),
    "mmap": ("faults", "reads", "fork_pages", "pageout_pages"),
    "madvise": ("pageout_pages", "pageout_mappers"),
}
"""Which series' steps each operation is fitted from (the last fork, exit, the
measured write...: every step of that op in those series)."""


def _measured_step(row: dict[str, Any]) -> bool:
    """The steps a series is about (set-up forks of siblings are fitted too: they
    are forks like any other)."""
    return row["op"] in MEASURED_OPS and row["series"] in MEASURED_OPS[row["op"]]


def fit_costs(rows: list[dict[str, Any]], wakeup_ns: float) -> dict[str, Any]:
    """The cost model (``fit``) and its quality (``residuals``) from measured rows."""
    base: dict[str, float] = {}
    step: dict[str, dict[str, float]] = {}
    quality: dict[str, Any] = {}
    for op in MEASURED_OPS:
        mine = [r for r in rows if r["op"] == op and _measured_step(r)]
        if len(mine) < 2:
            continue
        names = ["base", *CLASSES]
        x = [[1.0] + [float(r["counts"][c]) for c in CLASSES] for r in mine]
        y = [float(r["median_ns"]) for r in mine]
        f = fit(names, x, y)
        base[op] = round(f.coef["base"], 1)
        step[op] = {c: round(f.coef[c], 2) for c in CLASSES}
        quality[op] = {
            "rows": len(mine),
            "r2": round(f.r2, 4),
            "rms_ns": round(f.rms, 1),
            "residuals": [
                {
                    "series": r["series"],
                    "size": r["size"],
                    "step": r["step"],
                    "measured_ns": r["median_ns"],
                    "residual_ns": round(e, 1),
                }
                for r, e in zip(mine, f.residuals, strict=True)
            ],
        }
    walk = _walk_fit(rows)
    if walk is not None:
        step["reclaim"], quality["reclaim"] = walk
        base["reclaim"] = _per_folio(rows)
    return {
        "fit": {"base_ns": base, "step_ns": step, "wakeup_ns": round(wakeup_ns, 1)},
        "quality": quality,
    }


def _per_folio(rows: list[dict[str, Any]]) -> float:
    """What MADV_PAGEOUT spends per folio with one mapper (slope of its time over
    the pages of the ``pageout_pages`` series): isolation, the folio lock, a
    one-mapper walk, the unmap, a zeromap swap-out.  The walkers' per-folio cost,
    before each further mapper's (:func:`_walk_fit`)."""
    pts = [
        (float(r["size"]), float(r["median_ns"]))
        for r in rows
        if r["series"] == "pageout_pages" and r["op"] == "madvise"
    ]
    if len(pts) < 2:
        return 0.0
    f = fit(["base", "per_folio"], [[1.0, x] for x, _ in pts], [y for _, y in pts])
    return round(f.coef["per_folio"], 1)


def refit(path: Path) -> dict[str, Any]:
    """Fit a calibration file's stored raw measurements again (no kernel needed):
    its ``fit`` and ``quality`` from its ``raw`` and ``wakeup``."""
    data = json.loads(path.read_text())
    data.update(fit_costs(data["raw"], float(data["wakeup"]["median_ns"])))
    return data


def _walk_fit(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]] | None:
    """Per-mapper walk cost: MADV_PAGEOUT time minus the zero-mapper time, on the
    count differences, no intercept."""
    mine = sorted(
        (r for r in rows if r["series"] == "pageout_mappers" and r["op"] == "madvise"),
        key=lambda r: r["size"],
    )
    if len(mine) < 2:
        return None
    ref = mine[0]
    x = [[float(r["counts"][c] - ref["counts"][c]) for c in CLASSES] for r in mine[1:]]
    y = [float(r["median_ns"] - ref["median_ns"]) for r in mine[1:]]
    f = fit(list(CLASSES), x, y)
    return (
        {c: round(f.coef[c], 2) for c in CLASSES},
        {
            "rows": len(y),
            "r2": round(f.r2, 4),
            "rms_ns": round(f.rms, 1),
            "per_mapper_ns": [
                round(dy / (r["size"] - ref["size"]), 1) for dy, r in zip(y, mine[1:], strict=True)
            ],
            "residuals": [
                {"size": r["size"], "measured_delta_ns": dy, "residual_ns": round(e, 1)}
                for r, dy, e in zip(mine[1:], y, f.residuals, strict=True)
            ],
        },
    )


def machine_info() -> dict[str, Any]:
    import os

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "kernel": platform.release(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(v, 2) for v in load],
    }


def calibrate(
    out: Path,
    repeats: int = 7,
    series: tuple[Series, ...] = SERIES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure, fit and write ``out`` (JSON: ``machine``, ``fit``, ``quality``,
    ``raw``)."""
    from cowctx.linux.harness import wakeup_latency_ns

    info = machine_info()
    t0 = time.time()
    rows = measure(series, repeats, progress)
    wake = wakeup_latency_ns()
    data: dict[str, Any] = {"machine": info}
    data.update(fit_costs(rows, wake["median_ns"]))
    data["wakeup"] = wake
    data["repeats"] = repeats
    data["seconds"] = round(time.time() - t0, 1)
    data["raw"] = rows
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    return data


def default_path() -> Path:
    """data/calibration/<kernel major.minor>-<cpu>-<host>.json in the repository."""
    import re
    import socket

    from cowctx.contend.costs import DATA_DIR

    rel = ".".join(platform.release().split(".")[:2])
    cpu = re.sub(r"[^a-z0-9]+", "-", str(machine_info()["cpu"]).lower()).strip("-")
    host = re.sub(r"[^a-z0-9]+", "-", socket.gethostname().lower()).strip("-")
    return DATA_DIR / f"{rel}-{cpu}-{host}.json"
