"""``cowctx explore``: interleavings of a scenario's ``threads``, and what went wrong."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cowctx.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_OK,
    design_option,
    html_option,
    json_option,
    load_all,
    parse_designs,
)
from cowctx.report.html import Exploration

if TYPE_CHECKING:
    from cowctx.concurrency.explorer import Report
    from cowctx.concurrency.program import ScenarioProgram
    from cowctx.scenario.schema import Scenario

SCHEDULE_FORMAT = "cowctx-schedule/1"


@click.command("explore")
@click.argument("file", type=click.Path(path_type=Path), required=False)
@design_option("anon_vma")
@json_option(
    "One JSON object per design, with an `explore` block (with --suite: one per case and "
    "design, docs/stabilisation.md)."
)
@click.option("--naive", is_flag=True, help="Enumerate every interleaving (checks the DPOR).")
@click.option("--bound", type=int, default=2, show_default=True, help="Preemption bound; -1: none.")
@click.option("--random", "random_runs", type=int, default=None, help="N seeded random schedules.")
@click.option("--pct", "pct_runs", type=int, default=None, help="N PCT schedules (with --depth).")
@click.option("--depth", type=int, default=3, show_default=True, help="PCT bug depth.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--max-executions", type=int, default=None, help="Stop after this many executions.")
@click.option(
    "--schedules",
    "schedule_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write each violation's shortest schedule here as a file --replay runs.",
)
@click.option(
    "--trace",
    "trace_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write each violation as a swimlane: Perfetto trace-event JSON and SVG, here.",
)
@click.option(
    "--replay",
    type=click.Path(path_type=Path),
    default=None,
    help="Re-run exactly the schedule in this file (from --schedules).",
)
@click.option(
    "--suite",
    default=None,
    metavar="NAME",
    help="Explore every case of a generated race suite instead of FILE: 'stabilisation'.",
)
@click.option(
    "--case",
    "case_globs",
    multiple=True,
    metavar="GLOB",
    help="With --suite: only the cases whose name (or scenario name) matches; repeatable.",
)
@click.option(
    "--pct-chunk",
    type=click.IntRange(min=1),
    default=None,
    help="With --suite --pct: split each case's PCT runs into jobs of this many (part k "
    "seeded (seed << 20) + k).",
)
@click.option(
    "--pct-only",
    is_flag=True,
    help="With --suite --pct: skip the bounded exhaustive search (a PCT campaign over "
    "cases already explored to the bound); the serial executions still run.",
)
@click.option(
    "--resume",
    "resume_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --suite: the --json output of an earlier run with the same options; the "
    "(case, design) results it holds are reused, not run again (a campaign in pieces).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="With --suite: local worker processes (default: one per CPU; 1: this process).",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="With --suite: run the jobs on this Dask scheduler instead of local processes.",
)
@html_option()
def explore_command(
    file: Path | None,
    design: str,
    as_json: bool,
    naive: bool,
    bound: int,
    random_runs: int | None,
    pct_runs: int | None,
    depth: int,
    seed: int,
    max_executions: int | None,
    schedule_dir: Path | None,
    trace_dir: Path | None,
    replay: Path | None,
    suite: str | None,
    case_globs: tuple[str, ...],
    pct_chunk: int | None,
    pct_only: bool,
    resume_path: Path | None,
    jobs: int | None,
    dask_address: str | None,
    html_path: Path | None,
) -> None:
    """Explore the interleavings of FILE's `threads` (after its `steps`): source-DPOR
    with sleep sets under a preemption bound (default), every interleaving
    (--naive), seeded random or PCT schedules, or one saved schedule (--replay).
    With --suite instead of FILE: every case of that suite on every design, as a
    matrix (docs/stabilisation.md).  Exits 1 when a violation is found."""
    from cowctx.concurrency.explorer import explore, random_walks, run_schedule
    from cowctx.concurrency.program import ScenarioProgram
    from cowctx.concurrency.swimlane import text_swimlane

    if suite is not None:
        refused = {
            "FILE": file is not None,
            "--naive": naive,
            "--random": random_runs is not None,
            "--replay": replay is not None,
            "--trace": trace_dir is not None,
        }
        for what, given in refused.items():
            if given:
                click.echo(f"error: --suite: {what} applies to one scenario file only", err=True)
                sys.exit(EXIT_BAD_INPUT)
        _explore_suite(
            suite,
            case_globs,
            design,
            bound=bound,
            pct_runs=pct_runs,
            pct_chunk=pct_chunk,
            pct_only=pct_only,
            resume_path=resume_path,
            depth=depth,
            seed=seed,
            max_executions=max_executions,
            jobs=jobs,
            dask_address=dask_address,
            as_json=as_json,
            schedule_dir=schedule_dir,
            html_path=html_path,
        )
        return
    for what, given in {
        "--case": bool(case_globs),
        "--pct-chunk": pct_chunk is not None,
        "--pct-only": pct_only,
        "--resume": resume_path is not None,
        "--jobs": jobs is not None,
        "--dask": dask_address is not None,
    }.items():
        if given:
            click.echo(f"error: {what} applies to --suite only", err=True)
            sys.exit(EXIT_BAD_INPUT)
    if file is None:
        click.echo("error: give a scenario FILE or --suite NAME", err=True)
        sys.exit(EXIT_BAD_INPUT)
    (scenario,) = load_all((file,))
    if not scenario.threads:
        click.echo(f"error: {file}: no 'threads' to explore", err=True)
        sys.exit(EXIT_BAD_INPUT)
    schedule: list[str] | None = None
    if replay is not None:
        schedule, design = _read_schedule(replay, scenario.name, design)
    designs = parse_designs(design)
    found_any = False
    explorations: list[Exploration] = []
    for name in designs:
        program = ScenarioProgram(scenario, name)
        if schedule is not None:
            try:
                report = run_schedule(program, program.names, schedule)
            except ValueError as err:
                click.echo(f"error: {replay}: {err}", err=True)
                sys.exit(EXIT_BAD_INPUT)
        elif random_runs is not None or pct_runs is not None:
            runs = random_runs if random_runs is not None else pct_runs
            assert runs is not None
            report = random_walks(
                program,
                program.names,
                runs,
                seed,
                pct_depth=depth if pct_runs is not None else None,
            )
        else:
            report = explore(
                program,
                program.names,
                naive=naive,
                bound=None if bound < 0 else bound,
                max_executions=max_executions,
                progress=None if as_json else _progress,
            )
        block = report.to_json()
        found_any |= bool(report.violations)
        if schedule_dir is not None:
            found_list = [(f.kind, f.detail, f.schedule) for f in report.violations.values()]
            block["schedule_files"] = write_schedules(schedule_dir, scenario.name, name, found_list)
        if trace_dir is not None:
            block["trace_files"] = _write_traces(trace_dir, scenario.name, name, program, report)
        if html_path is not None:
            explorations.append(_exploration(scenario, name, program, report, block))
        if as_json:
            out = {"scenario": scenario.name, "file": str(file), "design": name, "explore": block}
            click.echo(json.dumps(out, sort_keys=True))
            continue
        _print(scenario.name, name, block)
        for found in sorted(report.violations.values(), key=lambda f: (f.kind, f.detail))[:3]:
            click.echo(text_swimlane(program, found.schedule, found.detail))
    if html_path is not None:
        from cowctx.report.html import write_report

        write_report(html_path, [], explorations=explorations)
        click.echo(f"report written to {html_path}", err=as_json)
    sys.exit(EXIT_FAIL if found_any else EXIT_OK)


def _exploration(
    scenario: Scenario,
    design: str,
    program: ScenarioProgram,
    report: Report,
    block: dict[str, Any],
) -> Exploration:
    """The report's view of one design's exploration: counts and a swimlane per violation."""
    from cowctx.concurrency.swimlane import svg_swimlane

    found = sorted(report.violations.values(), key=lambda f: (f.kind, f.detail))
    return Exploration(
        scenario.name,
        " ".join((scenario.description or "").split()),
        design,
        {k: block[k] for k in ("executions", "pruned", "final_states") if k in block},
        [(f.kind, f.detail, svg_swimlane(program, f.schedule, f.detail)) for f in found],
    )


def _progress(report: Report) -> None:
    if report.executions and report.executions % 1000 == 0:
        click.echo(f"  ... {report.executions} executions, {report.pruned} pruned", err=True)


def _print(scenario: str, design: str, block: dict[str, Any]) -> None:
    click.echo(
        f"{scenario} on {design}: {block['mode']} (bound {block['bound']}): "
        f"{block['executions']} executions, {block['pruned']} pruned, "
        f"{block['final_states']} final states, {block['seconds']} s "
        f"({block['executions_per_second']}/s)"
        + ("" if block["complete"] else " [stopped at --max-executions]")
    )
    for v in block["violations"]:
        click.echo(f"  {v['kind']}: {v['detail']} ({len(v['schedule'])} steps)")
    for path in block.get("schedule_files", []):
        click.echo(f"  schedule written: {path}")
    for path in block.get("trace_files", []):
        click.echo(f"  swimlane written: {path}")


def write_schedules(
    directory: Path, scenario: str, design: str, found: list[tuple[str, str, list[str]]]
) -> list[str]:
    """``<scenario>.<design>.<i>-<kind>.json`` per (kind, detail, schedule), in
    (kind, detail) order: each a file ``--replay`` re-runs."""
    from cowctx.files import write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (kind, detail, schedule) in enumerate(sorted(found, key=lambda f: (f[0], f[1]))):
        safe = design.replace("[", "-").replace("]", "").replace(",", "-")
        path = directory / f"{scenario}.{safe}.{i}-{kind}.json"
        doc = {
            "format": SCHEDULE_FORMAT,
            "scenario": scenario,
            "design": design,
            "kind": kind,
            "detail": detail,
            "schedule": schedule,
        }
        write_atomically(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        paths.append(str(path))
    return paths


def _write_traces(
    directory: Path, scenario: str, design: str, program: ScenarioProgram, report: Report
) -> list[str]:
    """``<scenario>.<design>.<i>-<kind>.trace.json`` (ui.perfetto.dev opens it) and ``.svg``."""
    from cowctx.concurrency.swimlane import svg_swimlane, trace_events
    from cowctx.files import write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    safe = design.replace("[", "-").replace("]", "").replace(",", "-")
    for i, found in enumerate(sorted(report.violations.values(), key=lambda f: (f.kind, f.detail))):
        base = directory / f"{scenario}.{safe}.{i}-{found.kind}"
        json_path, svg_path = Path(f"{base}.trace.json"), Path(f"{base}.svg")
        write_atomically(json_path, trace_events(program, found.schedule, found.detail) + "\n")
        write_atomically(svg_path, svg_swimlane(program, found.schedule, found.detail) + "\n")
        paths += [str(json_path), str(svg_path)]
    return paths


def _read_schedule(path: Path, scenario: str, design: str) -> tuple[list[str], str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        click.echo(f"error: {path}: cannot read a schedule: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if not isinstance(doc, dict) or doc.get("format") != SCHEDULE_FORMAT:
        click.echo(f"error: {path}: field 'format': not {SCHEDULE_FORMAT}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if doc.get("scenario") != scenario:
        click.echo(
            f"error: {path}: field 'scenario': {doc.get('scenario')!r} is not {scenario!r}",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    sched = doc.get("schedule")
    if not isinstance(sched, list) or not all(isinstance(s, str) for s in sched):
        click.echo(f"error: {path}: field 'schedule': not a list of thread names", err=True)
        sys.exit(EXIT_BAD_INPUT)
    return sched, str(doc.get("design", design))


def _explore_suite(
    suite: str,
    case_globs: tuple[str, ...],
    design: str,
    *,
    bound: int,
    pct_runs: int | None,
    pct_chunk: int | None,
    pct_only: bool,
    resume_path: Path | None,
    depth: int,
    seed: int,
    max_executions: int | None,
    jobs: int | None,
    dask_address: str | None,
    as_json: bool,
    schedule_dir: Path | None,
    html_path: Path | None,
) -> None:
    """``--suite``: every selected case × design (case-major), the results in that
    order whatever runs them; the matrix as text, or JSON Lines (one object per
    case and design); each violation's shortest schedule, with the case as a
    scenario file beside it, in ``schedule_dir``.  Exits 1 when a job found a
    violation or raised."""
    from fnmatch import fnmatchcase

    from cowctx.concurrency.suite import SUITES
    from cowctx.concurrency.suite.run import Options, PctPart, run_suite, shortest_violations
    from cowctx.report.stabilisation import matrix_markdown, verdict

    if suite not in SUITES:
        click.echo(
            f"error: --suite: unknown suite {suite!r} (known: {', '.join(SUITES)})", err=True
        )
        sys.exit(EXIT_BAD_INPUT)
    cases = SUITES[suite]()
    if case_globs:
        cases = [
            c
            for c in cases
            if any(fnmatchcase(c.name, g) or fnmatchcase(c.scenario.name, g) for g in case_globs)
        ]
        if not cases:
            click.echo(
                f"error: --case: no case of {suite!r} matches {' '.join(case_globs)}", err=True
            )
            sys.exit(EXIT_BAD_INPUT)
    if pct_only and not pct_runs:
        click.echo("error: --pct-only needs --pct N", err=True)
        sys.exit(EXIT_BAD_INPUT)
    designs = parse_designs(design)
    options = Options(
        bound=None if bound < 0 else bound,
        pct=pct_runs,
        depth=depth,
        seed=seed,
        max_executions=max_executions,
        pct_chunk=pct_chunk,
        dpor=not pct_only,
    )
    by_name = {c.name: c for c in cases}
    done = _resume(resume_path, options) if resume_path is not None else None

    def progress(done: int, total: int, r: dict[str, Any] | PctPart) -> None:
        if isinstance(r, PctPart):
            runs = r.report.executions if r.report is not None else 0
            what = f"{r.case} on {r.design}: PCT part {r.part}"
            click.echo(
                f"[{done}/{total}] {what}: {r.error or 'done'} ({runs} executions)", err=True
            )
            return
        runs = sum(r.get(b, {}).get("executions", 0) for b in ("explore", "pct"))
        click.echo(
            f"[{done}/{total}] {r['case']} on {r['design']}: {verdict(r)} ({runs} executions)",
            err=True,
        )

    results = []
    for r in run_suite(
        suite,
        cases,
        designs,
        options,
        jobs=jobs,
        dask_address=dask_address,
        progress=progress,
        done=done,
    ):
        found = shortest_violations(r)
        if schedule_dir is not None and found:
            case = by_name[r["case"]]
            r["schedule_files"] = [
                _write_case(schedule_dir, case.scenario),
                *write_schedules(schedule_dir, case.scenario.name, r["design"], found),
            ]
        if as_json:
            click.echo(json.dumps(r, sort_keys=True))
        results.append(r)
    if not as_json:
        click.echo(matrix_markdown(results))
    if html_path is not None:
        _suite_report(html_path, suite, designs, results, by_name)
        click.echo(f"report written to {html_path}", err=as_json)
    failed = any(r["verdict"] != "clean" for r in results)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


def _resume(path: Path, options: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """``--resume``: the reusable rows of an earlier ``--json`` run (exit 2 on a
    line that is not one, or on a row computed with other options)."""
    from cowctx.concurrency.suite.run import resumable

    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "case" not in row or "design" not in row:
                raise ValueError("not a suite result (no case and design)")
        except ValueError as err:
            click.echo(f"error: --resume: {path}:{n}: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        rows.append(row)
    try:
        done = resumable(rows, options)
    except ValueError as err:
        click.echo(f"error: --resume: {path}: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"--resume: {len(done)} results of {path} reused", err=True)
    return done


def _write_case(directory: Path, scenario: Scenario) -> str:
    """The case as a scenario file, ``<scenario>.yaml``: what ``--replay`` runs."""
    import yaml

    from cowctx.files import write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario.name}.yaml"
    doc = scenario.model_dump(mode="json", exclude_defaults=True)
    doc["format"] = scenario.format
    write_atomically(path, yaml.safe_dump(doc, sort_keys=False, width=100))
    return str(path)


def _suite_report(
    html_path: Path,
    suite: str,
    designs: list[str],
    results: list[dict[str, Any]],
    by_name: dict[str, Any],
) -> None:
    """The report with the matrix section: links to the schedule files, and the
    shortest violation of each cell as a swimlane."""
    import os

    from cowctx.concurrency.program import ScenarioProgram
    from cowctx.concurrency.suite.run import shortest_violations
    from cowctx.concurrency.swimlane import svg_swimlane
    from cowctx.report.html import write_report
    from cowctx.report.stabilisation import matrix_html

    base = html_path.resolve().parent
    links: dict[tuple[str, str], list[tuple[str, str]]] = {}
    lanes: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for r in results:
        cell = (r["case"], r["design"])
        files = r.get("schedule_files", [])
        links[cell] = [
            (
                "scenario" if f.endswith(".yaml") else Path(f).stem.rsplit(".", 1)[-1],
                os.path.relpath(Path(f).resolve(), base),
            )
            for f in files
        ]
        found = shortest_violations(r)
        if found:
            kind, detail, schedule = min(found, key=lambda f: (len(f[2]), f[0], f[1]))
            program = ScenarioProgram(by_name[r["case"]].scenario, r["design"])
            lanes[cell] = [(kind, detail, svg_swimlane(program, schedule, detail))]
    command = f"cowctx explore --suite {suite} --design '{','.join(designs)}'"
    section = matrix_html(results, links=links, swimlanes=lanes, command=command)
    write_report(html_path, [], sections=[section])
