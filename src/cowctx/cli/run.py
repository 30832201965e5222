"""``cowctx run``: scenario files on the model, their ``expect`` blocks checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cowctx.cli.options import (
    EXIT_FAIL,
    EXIT_OK,
    design_option,
    json_option,
    load_all,
    parse_designs,
)
from cowctx.scenario.expect import check_expect, scenario_failed


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@design_option("anon_vma")
@json_option("JSON Lines, one object per scenario and design.")
@click.option("--no-check", is_flag=True, help="Skip the oracle after each step (faster).")
@click.option(
    "--timing", is_flag=True, help="Add each step's model time (time_ns); not deterministic."
)
def run(files: tuple[Path, ...], design: str, as_json: bool, no_check: bool, timing: bool) -> None:
    """Run scenario FILES on the model and check their `expect` blocks."""
    from cowctx.designs.anon_vma.graph import anon_vma_graph, is_anon_vma_run
    from cowctx.report.terminal import print_result, print_side_by_side
    from cowctx.scenario.runner import run_scenario

    designs = parse_designs(design)
    scenarios = load_all(files)
    console = Console(highlight=False, soft_wrap=True)
    failed = False
    for scenario in scenarios:
        results, verdicts = [], []
        for name in designs:
            ran = run_scenario(scenario, name, check=not no_check, timing=timing)
            result = ran.result(timing)
            if is_anon_vma_run(ran):
                result.final.graph = anon_vma_graph(ran)
            failures = check_expect(scenario, result)
            result.expect = failures
            bad = scenario_failed(scenario, result, failures)
            failed |= bad
            results.append(result)
            verdicts.append(bad)
            if as_json:
                click.echo(json.dumps(result.to_json(), sort_keys=True))
            elif len(designs) == 1:
                print_result(console, result, failures, bad)
            else:
                for f in failures:
                    console.print(f"  [red]{escape(result.design)}: {escape(f)}[/]")
        if len(designs) > 1 and not as_json:
            print_side_by_side(console, results, verdicts)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)
