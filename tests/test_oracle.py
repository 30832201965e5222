"""The oracle and the clients catch designs that are wrong: each broken design
below makes a real rmap bug, and the check names it."""

from __future__ import annotations

from typing import Any

from cowctx.designs.anon_vma import AnonVmaRmap
from cowctx.designs.anon_vma.rmap import _av
from cowctx.designs.anon_vma.structs import AnonVmaVma
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.scenario.runner import run_scenario

from .helpers import scenario


class ForkWithoutParentLinks(AnonVmaRmap):
    """Fork gives the child only its own anon_vma, no AVCs into the parent's tree:
    a walk of a shared folio then misses the child."""

    name = "broken_fork"

    def _anon_vma_clone(self, dst: AnonVmaVma, src: AnonVmaVma) -> None:
        if dst.anon_vma is None:
            return
        super()._anon_vma_clone(dst, src)


class MoveToParent(AnonVmaRmap):
    """Exclusive reuse moves the folio to the *root* anon_vma instead of the VMA's;
    nothing is missed (the root's tree covers everyone) but walks get wider."""

    name = "move_to_root"

    def folio_move_anon_rmap(self, folio: Folio, vma: VmAreaStruct) -> None:
        anon_vma = _av(vma)
        assert anon_vma is not None
        folio.mapping = anon_vma.root


class ForgetsNumActive(AnonVmaRmap):
    """unlink_anon_vmas() forgets to drop num_active_vmas."""

    name = "forgets_num_active"

    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        av = vma.anon_vma
        super().unlink_anon_vmas(vma)
        if av is not None and not av.freed:  # type: ignore[attr-defined]
            av.num_active_vmas += 1  # type: ignore[attr-defined]


FORK_SHARE = scenario(
    "fork-share",
    [
        {"op": "mmap", "page": 0, "pages": 4},
        {"op": "write", "page": 0, "pages": 4},
        {"op": "fork", "child": "p1"},
    ],
)


def test_missed_mapping_is_reported_with_step_and_folio() -> None:
    run = run_scenario(FORK_SHARE, ForkWithoutParentLinks)
    missed = [v for v in run.violations if v.kind == "missed"]
    assert len(missed) == 4  # one per shared folio
    first = missed[0]
    assert first.step == 2 and first.op == "fork" and first.folio is not None
    assert "missed mm#2" in first.detail
    assert not run_scenario(FORK_SHARE, "anon_vma").violations


def test_migration_after_a_missed_walk_is_a_client_violation() -> None:
    s = scenario(
        "fork-migrate",
        [
            *[st.model_dump(exclude_none=True) for st in FORK_SHARE.steps],
            {"op": "migrate", "page": 0},
        ],
    )
    run = run_scenario(s, ForkWithoutParentLinks, check=False)
    assert [v.kind for v in run.violations] == ["client"]
    assert "try_to_migrate missed mm#2" in run.violations[0].detail
    assert not run_scenario(s, "anon_vma").violations


def test_structural_invariants_catch_a_counter_error() -> None:
    s = scenario(
        "unmap-piece",
        [
            {"op": "mmap", "page": 0, "pages": 8},
            {"op": "write", "page": 0, "pages": 8},
            {"op": "munmap", "page": 0, "pages": 4},
        ],
    )
    run = run_scenario(s, ForgetsNumActive)
    assert any(
        v.kind == "invariant" and "num_active_vmas 2, 1 VMAs use it" in v.detail
        for v in run.violations
    )


def test_a_wider_but_complete_walk_is_not_a_violation_but_costs_more() -> None:
    """After p0 and p2 copy, p1 reuses the folio; moved to p1's anon_vma its walk
    sees one VMA, left at the root it must look through the others too."""
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "page": 0, "pages": 1},
        {"op": "write", "page": 0},
        {"op": "fork", "child": "p1"},
        {"op": "fork", "child": "p2"},
        {"op": "write", "page": 0},
        {"op": "write", "proc": "p2", "page": 0},
        {"op": "write", "proc": "p1", "page": 0},
        {"op": "referenced", "proc": "p1", "page": 0},
    ]
    good = run_scenario(scenario("w", steps), "anon_vma")
    wide = run_scenario(scenario("w", steps), MoveToParent)
    assert not good.violations and not wide.violations
    good_walk = good.result().to_json()["walks"]["folio_referenced"]
    wide_walk = wide.result().to_json()["walks"]["folio_referenced"]
    assert (good_walk["vma_lookups"], good_walk["hits"], good_walk["misses"]) == (1, 1, 0)
    # p0's AVC comes first in the root's tree: a miss, then p1's hit ends the walk
    # (folio_referenced stops once it has seen mapcount mappings)
    assert (wide_walk["vma_lookups"], wide_walk["hits"], wide_walk["misses"]) == (2, 1, 1)


class ForgetsNewFolioOfChild(AnonVmaRmap):
    """folio_migrate() gives the new folio the child's anon_vma instead of the old
    folio's: remove_migration_ptes() then walks the wrong hierarchy and misses the
    parent's migration entry."""

    name = "migrate_to_child_anon_vma"

    def folio_migrate(self, dst: Folio, src: Folio) -> None:
        super().folio_migrate(dst, src)
        for av in self.anon_vmas.values():  # the newest anon_vma: the child's
            dst.mapping = av


def test_clients_report_what_they_did_and_the_oracle_what_they_missed() -> None:
    """With a walk that misses the child: the migration fails and the entries it
    made are mapped back to the old folio (as migrate_pages() does); reclaim leaves
    the folio mapped in the child.  Only the oracle-side check names the miss."""
    from cowctx.clients.migrate import migrate_pages
    from cowctx.oracle.clients import check_reclaim

    run = run_scenario(FORK_SHARE, ForkWithoutParentLinks, check=False)
    m, p0 = run.machine, run.procs["p0"]
    folio = m.folio_at(p0, 0x2000_0000_0000)
    assert folio is not None and folio.mapcount == 2
    result = migrate_pages(m, folio)
    assert result.new is None and len(result.unmapped) == len(result.remapped) == 1
    assert folio.mapcount == 2 and m.folio_at(p0, 0x2000_0000_0000) is folio
    reclaimed, problems = check_reclaim(m, folio)
    assert not reclaimed.freed and len(reclaimed.unmapped) == 1
    assert problems == ["try_to_unmap missed mm#2 at 0x200000000000"]


def test_a_migration_entry_left_behind_is_named_and_repaired() -> None:
    s = scenario(
        "fork-migrate-left",
        [
            *[st.model_dump(exclude_none=True) for st in FORK_SHARE.steps],
            {"op": "migrate", "page": 0},
        ],
    )
    run = run_scenario(s, ForgetsNewFolioOfChild)
    details = [v.detail for v in run.violations if v.kind == "client"]
    assert details and all("remove_migration_ptes missed" in d for d in details)
    assert not [v for v in run.violations if v.kind == "pte"], "the entry was repaired"
    assert not run_scenario(s, "anon_vma").violations
