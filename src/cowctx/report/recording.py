"""A recording (``cowctx record``) as a workload of the comparison: its replay on every
design, handed to the same measurement as a scenario's run, beside the kernel's own
counts from the recording (no live kernel run: the recording is the kernel's run).

A finished program has freed everything, so its end shows no live objects and nothing
to walk.  The replay is measured where the program's rmap is largest instead
(:func:`cowctx.trace.kernel_counts.live_peak`: the kernel's live anon_vma +
anon_vma_chain count at its greatest): objects live and bytes are there, with the
walks; objects allocated and freed, and locks, are the whole recording's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cowctx.linux.tracefs import KINDS
from cowctx.report.compare import Comparison, DesignResult, Measurement, design_result, measure
from cowctx.scenario.results import Counts, FinalState, ScenarioResult
from cowctx.trace.events import Recording
from cowctx.trace.kernel_counts import live_peak
from cowctx.trace.replay import Replay


def _replay_design(
    rec: Recording, source: str, design: str, at: int
) -> tuple[DesignResult, Replay, Counter[str], int]:
    """One design: the replay, measured before record ``at``; also the kernel's live
    objects and the tasks alive there."""
    t0 = time.perf_counter()
    run = Replay(rec, design, source)
    seen: dict[str, Any] = {}

    def pause(r: Replay) -> None:
        ledger = r.m.ledger
        seen["live"] = {k: s.live for k, s in ledger.objects.items()}
        seen["bytes"] = ledger.bytes_live()
        seen["kernel_live"] = Counter(r.kernel.live.values())
        procs = r.procs()
        seen["tasks"] = len(procs)
        seen["measured"] = measure(r.m, procs, None)

    run.run(at, pause)
    res = run.scenario_result()
    objects = {
        k: Counts(c.allocated, c.freed, seen["live"].get(k, 0))
        for k, c in res.final.objects.items()
    }
    at_peak = replace(res, final=replace(res.final, objects=objects, bytes=seen["bytes"]))
    measured: Measurement = seen["measured"]
    column = design_result(at_peak, res.locks or [], measured, time.perf_counter() - t0)
    return column, run, seen["kernel_live"], seen["tasks"]


def compare_recording(
    rec: Recording,
    source: str,
    designs: list[str],
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Every design on the recording ``rec`` (read from ``source``); the kernel column
    is the recording's counts: allocated and freed over the whole run, live at the
    peak where the designs are measured.  Raises :class:`cowctx.trace.replay.ReplayError`
    for a recording that cannot be replayed."""
    at = live_peak(rec)
    columns: list[DesignResult] = []
    kernel_live: Counter[str] = Counter()
    tasks = 0
    agree: bool | None = None
    first: dict[str, Any] | None = None
    totals: dict[str, dict[str, int]] = {}
    for design in designs:
        if progress is not None:
            progress(design)
        column, run, kernel_live, tasks = _replay_design(rec, source, design, at)
        columns.append(column)
        totals = run.kernel.totals()
        if design == "anon_vma":
            full = run.result()
            agree, first = full["agree"], full["first_difference"]
    kernel = ScenarioResult(
        scenario=" ".join(rec.header["command"]),
        design="linux",
        steps=[],
        final=FinalState(
            {k: Counts(totals[k]["allocated"], totals[k]["freed"], kernel_live[k]) for k in KINDS},
            {},
            {},
        ),
    )
    command = " ".join(rec.header["command"])
    n = len(rec.records)
    where = f"line {at + 2:,} of the trace" if at < n else "its end"
    description = (
        f"Recording {source} of `{command}` ({n:,} records): objects live and bytes at the "
        f"program's peak ({where}, {tasks} tasks alive), where the walks are measured; "
        "allocated and locks over the whole recording. The kernel column is the "
        "recording's own counts."
    )
    recording = {
        "trace": source,
        "command": rec.header["command"],
        "records": n,
        "measured_at_line": at + 2 if at < n else None,
        "tasks_at_peak": tasks,
        "kernel_totals": totals,
        "flags": rec.header["flags"],
        "lost_events": rec.header["lost_events"],
        "agree": agree,
        "first_difference": first,
    }
    return Comparison(
        command, description, columns, kernel, kernel_reason=None, recording=recording
    )
