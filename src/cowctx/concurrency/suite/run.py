"""Run a suite: every case on every design, source-DPOR to the preemption bound
and optionally PCT beyond it, on a local process pool or a Dask cluster
(``--dask ADDRESS``, as ``cowctx sweep`` runs its points), with the same results
in the same order either way.

A job is one (case, design): its DPOR run, its serial executions and its PCT
runs; with ``pct_chunk`` the PCT runs are split into parts of their own (job
``(case, design, k)``), which a cluster runs side by side.  A job's result is a
plain JSON object (see :func:`run_case`) and depends only on the case, the design
and the options: the workers' count and placement change nothing but the
wall-clock fields (:data:`WALL_CLOCK`).  PCT uses the same seed in every job
(part ``k`` of a chunked one: ``(seed << 20) + k``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cowctx.concurrency.explorer import Report
from cowctx.concurrency.suite.cases import Case
from cowctx.jobs import map_in_order

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
    pct_chunk: int | None = None
    """Split each job's PCT runs into parts of this many, each a job of its own
    (the same chunk size gives the same results; None: one part)."""
    dpor: bool = True
    """Run the exhaustive search (False: PCT and the serial executions only, for
    a PCT campaign over cases whose bounded search has already been run)."""

    def to_json(self) -> dict[str, Any]:
        """What a result was computed with (a resumed run must match it)."""
        return {
            "bound": self.bound,
            "pct": self.pct,
            "depth": self.depth,
            "seed": self.seed,
            "max_executions": self.max_executions,
            "pct_chunk": self.pct_chunk,
            "dpor": self.dpor,
        }

    def pct_parts(self) -> list[tuple[int, int]]:
        """(part, runs) of each PCT part a job is split into ([] unless chunked)."""
        if not self.pct or not self.pct_chunk:
            return []
        n, k = self.pct, self.pct_chunk
        return [(i, min(k, n - i * k)) for i in range((n + k - 1) // k)]


@dataclass
class PctPart:
    """What one PCT part of a (case, design) found: its report, or the error it raised."""

    case: str
    design: str
    part: int
    report: Report | None
    error: str | None = None


def run_case(suite: str, case: Case, design: str, options: Options) -> Result:
    """One (case, design): its DPOR run, its serial executions (bound 0: each
    thread runs to its end or until it blocks), and with ``options.pct`` its PCT
    runs.  ``kinds`` are the violation kinds found; ``serial_kinds`` those a
    serial execution already shows (not races: the set-up or one order of the
    threads breaks the design).  A job that raises is a verdict ``error``."""
    parts = [_pct_part(case, design, options, i, n) for i, n in options.pct_parts()]
    return _assemble(_main_job(suite, case, design, options), parts)


def _main_job(suite: str, case: Case, design: str, options: Options) -> Result:
    """DPOR (unless ``options.dpor`` is off), the serial executions, and PCT
    unless it is split into parts."""
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
        "options": options.to_json(),
    }
    try:
        program = ScenarioProgram(case.scenario, design)
        reports = {}
        if options.dpor:
            reports["explore"] = explore(
                program, program.names, bound=options.bound, max_executions=options.max_executions
            )
        serial = explore(program, program.names, bound=0, max_executions=options.max_executions)
        if options.pct and not options.pct_parts():
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


def _pct_part(case: Case, design: str, options: Options, part: int, runs: int) -> PctPart:
    from cowctx.concurrency.explorer import random_walks
    from cowctx.concurrency.program import ScenarioProgram

    try:
        program = ScenarioProgram(case.scenario, design)
        seed = (options.seed << 20) + part
        report = random_walks(program, program.names, runs, seed, pct_depth=options.depth)
    except Exception as err:  # as in _main_job
        return PctPart(case.name, design, part, None, f"{type(err).__name__}: {err}")
    return PctPart(case.name, design, part, report)


def _assemble(main: Result, parts: list[PctPart]) -> Result:
    """A job's result with its PCT parts merged in part order: executions and
    final states summed, each violation's shortest schedule (the earlier part's
    on a tie)."""
    if not parts or main["verdict"] == "error":
        return main
    for p in parts:
        if p.error is not None:
            return {**main, "verdict": "error", "error": f"PCT part {p.part}: {p.error}"}
    merged = Report("pct", bound=None)
    for p in parts:
        assert p.report is not None
        merged.executions += p.report.executions
        merged.final_states |= p.report.final_states
        merged.seconds += p.report.seconds
        for key, found in p.report.violations.items():
            old = merged.violations.get(key)
            if old is None or len(found.schedule) < len(old.schedule):
                merged.violations[key] = found
    kinds = sorted(set(main["kinds"]) | {k for k, _ in merged.violations})
    block = merged.to_json() | {"parts": len(parts)}
    return {**main, "verdict": "violation" if kinds else "clean", "kinds": kinds, "pct": block}


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


Progress = Callable[[int, int, Result | PctPart], None]
"""``progress(done, total, what)``: a job finished (in completion order)."""


def run_suite(
    suite: str,
    cases: list[Case],
    designs: list[str],
    options: Options,
    *,
    jobs: int | None = None,
    dask_address: str | None = None,
    progress: Progress | None = None,
    done: Mapping[tuple[str, str], Result] | None = None,
) -> Iterator[Result]:
    """Every case × design, case-major, yielded in that order as soon as every
    earlier one is done; ``progress`` on each finished job (a (case, design)'s
    main job, or one of its PCT parts).  ``jobs`` local worker processes (1: in
    this process), or the Dask scheduler at ``dask_address``.  ``done``: results
    of an earlier run with the same options (:func:`resumable`), by (case,
    design): yielded in their place, not run again."""
    done = done or {}
    parts = options.pct_parts()
    work: list[tuple[Case, str, tuple[int, int] | None]] = [
        (case, design, part)
        for case in cases
        for design in designs
        if (case.name, design) not in done
        for part in [None, *parts]
    ]
    outputs = _execute(suite, work, options, jobs, dask_address, progress)
    for case in cases:
        for design in designs:
            if (case.name, design) in done:
                yield done[(case.name, design)]
                continue
            main = next(outputs)
            assert isinstance(main, dict)
            finished = [next(outputs) for _ in parts]
            yield _assemble(main, [p for p in finished if isinstance(p, PctPart)])


def resumable(rows: Iterable[Result], options: Options) -> dict[tuple[str, str], Result]:
    """The results of an earlier ``--json`` run that ``options`` may reuse, by
    (case, design): those computed with the same options (rows of a run from
    before results carried them: the same bound, and PCT only if asked for).
    Rows that raised are run again.  Raises ValueError on a row computed
    otherwise: mixing them would make a matrix of two different searches."""
    want = options.to_json()
    out: dict[tuple[str, str], Result] = {}
    for i, row in enumerate(rows, 1):
        if row.get("verdict") == "error":
            continue
        have = row.get("options")
        if have is None:
            bound = row.get("explore", {}).get("bound", options.bound)
            have = {**want, "bound": bound, "pct": want["pct"] if "pct" in row else None}
        if have != want:
            diff = sorted(k for k in want if have.get(k) != want[k])
            raise ValueError(
                f"row {i} ({row.get('case')} on {row.get('design')}): computed with "
                + ", ".join(f"{k}={have.get(k)!r}" for k in diff)
                + ", not "
                + ", ".join(f"{k}={want[k]!r}" for k in diff)
            )
        out[(row["case"], row["design"])] = row
    return out


def _job(
    suite: str, case: Case, design: str, options: Options, part: tuple[int, int] | None
) -> Result | PctPart:
    if part is None:
        return _main_job(suite, case, design, options)
    return _pct_part(case, design, options, *part)


def _execute(
    suite: str,
    work: list[tuple[Case, str, tuple[int, int] | None]],
    options: Options,
    jobs: int | None,
    dask_address: str | None,
    progress: Progress | None,
) -> Iterator[Result | PctPart]:
    """Each job's output in ``work``'s order, whoever runs it."""
    return map_in_order(
        _job,
        [(suite, case, design, options, part) for case, design, part in work],
        workers=jobs,
        dask_address=dask_address,
        on_done=progress,
    )


def strip_wall_clock(result: Result) -> Result:
    """``result`` without its wall-clock fields (what two runs must agree on)."""
    out = dict(result)
    for block in ("explore", "pct"):
        if block in out:
            out[block] = {k: v for k, v in out[block].items() if k not in WALL_CLOCK}
    return out
