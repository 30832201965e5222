"""The ``cowctx`` command line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cowctx.designs import design_names, get_design, sound_design_names
from cowctx.scenario.expect import check_expect, scenario_failed
from cowctx.scenario.loader import ScenarioError, load_scenario

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_NO_KERNEL = 0, 1, 2, 3


def _designs(value: str) -> list[str]:
    """``all``, or a comma-separated list of designs; ``cow_context[a,b]`` keeps
    its own commas."""
    if value == "all":
        return design_names()
    chosen = [v.strip() for v in re.split(r",(?![^\[]*\])", value) if v.strip()]
    for name in chosen:
        try:
            get_design(name)
        except KeyError as err:
            raise click.BadParameter(str(err.args[0])) from None
    return chosen


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowctx")
def main() -> None:
    """cowctx: anon_vma and CoW-context anonymous rmap, modelled side by side."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--design",
    "design",
    default="anon_vma",
    show_default=True,
    help="Design name, a comma-separated list, or 'all'.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines, one object per scenario and design."
)
@click.option("--no-check", is_flag=True, help="Skip the oracle after each step (faster).")
@click.option(
    "--timing", is_flag=True, help="Add each step's model time (time_ns); not deterministic."
)
def run(files: tuple[Path, ...], design: str, as_json: bool, no_check: bool, timing: bool) -> None:
    """Run scenario FILES on the model and check their `expect` blocks."""
    from cowctx.report_text import print_result, print_side_by_side
    from cowctx.scenario.runner import run_scenario

    designs = _designs(design)
    scenarios = _load_all(files)
    console = Console(highlight=False, soft_wrap=True)
    failed = False
    for scenario in scenarios:
        results, verdicts = [], []
        for name in designs:
            result = run_scenario(scenario, name, check=not no_check, timing=timing).result(timing)
            failures = check_expect(scenario, result)
            result["expect"] = {"passed": not failures, "failures": failures}
            bad = scenario_failed(scenario, result, failures)
            failed |= bad
            results.append(result)
            verdicts.append(bad)
            if as_json:
                click.echo(json.dumps(result, sort_keys=True))
            elif len(designs) == 1:
                print_result(console, result, failures, bad)
            else:
                for f in failures:
                    console.print(f"  [red]{escape(result['design'])}: {escape(f)}[/]")
        if len(designs) > 1 and not as_json:
            print_side_by_side(console, results, verdicts)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


DEMO_SCALE = 0.5
"""The demo's workload size: half the real default, about half a minute here."""


@main.command()
@click.option(
    "--design",
    "design",
    default="all",
    show_default=True,
    help="Design name, a comma-separated list, or 'all'.",
)
@click.option(
    "--scale",
    type=float,
    default=DEMO_SCALE,
    show_default=True,
    help="Workload size (1 = the real default size).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=Path("report.html"),
    show_default=True,
)
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
        _demo_stories(_designs(design))
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

    from cowctx.report_text import print_result
    from cowctx.scenario.runner import run_scenario

    console = Console(highlight=False, soft_wrap=True)
    builtin = package_files("cowctx") / "scenarios_builtin"
    paths = sorted(p for p in builtin.iterdir() if p.name.endswith(".yaml"))
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


def _load_all(files: tuple[Path, ...]) -> list:  # type: ignore[type-arg]
    scenarios = []
    for path in files:
        try:
            scenarios.append(load_scenario(path))
        except ScenarioError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    return scenarios


@main.command("kernel-diff")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON Lines: the model's and the kernel's result per scenario.",
)
def kernel_diff_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Run FILES on the model and on the running kernel and show where they differ.

    Exit 0 when all agree, 1 on any disagreement, 2 for a bad or model-only
    file, 3 when the kernel cannot be observed (the reason is printed)."""
    from cowctx.linux import KernelSession, kernel_unavailable_reason
    from cowctx.linux.diff import kernel_diff

    scenarios = _load_all(files)
    for scenario, path in zip(scenarios, files, strict=True):
        if scenario.model_only_steps:
            i = scenario.model_only_steps[0]
            click.echo(
                f"error: {path}: step {i} ({scenario.steps[i].op}) is model-only; "
                "kernel-diff cannot run this file",
                err=True,
            )
            sys.exit(EXIT_BAD_INPUT)
    reason = kernel_unavailable_reason()
    if reason is not None:
        if as_json:
            for scenario in scenarios:
                click.echo(
                    json.dumps(
                        {
                            "scenario": scenario.name,
                            "design": "linux",
                            "available": False,
                            "reason": reason,
                        }
                    )
                )
        click.echo(f"kernel not observable: {reason}", err=True)
        sys.exit(EXIT_NO_KERNEL)
    console = Console(highlight=False, stderr=as_json, soft_wrap=True)
    disagree = 0
    with KernelSession() as session:
        for scenario in scenarios:
            model, kernel, diffs = kernel_diff(scenario, session)
            disagree += bool(diffs)
            if as_json:
                click.echo(json.dumps(model, sort_keys=True))
                click.echo(json.dumps(kernel, sort_keys=True))
                continue
            mark = "[green]agree[/]" if not diffs else f"[red]{len(diffs)} differences[/]"
            model_ns = sum(s["time_ns"] for s in model["steps"])
            kernel_ns = sum(s["time_ns"] or 0 for s in kernel["steps"])
            console.print(
                f"{mark} [bold]{scenario.name}[/]  (model {model_ns / 1e6:.2f} ms, "
                f"kernel {kernel_ns / 1e6:.2f} ms)"
            )
            for d in diffs:
                console.print(f"  {escape(d)}")
    if not as_json:
        console.print(f"{len(scenarios) - disagree} of {len(scenarios)} scenarios agree")
    sys.exit(EXIT_FAIL if disagree else EXIT_OK)


@main.command("kernel-fuzz")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--scenarios", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Steps per random scenario.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("kernel-fuzz-findings"),
    show_default=True,
    help="Where shrunk disagreements are written.",
)
def kernel_fuzz_command(seed: int, scenarios: int, steps: int, out_dir: Path) -> None:
    """Random kernel-capable scenarios on the model and on the kernel; every
    disagreement is shrunk and written to OUT as a scenario file whose expect
    holds the kernel's numbers.  Exit 0 clean, 1 on findings, 3 no kernel."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from cowctx.linux import KernelSession, kernel_unavailable_reason
    from cowctx.linux.fuzz import kernel_fuzz

    reason = kernel_unavailable_reason()
    if reason is not None:
        click.echo(f"kernel not observable: {reason}", err=True)
        sys.exit(EXIT_NO_KERNEL)
    console = Console(highlight=False, soft_wrap=True, stderr=True)
    with (
        KernelSession() as session,
        Progress(
            "kernel-fuzz",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("scenarios", total=scenarios)
        result = kernel_fuzz(
            session,
            seed,
            scenarios,
            steps,
            out_dir=out_dir,
            progress=lambda n: bar.update(task, completed=n),
        )
    for finding in result.findings:
        click.echo(f"disagreement (generator seed {finding.seed}) -> {finding.path}")
        for d in finding.diffs:
            click.echo(f"  {d}")
    click.echo(
        f"{result.scenarios} scenarios, {result.steps} steps, "
        f"{len(result.findings)} disagreements (seed {seed})"
    )
    sys.exit(EXIT_FAIL if result.findings else EXIT_OK)


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


def _targets(names: tuple[str, ...], params: dict[str, float], scale: float) -> list:  # type: ignore[type-arg]
    """Workload names and scenario files, as scenarios."""
    from cowctx.workloads import WORKLOADS, build_workload

    used: set[str] = set()
    out = []
    for name in names:
        if name in WORKLOADS:
            mine = {k: v for k, v in params.items() if k in WORKLOADS[name].defaults}
            used |= set(mine)
            out.append(build_workload(name, mine, scale))
        elif Path(name).exists():
            out.extend(_load_all((Path(name),)))
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


@main.command("compare")
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--designs",
    "design",
    default="all",
    show_default=True,
    help="Design names (comma-separated) or 'all'.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a workload parameter (repeatable).",
)
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every workload size (1 = real size).",
)
@click.option("--kernel", is_flag=True, help="Run the same steps on the kernel too.")
@click.option("--check", is_flag=True, help="Run the oracle after every step (slow).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per workload.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    help="Write a self-contained HTML report here.",
)
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

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from cowctx.report.compare import compare, comparison_json
    from cowctx.report.tables import print_comparison

    designs = _designs(design)
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
            comparisons.append(
                compare(
                    scenario,
                    designs,
                    check=check,
                    kernel_session=session,
                    kernel_reason=reason,
                    progress=lambda d, t=task, n=scenario.name: progress.update(
                        t, description=f"{n}: {d}"
                    ),
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


@main.command("graph")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--design", default="anon_vma", show_default=True)
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

    (name,) = _designs(design)
    (scenario,) = _load_all((file,))
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


@main.command("sweep")
@click.argument("workload")
@click.option(
    "--param",
    "params",
    multiple=True,
    required=True,
    metavar="NAME=V1,V2,...",
    help="The swept parameter (several values), or a fixed one (one value).",
)
@click.option("--designs", "design", default="all", show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True)
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
@click.option("--json", "as_json", is_flag=True)
@click.option("--html", "html_path", type=click.Path(path_type=Path))
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
        if len(values) > 1:
            if swept is not None:
                raise click.BadParameter("sweep one parameter at a time", param_hint="--param")
            swept = (key, values)
        else:
            fixed[key] = values[0]
    if swept is None:
        raise click.BadParameter("give one parameter several values", param_hint="--param")
    designs = _designs(design)
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


def _register_subcommands() -> None:
    from cowctx.fuzz.cli import fuzz_command
    from cowctx.trace.cli import record_command, replay_command

    main.add_command(fuzz_command, "fuzz")
    main.add_command(record_command, "record")
    main.add_command(replay_command, "replay")


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
