"""What the commands share: exit codes, option definitions, the design list, loading files."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cowctx.designs import design_names, get_design
from cowctx.scenario.loader import ScenarioError, load_scenario
from cowctx.scenario.schema import Scenario

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_NO_KERNEL = 0, 1, 2, 3

F = TypeVar("F", bound=Callable[..., Any])


def design_option(default: str, name: str = "--design") -> Callable[[F], F]:
    """``--design`` (``--designs`` for the comparisons): a name, a list, or ``all``."""
    return click.option(
        name,
        "design",
        default=default,
        show_default=True,
        help="Design name, a comma-separated list, or 'all'.",
    )


def json_option(help: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def scale_option(default: float = 1.0) -> Callable[[F], F]:
    return click.option(
        "--scale",
        type=float,
        default=default,
        show_default=True,
        help="Multiply every workload size (1 = the real default size).",
    )


def html_option(default: Path | None = None) -> Callable[[F], F]:
    return click.option(
        "--html",
        "html_path",
        type=click.Path(path_type=Path),
        default=default,
        show_default=default is not None,
        help="Write a self-contained HTML report here.",
    )


def parse_designs(value: str) -> list[str]:
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


def load_all(files: tuple[Path, ...]) -> list[Scenario]:
    """Every file as a scenario; a malformed one ends the command with exit 2."""
    scenarios = []
    for path in files:
        try:
            scenarios.append(load_scenario(path))
        except ScenarioError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    return scenarios
