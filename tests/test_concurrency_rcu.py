"""The RCU model against the LKMM litmus tests (reference/concurrency.md section 2):
the forbidden outcome never happens; without synchronize_rcu() it does."""

from __future__ import annotations

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.explorer import explore
from cowctx.concurrency.scheduler import Execution


class Obj:
    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value


class SyncFree:
    """``RCU+sync+free.litmus``: P0 ``r0 = rcu_dereference(y); r1 = *r0``;
    P1 ``rcu_assign_pointer(y, z); synchronize_rcu(); x = 0`` (x "freed").
    Forbidden: r0 == &x and r1 == 0."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.names = ["P0", "P1"]

    def start(self) -> Execution:
        self.x, self.z = Obj("x", 1), Obj("z", 1)
        self.y = Obj("y", 0)
        self.ptr: Obj = self.x
        self.r0: Obj | None = None
        self.r1 = -1

        def p0() -> None:
            rt.rcu_read_lock()
            rt.point("load", self.y, "ptr")
            self.r0 = self.ptr
            rt.point("load", self.r0, "value")
            self.r1 = self.r0.value
            rt.rcu_read_unlock()

        def p1() -> None:
            rt.point("store", self.y, "ptr", True)
            self.ptr = self.z
            if self.sync:
                rt.synchronize_rcu()
            rt.point("store", self.x, "value", True)
            self.x.value = 0

        return Execution([("P0", p0), ("P1", p1)])

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        r0 = "&x" if self.r0 is self.x else "&z"
        return f"r0={r0} r1={self.r1}", []


class SyncRead:
    """``RCU+sync+read.litmus``: P0 ``rcu_read_lock(); r0 = x; r1 = y;
    rcu_read_unlock()``; P1 ``x = 1; synchronize_rcu(); y = 1``.  Forbidden:
    r0 == 0 and r1 == 1 (also GenMC's rcu-gp2)."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.names = ["P0", "P1"]

    def start(self) -> Execution:
        self.x, self.y = Obj("x", 0), Obj("y", 0)
        self.r = [-1, -1]

        def p0() -> None:
            rt.rcu_read_lock()
            rt.point("load", self.x, "v")
            self.r[0] = self.x.value
            rt.point("load", self.y, "v")
            self.r[1] = self.y.value
            rt.rcu_read_unlock()

        def p1() -> None:
            rt.point("store", self.x, "v", True)
            self.x.value = 1
            if self.sync:
                rt.synchronize_rcu()
            rt.point("store", self.y, "v", True)
            self.y.value = 1

        return Execution([("P0", p0), ("P1", p1)])

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        return f"r0={self.r[0]} r1={self.r[1]}", []


class KfreeRcu:
    """A reader dereferences a published object; the updater unpublishes it and
    frees it with kfree_rcu() (or, broken, at once): a uaf only in the latter."""

    def __init__(self, deferred: bool) -> None:
        self.deferred = deferred
        self.names = ["reader", "updater"]

    def start(self) -> Execution:
        self.head = Obj("head", 0)
        self.obj: Obj | None = Obj("obj", 7)

        def reader() -> None:
            rt.rcu_read_lock()
            rt.point("load", self.head, "ptr")
            p = self.obj
            if p is not None:
                rt.point("load", p, "value")
            rt.rcu_read_unlock()

        def updater() -> None:
            rt.point("store", self.head, "ptr", True)
            old, self.obj = self.obj, None
            assert old is not None
            if self.deferred:
                rt.call_rcu(old, lambda: rt.slab_free("obj_cache", old, False))
            else:
                rt.slab_free("obj_cache", old, False)

        return Execution([("reader", reader), ("updater", updater)])

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        return "", []


def _outcomes(program: SyncFree | SyncRead) -> set[str]:
    return explore(program, program.names, bound=None).final_states


def test_sync_free_never_reads_freed_x() -> None:
    assert "r0=&x r1=0" not in _outcomes(SyncFree(sync=True))
    assert "r0=&x r1=1" in _outcomes(SyncFree(sync=True))


def test_sync_free_without_synchronize_rcu_does() -> None:
    assert "r0=&x r1=0" in _outcomes(SyncFree(sync=False))


def test_sync_read_forbidden_outcome() -> None:
    assert "r0=0 r1=1" not in _outcomes(SyncRead(sync=True))
    assert "r0=0 r1=1" in _outcomes(SyncRead(sync=False))
    assert {"r0=0 r1=0", "r0=1 r1=1"} <= _outcomes(SyncRead(sync=True))


def test_kfree_rcu_waits_for_the_reader() -> None:
    good = explore(KfreeRcu(True), ["reader", "updater"], bound=None)
    bad = explore(KfreeRcu(False), ["reader", "updater"], bound=None)
    assert not good.violations
    assert [k for k, _ in bad.violations] == ["uaf"]
