"""Every scenario file in the repository passes on the model: its `expect` block
holds and the oracle finds no rmap violation after any step."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowctx.designs import sound_design_names
from cowctx.scenario.expect import check_expect
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .helpers import ROOT, SCENARIO_FILES


def test_the_repository_has_the_reference_scenarios() -> None:
    names = {p.parent.name for p in SCENARIO_FILES}
    assert {"worked", "kernel-oracle", "merge", "rmap-ref"} <= names
    assert len(SCENARIO_FILES) >= 80


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("design", sound_design_names())
def test_scenario_file(path: Path, design: str) -> None:
    scenario = load_scenario(path)
    result = run_scenario(scenario, design).result()
    assert result["oracle"]["violations"] == []
    assert check_expect(scenario, result) == []
