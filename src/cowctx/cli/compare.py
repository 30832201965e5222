"""``cowctx compare``: workloads or scenario files on every design, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from cowctx.cli.options import (
    EXIT_BAD_INPUT,
    design_option,
    html_option,
    json_option,
    load_all,
    parse_designs,
    scale_option,
)
from cowctx.scenario.schema import Scenario

if TYPE_CHECKING:
    from cowctx.report.compare import Comparison
    from cowctx.trace.events import Recording


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


GZIP_MAGIC = b"\x1f\x8b"


def is_recording(path: Path) -> bool:
    """A trace file (``cowctx record``): named ``*.trace``, or gzip'd (scenario files
    are YAML text)."""
    if path.suffix == ".trace":
        return True
    try:
        with path.open("rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:
        return False


def _recording(path: Path) -> Recording:
    """Read a trace file; a malformed one ends the command with exit 2."""
    from cowctx.trace.traceformat import TraceFormatError, read

    try:
        return read(path)
    except TraceFormatError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)


Target = Scenario | tuple[Path, "Recording"]
"""A scenario (a workload or a scenario file), or a recording with its file."""


def _targets(names: tuple[str, ...], params: dict[str, float], scale: float) -> list[Target]:
    """Workload names, scenario files and recordings, in the order given."""
    from cowctx.workloads import WORKLOADS, WorkloadParamError, build_workload

    used: set[str] = set()
    out: list[Target] = []
    for name in names:
        if name in WORKLOADS:
            mine = {k: v for k, v in params.items() if k in WORKLOADS[name].defaults}
            used |= set(mine)
            try:
                out.append(build_workload(name, mine, scale))
            except WorkloadParamError as exc:
                raise click.BadParameter(str(exc), param_hint="--param") from None
        elif Path(name).is_file() and is_recording(Path(name)):
            out.append((Path(name), _recording(Path(name))))
        elif Path(name).exists():
            out.extend(load_all((Path(name),)))
        else:
            raise click.BadParameter(
                f"{name!r} is neither a workload ({', '.join(WORKLOADS)}) nor a file "
                "(a scenario file or a recording)",
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
    """Run workloads (by name), scenario files or recordings (`cowctx record`) on
    every design and compare: objects and bytes, VMA size, locks, rmap walk cost;
    with --kernel the kernel's anon_vma counts stand beside the model's (a
    recording brings its own).  Exit 2 on a malformed file."""
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
        if kernel and any(isinstance(t, Scenario) for t in scenarios):
            from cowctx.linux import KernelSession, kernel_unavailable_reason

            reason = kernel_unavailable_reason()
            if reason is None:
                # the comparison shows counts, not the graph: no BPF graph reads
                session = stack.enter_context(KernelSession(graph=False))
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
        for target in scenarios:
            name = target.name if isinstance(target, Scenario) else str(target[0])
            task = progress.add_task(name)

            def show(design: str, task: TaskID = task, name: str = name) -> None:
                progress.update(task, description=f"{name}: {design}")

            if isinstance(target, Scenario):
                comparisons.append(
                    compare(
                        target,
                        designs,
                        check=check,
                        kernel_session=session,
                        kernel_reason=reason,
                        progress=show,
                    )
                )
            else:
                comparisons.append(_compare_recording(*target, designs, show))
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


def _compare_recording(path: Path, rec: Recording, designs: list[str], show: Any) -> Comparison:
    """The recording's replay on every design; one that cannot be replayed ends the
    command with exit 2, naming the file."""
    from cowctx.report.recording import compare_recording
    from cowctx.trace.replay import ReplayError

    try:
        return compare_recording(rec, str(path), designs, progress=show)
    except ReplayError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
