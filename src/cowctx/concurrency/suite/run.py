"""Run a suite: every case on every design, source-DPOR to the preemption bound
and optionally PCT beyond it, on a local process pool or a Dask cluster
(``--dask ADDRESS``, as ``cowctx sweep`` runs its points), with the same results
in the same order either way.

One job is one (case, design).  A job's result is a plain JSON object (see
:func:`run_case`) and depends only on the case, the design and the options: the
workers' count and placement change nothing but the wall-clock fields
(:data:`WALL_CLOCK`).  PCT uses the same seed in every job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from cowctx.concurrency.suite.cases import Case

WALL_CLOCK = ("seconds", "executions_per_second")
"""The only fields of a result that differ between two runs of the same job."""

Result = dict[str, Any]


@dataclass(frozen=True)
class Options:
    bound: int | None = 2
    """Preemption bound of the exhaustive search (None: unbounded)."""
    pct: int | None = None
    """PCT executions per job beyond the bound (None: none)."""
    depth: int = 3
    """PCT bug depth."""
    seed: int = 1
    max_executions: int | None = None
    """Cap on the DPOR executions of one job (a capped job is not complete)."""


def run_case(suite: str, case: Case, design: str, options: Options) -> Result:
    """One (case, design): its DPOR run, its serial executions (bound 0: each
    thread runs to its end or until it blocks), and with ``options.pct`` its PCT
    run.  ``kinds`` are the violation kinds found; ``serial_kinds`` those a
    serial execution already shows (not races: the set-up or one order of the
    threads breaks the design).  A job that raises is a verdict ``error``."""
    from cowctx.concurrency.explorer import explore, random_walks
    from cowctx.concurrency.program import ScenarioProgram

    out: Result = {
        "suite": suite,
        "case": case.name,
        "scenario": case.scenario.name,
        "walker": case.walker,
        "writers": list(case.writers),
        "shape": case.shape,
        "design": design,
    }
    try:
        program = ScenarioProgram(case.scenario, design)
        dpor = explore(
            program, program.names, bound=options.bound, max_executions=options.max_executions
        )
        serial = explore(program, program.names, bound=0, max_executions=options.max_executions)
        reports = {"explore": dpor}
        if options.pct:
            reports["pct"] = random_walks(
                program, program.names, options.pct, options.seed, pct_depth=options.depth
            )
    except Exception as err:  # a model or design bug: reported, the run goes on
        return {**out, "verdict": "error", "error": f"{type(err).__name__}: {err}", "kinds": []}
    kinds = sorted({k for r in reports.values() for k, _ in r.violations})
    return {
        **out,
        "verdict": "violation" if kinds else "clean",
        "kinds": kinds,
        "serial_kinds": sorted({k for k, _ in serial.violations}),
        "complete": all(r.complete for r in reports.values()),
        **{name: r.to_json() for name, r in reports.items()},
    }


def shortest_violations(result: Result) -> list[tuple[str, str, list[str]]]:
    """(kind, detail, schedule) per violation of a result, the shortest schedule
    over its DPOR and PCT runs (DPOR's on a tie), sorted by (kind, detail)."""
    best: dict[tuple[str, str], list[str]] = {}
    for block in ("explore", "pct"):
        for v in result.get(block, {}).get("violations", []):
            key = (v["kind"], v["detail"])
            if key not in best or len(v["schedule"]) < len(best[key]):
                best[key] = v["schedule"]
    return [(k, d, best[(k, d)]) for k, d in sorted(best)]


def run_suite(
    suite: str,
    cases: list[Case],
    designs: list[str],
    options: Options,
    *,
    jobs: int | None = None,
    dask_address: str | None = None,
    progress: Callable[[int, int, Result], None] | None = None,
) -> Iterator[Result]:
    """Every case × design, case-major, yielded in that order as soon as every
    earlier one is done; ``progress(done, total, result)`` on each completion
    (in completion order).  ``jobs`` local worker processes (1: in this
    process), or the Dask scheduler at ``dask_address``."""
    work = [(case, design) for case in cases for design in designs]
    total = len(work)
    if dask_address is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(dask_address) as client:
            futures = client.map(
                run_case,
                [suite] * total,
                [c for c, _ in work],
                [d for _, d in work],
                [options] * total,
                pure=False,
            )
            yield from _in_order(futures, dask_completed(futures), progress)
        return
    count = jobs or os.cpu_count() or 1
    if count == 1:
        for i, (case, design) in enumerate(work):
            result = run_case(suite, case, design, options)
            if progress is not None:
                progress(i + 1, total, result)
            yield result
        return
    with ProcessPoolExecutor(max_workers=min(count, total) or 1) as pool:
        local = [pool.submit(run_case, suite, c, d, options) for c, d in work]
        yield from _in_order(local, as_completed(local), progress)


def _in_order(
    futures: list[Any],
    completed: Iterable[Any],
    progress: Callable[[int, int, Result], None] | None,
) -> Iterator[Result]:
    """The futures' results in submission order, each as soon as it and every
    earlier one are done."""
    index = {id(f): i for i, f in enumerate(futures)}
    ready: dict[int, Result] = {}
    nxt = 0
    for done, future in enumerate(completed, 1):
        i = index[id(future)]
        ready[i] = future.result()
        if progress is not None:
            progress(done, len(futures), ready[i])
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1


def strip_wall_clock(result: Result) -> Result:
    """``result`` without its wall-clock fields (what two runs must agree on)."""
    out = dict(result)
    for block in ("explore", "pct"):
        if block in out:
            out[block] = {k: v for k, v in out[block].items() if k not in WALL_CLOCK}
    return out
