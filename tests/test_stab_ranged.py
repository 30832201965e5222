"""``cow_context_poc[stab_ranged]``, ephemeral ranged locks (issue 11 deliverable 4a,
docs/stabilisation.md section 3): the range lock's rules, races of scenarios/races/poc/
the PoC shows and the scheme removes, and that the ranges matter (a write section
with the wrong range lets the race back in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowctx.concurrency.explorer import explore
from cowctx.concurrency.program import ScenarioProgram
from cowctx.designs.cow_context.stabilise_ranged import RangedPoc, RangeNode, RangeTree
from cowctx.mm.vma import VmaPrepare
from cowctx.scenario.loader import load_scenario

POC = Path(__file__).parent.parent / "scenarios" / "races" / "poc"


def _kinds(name: str, design: str, bound: int) -> set[tuple[str, str]]:
    program = ScenarioProgram(load_scenario(POC / name), design)
    return set(explore(program, program.names, bound=bound, naive=True).violations)


def _tree(*nodes: RangeNode) -> RangeTree:
    tree = RangeTree()
    for n in nodes:
        tree.nodes.append(n)
    return tree


def test_range_lock_shares_reads_and_queues_writes_in_order() -> None:
    r1 = RangeNode(0, 4, False, tid=1, seq=1, granted=True)
    r2 = RangeNode(2, 3, False, tid=2, seq=2)
    w3 = RangeNode(3, 8, True, tid=3, seq=3)
    r4 = RangeNode(5, 6, False, tid=4, seq=4)
    w5 = RangeNode(8, 9, True, tid=5, seq=5)
    tree = _tree(r1, r2, w3, r4, w5)
    assert tree.ready(r2)  # readers share
    assert not tree.ready(w3)  # a writer waits for an overlapping reader ahead
    assert not tree.ready(r4)  # FIFO: a reader waits for the writer queued ahead
    assert tree.ready(w5)  # [8, 9) overlaps nothing ([3, 8) is half-open)


def test_range_lock_nesting() -> None:
    mine = RangeNode(0, 4, True, tid=1, seq=1, granted=True)
    waiter = RangeNode(0, 100, True, tid=2, seq=2)
    extra = RangeNode(10, 20, True, tid=1, seq=3, nested=True)
    tree = _tree(mine, waiter, extra)
    assert not mine.conflicts(RangeNode(0, 4, True, tid=1, seq=9))  # own nodes never conflict
    assert tree.ready(extra)  # a nested node does not queue behind a waiter ...
    extra.granted = True
    assert not tree.ready(waiter)  # ... which then waits for it too
    holder = RangeNode(15, 16, False, tid=3, seq=0, granted=True)
    assert not _tree(holder, extra).ready(extra)  # but it waits for a holder


@pytest.mark.parametrize(
    ("name", "bound", "kind"),
    [
        ("poc-sleep-under-rcu.yaml", 0, "sleep_in_atomic"),
        ("poc-unstable-vma.yaml", 1, "missed"),
        ("poc-mm-teardown.yaml", 1, "uaf"),
    ],
)
def test_the_poc_shows_the_race_and_ranged_locks_remove_it(
    name: str, bound: int, kind: str
) -> None:
    assert kind in {k for k, _ in _kinds(name, "cow_context_poc", bound)}
    found = _kinds(name, "cow_context_poc[stab_ranged]", 1)
    assert found <= _kinds(name, "anon_vma", 1), sorted(found)


def test_a_section_with_the_wrong_range_lets_the_split_race_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broken input: ``vma_prepare()`` locks a range away from the VMAs it
    changes, so the walker's ``[folio->index]`` does not wait for the split."""

    def far_away(self: RangedPoc, vp: VmaPrepare) -> None:
        self._set_range(1 << 40, (1 << 40) + 1)
        super(RangedPoc, self).vma_prepare(vp)

    monkeypatch.setattr(RangedPoc, "vma_prepare", far_away)
    found = _kinds("poc-unstable-vma.yaml", "cow_context_poc[stab_ranged]", 1)
    assert "missed" in {k for k, _ in found}, sorted(found)


def test_ranges_in_the_ledger() -> None:
    """Sequentially every section and every context a walk reaches is one
    ``cow_context.range`` acquisition, and no node is left behind."""
    program = ScenarioProgram(
        load_scenario(POC / "poc-sleep-under-rcu.yaml"), "cow_context_poc[stab_ranged]"
    )
    ex = program.start()
    ex.run(lambda ex, enabled: enabled[0])  # the fork, then the reclaim
    assert not ex.violations and program.run is not None
    locks: dict[tuple[str, str], int] = {}
    for k, v in program.run.machine.ledger.locks.items():
        locks[k[0], k[1]] = locks.get((k[0], k[1]), 0) + v.acquisitions
    assert locks[("cow_context.range", "write")] > 0
    assert locks[("cow_context.range", "read")] == 2  # the reclaim walk: C0, then C1
    rmap = program.run.machine.rmap
    assert isinstance(rmap, RangedPoc)
    assert not rmap._trees and not rmap._held and not rmap._path
