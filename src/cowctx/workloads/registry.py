"""The workload registry and the bridge from a generator to a Scenario."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import FORMAT, WINDOW_PAGES, Scenario
from cowctx.workloads import generators as g

MAX_COUNT = 100_000
"""Upper bound of a count parameter (processes, VMAs, rounds)."""


class WorkloadParamError(ValueError):
    """A workload parameter outside its range; the message names it, its value and the range."""


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

    def bounds(self, key: str) -> tuple[float, float]:
        """The allowed range of parameter ``key``: a fraction is 0 to 1, a page
        count fits the scenario window, any other count is 1 to :data:`MAX_COUNT`."""
        if isinstance(self.defaults[key], float):
            return 0.0, 1.0
        return 1, WINDOW_PAGES if key.endswith("pages") else MAX_COUNT

    def check(self, key: str, value: float) -> None:
        """Reject ``value`` for ``key`` unless in range (and whole for a count)."""
        lo, hi = self.bounds(key)
        shown = f"{value:g}"
        if isinstance(self.defaults[key], int) and value != int(value):
            raise WorkloadParamError(
                f"workload {self.name}: {key}={shown} is not a whole number ({lo} to {hi})"
            )
        if not lo <= value <= hi:
            raise WorkloadParamError(
                f"workload {self.name}: {key}={shown} is out of range: {lo:g} to {hi:g}"
            )


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
    and ``scale`` multiplies every integer size (1 = the default, real size).
    A parameter outside :meth:`Workload.bounds` raises :class:`WorkloadParamError`."""
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    w = WORKLOADS[name]
    unknown = set(params or {}) - set(w.defaults)
    if unknown:
        raise KeyError(
            f"workload {name} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it has {', '.join(w.defaults)}"
        )
    for key, value in (params or {}).items():
        w.check(key, value)
    values: dict[str, Any] = {}
    for key, default in w.defaults.items():
        if key in (params or {}):
            value = (params or {})[key]
            values[key] = int(value) if isinstance(default, int) else value
        elif isinstance(default, int) and key not in w.unscaled:
            # a scaled default stays in range: scale 0.01 of 32 workers is 1 worker
            lo, hi = w.bounds(key)
            values[key] = int(min(hi, max(lo, round(default * scale))))
        else:
            values[key] = default
    steps, files = w.build(**values)
    label = ",".join(f"{k}={v}" for k, v in values.items())
    data: dict[str, Any] = {
        "format": FORMAT,
        "name": f"{name}",
        "description": f"{w.models} ({label})",
        "steps": steps,
    }
    if files:
        data["files"] = {k: {"pages": v} for k, v in files.items()}
    return parse_scenario(data, f"<workload {name}>")
