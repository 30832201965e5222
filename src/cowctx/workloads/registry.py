"""The workload registry and the bridge from a generator to a Scenario."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import FORMAT, Scenario
from cowctx.workloads import generators as g


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[..., g.Steps]
    defaults: dict[str, int | float]
    models: str
    """What real behaviour it stands for."""
    files: dict[str, int] | None = None
    unscaled: frozenset[str] = frozenset()
    """Parameters ``scale`` leaves alone (counts of rounds, not sizes)."""


def _doc(fn: Callable[..., Any]) -> str:
    return " ".join((fn.__doc__ or "").split())


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "prefork", g.prefork, {"heap_pages": 4096, "workers": 32, "dirty": 0.1}, _doc(g.prefork)
        ),
        Workload(
            "zygote",
            g.zygote,
            {"heap_pages": 8192, "apps": 100, "app_pages": 64, "dirty": 0.02},
            _doc(g.zygote),
        ),
        Workload("fork-chain", g.fork_chain, {"depth": 16, "pages": 256}, _doc(g.fork_chain)),
        Workload(
            "fork-exit-storm",
            g.fork_exit_storm,
            {"iterations": 500, "vmas": 8, "pages": 64},
            _doc(g.fork_exit_storm),
        ),
        Workload(
            "many-vmas-fanout",
            g.many_vmas_fanout,
            {"vmas": 1000, "children": 100},
            _doc(g.many_vmas_fanout),
        ),
        Workload(
            "mremap-realloc",
            g.mremap_realloc,
            {"buffers": 32, "growths": 6, "start_pages": 4},
            _doc(g.mremap_realloc),
            unscaled=frozenset({"growths", "start_pages"}),
        ),
        Workload(
            "remap-cycles",
            g.remap_cycles,
            {"cycles": 40, "pages": 4},
            _doc(g.remap_cycles),
            unscaled=frozenset({"pages"}),
        ),
        Workload(
            "bgsave", g.bgsave, {"heap_pages": 8192, "snapshots": 3, "dirty": 0.2}, _doc(g.bgsave)
        ),
        Workload(
            "sharded-workers",
            g.sharded_workers,
            {"heap_pages": 8192, "workers": 64},
            _doc(g.sharded_workers),
        ),
        Workload(
            "build-jobs",
            g.build_jobs,
            {"jobs": 64, "parallel": 8, "job_pages": 256},
            _doc(g.build_jobs),
        ),
    )
}


def build_workload(
    name: str, params: dict[str, float] | None = None, scale: float = 1.0
) -> Scenario:
    """The workload as a validated scenario; ``params`` override the defaults
    and ``scale`` multiplies every integer size (1 = the default, real size)."""
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    w = WORKLOADS[name]
    unknown = set(params or {}) - set(w.defaults)
    if unknown:
        raise KeyError(
            f"workload {name} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it has {', '.join(w.defaults)}"
        )
    values: dict[str, Any] = {}
    for key, default in w.defaults.items():
        value = (params or {}).get(key, default)
        if isinstance(default, int):
            factor = scale if key not in (params or {}) and key not in w.unscaled else 1
            value = max(1, round(float(value) * factor))
        values[key] = value
    steps, files = w.build(**values)
    label = ",".join(f"{k}={v}" for k, v in values.items())
    data = {
        "format": FORMAT,
        "name": f"{name}",
        "description": f"{w.models} ({label})",
        "steps": steps,
    }
    if files:
        data["files"] = {k: {"pages": v} for k, v in files.items()}
    return parse_scenario(data, f"<workload {name}>")
