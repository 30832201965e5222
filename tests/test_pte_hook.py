"""The runtime's ``pte()`` hook (``cowctx.mm.locking.pte``) is the step that
``rt.point()``/``rt.points()`` of the PTE and each folio's ``mapcount`` and
``refcount`` stores make, in every runtime: the explorer (accesses, order,
label, the PTE-store mark, the use-after-free check), the simulator (cost and
store wake-ups) and the step counter.  A hook that dropped, reordered or mis-keyed
an access, or charged another class, fails here."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.scheduler import Execution
from cowctx.contend.costs import CLASSES, CostModel
from cowctx.contend.count import Counter
from cowctx.contend.sim import SimThread, Simulator
from cowctx.mm import locking as lk


class Obj:
    """A shared object (an mm, a folio) of the toy threads."""


CASES: list[tuple[bool, int]] = [(w, n) for w in (False, True) for n in (0, 1, 2)]
"""(write, number of folios): every shape of PTE step the model makes."""


def _by_points(mm: Obj, vpn: int, write: bool, folios: list[Obj]) -> None:
    """The step as it was written before the hook: point()/points()."""
    kind = "store" if write else "load"
    if folios:
        rt.points(kind, [(mm, ("pte", vpn), write), *lk.counts(*folios)])  # type: ignore[arg-type]
    else:
        rt.point(kind, mm, ("pte", vpn), write)


def _by_hook(mm: Obj, vpn: int, write: bool, folios: list[Obj]) -> None:
    lk.pte(mm, vpn, write, *folios)  # type: ignore[arg-type]


def _explore(step: Callable[[Obj, int, bool, list[Obj]], None], free_mm: bool) -> Execution:
    """One thread making every case's step on fresh objects (first-seen order
    names them), run alone; ``free_mm``: its mm freed first (a use after free)."""

    def body() -> None:
        for vpn, (write, n) in enumerate(CASES):
            mm = Obj()
            if free_mm:
                rt.slab_free("mm_struct", mm, False)
            step(mm, vpn, write, [Obj() for _ in range(n)])

    ex = Execution([("t", body)])
    ex.run(lambda ex, enabled: enabled[0])
    return ex


def _steps(ex: Execution) -> list[tuple[object, ...]]:
    """Each step's thread, accesses and label (its object by explorer name)."""
    out: list[tuple[object, ...]] = []
    for e in ex.trace:
        label = e.raw_label
        if not isinstance(label, str):
            label = (label[0], ex.oid(label[1]), label[2])
        out.append((e.tid, e.accesses, label, e.label))
    return out


@pytest.mark.parametrize("free_mm", [False, True])
def test_explorer_step_is_the_points_step(free_mm: bool) -> None:
    want, got = _explore(_by_points, free_mm), _explore(_by_hook, free_mm)
    assert _steps(got) == _steps(want)
    assert [Execution._pte_stores(e) for e in got.trace] == [
        Execution._pte_stores(e) for e in want.trace
    ]
    assert got.violations == want.violations
    # what the comparison stands on: folio stores and a store's PTE key are there
    flat = [a for e in got.trace for a in e.accesses]
    assert any(isinstance(k, tuple) and k[1:] == ("refcount",) and w for k, w in flat)
    assert any(Execution._pte_stores(e) for e in got.trace)
    if free_mm:  # point()'s check after a PTE access without folios
        assert sum(kind == "uaf" for kind, _ in got.violations) == 2


def test_explorer_catches_a_hook_that_drops_an_access() -> None:
    """The comparison above fails for a pte() that forgets the refcount store."""

    def broken(mm: Obj, vpn: int, write: bool, folios: list[Obj]) -> None:
        kind = "store" if write else "load"
        acc = [(mm, ("pte", vpn), write)] + [(f, "mapcount", True) for f in folios]
        rt.points(kind, acc)  # type: ignore[arg-type]

    want, got = _explore(_by_points, False), _explore(broken, False)
    assert _steps(got) != _steps(want)


COSTS = CostModel({}, {"fork": {c: 10 ** (i + 1) for i, c in enumerate(CLASSES)}}, wakeup_ns=0)
"""A distinct cost per class: a step charged to the wrong class shows."""


def _simulate(step: Callable[[Obj, int, bool, list[Obj]], None]) -> list[tuple[int, int]]:
    """Per case: the cost charged and the store wake-ups asked for (a waiter
    present)."""
    sim = Simulator(1, COSTS)
    sim.cond_waiters.append((lambda: True, sim.env.event()))
    wakes = [0]
    sim._store_wakes = lambda: wakes.__setitem__(0, wakes[0] + 1)  # type: ignore[method-assign]
    out: list[tuple[int, int]] = []

    def body(t: SimThread) -> None:
        sim.begin(t, "fork")
        for vpn, (write, n) in enumerate(CASES):
            before, w0 = t.pending, wakes[0]
            step(Obj(), vpn, write, [Obj() for _ in range(n)])
            out.append((t.pending - before, wakes[0] - w0))
        sim.end(t)

    sim.add_thread("t", "worker", body)
    sim.run(10**9)
    assert sim.violations == []
    return out


def test_simulator_charges_the_points_step() -> None:
    want, got = _simulate(_by_points), _simulate(_by_hook)
    assert got == want
    assert {cost for cost, _ in got} == {COSTS.table("fork")["pte"]}
    assert [wake for _, wake in got] == [0, 1, 1, 1, 1, 1]  # a load alone wakes none


def _count(step: Callable[[Obj, int, bool, list[Obj]], None]) -> dict[str, int]:
    counter = Counter()
    prev, rt.current = rt.current, counter  # type: ignore[assignment]
    try:
        for vpn, (write, n) in enumerate(CASES):
            step(Obj(), vpn, write, [Obj() for _ in range(n)])
    finally:
        rt.current = prev
    return counter.counts


def test_counter_counts_the_points_step() -> None:
    assert _count(_by_hook) == _count(_by_points) == {**dict.fromkeys(CLASSES, 0), "pte": 6}
