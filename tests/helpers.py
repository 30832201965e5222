"""Helpers shared by test modules: building scenarios inline, the repository's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cowctx.scenario.loader import load_scenario, parse_scenario
from cowctx.scenario.schema import Scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_FILES = sorted((ROOT / "scenarios").rglob("*.yaml"))


def scenario(name: str, steps: list[dict[str, Any]], **extra: Any) -> Scenario:
    """A scenario from inline steps (format and name filled in)."""
    return parse_scenario({"format": "cowctx-scenario/1", "name": name, "steps": steps, **extra})


def kernel_capable_files() -> list[Path]:
    return [p for p in SCENARIO_FILES if not load_scenario(p).model_only_steps]
