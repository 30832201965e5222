"""``cowctx graph``: the fork hierarchy and a design's rmap objects as DOT/SVG."""

from __future__ import annotations

import re
from pathlib import Path

import click

from cowctx.cli.options import design_option, load_all, parse_designs


@click.command("graph")
@click.argument("file", type=click.Path(path_type=Path))
@design_option("anon_vma")
@click.option(
    "--step",
    type=click.IntRange(min=0),
    default=None,
    help="Stop after this step (0-based); default: the end.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output base name (default: <scenario>-<design>); writes .dot, and .svg "
    "where Graphviz is installed.",
)
def graph_command(file: Path, design: str, step: int | None, out: Path | None) -> None:
    """Write the fork hierarchy and the design's rmap objects (the anon_vma graph or
    the CoW context tree) after a scenario, or after one of its steps."""
    from cowctx.files import write_atomically
    from cowctx.report.graph import machine_dot, render_svg
    from cowctx.scenario.runner import run_scenario

    (name,) = parse_designs(design)
    (scenario,) = load_all((file,))
    if step is not None:
        if step >= len(scenario.steps):
            raise click.BadParameter(
                f"the scenario has {len(scenario.steps)} steps", param_hint="--step"
            )
        scenario = scenario.model_copy(update={"steps": scenario.steps[: step + 1], "expect": None})
    run = run_scenario(scenario, name, check=False)
    where = f"after step {step}" if step is not None else "at the end"
    dot = machine_dot(run.machine, run.procs, f"{scenario.name} on {name}, {where}")
    base = out or Path(re.sub(r"[^A-Za-z0-9._-]", "_", f"{scenario.name}-{name}"))
    write_atomically(base.with_suffix(".dot"), dot)
    click.echo(f"wrote {base.with_suffix('.dot')}")
    svg = render_svg(dot)
    if svg is not None:
        write_atomically(base.with_suffix(".svg"), svg)
        click.echo(f"wrote {base.with_suffix('.svg')}")
    else:
        click.echo("Graphviz (dot) is not installed: no SVG", err=True)
