"""``cowctx demo``: the comparison over the built-in workloads, or the teaching stories."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cowctx.cli.compare import compare_command
from cowctx.cli.options import (
    EXIT_FAIL,
    EXIT_OK,
    design_option,
    html_option,
    parse_designs,
    scale_option,
)
from cowctx.designs import sound_design_names
from cowctx.scenario.expect import check_expect, scenario_failed
from cowctx.scenario.loader import load_scenario

DEMO_SCALE = 0.5
"""The demo's workload size: half the real default, about half a minute here."""


@click.command()
@design_option("all")
@scale_option(DEMO_SCALE)
@html_option(Path("report.html"))
@click.option(
    "--stories",
    is_flag=True,
    help="Instead: the built-in teaching scenarios, each with what it shows.",
)
@click.option(
    "--record/--no-record",
    "record",
    default=True,
    show_default=True,
    help="Record chromium headless (root, tracefs, chromium) and show it beside the workloads.",
)
def demo(design: str, scale: float, html_path: Path, stories: bool, record: bool) -> None:
    """The comparison over the built-in workloads: a table per workload, and
    report.html; the kernel's anon_vma counts beside the model's where the kernel
    can be observed; and, where this machine can record it, chromium headless, a
    real program, recorded now and replayed on every design (written beside the
    report as chromium.trace)."""
    if stories:
        _demo_stories(parse_designs(design))
        return
    from cowctx.workloads import WORKLOADS

    targets: tuple[str, ...] = tuple(WORKLOADS)
    if record:
        trace = _record_chromium(html_path.parent / "chromium.trace")
        if trace is not None:
            targets += (str(trace),)
    ctx = click.get_current_context()
    ctx.invoke(
        compare_command,
        targets=targets,
        design=design,
        params=(),
        scale=scale,
        kernel=True,
        check=False,
        as_json=False,
        html_path=html_path,
    )


def _record_chromium(out: Path) -> Path | None:
    """Record chromium headless into ``out``; where this machine cannot, say why and
    return None (the demo goes on without it)."""
    import time

    from cowctx.linux.tracefs import TraceError
    from cowctx.trace.chromium import chromium_unavailable_reason, record_chromium
    from cowctx.trace.recorder import Interrupted

    console = Console(highlight=False, soft_wrap=True, stderr=True)
    reason = chromium_unavailable_reason()
    if reason is not None:
        console.print(f"[yellow]chromium headless not recorded: {escape(reason)}[/]")
        return None
    console.print("recording chromium headless (a real program) ...")
    t0 = time.perf_counter()
    try:
        rec = record_chromium(out)
    except Interrupted as exc:
        console.print(f"interrupted by {exc}; nothing recorded")
        sys.exit(128 + exc.signum)
    except (TraceError, OSError) as exc:
        console.print(f"[yellow]chromium headless not recorded: {escape(str(exc))}[/]")
        return None
    console.print(
        f"recorded {len(rec.records):,} records in {time.perf_counter() - t0:.1f} s "
        f"into {escape(str(out))}"
    )
    for flag in rec.header["flags"]:
        console.print(f"[yellow]recording flagged: {escape(flag)}[/]")
    return out


def _demo_stories(designs: list[str]) -> None:
    from importlib.resources import files as package_files

    from cowctx.report.terminal import print_result
    from cowctx.scenario.runner import run_scenario

    console = Console(highlight=False, soft_wrap=True)
    builtin = package_files("cowctx") / "scenarios_builtin"
    paths = sorted((p for p in builtin.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name)
    failed = False
    for path in paths:
        scenario = load_scenario(Path(str(path)))
        console.rule(f"[bold]{scenario.name}")
        console.print(" ".join((scenario.description or "").split()))
        for name in designs:
            result = run_scenario(scenario, name).result()
            failures = check_expect(scenario, result)
            bad = scenario_failed(scenario, result, failures)
            if name in sound_design_names():  # the PoC's misses are what it shows
                failed |= bad
            print_result(console, result, failures, bad)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)
