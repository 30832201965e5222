"""``cowctx demo``: the comparison over the built-in workloads, or the teaching stories."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

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
def demo(design: str, scale: float, html_path: Path, stories: bool) -> None:
    """The comparison over the built-in workloads: a table per workload, and
    report.html; the kernel's anon_vma counts beside the model's where the kernel
    can be observed."""
    if stories:
        _demo_stories(parse_designs(design))
        return
    from cowctx.workloads import WORKLOADS

    ctx = click.get_current_context()
    ctx.invoke(
        compare_command,
        targets=tuple(WORKLOADS),
        design=design,
        params=(),
        scale=scale,
        kernel=True,
        check=False,
        as_json=False,
        html_path=html_path,
    )


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
