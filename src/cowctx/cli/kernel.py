"""``cowctx kernel-diff`` and ``cowctx kernel-fuzz``: the running kernel as referee."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cowctx.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_NO_KERNEL,
    EXIT_OK,
    json_option,
    load_all,
)


@click.command("kernel-diff")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option("JSON Lines: the model's and the kernel's result per scenario.")
@click.option(
    "--graph-every-step",
    is_flag=True,
    help="Read and compare the anon_vma graph after every step, not only at the end.",
)
def kernel_diff_command(files: tuple[Path, ...], as_json: bool, graph_every_step: bool) -> None:
    """Run FILES on the model and on the running kernel and show where they differ.

    Exit 0 when all agree, 1 on any disagreement, 2 for a bad or model-only
    file, 3 when the kernel cannot be observed (the reason is printed)."""
    from cowctx.linux import KernelSession, kernel_unavailable_reason
    from cowctx.linux.diff import kernel_diff

    scenarios = load_all(files)
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
    with KernelSession(graph_every_step=graph_every_step) as session:
        if session.graph_unavailable:
            click.echo(f"note: {session.graph_unavailable}; graphs not compared", err=True)
        for scenario in scenarios:
            model, kernel, diffs = kernel_diff(scenario, session)
            disagree += bool(diffs)
            if as_json:
                click.echo(json.dumps(model.to_json(), sort_keys=True))
                click.echo(json.dumps(kernel.to_json(), sort_keys=True))
                continue
            mark = "[green]agree[/]" if not diffs else f"[red]{len(diffs)} differences[/]"
            model_ns = sum(s.time_ns or 0 for s in model.steps)
            kernel_ns = sum(s.time_ns or 0 for s in kernel.steps)
            console.print(
                f"{mark} [bold]{scenario.name}[/]  (model {model_ns / 1e6:.2f} ms, "
                f"kernel {kernel_ns / 1e6:.2f} ms)"
            )
            for d in diffs:
                console.print(f"  {escape(d)}")
    if not as_json:
        console.print(f"{len(scenarios) - disagree} of {len(scenarios)} scenarios agree")
    sys.exit(EXIT_FAIL if disagree else EXIT_OK)


@click.command("kernel-fuzz")
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
@click.option(
    "--swap-every",
    type=click.IntRange(min=0),
    default=2,  # cowctx.linux.fuzz.SWAP_EVERY (tests/test_kernel_fuzz.py checks they agree)
    show_default=True,
    help="Make every Nth scenario private-anonymous with pageout and swap-in steps "
    "(the referee then runs it with its own swap file); 0: none.",
)
def kernel_fuzz_command(
    seed: int, scenarios: int, steps: int, out_dir: Path, swap_every: int
) -> None:
    """Random kernel-capable scenarios on the model and on the kernel; every
    disagreement is shrunk and written to OUT as a scenario file whose expect
    holds the kernel's numbers; a disagreement a re-run does not show is reported
    apart, not as a finding.  Exit 0 clean, 1 on findings, 3 no kernel."""
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
            swap_every=swap_every,
        )
    for finding in result.findings:
        click.echo(f"disagreement (generator seed {finding.seed}) -> {finding.path}")
        for d in finding.diffs:
            click.echo(f"  {d}")
    for sseed, diffs in result.unreproduced:
        click.echo(f"not reproduced on a re-run (generator seed {sseed}), not a finding:")
        for d in diffs[:3]:
            click.echo(f"  {d}")
    click.echo(
        f"{result.scenarios} scenarios, {result.steps} steps, "
        f"{len(result.findings)} disagreements, {len(result.unreproduced)} not reproduced "
        f"(seed {seed})"
    )
    sys.exit(EXIT_FAIL if result.findings else EXIT_OK)
