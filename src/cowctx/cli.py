"""The ``cowctx`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from cowctx.designs import design_names
from cowctx.scenario.expect import check_expect
from cowctx.scenario.loader import ScenarioError, load_scenario

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


def _designs(value: str) -> list[str]:
    names = design_names()
    if value == "all":
        return names
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    for name in chosen:
        if name not in names:
            raise click.BadParameter(f"unknown design {name!r} (known: {', '.join(names)}, all)")
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
    from cowctx.report_text import print_result
    from cowctx.scenario.runner import run_scenario

    designs = _designs(design)
    scenarios = []
    for path in files:
        try:
            scenarios.append(load_scenario(path))
        except ScenarioError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    console = Console(highlight=False)
    failed = False
    for scenario in scenarios:
        for name in designs:
            result = run_scenario(scenario, name, check=not no_check, timing=timing).result(timing)
            failures = check_expect(scenario, result)
            result["expect"] = {"passed": not failures, "failures": failures}
            failed |= bool(failures or result["oracle"]["violations"])
            if as_json:
                click.echo(json.dumps(result, sort_keys=True))
            else:
                print_result(console, result, failures)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
