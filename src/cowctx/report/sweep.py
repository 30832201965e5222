"""A workload across a range of one parameter, every design at each point, run in
parallel on a local process pool or on a Dask cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cowctx.jobs import map_in_order
from cowctx.report.compare import compare, lock_totals

METRICS: dict[str, str] = {
    "bytes": "bytes live at the end (all rmap objects and VMAs)",
    "rmap_objects": "rmap objects live at the end (anon_vma + anon_vma_chain, or contexts + "
    "remap entries + offset arrays + maple nodes)",
    "lock_acquisitions": "lock acquisitions by the workload (every kind and mode)",
    "held_vmas_objects": "VMAs and objects covered while those locks were held",
    "walk_shared": "page-table probes per folio_referenced walk of a shared folio (mean)",
    "walk_exclusive": "page-table probes per folio_referenced walk of an exclusive folio (mean)",
    "model_seconds": "the model's own time for the run and the measurement walks",
}


@dataclass
class SweepResult:
    workload: str
    param: str
    values: list[float]
    designs: list[str]
    points: list[dict[str, dict[str, float | None]]]
    """Per value: design -> metric -> value (None where it does not apply)."""
    fixed: dict[str, float]

    def series(self, metric: str) -> dict[str, list[float | None]]:
        return {d: [p[d].get(metric) for p in self.points] for d in self.designs}


def point_metrics(
    workload: str, params: dict[str, float], designs: list[str], scale: float
) -> dict[str, dict[str, float | None]]:
    """Run one point of a sweep (in a worker process or on a Dask worker)."""
    from cowctx.workloads import build_workload

    c = compare(build_workload(workload, params, scale), designs)
    out: dict[str, dict[str, float | None]] = {}
    for d in c.designs:
        objects = d.result.final.objects
        totals = lock_totals(d.workload_locks)
        ref = d.walks.get("folio_referenced", {})
        out[d.design] = {
            "bytes": float(sum((d.result.final.bytes or {}).values())),
            "rmap_objects": float(
                sum(n.live or 0 for k, n in objects.items() if k != "vm_area_struct")
            ),
            "lock_acquisitions": float(sum(v["acquisitions"] for v in totals.values())),
            "held_vmas_objects": float(sum(v["vmas"] + v["objects"] for v in totals.values())),
            "walk_shared": ref.get("shared", {}).get("mean"),
            "walk_exclusive": ref.get("exclusive", {}).get("mean"),
            "model_seconds": d.seconds,
        }
    return out


def sweep(
    workload: str,
    param: str,
    values: list[float],
    designs: list[str],
    *,
    fixed: dict[str, float] | None = None,
    scale: float = 1.0,
    dask_address: str | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Every value of ``param`` (other parameters from ``fixed``) on every design."""
    fixed = dict(fixed or {})
    jobs = [({**fixed, param: v}) for v in values]
    points = list(
        map_in_order(
            point_metrics,
            [(workload, j, designs, scale) for j in jobs],
            workers=workers,
            dask_address=dask_address,
            on_done=None if progress is None else lambda done, _total, _r: progress(done),
        )
    )
    return SweepResult(workload, param, list(values), designs, points, fixed)


def sweep_json(s: SweepResult) -> dict[str, Any]:
    return {
        "workload": s.workload,
        "param": s.param,
        "values": s.values,
        "fixed": s.fixed,
        "designs": s.designs,
        "metrics": METRICS,
        "points": [{"value": v, "designs": p} for v, p in zip(s.values, s.points, strict=True)],
    }
