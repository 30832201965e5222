"""Every scenario file in the repository passes on the model: its `expect` block
holds and the oracle finds no rmap violation after any step, on every sound
design, and on each design its `expect.violations` names (the PoC's faults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowctx.designs import sound_design_names
from cowctx.scenario.expect import check_expect, scenario_failed
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .helpers import ROOT, SCENARIO_FILES


def _cases() -> list[tuple[Path, str]]:
    cases = []
    for path in SCENARIO_FILES:
        expect = load_scenario(path).expect
        named = sorted(expect.violations) if expect is not None else []
        cases += [(path, d) for d in [*sound_design_names(), *named]]
    return cases


def test_the_repository_has_the_reference_scenarios() -> None:
    names = {p.parent.name for p in SCENARIO_FILES}
    assert {"worked", "kernel-oracle", "merge", "rmap-ref", "poc", "seed"} <= names
    assert len(SCENARIO_FILES) >= 90


@pytest.mark.parametrize(
    ("path", "design"),
    _cases(),
    ids=lambda x: str(x.relative_to(ROOT)) if isinstance(x, Path) else x,
)
def test_scenario_file(path: Path, design: str) -> None:
    scenario = load_scenario(path)
    result = run_scenario(scenario, design).result()
    failures = check_expect(scenario, result)
    assert failures == []
    assert not scenario_failed(scenario, result, failures), [str(v) for v in result.violations]


def test_every_scenario_directory_is_listed_in_the_readme() -> None:
    """scenarios/README.md's table says, for every directory, whether its numbers are
    kernel-measured or model-only; a new directory must be added there."""
    text = (ROOT / "scenarios" / "README.md").read_text()
    dirs = sorted(p.name for p in (ROOT / "scenarios").iterdir() if p.is_dir())
    assert [d for d in dirs if f"| `{d}/` |" not in text] == []
    listed = {p.relative_to(ROOT / "scenarios").as_posix() for p in SCENARIO_FILES}
    assert [f for f in sorted(listed) if f"`{f}`" not in text] == []
