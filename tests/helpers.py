"""Helpers shared by test modules: building scenarios inline, the repository's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cowctx.scenario.loader import load_scenario, parse_scenario
from cowctx.scenario.schema import Scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_FILES = sorted((ROOT / "scenarios").rglob("*.yaml"))


def scenario(name: str, steps: list[Any], **extra: Any) -> Scenario:
    """A scenario from inline steps (format and name filled in)."""
    return parse_scenario({"format": "cowctx-scenario/1", "name": name, "steps": steps, **extra})


def kernel_capable_files() -> list[Path]:
    return [p for p in SCENARIO_FILES if not load_scenario(p).model_only_steps]


W = 0x2000_0000_0000
"""Page 0 of the scenario window."""
PAGE = 4096


def page(n: int) -> int:
    return W + n * PAGE


def run(steps: list[Any], design: str = "anon_vma", **extra: Any):
    """Run inline steps with the oracle on; fails the test on any violation."""
    from cowctx.scenario.runner import run_scenario

    result = run_scenario(scenario("t", steps, **extra), design)
    assert [str(v) for v in result.violations] == []
    return result


def layout(result, proc: str = "p0") -> list[tuple[int, int, str]]:
    """The window VMAs of ``proc`` as (start_page, end_page, perms)."""
    return [tuple(x) for x in result.result().to_json()["final"]["maps"][proc]]


def objects(result, kind: str) -> tuple[int, int, int]:
    """(allocated, freed, live) of one object kind."""
    s = result.machine.ledger.objects[kind]
    return s.allocated, s.freed, s.live


def errnos(result) -> list[str | None]:
    return [s.errno for s in result.steps]


def sigint_as_from_a_terminal() -> None:
    """``preexec_fn`` for a child a test will interrupt: SIGINT back to its default.
    A background job of a non-interactive shell (``make test &``, nohup) starts with
    SIGINT ignored (POSIX), and Python then installs no KeyboardInterrupt handler, so
    a test of Ctrl-C would test nothing the user does."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
