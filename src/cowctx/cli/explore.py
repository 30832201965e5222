"""``cowctx explore``: interleavings of a scenario's ``threads``, and what went wrong."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cowctx.concurrency.explorer import Report
    from cowctx.concurrency.program import ScenarioProgram

from cowctx.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_OK,
    design_option,
    json_option,
    load_all,
    parse_designs,
)

SCHEDULE_FORMAT = "cowctx-schedule/1"


@click.command("explore")
@click.argument("file", type=click.Path(path_type=Path))
@design_option("anon_vma")
@json_option("One JSON object per design, with an `explore` block.")
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
def explore_command(
    file: Path,
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
) -> None:
    """Explore the interleavings of FILE's `threads` (after its `steps`): source-DPOR
    with sleep sets under a preemption bound (default), every interleaving
    (--naive), seeded random or PCT schedules, or one saved schedule (--replay).
    Exits 1 when a violation is found."""
    from cowctx.concurrency.explorer import explore, random_walks, run_schedule
    from cowctx.concurrency.program import ScenarioProgram
    from cowctx.concurrency.swimlane import text_swimlane

    (scenario,) = load_all((file,))
    if not scenario.threads:
        click.echo(f"error: {file}: no 'threads' to explore", err=True)
        sys.exit(EXIT_BAD_INPUT)
    schedule: list[str] | None = None
    if replay is not None:
        schedule, design = _read_schedule(replay, scenario.name, design)
    designs = parse_designs(design)
    found_any = False
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
            block["schedule_files"] = _write_schedules(schedule_dir, scenario.name, name, report)
        if trace_dir is not None:
            block["trace_files"] = _write_traces(trace_dir, scenario.name, name, program, report)
        if as_json:
            out = {"scenario": scenario.name, "file": str(file), "design": name, "explore": block}
            click.echo(json.dumps(out, sort_keys=True))
            continue
        _print(scenario.name, name, block)
        for found in sorted(report.violations.values(), key=lambda f: (f.kind, f.detail))[:3]:
            click.echo(text_swimlane(program, found.schedule, found.detail))
    sys.exit(EXIT_FAIL if found_any else EXIT_OK)


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


def _write_schedules(directory: Path, scenario: str, design: str, report: Report) -> list[str]:
    from cowctx.files import write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, found in enumerate(sorted(report.violations.values(), key=lambda f: (f.kind, f.detail))):
        safe = design.replace("[", "-").replace("]", "").replace(",", "-")
        path = directory / f"{scenario}.{safe}.{i}-{found.kind}.json"
        doc = {
            "format": SCHEDULE_FORMAT,
            "scenario": scenario,
            "design": design,
            "kind": found.kind,
            "detail": found.detail,
            "schedule": found.schedule,
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
