"""The ``cowctx`` command line: one module per command, options shared in
:mod:`cowctx.cli.options`."""

from __future__ import annotations

import click

from cowctx.cli.compare import compare_command
from cowctx.cli.contend import contend_command
from cowctx.cli.demo import demo
from cowctx.cli.explore import explore_command
from cowctx.cli.fuzz import fuzz_command
from cowctx.cli.graph import graph_command
from cowctx.cli.kernel import kernel_diff_command, kernel_fuzz_command
from cowctx.cli.run import run
from cowctx.cli.sweep import sweep_command
from cowctx.cli.trace import record_command, replay_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowctx")
def main() -> None:
    """cowctx: anon_vma and CoW-context anonymous rmap, modelled side by side."""


for command in (
    run,
    demo,
    kernel_diff_command,
    kernel_fuzz_command,
    compare_command,
    graph_command,
    sweep_command,
    fuzz_command,
    record_command,
    replay_command,
    explore_command,
    contend_command,
):
    main.add_command(command)

__all__ = ["main"]
