"""``cowctx compare``: workloads or scenario files on every design, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cowctx.cli.options import (
    design_option,
    html_option,
    json_option,
    load_all,
    parse_designs,
    scale_option,
)
from cowctx.scenario.schema import Scenario


def _parse_params(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not name=number", param_hint="--param") from None
    return out


def _targets(names: tuple[str, ...], params: dict[str, float], scale: float) -> list[Scenario]:
    """Workload names and scenario files, as scenarios."""
    from cowctx.workloads import WORKLOADS, WorkloadParamError, build_workload

    used: set[str] = set()
    out = []
    for name in names:
        if name in WORKLOADS:
            mine = {k: v for k, v in params.items() if k in WORKLOADS[name].defaults}
            used |= set(mine)
            try:
                out.append(build_workload(name, mine, scale))
            except WorkloadParamError as exc:
                raise click.BadParameter(str(exc), param_hint="--param") from None
        elif Path(name).exists():
            out.extend(load_all((Path(name),)))
        else:
            raise click.BadParameter(
                f"{name!r} is neither a workload ({', '.join(WORKLOADS)}) nor a file",
                param_hint="WORKLOAD|FILE",
            )
    unused = set(params) - used
    if unused:
        raise click.BadParameter(
            f"no chosen workload has parameter(s) {', '.join(sorted(unused))}", param_hint="--param"
        )
    return out


@click.command("compare")
@click.argument("targets", nargs=-1, required=True)
@design_option("all", "--designs")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a workload parameter (repeatable).",
)
@scale_option()
@click.option("--kernel", is_flag=True, help="Run the same steps on the kernel too.")
@click.option("--check", is_flag=True, help="Run the oracle after every step (slow).")
@json_option("One JSON object per workload.")
@html_option()
def compare_command(
    targets: tuple[str, ...],
    design: str,
    params: tuple[str, ...],
    scale: float,
    kernel: bool,
    check: bool,
    as_json: bool,
    html_path: Path | None,
) -> None:
    """Run workloads (by name) or scenario files on every design and compare:
    objects and bytes, VMA size, locks, rmap walk cost; with --kernel the
    kernel's anon_vma counts stand beside the model's."""
    from contextlib import ExitStack

    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from cowctx.report.compare import compare, comparison_json
    from cowctx.report.tables import print_comparison

    designs = parse_designs(design)
    scenarios = _targets(targets, _parse_params(params), scale)
    console = Console(highlight=False, soft_wrap=True, stderr=as_json, width=140)
    comparisons = []
    with ExitStack() as stack:
        session, reason = None, None
        if kernel:
            from cowctx.linux import KernelSession, kernel_unavailable_reason

            reason = kernel_unavailable_reason()
            if reason is None:
                session = stack.enter_context(KernelSession())
            else:
                console.print(f"[yellow]kernel not observable: {escape(reason)}[/]")
        progress = stack.enter_context(
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
        )
        for scenario in scenarios:
            task = progress.add_task(scenario.name)

            def show(design: str, task: TaskID = task, name: str = scenario.name) -> None:
                progress.update(task, description=f"{name}: {design}")

            comparisons.append(
                compare(
                    scenario,
                    designs,
                    check=check,
                    kernel_session=session,
                    kernel_reason=reason,
                    progress=show,
                )
            )
            progress.remove_task(task)
    for c in comparisons:
        if as_json:
            click.echo(json.dumps(comparison_json(c), sort_keys=True))
        else:
            print_comparison(console, c)
    if html_path is not None:
        from cowctx.report.html import write_report

        write_report(html_path, comparisons)
        console.print(f"report written to {html_path}")
