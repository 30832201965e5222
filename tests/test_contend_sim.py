"""The simulator: spinning and sleeping waiters, the rwsem spin threshold, the
hand-off's wake-up, determinism, and the result a wrong model gets wrong: a
reclaim walker beside a fork/exit storm sees failed try-locks on two CPUs and
none on one (kernel code is not preempted inside an operation)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from cowctx.concurrency import runtime as rt
from cowctx.contend.costs import CostModel
from cowctx.contend.drivers import make_plan
from cowctx.contend.run import RunSpec, simulate
from cowctx.contend.sim import SimThread, Simulator

ZERO = CostModel({}, {}, wakeup_ns=1000)


class Obj:
    pass


def _run(sim: Simulator, duration: int = 1_000_000) -> None:
    sim.run(duration)
    assert sim.violations == []


def _three_threads(kind: str, mode: str, hold: int) -> dict[str, int]:
    """Two CPUs: A holds a lock ``hold`` ns, B waits to write it, C waits for a CPU."""
    sim = Simulator(2, ZERO)
    lock = Obj()
    seen: dict[str, int] = {}

    def holder(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock(kind, lock, mode)
        t.pending += hold
        rt.unlock(kind, lock, mode)
        sim.end(t)
        sim.pause(t, 10**9)

    def waiter(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock(kind, lock, "write")
        seen["b"] = sim.now
        rt.unlock(kind, lock, "write")
        sim.end(t)
        sim.pause(t, 10**9)

    def other(t: SimThread) -> None:
        sim.begin(t, "fork")
        seen["c"] = sim.now
        sim.end(t)
        sim.pause(t, 10**9)

    sim.add_thread("a", "worker", holder)
    sim.add_thread("b", "worker", waiter)
    sim.add_thread("c", "worker", other)
    _run(sim)
    return seen


def test_a_spinning_waiter_keeps_its_cpu_a_sleeping_one_gives_it_up() -> None:
    """On a spinlock B spins and C runs only when A's operation ends; on a
    reader-held rwsem B (a writer) spins for rwsem_rspin_threshold() (10.5 us with
    one reader), then sleeps: C gets B's CPU at 10.5 us, and B, handed the lock at
    50 us, runs after the wake-up (1 us here)."""
    assert _three_threads("ptl", "write", 10_000) == {"b": 10_000, "c": 10_000}
    assert _three_threads("anon_vma", "read", 50_000) == {"c": 10_500, "b": 51_000}


def test_a_writer_spins_on_a_running_writer_owner() -> None:
    sim = Simulator(2, ZERO)
    lock = Obj()
    seen: dict[str, int] = {}

    def holder(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock("mmap_lock", lock, "write")
        t.pending += 40_000
        rt.unlock("mmap_lock", lock, "write")
        sim.end(t)
        sim.pause(t, 10**9)

    def waiter(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock("mmap_lock", lock, "write")
        seen["b"] = sim.now
        rt.unlock("mmap_lock", lock, "write")
        sim.end(t)
        sim.pause(t, 10**9)

    sim.add_thread("a", "worker", holder)
    sim.add_thread("b", "worker", waiter)
    _run(sim)
    assert seen["b"] == 40_000  # optimistic spinning: no wake-up to pay


def _trylocks(cpus: int) -> list[bool]:
    sim = Simulator(cpus, ZERO)
    lock = Obj()
    got: list[bool] = []

    def holder(t: SimThread) -> None:
        while True:
            sim.begin(t, "fork")
            rt.lock("anon_vma", lock, "write")
            t.pending += 5_000
            rt.unlock("anon_vma", lock, "write")
            sim.end(t)

    def trier(t: SimThread) -> None:
        while True:
            sim.begin(t, "reclaim")
            t.pending += 700
            ok = rt.trylock("anon_vma", lock, "read")
            got.append(ok)
            if ok:
                rt.unlock("anon_vma", lock, "read")
            sim.end(t)

    sim.add_thread("a", "worker", holder)
    sim.add_thread("r", "reclaim", trier)
    _run(sim, 5_000_000)
    return got


def test_trylock_fails_while_another_cpu_holds_and_never_on_one_cpu() -> None:
    one, two = _trylocks(1), _trylocks(2)
    assert one and all(one)
    assert two and not all(two)


SMALL: dict[str, float] = {"vmas": 2, "pages": 8}


def _storm(design: str, cpus: int, seed: int = 1, duration: int = 2_000_000) -> Any:
    from cowctx.contend.costs import load

    plan = make_plan("fork-exit-storm", SMALL)
    return simulate(plan, design, RunSpec(cpus, duration, seed), load())


def rotation_problems(one: Any, two: Any) -> list[str]:
    """What a simulator gets wrong about anon_vma reclaim beside a fork storm."""
    out = []
    if one.stats["walks"]["reclaim"]["rotations"]:
        out.append("rotations on one CPU: kernel code was preempted inside an operation")
    if not two.stats["walks"]["reclaim"]["rotations"]:
        out.append("no rotations on two CPUs: the walker never met a writer")
    if not one.stats["units"] or not two.stats["units"]:
        out.append("the workload did not run")
    return out


def test_reclaim_beside_a_fork_storm_rotates_on_two_cpus_only() -> None:
    assert rotation_problems(_storm("anon_vma", 1), _storm("anon_vma", 2)) == []


class _NoLocks(Simulator):
    """Broken: every lock is free (no contention at all)."""

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        return True

    def unlock(self, kind: str, obj: object, mode: str) -> None:
        return None


class _Preempting(Simulator):
    """Broken: gives the CPU away after taking a sleeping lock (a preemptible
    kernel: PREEMPT_FULL), never with a spinlock held."""

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        ok = super().lock(kind, obj, mode, try_only)
        t = self.running
        spin = any(not h.lock.kind.sleeps for h in t.held) if t is not None else True
        if t is not None and t.cpu is not None and self.cpus.queue and not spin:
            self.cpu_put(t)
            self.cpu_get(t)
        return ok


@pytest.mark.parametrize(("broken", "expect"), [(_NoLocks, "never met"), (_Preempting, "one CPU")])
def test_the_rotation_check_catches_broken_simulators(
    monkeypatch: pytest.MonkeyPatch, broken: type[Simulator], expect: str
) -> None:
    import cowctx.contend.run as run_mod

    monkeypatch.setattr(run_mod, "Simulator", broken)
    problems = rotation_problems(_storm("anon_vma", 1), _storm("anon_vma", 2))
    assert any(expect in p for p in problems), problems


def test_cow_context_walks_never_rotate() -> None:
    r = _storm("cow_context", 2)
    assert r.stats["walks"]["reclaim"]["completed_walks"] > 0
    assert r.stats["walks"]["reclaim"]["rotations"] == 0
    assert r.stats["units"] > 0


def test_same_seed_same_bytes_other_seed_other_run() -> None:
    a = json.dumps(_storm("anon_vma", 2, seed=3).stats, sort_keys=True)
    b = json.dumps(_storm("anon_vma", 2, seed=3).stats, sort_keys=True)
    c = json.dumps(_storm("anon_vma", 2, seed=4).stats, sort_keys=True)
    assert a == b
    assert a != c


def test_the_collapse_walker_write_locks_the_root_anon_vma() -> None:
    from cowctx.contend.costs import load

    plan = make_plan("fork-exit-storm", SMALL)
    r = simulate(plan, "anon_vma", RunSpec(2, 2_000_000, 1, ("collapse",)), load())
    holds = r.stats["locks"]["anon_vma:write"]["hold_by_op"]
    assert holds["collapse"]["count"] > 0
    assert r.stats["locks"]["mmap_lock:write"]["hold_by_op"]["collapse"]["count"] > 0
    assert r.stats["walks"]["collapse"]["completed_walks"] > 0


def _lock_wait(kind: str) -> int:
    """Two CPUs: A holds ``kind`` 40 us, B waits for it; when B gets it."""
    sim = Simulator(2, ZERO)
    lock = Obj()
    seen: dict[str, int] = {}

    def holder(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock(kind, lock)
        t.pending += 40_000
        rt.unlock(kind, lock)
        sim.end(t)
        sim.pause(t, 10**9)

    def waiter(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock(kind, lock)
        seen["b"] = sim.now
        rt.unlock(kind, lock)
        sim.end(t)
        sim.pause(t, 10**9)

    sim.add_thread("a", "worker", holder)
    sim.add_thread("b", "worker", waiter)
    _run(sim)
    return seen["b"]


def test_the_folio_lock_sleeps_where_a_mutex_like_rwsem_writer_spins() -> None:
    """folio_lock() has no optimistic spinning: the waiter sleeps and pays the
    wake-up (1 us here) after the holder's 40 us; an rwsem writer spins."""
    assert _lock_wait("folio_lock") == 41_000
    assert _lock_wait("mmap_lock") == 40_000


def _store_wakes(kind: str) -> int:
    """B waits (``wait_until``) for a flag that A sets with a plain store at 30 us."""
    sim = Simulator(2, ZERO)
    flag = Obj()
    flag.up = False  # type: ignore[attr-defined]
    seen: dict[str, int] = {}

    def setter(t: SimThread) -> None:
        sim.begin(t, "fork")
        t.pending += 30_000
        sim.settle(t)  # a store happens at the start of the stretch it pays for
        rt.point("store", flag, "up", True)
        flag.up = True  # type: ignore[attr-defined]
        t.pending += 5_000
        sim.end(t)
        sim.pause(t, 10**9)

    def waiter(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.wait_until(kind, flag, "up", lambda: bool(flag.up))  # type: ignore[attr-defined]
        seen["b"] = sim.now
        sim.end(t)
        sim.pause(t, 10**9)

    sim.add_thread("a", "worker", setter)
    sim.add_thread("b", "worker", waiter)
    _run(sim)
    return seen["b"]


def test_a_store_wakes_a_waiter_at_its_time() -> None:
    """The store at 30 us (no unlock follows it) ends the wait: a sleeping waiter
    runs after the wake-up, a spinning one (read_seqcount_begin()) at once.  A
    simulator that re-checked waits only at unlocks would never wake B."""
    assert _store_wakes("writer") == 31_000
    assert _store_wakes("seqcount") == 30_000


def test_designs_with_hooks_are_not_bridged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PoC's own code takes its spinlocks, RCU and (with a scheme) its
    per-context locks through the runtime: bridging its ledger records too
    would take each lock twice.  The decision is by where hooks come from:
    with no module counted as the design's, the PoC looks hookless."""
    import cowctx.contend.run as run_mod

    assert run_mod.design_calls_hooks("anon_vma")
    assert run_mod.design_calls_hooks("cow_context_poc")
    assert not _storm("cow_context_poc", 2).stats["ledger_bridged"]
    run_mod.design_calls_hooks.cache_clear()
    monkeypatch.setattr(run_mod, "DESIGN_PACKAGE", "nowhere.")
    try:
        assert not run_mod.design_calls_hooks("cow_context_poc")
    finally:
        run_mod.design_calls_hooks.cache_clear()


def test_the_stabilisation_schemes_run_with_their_own_waits() -> None:
    """stab_rwsem: the reclaim walk holds each context's rwsem for reading and
    fork/exit write it; stab_refcount: writers wait for walkers or walkers for a
    writer (sleeping); the PoC alone has neither."""
    rw = _storm("cow_context_poc[stab_rwsem]", 2).stats
    assert rw["locks"]["cow_context:read"]["hold_by_op"]["reclaim"]["count"] > 0
    assert rw["locks"]["cow_context:write"]["acquisitions"] > 0
    rc = _storm("cow_context_poc[stab_refcount]", 2).stats
    assert any(k.startswith("wait_") and k.endswith(":sleep") for k in rc["locks"]), rc["locks"]
    poc = _storm("cow_context_poc", 2).stats
    assert not any(k.startswith(("cow_context:", "wait_")) for k in poc["locks"])
    for s in (rw, rc, poc):
        assert s["units"] > 0 and s["walks"]["reclaim"]["completed_walks"] > 0


def _held_and_latency(scale: float) -> tuple[int, int, int]:
    """A fork writes 8 us of steps under anon_vma (root) for writing, 2 us after;
    B, on the other CPU, waits to write the same root: (A's hold, A's latency,
    B's wait)."""
    costs = dataclasses.replace(ZERO, hold_scale=scale)
    sim = Simulator(2, costs)
    root = Obj()
    seen: dict[str, int] = {}

    def a(t: SimThread) -> None:
        sim.begin(t, "fork")
        rt.lock("anon_vma", root, "write")
        t.pending += 8_000
        rt.unlock("anon_vma", root, "write")
        t.pending += 2_000
        seen["latency"] = sim.end(t)
        sim.pause(t, 10**9)

    def b(t: SimThread) -> None:
        sim.begin(t, "exit")
        t.pending += 100
        rt.lock("anon_vma", root, "write")
        seen["b"] = sim.now
        rt.unlock("anon_vma", root, "write")
        sim.end(t)
        sim.pause(t, 10**9)

    sim.add_thread("a", "worker", a)
    sim.add_thread("b", "worker", b)
    _run(sim)
    hold = sim.stats.to_json()["locks"]["anon_vma:write"]["hold_by_op"]["fork"]["max_ns"]
    return hold, seen["latency"], seen["b"]


def test_the_hold_scale_shortens_the_hold_not_the_operation() -> None:
    """hold_scale: the share of the locked steps' cost spent holding an rmap
    write lock; the rest is spent right after the unlock, so the operation takes
    as long as before and a waiter gets the lock sooner."""
    assert _held_and_latency(1.0) == (8_000, 10_000, 8_000)
    assert _held_and_latency(0.25) == (2_000, 10_000, 2_000)


def test_a_hold_scale_outside_zero_to_one_names_the_field() -> None:
    from cowctx.contend.costs import CostFileError, from_json

    data = {"fit": {"base_ns": {}, "step_ns": {}, "wakeup_ns": 1.0}, "hold": {"scale": 0}}
    with pytest.raises(CostFileError, match=r"x: hold.scale: 0.0 is not in \(0, 1\]"):
        from_json(data, "x")
    data["hold"] = {"scale": 0.5}
    assert from_json(data, "x").hold_scale == 0.5
