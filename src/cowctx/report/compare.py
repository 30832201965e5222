"""Run one scenario or workload on several designs and gather what a kernel
developer compares: objects and bytes per kind, the VMA size effect, lock
acquisitions by kind and mode with what they covered, and rmap walk cost
(mean, p99, max; exclusive and shared folios apart), measured at the end by
running ``folio_referenced`` and migration over every anon folio."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cowctx.metrics.ledger import WALK_UNITS
from cowctx.oracle.clients import check_migrate, check_referenced
from cowctx.oracle.oracle import scan_page_tables
from cowctx.report.graph import machine_dot
from cowctx.scenario.results import ScenarioResult
from cowctx.scenario.runner import run_scenario
from cowctx.scenario.schema import Scenario

MEASURE_OP = "measure"
"""Ledger operation name of the end-of-run walks (kept apart from the workload's)."""
CLIENTS = ("folio_referenced", "try_to_migrate", "remove_migration_ptes")
GRAPH_LIMIT = (12, 80)
"""Draw the hierarchy of runs with at most this many processes and VMAs."""
COST_UNIT = "pt_probes"
"""The walk cost summarised as mean/p99/max: page-table probes, the work every
design does per candidate mapping."""


@dataclass
class DesignResult:
    design: str
    result: ScenarioResult
    """The scenario result (SCENARIO.md shape) at the end of the workload."""
    walks: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """client -> ``exclusive``/``shared`` -> statistic -> value."""
    workload_locks: list[dict[str, Any]] = field(default_factory=list)
    measure_locks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    client_misses: int = 0
    """Mappings the measurement walks missed (folio_referenced short of mapcount,
    migration leaving a mapping or a migration entry behind)."""
    graph_dot: str | None = None
    """The hierarchy at the end, for small runs (see :data:`GRAPH_LIMIT`)."""


@dataclass
class Comparison:
    scenario: str
    description: str
    designs: list[DesignResult]
    kernel: ScenarioResult | None = None
    """The kernel's result for the same steps, where it could be observed."""
    kernel_reason: str | None = None
    recording: dict[str, Any] | None = None
    """For a recording (:mod:`cowctx.report.recording`): its file, command, size, flags
    and where it was measured."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (deterministic, no interpolation)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def walk_summary(records: list[Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for client in CLIENTS:
        for shared in (False, True):
            mine = [r for r in records if r.client == client and r.shared == shared]
            if not mine:
                continue
            costs = [float(r.cost[COST_UNIT]) for r in mine]
            stats: dict[str, float] = {
                "walks": len(mine),
                "mean": sum(costs) / len(costs),
                "p99": percentile(costs, 0.99),
                "max": max(costs),
            }
            for unit in WALK_UNITS:
                stats[f"mean_{unit}"] = sum(r.cost[unit] for r in mine) / len(mine)
            out.setdefault(client, {})["shared" if shared else "exclusive"] = stats
    return out


def measure_walks(machine: Any) -> list[str]:
    """folio_referenced, then migration, of every mapped anon folio (KSM folios
    too); returns what the clients missed (mappings a walk did not find)."""
    folios = sorted(
        (f for f in machine.mem_map.values() if f.anon and f.mapcount), key=lambda f: f.pfn
    )
    truth = scan_page_tables(machine)  # migrating one folio moves no other's mappings
    problems: list[str] = []
    with machine.operation(MEASURE_OP):
        for folio in folios:
            problems += check_referenced(machine, folio)
        for folio in folios:
            if not folio.freed and folio.mapcount:
                problems += check_migrate(machine, folio, truth.get(folio.pfn, set()))[1]
    return problems


@dataclass
class Measurement:
    """What the end-of-run walks found on a machine (:func:`measure`)."""

    walks: dict[str, dict[str, dict[str, float]]]
    client_misses: int
    graph_dot: str | None


def measure(machine: Any, procs: dict[str, Any], title: str | None) -> Measurement:
    """The comparison's measurement of a run as it stands: the hierarchy (small runs,
    with a ``title``), then folio_referenced and migration of every mapped anon folio.
    Every kind of run hands its machine here: a scenario at its end, a recording's
    replay at its peak (:mod:`cowctx.report.recording`)."""
    graph_dot = None
    live = [t.mm for t in procs.values() if not t.exit_state and t.mm is not None]
    if (
        title is not None
        and len(live) <= GRAPH_LIMIT[0]
        and sum(len(mm.vmas()) for mm in live) <= GRAPH_LIMIT[1]
    ):
        graph_dot = machine_dot(machine, procs, title)
    mark = len(machine.ledger.walks)
    misses = measure_walks(machine)
    return Measurement(walk_summary(machine.ledger.walks[mark:]), len(misses), graph_dot)


def design_result(
    result: ScenarioResult, locks: list[dict[str, Any]], measured: Measurement, seconds: float
) -> DesignResult:
    """One design's column: ``locks`` are the ledger's after the measurement, the
    measurement's told apart from the workload's by :data:`MEASURE_OP`."""
    return DesignResult(
        design=result.design,
        result=result,
        walks=measured.walks,
        workload_locks=[x for x in locks if x["op"] != MEASURE_OP],
        measure_locks=[x for x in locks if x["op"] == MEASURE_OP],
        seconds=seconds,
        graph_dot=measured.graph_dot,
        client_misses=measured.client_misses,
    )


def run_design(scenario: Scenario, design: str, check: bool = False) -> DesignResult:
    import time

    t0 = time.perf_counter()
    run = run_scenario(scenario, design, check=check)
    result = run.result()
    measured = measure(run.machine, run.procs, f"{scenario.name} on {result.design}")
    seconds = time.perf_counter() - t0
    return design_result(result, run.result().locks or [], measured, seconds)


def compare(
    scenario: Scenario,
    designs: list[str],
    *,
    check: bool = False,
    kernel_session: Any = None,
    kernel_reason: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Every design on ``scenario``; with a kernel session, the kernel too (a kernel run
    that cannot be counted exactly leaves the column out, saying why)."""
    results = []
    for design in designs:
        if progress is not None:
            progress(design)
        results.append(run_design(scenario, design, check))
    kernel = None
    if kernel_session is not None:
        if progress is not None:
            progress("linux")
        from cowctx.linux.executor import KernelRunError

        try:
            kernel = kernel_session.run(scenario)
        except KernelRunError as exc:  # e.g. events dropped on a busy machine: no column
            kernel_reason = f"the kernel run could not be counted exactly: {exc}"
    return Comparison(scenario.name, scenario.description or "", results, kernel, kernel_reason)


def lock_totals(locks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (lock, mode): acquisitions, VMAs and objects covered, largest hold."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for x in locks:
        agg = out.setdefault(
            (x["lock"], x["mode"]), {"acquisitions": 0, "vmas": 0, "objects": 0, "max_held": 0}
        )
        agg["acquisitions"] += x["acquisitions"]
        agg["vmas"] += x["vmas"]
        agg["objects"] += x["objects"]
        agg["max_held"] = max(agg["max_held"], x["max_vmas"] + x["max_objects"])
    return out


def comparison_json(c: Comparison) -> dict[str, Any]:
    """A JSON-ready summary (deterministic: no timings).  A recording's has a
    ``recording`` block (:mod:`cowctx.report.recording`), and its ``kernel`` is the
    recording's counts."""
    return {
        "scenario": c.scenario,
        "description": c.description,
        "designs": {
            d.design: {
                "objects": {k: n.to_json() for k, n in d.result.final.objects.items()},
                "bytes": d.result.final.bytes,
                "estimated": d.result.final.estimated,
                "locks": {f"{k[0]} {k[1]}": v for k, v in lock_totals(d.workload_locks).items()},
                "walks": d.walks,
                "violations": [v.to_json() for v in d.result.violations],
                "client_misses": d.client_misses,
            }
            for d in c.designs
        },
        "kernel": None
        if c.kernel is None
        else {
            "objects": {k: n.to_json() for k, n in c.kernel.final.objects.items()},
            "maps_agree": None,
        },
        "kernel_reason": c.kernel_reason,
        **({} if c.recording is None else {"recording": c.recording}),
    }
