"""``cowctx fuzz``: random scenarios until the oracle objects, then the shortest
scenario file that shows it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from cowctx.cli.options import EXIT_FAIL, EXIT_OK
from cowctx.designs import design_names, get_design
from cowctx.files import write_atomically
from cowctx.fuzz.generate import KERNEL_OPS, MODEL_OPS


class StepsPerSecond(ProgressColumn):
    """Model speed, so a slow design or a slow oracle shows at once."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed or 0:,.0f} steps/s", style="cyan")


@click.command("fuzz")
@click.option("--design", default="anon_vma", show_default=True, help="Design to fuzz.")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Random steps to run in total.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes every random choice.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the shrunk failing scenario to this file.",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Steps per random scenario (a fresh machine each).",
)
@click.option(
    "--kernel-only", is_flag=True, help="Only steps the kernel can run (no ksm or rmap clients)."
)
@click.option(
    "--skip-op",
    "skip_ops",
    multiple=True,
    type=click.Choice(sorted(set(KERNEL_OPS) - {"mmap"} | set(MODEL_OPS))),
    help="Never generate this op (repeatable), to hunt past a known failure.",
)
def fuzz_command(
    design: str,
    steps: int,
    seed: int,
    out: Path | None,
    chunk: int,
    kernel_only: bool,
    skip_ops: tuple[str, ...],
) -> None:
    """Run random scenarios on DESIGN with the oracle after every step.

    Exit 0 when no violation shows in STEPS steps; otherwise print the
    violation, then the failing scenario shrunk to few steps as a scenario
    file on stdout (and to --out), and exit 1."""
    from cowctx.fuzz.runner import fuzz

    try:
        get_design(design)
    except KeyError:
        raise click.BadParameter(
            f"unknown design {design!r} (known: {', '.join(design_names())})", param_hint="--design"
        ) from None
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    with Progress(
        TextColumn("[bold]fuzz {task.fields[design]}"),
        BarColumn(),
        MofNCompleteColumn(),
        StepsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
    ) as bar:
        task = bar.add_task("fuzz", total=steps, design=design, note="")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done)

        def shrink_progress(tried: int, smallest: int) -> None:
            bar.update(task, note=f"shrinking: {tried} tried, {smallest} steps")

        result = fuzz(
            design,
            steps,
            seed,
            chunk=chunk,
            progress=progress,
            shrink_progress=shrink_progress,
            kernel_only=kernel_only,
            skip_ops=skip_ops,
        )
    if result.ok:
        click.echo(f"no violation in {result.steps_run} steps (seed {seed})")
        sys.exit(EXIT_OK)
    assert result.failure is not None
    shrunk = result.shrunk_failure or result.failure
    console.print(
        f"[red bold]violation[/] after {result.steps_run} steps (seed {seed}, "
        f"chunk {result.chunk_index}): {result.failure}"
    )
    if result.failure.traceback:
        console.print(result.failure.traceback, markup=False)
    console.print(
        f"shrunk to {len(result.shrunk_steps)} steps ({result.shrink_tests} candidates run): "
        f"{shrunk}",
        markup=False,
    )
    text = result.scenario_yaml()
    if out is not None:
        write_atomically(out, text)
        console.print(f"written to {out}")
    click.echo(text, nl=False)
    sys.exit(EXIT_FAIL)
