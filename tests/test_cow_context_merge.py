"""The corrected CoW context design's merge rule: faulted VMAs with different
anon offsets never end up in one VMA, on every merge path (scenarios/cow_context/).

``OffsetBlindMerge`` is the rule as it was before the fix (only a faulted
middle was compared with its target; prev and next of a two-sided merge, and
a growing VMA with its next, were not): each scenario must catch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cowctx.designs.cow_context import CowContextRmap
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.scenario.expect import check_expect, scenario_failed
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .helpers import ROOT

if TYPE_CHECKING:
    from cowctx.mm.vma import VmaMergeStruct

MERGE_FILES = sorted((ROOT / "scenarios" / "cow_context").glob("merge-offset-*.yaml"))


class OffsetBlindMerge(CowContextRmap):
    """The merge rule before the fix of issue 9 (a deliberately broken design)."""

    name = "cow_context_offset_blind_merge"

    def is_mergeable_anon_vma(self, vmg: VmaMergeStruct, merge_next: bool) -> bool:
        tgt = vmg.next if merge_next else vmg.prev
        assert tgt is not None
        if vmg.file is not None and vmg.anon_vma is not None:
            if vmg.copied_from is not None:
                return False
            if tgt.anon_vma is not None and vmg.middle is not None:
                return self.vma_offset(tgt) == self.vma_offset(vmg.middle)
        return True

    def are_anon_vmas_compatible(self, vma1: VmAreaStruct, vma2: VmAreaStruct) -> bool:
        return True


def test_every_merge_path_has_a_scenario() -> None:
    names = {p.stem.removeprefix("merge-offset-") for p in MERGE_FILES}
    assert names == {"new-range", "mprotect", "madvise", "mremap-expand", "mremap-dest"}


@pytest.mark.parametrize("path", MERGE_FILES, ids=lambda p: p.stem)
def test_corrected_design_keeps_differing_offsets_apart(path: Path) -> None:
    scenario = load_scenario(path)
    result = run_scenario(scenario, "cow_context").result()
    assert check_expect(scenario, result) == []
    assert result.violations == []
    assert result.to_json()["final"]["maps"]["p0"] == [[0, 8, "rw-p"], [8, 12, "rw-p"]]


@pytest.mark.parametrize("path", MERGE_FILES, ids=lambda p: p.stem)
def test_the_rule_before_the_fix_is_caught(path: Path) -> None:
    scenario = load_scenario(path)
    result = run_scenario(scenario, OffsetBlindMerge).result()
    kinds = {v.kind for v in result.violations}
    assert "missed" in kinds
    assert result.to_json()["final"]["maps"]["p0"] == [[0, 12, "rw-p"]]  # A and B in one VMA
    assert scenario_failed(scenario, result, check_expect(scenario, result))


def test_the_fuzzer_finds_the_hole_when_the_fix_is_reverted() -> None:
    """The generator maps files at varied offsets, moves faulted file mappings
    to where their file pages continue another mapping of the file, fills the
    holes between them and grows mappings up to their neighbour: with the old
    merge rule it reaches the hole in 3,625 steps (seed 7, chunks of 1,000),
    and the shrunk scenario is clean on the corrected design."""
    from cowctx.fuzz.runner import fuzz, scenario_of

    result = fuzz("offset-blind", steps=4000, seed=7, chunk=1000, design_factory=OffsetBlindMerge)
    assert result.failure is not None and result.steps_run <= 4000
    assert result.failure.kind in {"invariant", "missed"}
    shrunk = scenario_of(result.shrunk_steps)
    assert any(s.file is not None for s in shrunk.steps if s.op == "mmap")
    assert run_scenario(shrunk, OffsetBlindMerge).violations
    assert run_scenario(shrunk, "cow_context").violations == []
