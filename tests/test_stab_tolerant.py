"""``cow_context_poc[stab_tolerant]``, walks that tolerate races (issue 11 deliverable
4b, docs/stabilisation.md section 3): races of scenarios/races/poc/ the PoC shows and
the scheme removes, each piece of the scheme shown to matter by taking it out, the
race it leaves (callbacks under RCU) found by the explorer with a committed schedule,
and migration's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.concurrency.explorer import explore
from cowctx.concurrency.program import ScenarioProgram
from cowctx.concurrency.suite import stabilisation_suite
from cowctx.designs.cow_context.poc import CowContextPoc
from cowctx.designs.cow_context.stabilise_tolerant import TolerantPoc
from cowctx.scenario.loader import load_scenario

POC = Path(__file__).parent.parent / "scenarios" / "races" / "poc"
CONCURRENT = Path(__file__).parent.parent / "scenarios" / "concurrent"
SCHEDULES = POC / "schedules"


def _found(path: Path, design: str, bound: int) -> set[tuple[str, str]]:
    program = ScenarioProgram(load_scenario(path), design)
    return set(explore(program, program.names, bound=bound, naive=True).violations)


def _kinds(found: set[tuple[str, str]]) -> set[str]:
    return {k for k, _ in found}


@pytest.mark.parametrize(
    ("name", "fixes", "kind"),
    [
        ("poc-unstable-vma.yaml", "", "missed"),
        ("poc-mm-teardown.yaml", "", "uaf"),
        ("poc-dynarray-shift.yaml", "no_exclusive_abort,dynarray_insert,", "missed"),
        ("poc-dynarray-krealloc.yaml", "no_exclusive_abort,", "uaf"),
    ],
)
def test_the_poc_shows_the_race_and_the_tolerant_walk_removes_it(
    name: str, fixes: str, kind: str
) -> None:
    poc = f"cow_context_poc[{fixes.rstrip(',')}]" if fixes else "cow_context_poc"
    assert kind in _kinds(_found(POC / name, poc, 1))
    found = _found(POC / name, f"cow_context_poc[{fixes}stab_tolerant]", 1)
    assert found <= _found(POC / name, "anon_vma", 1), sorted(found)


def test_trusting_the_vmas_pgoff_brings_the_split_race_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broken input: the PoC's ``walk_context()`` (probes only VMAs whose
    ``vm_start``/``vm_pgoff`` give the offset) in place of the page-table probe."""
    monkeypatch.setattr(TolerantPoc, "_walk_context", CowContextPoc._walk_context)
    found = _found(POC / "poc-unstable-vma.yaml", "cow_context_poc[stab_tolerant]", 1)
    assert "missed" in _kinds(found), sorted(found)


def test_shifting_in_place_brings_the_dynarray_race_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broken input: the PoC's in-place ``__dynarray_append_value()``."""
    monkeypatch.setattr(TolerantPoc, "add_overlapping_remap", CowContextPoc.add_overlapping_remap)
    design = "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_tolerant]"
    found = _found(POC / "poc-dynarray-shift.yaml", design, 1)
    assert "missed" in _kinds(found), sorted(found)


@pytest.mark.parametrize(
    ("name", "design"),
    [
        ("poc-sleep-under-rcu", "cow_context_poc[stab_tolerant]"),
        ("poc-fork-unmap-exclusive", "cow_context_poc[no_exclusive_abort,stab_tolerant]"),
    ],
)
def test_callbacks_still_run_under_rcu(name: str, design: str) -> None:
    """What the scheme leaves: ``try_to_unmap_one()``/``try_to_migrate_one()``
    under the walk's RCU section, on every schedule (bound 0), and the committed
    schedule replays it."""
    assert "sleep_in_atomic" in _kinds(_found(POC / f"{name}.yaml", design, 0))
    schedule = SCHEDULES / f"{name}.stab_tolerant.json"
    doc = json.loads(schedule.read_text())
    assert (doc["design"], doc["kind"]) == (design, "sleep_in_atomic")
    res = CliRunner().invoke(
        main, ["explore", str(POC / f"{name}.yaml"), "--replay", str(schedule), "--json"]
    )
    assert res.exit_code == 1, res.output
    out: dict[str, Any] = json.loads(res.output.strip().splitlines()[-1])
    assert ("sleep_in_atomic", doc["detail"]) in {
        (v["kind"], v["detail"]) for v in out["explore"]["violations"]
    }


def test_migration_restores_what_it_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``try_to_migrate()`` records where it put a migration entry; the record goes
    to the new folio and ``remove_migration_ptes()`` restores those pairs (with a
    fork beside it, bound 1: none left behind, none recorded twice)."""
    restored: list[list[tuple[int, int]]] = []
    original = TolerantPoc._restore_recorded

    def spy(self: TolerantPoc, folio: Any, rwc: Any, hold: Any) -> bool:
        restored.append(sorted((mm.mm_id, a) for mm, a in self._records.get(folio.pfn, [])))
        return original(self, folio, rwc, hold)

    monkeypatch.setattr(TolerantPoc, "_restore_recorded", spy)
    design = "cow_context_poc[no_exclusive_abort,stab_tolerant]"
    path = CONCURRENT / "fork-migrate.yaml"
    found = _found(path, design, 1) - _found(path, "anon_vma", 1)
    assert _kinds(found) <= {"sleep_in_atomic"}, sorted(found)  # try_to_migrate_one
    assert restored and all(r for r in restored)
    assert all(len(set(r)) == len(r) for r in restored)
    assert any(len(r) == 2 for r in restored)  # parent and child, when the fork came first


def _suite_case(name: str) -> ScenarioProgram:
    (case,) = [c for c in stabilisation_suite() if c.name == name]
    return ScenarioProgram(case.scenario, "cow_context_poc[no_exclusive_abort,stab_tolerant]")


def test_a_vma_split_between_the_re_check_and_the_probe_is_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite found it (``referenced×munmap-partial@fork2``, bound 1): the walker
    re-checked c1's VMA, then the munmap of its first half split it, leaving the
    VMA object on the removed half, and the probe (``page_vma_mapped_walk()``
    checks the address against the VMA) found nothing.  Re-reading the range after
    an empty probe and looking up again fixes it; without that the miss is back."""
    name = "referenced×munmap-partial@fork2"
    program = _suite_case(name)
    assert not explore(program, program.names, bound=1, naive=True).violations
    original = TolerantPoc.rwc_walk_one

    def always_a_hit(folio: Any, vma: Any, address: int, rwc: Any) -> bool:
        hits = rwc.cost.cost["hits"]
        ret = original(folio, vma, address, rwc)
        rwc.cost.cost["hits"] = hits + 1  # the re-read after the probe never fires
        return ret

    monkeypatch.setattr(TolerantPoc, "rwc_walk_one", staticmethod(always_a_hit))
    program = _suite_case(name)
    found = explore(program, program.names, bound=1, naive=True).violations
    assert "missed" in _kinds(set(found)), sorted(found)
