"""``cowctx graph``: the fork hierarchy and a design's rmap objects as DOT/SVG."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from cowctx.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_NO_KERNEL,
    design_option,
    load_all,
    parse_designs,
)


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
@click.option(
    "--kernel",
    is_flag=True,
    help="anon_vma only: draw the running kernel's anon_vma graph beside the model's, "
    "differences in red.",
)
def graph_command(
    file: Path, design: str, step: int | None, out: Path | None, kernel: bool
) -> None:
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
    if kernel:
        dot = _kernel_graph_dot(scenario, run, where)
    else:
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


def _kernel_graph_dot(scenario: Any, run: Any, where: str) -> str:
    """`cowctx graph --kernel`: the model's anon_vma graph beside the kernel's."""
    from cowctx.designs.anon_vma.graph import anon_vma_graph, is_anon_vma_run
    from cowctx.linux import KernelSession, kernel_unavailable_reason
    from cowctx.linux.graph_diff import diff_graphs
    from cowctx.report.graph import graph_pair_dot

    if not is_anon_vma_run(run):
        raise click.BadParameter("the kernel's graph is an anon_vma graph", param_hint="--design")
    if scenario.model_only_steps:
        i = scenario.model_only_steps[0]
        click.echo(f"error: step {i} ({scenario.steps[i].op}) is model-only", err=True)
        sys.exit(EXIT_BAD_INPUT)
    reason = kernel_unavailable_reason()
    if reason is not None:
        click.echo(f"kernel not observable: {reason}", err=True)
        sys.exit(EXIT_NO_KERNEL)
    with KernelSession() as session:
        if session.graph_unavailable:
            click.echo(session.graph_unavailable, err=True)
            sys.exit(EXIT_NO_KERNEL)
        kernel_graph = session.run(scenario).final.graph
        assert kernel_graph is not None
    model_graph = anon_vma_graph(run)
    diffs = diff_graphs(model_graph, kernel_graph, "graph")
    for d in diffs:
        click.echo(d)
    verdict = "agree" if not diffs else f"{len(diffs)} differences"
    title = f"{scenario.name}: the model and Linux, {where}: {verdict}"
    return graph_pair_dot(model_graph, kernel_graph, title)
