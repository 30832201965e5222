"""``cowctx sweep``: one workload parameter across values, every design, in parallel."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from cowctx.cli.options import (
    design_option,
    html_option,
    json_option,
    parse_designs,
    scale_option,
)


@click.command("sweep")
@click.argument("workload")
@click.option(
    "--param",
    "params",
    multiple=True,
    required=True,
    metavar="NAME=V1,V2,...",
    help="The swept parameter (several values), or a fixed one (one value).",
)
@design_option("all", "--designs")
@scale_option()
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="Run the points on this Dask scheduler instead of local processes.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes (default: one per CPU).",
)
@json_option("One JSON object: the metrics at every value, per design.")
@html_option()
def sweep_command(
    workload: str,
    params: tuple[str, ...],
    design: str,
    scale: float,
    dask_address: str | None,
    workers: int | None,
    as_json: bool,
    html_path: Path | None,
) -> None:
    """Run WORKLOAD for each value of one parameter, on every design, in parallel;
    print each metric against the parameter and plot them in --html."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from cowctx.report.sweep import METRICS, sweep, sweep_json
    from cowctx.workloads import WORKLOADS

    if workload not in WORKLOADS:
        raise click.BadParameter(
            f"unknown workload {workload!r} ({', '.join(WORKLOADS)})", param_hint="WORKLOAD"
        )
    swept: tuple[str, list[float]] | None = None
    fixed: dict[str, float] = {}
    for item in params:
        key, _, text = item.partition("=")
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not name=v1,v2,...", param_hint="--param"
            ) from None
        if key not in WORKLOADS[workload].defaults or not values:
            raise click.BadParameter(
                f"{workload} has no parameter {key!r} ({', '.join(WORKLOADS[workload].defaults)})",
                param_hint="--param",
            )
        for value in values:
            try:
                WORKLOADS[workload].check(key, value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--param") from None
        if len(values) > 1:
            if swept is not None:
                raise click.BadParameter("sweep one parameter at a time", param_hint="--param")
            swept = (key, values)
        else:
            fixed[key] = values[0]
    if swept is None:
        raise click.BadParameter("give one parameter several values", param_hint="--param")
    designs = parse_designs(design)
    with Progress(
        "sweep",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(workload, total=len(swept[1]))
        result = sweep(
            workload,
            swept[0],
            swept[1],
            designs,
            fixed=fixed,
            scale=scale,
            dask_address=dask_address,
            workers=workers,
            progress=lambda n: bar.update(task, completed=n),
        )
    if as_json:
        click.echo(json.dumps(sweep_json(result), sort_keys=True))
    else:
        console = Console(highlight=False, soft_wrap=True, width=140)
        for metric, meaning in METRICS.items():
            table = Table(swept[0], *designs, title=f"{metric}: {meaning}", box=None)
            for value, point in zip(result.values, result.points, strict=True):
                table.add_row(
                    f"{value:g}",
                    *(
                        "" if point[d].get(metric) is None else f"{point[d][metric]:,.2f}"
                        for d in designs
                    ),
                )
            console.print(table)
    if html_path is not None:
        from cowctx.report.html import write_report

        write_report(html_path, [], [result])
        click.echo(f"report written to {html_path}", err=as_json)
