"""The simulator: model threads as greenlets on N simulated CPUs (SimPy), timed by
the cost model, with kernel lock semantics.

It implements the hook interface of :mod:`cowctx.concurrency.runtime` (the
methods :class:`~cowctx.concurrency.scheduler.Execution` has), so the *same*
model operations run here as under the explorer: no second model.  Each model
thread runs plain nested model calls in its own greenlet; the simulator switches
into it and waits on whatever event the thread hands back (a timeout for the time
its steps cost, a CPU, a lock hand-off), resuming it from that event's callback.

Write holds of an rmap lock are as long as the kernel's, not as the fitted
per-step costs make them: :attr:`CostModel.hold_scale` (:meth:`Simulator._defer_past_hold`).

Time is charged lazily: a load or store adds its cost to the thread's pending
time, which is spent (a SimPy timeout) before the next synchronisation point
(lock, unlock, RCU, wait) and at the end of an operation.  Lock events therefore
happen at their exact simulated times; plain loads and stores are applied at the
start of the stretch that pays for them, which is one of the interleavings the
explorer checks the model under.

CPUs: a thread holds a CPU while it runs an operation; between operations it
gives it up once it has used its slice and another thread waits (FIFO round
robin, each thread a slice: EEVDF with equal weights), and while it sleeps.  A
spinning waiter keeps its CPU.  A writer waiting on an rwsem or mutex whose
owner is a writer on a CPU spins too (optimistic spinning,
``rwsem_optimistic_spin()``), and goes to sleep when that owner sleeps; on an
rwsem owned by readers it spins for ``rwsem_rspin_threshold()`` and then
sleeps.  Kernel code runs to the end of an operation unless it sleeps (no
involuntary preemption: this kernel runs PREEMPT_NONE; cond_resched() inside
an operation is not modelled); this is what makes a
one-CPU machine see no contended try-lock.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy
from greenlet import GreenletExit, greenlet

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.locks import KINDS
from cowctx.concurrency.scheduler import Walk
from cowctx.contend.costs import CostModel, classify
from cowctx.contend.locks import SimLock, Waiter
from cowctx.contend.stats import Stats

Body = Callable[["SimThread"], None]


@dataclass
class SimWalk(Walk):
    """An rmap walk in progress (the runtime's ``walk_*`` hooks): the explorer's
    :class:`~cowctx.concurrency.scheduler.Walk`, so the runtime's walk hooks that
    reach into it (``walk_abandon``, ``walk_skip_mm``, ``walk_unmapping``,
    ``walk_resample``) find what they look for.  A timing simulation checks no
    walk (:attr:`Simulator.mappings_of` is None): its mapping sets stay empty;
    ``start`` is when the walk began (its latency), ``abandoned`` whether it gave up."""

    start: int = 0


@dataclass
class Hold:
    lock: SimLock
    key: tuple[str, int]
    kind: str
    mode: str
    since: int


@dataclass
class SimThread:
    tid: int
    name: str
    role: str
    """``worker`` or a walker (``reclaim``, ``migrate``)."""
    body: Body
    glet: greenlet | None = None
    cpu: int | None = None
    op: str = "idle"
    table: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    op_start: int = 0
    slice_start: int = 0
    seg_start: int = 0
    """Start of the stretch on the current CPU not yet written to the trace."""
    held: list[Hold] = field(default_factory=list)
    walk: SimWalk | None = None
    local: dict[str, object] = field(default_factory=dict)
    wake: Callable[[simpy.Event], None] | None = None
    """The callback that resumes this thread when the event it waits on fires."""
    failed_trylocks: int = 0
    """Failed try-locks of an anon rmap lock during the current operation."""
    done: bool = False


class CpuPool:
    """N CPUs handed out FIFO; the lowest free id first."""

    def __init__(self, env: simpy.Environment, n: int) -> None:
        self.env = env
        self.free = list(range(n - 1, -1, -1))
        self.queue: deque[tuple[SimThread, simpy.Event]] = deque()

    def acquire(self, t: SimThread) -> simpy.Event | None:
        if self.free and not self.queue:
            t.cpu = self.free.pop()
            return None
        ev = self.env.event()
        self.queue.append((t, ev))
        return ev

    def release(self, t: SimThread) -> None:
        cpu, t.cpu = t.cpu, None
        assert cpu is not None
        if self.queue:
            nt, ev = self.queue.popleft()
            nt.cpu = cpu
            ev.succeed()
        else:
            self.free.append(cpu)
            self.free.sort(reverse=True)


SPIN_KINDS = frozenset(k for k, v in KINDS.items() if not v.sleeps)
"""Spinlocks (page-table lock, others): the only locks whose events ``quantum`` may
move (sleeping locks are always exact)."""

RMAP_LOCK_KINDS = frozenset({"anon_vma", "cow_context"})
"""Lock kinds whose failed try-lock makes a walker give up on the folio."""

NO_SPIN_KINDS = frozenset({"folio_lock"})
"""Sleeping locks whose waiters never spin: ``folio_lock()`` waits on the folio's
wait queue (``folio_wait_bit_common()``) and is handed the lock when woken
(``wake_page_function()`` takes it for an exclusive waiter, commit 2a9127fcf229
("mm: rewrite wait_on_page_bit_common() logic") (v5.9)); it has no optimistic
spinning as rwsems and mutexes do."""

SPIN_WAITS = frozenset({"seqcount"})
"""``wait_until`` kinds that spin on their CPU (``read_seqcount_begin()`` loops
with ``cpu_relax()`` while the count is odd); every other wait sleeps."""


class Simulator:
    """One simulated run: ``cpus`` CPUs, threads added with :meth:`add_thread`."""

    def __init__(
        self,
        cpus: int,
        costs: CostModel,
        trace: Any | None = None,
        quantum: int = 0,
    ) -> None:
        self.env = simpy.Environment()
        self.ncpus = cpus
        self.quantum = quantum
        self.fast = 0
        """Pending cost below this is carried past a spinlock event instead of spent
        first: 0 makes every lock event exact; a quantum q lets a spinlock's lock or
        unlock happen up to q ns early (fewer simulation events, a faster run);
        sleeping locks (mmap_lock, anon_vma, VMA locks) are always exact."""
        self.costs = costs
        self.hold_ppm = round(costs.hold_scale * 1_000_000)
        """:attr:`CostModel.hold_scale` in millionths (integer arithmetic: results
        byte-identical)."""
        self.cpus = CpuPool(self.env, cpus)
        self.slice_ns = 750_000 * (1 + (min(cpus, 8).bit_length() - 1))
        """EEVDF's base slice (``sysctl_sched_base_slice``, 0.75 ms scaled by
        1 + ilog2(min(CPUs, 8))): a thread keeps its CPU from one operation to the
        next until it has run that long and another thread waits for a CPU."""
        self.threads: list[SimThread] = []
        self.locks: dict[tuple[str, int], tuple[SimLock, object]] = {}
        self.stats = Stats()
        self.trace = trace
        self.running: SimThread | None = None
        self.main: greenlet | None = None
        self.dying = False
        self.rcu_readers: dict[int, int] = {}
        self.rcu_waiters: list[tuple[set[int], simpy.Event]] = []
        self.cond_waiters: list[tuple[Callable[[], bool], simpy.Event]] = []
        self.violations: list[tuple[str, str]] = []
        self.mappings_of: Callable[[int], set[tuple[int, int]]] | None = None
        """The runtime's walk checks ask this for a folio's mappings; None: a
        timing simulation checks no walk (the explorer does)."""
        self._tables = {op: costs.table(op) for op in costs.step}
        self._bridge: dict[int, tuple[str, object, str]] = {}
        self._recheck_due = False

    # --- set-up and driving -------------------------------------------------------------

    def add_thread(self, name: str, role: str, body: Body) -> SimThread:
        t = SimThread(len(self.threads), name, role, body)
        self.threads.append(t)
        return t

    def run(self, duration_ns: int, starts: list[int] | None = None) -> None:
        """Run every thread until ``duration_ns`` of simulated time (threads still
        inside an operation then are dropped: their operation does not count)."""
        self.main = greenlet.getcurrent()
        prev = rt.current
        rt.current = self  # type: ignore[assignment]  # duck-types Execution
        try:
            for i, t in enumerate(self.threads):
                t.glet = greenlet(self._wrap(t), parent=self.main)
                t.wake = self._waker(t)
                delay = starts[i] if starts else 0
                self.env.process(self._drive(t, delay))
            self.env.run(until=duration_ns)
        finally:
            self.stats.end = int(self.env.now)
            self._kill()
            rt.current = prev

    def _waker(self, t: SimThread) -> Callable[[simpy.Event], None]:
        def wake(ev: simpy.Event) -> None:
            self._resume(t, ev._value)

        return wake

    def _wrap(self, t: SimThread) -> Callable[[], None]:
        def body(*_: object) -> None:
            try:
                t.body(t)
            except GreenletExit:
                raise
            except Exception as exc:  # a kernel BUG() in this thread
                self.violation("bug", f"{t.name}: {type(exc).__name__}: {exc}")
            finally:
                t.done = True

        return body

    def _drive(self, t: SimThread, delay: int) -> Any:
        """The thread's start: a SimPy process (its ``Initialize`` and start
        delay), then :meth:`_resume` from event callbacks."""
        if delay:
            yield self.env.timeout(delay)
        self._resume(t, None)

    def _resume(self, t: SimThread, value: object) -> None:
        """Switch into ``t`` until it hands back an event to wait on, and wait on
        it with a callback.  This is what a SimPy process does for a generator
        (``Process._resume``: the callback appended to a pending event, an event
        already processed resumed at once), without a generator per thread: one
        callback per event instead of a process step and a ``send``."""
        glet = t.glet
        assert glet is not None
        while True:
            self.running = t
            try:
                ev = glet.switch(value)
            finally:
                self.running = None
            if glet.dead:
                return
            cbs = ev.callbacks
            if cbs is not None:
                cbs.append(t.wake)
                return
            value = ev._value  # already processed: go on at once

    def _kill(self) -> None:
        self.dying = True
        for t in self.threads:
            if t.glet is not None and not t.glet.dead and t.glet:
                with contextlib.suppress(GreenletExit):
                    t.glet.throw(GreenletExit)

    def _block(self, ev: simpy.Event) -> object:
        """From a thread: wait for ``ev`` in simulated time."""
        assert self.main is not None
        return self.main.switch(ev)

    @property
    def now(self) -> int:
        return int(self.env._now)  # integer ns throughout

    def advance(self, t: SimThread) -> None:
        """Spend the thread's pending cost (it holds its CPU meanwhile): at least
        ``quantum`` ns of it, else it is carried to the next synchronisation point."""
        if t.pending > self.quantum:
            self.settle(t)

    def settle(self, t: SimThread) -> None:
        """Spend all pending cost.  When no other event is due before the time it
        ends, nothing can happen in between: the clock is moved there directly,
        exactly as a timeout would (same order: the next event is strictly later),
        without a trip through the event queue (SimPy 4.1.2's ``_now``, pinned)."""
        if t.pending:
            d, t.pending = t.pending, 0
            env = self.env
            target = env._now + d
            if env.peek() > target:
                env._now = target
                self.fast += 1
            else:
                self._block(env.timeout(d))

    # --- operations (called from thread bodies) ----------------------------------------------

    def cpu_get(self, t: SimThread) -> None:
        if t.cpu is not None:
            return
        ev = self.cpus.acquire(t)
        if ev is not None:
            self._block(ev)
        t.slice_start = t.seg_start = self.now

    def _segment(self, t: SimThread, label: str) -> None:
        if self.trace is not None and t.cpu is not None and self.now > t.seg_start:
            self.trace.slice(t.cpu, t.name, label, t.seg_start, self.now)
        t.seg_start = self.now

    def cpu_put(self, t: SimThread, label: str | None = None) -> None:
        self._segment(t, label or t.op)
        self.cpus.release(t)

    def begin(self, t: SimThread, op: str) -> None:
        """An operation starts: the thread takes a CPU and pays the op's base cost.
        Its latency counts from here on (a syscall's time, as clock_gettime()
        around it measures: not the wait for a CPU before it)."""
        t.op = op
        table = self._tables.get(op)
        if table is None:
            table = self._tables[op] = self.costs.table(op)
        t.table = table
        t.failed_trylocks = 0
        self.cpu_get(t)
        t.op_start = self.now
        t.pending += self.costs.base_ns(op)

    def end(self, t: SimThread) -> int:
        """The operation is over: its latency (from getting a CPU to the end)."""
        self.settle(t)
        latency = self.now - t.op_start
        self.stats.op(t.role, t.op, latency)
        self._segment(t, t.op)
        if self.cpus.queue and self.now - t.slice_start >= self.slice_ns:
            self.cpu_put(t)  # its slice is used and someone waits: schedule()
        return latency

    def pause(self, t: SimThread, ns: int) -> None:
        """Time off-CPU (a walker's pacing between folios)."""
        if ns > 0:
            if t.cpu is not None:
                self.cpu_put(t)
            self._block(self.env.timeout(ns))

    # --- hooks (the interface of cowctx.concurrency.runtime) ------------------------------

    def _me(self) -> SimThread | None:
        return None if self.dying else self.running

    def point(self, kind: str, obj: object, fld: object, write: bool) -> None:
        t = self.running
        if t is not None and not self.dying:
            # the hot path: a PTE (a tuple field) needs no classification
            t.pending += t.table["pte" if type(fld) is tuple else classify(obj, fld)]
            if write and self.cond_waiters:
                self._store_wakes()

    def points(self, kind: str, accesses: list[tuple[object, object, bool]]) -> None:
        """One step making several accesses (the MMU's store: the PTE and the
        page): one step of the first access's class, as the explorer makes it
        one scheduling point named by the first."""
        t = self.running
        if t is None or self.dying or not accesses:
            return
        obj, fld, _ = accesses[0]
        t.pending += t.table["pte" if type(fld) is tuple else classify(obj, fld)]
        if self.cond_waiters and any(w for _, _, w in accesses):
            self._store_wakes()

    def pte(self, mm: object, vpn: int, write: bool, folios: tuple[object, ...]) -> None:
        """A PTE step (:func:`cowctx.mm.locking.pte`): one ``pte`` step, as
        :meth:`point` or :meth:`points` charges it; the folios' count stores
        are stores."""
        t = self.running
        if t is not None and not self.dying:
            t.pending += t.table["pte"]
            if self.cond_waiters and (write or folios):
                self._store_wakes()

    def _store_wakes(self) -> None:
        """A store may make a waiter's condition true (a context's ``writing``
        or ``seq``): re-check the waiters once the storing thread next hands
        control back (the hook comes before the store it stands for), at the
        store's simulated time."""
        if not self._recheck_due:
            self._recheck_due = True
            ev = self.env.timeout(0)
            ev.callbacks.append(self._recheck_after_store)

    def _recheck_after_store(self, _: object) -> None:
        self._recheck_due = False
        if self.cond_waiters:
            self._recheck()

    def guarded_store(self, obj: object, fld: str, kind: str, lock_obj: object) -> None:
        t = self._me()
        if t is not None:
            t.pending += t.table[classify(obj, fld)]

    def _state(self, kind: str, obj: object) -> tuple[tuple[str, int], SimLock]:
        key = (kind, id(obj))
        entry = self.locks.get(key)
        if entry is None:
            lk = SimLock(KINDS[kind])
            self.locks[key] = (lk, obj)  # keeps obj (and so its id) alive while in use
            return key, lk
        return key, entry[0]

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        t = self._me()
        if t is None:
            return True
        if kind in SPIN_KINDS:
            self.advance(t)
        else:
            self.settle(t)
        t.pending += t.table["lock"]
        key, lk = self._state(kind, obj)
        if lk.can_take(mode):
            lk.take(t.tid, mode)
            t.held.append(Hold(lk, key, kind, mode, self.now))
            self.stats.acquired(kind, mode, 0)
            return True
        holders = [self.threads[h].op for h in lk.holders()] or ["queued"]
        if try_only:
            if kind in RMAP_LOCK_KINDS:
                t.failed_trylocks += 1
            self.stats.trylock_failed(kind, mode, t.op, holders)
            if not lk.waiters and not lk.holders():
                del self.locks[key]
            return False
        w = Waiter(t.tid, mode, self.now, self.env.event())
        spin = not lk.kind.sleeps or self._may_spin(lk, mode)
        lk.waiters.append(w)
        w.spinning = spin
        if spin and lk.kind.sleeps and lk.writer is None:
            # reader-owned: rwsem_rspin_threshold(), (20 + readers) / 2 us, at most 25 us
            limit = (20 + min(30, len(lk.readers))) * 500
            self.env.process(self._stop_spinning(w, t, limit, kind))
        if not spin:
            self._sleep(t, f"{t.op}: wait {kind} ({mode})")
        self._block(w.token)
        waited = self.now - w.since
        if not w.spinning:  # try_to_wake_up() to running: then a CPU
            self._block(self.env.timeout(int(self.costs.wakeup_ns)))
            self.cpu_get(t)
        elif self.trace is not None and t.cpu is not None and waited:
            self.trace.wait(t.cpu, t.name, f"spin {kind} ({mode})", w.since, self.now)
        if self.trace is not None and not w.spinning and waited:
            self.trace.sleep(t.name, f"wait {kind} ({mode})", w.since, self.now)
        self.stats.acquired(kind, mode, waited)
        self.stats.waited(kind, mode, t.op, holders, waited)
        return True

    def _may_spin(self, lk: SimLock, mode: str) -> bool:
        """Optimistic spinning (``rwsem_optimistic_spin()``, ``mutex_optimistic_spin()``):
        a writer waits on its CPU while the owner is a writer on a CPU, or, for an
        rwsem owned by readers, for a while (:meth:`_stop_spinning`).  Readers
        sleep (reader spinning went in commit 617f3ef95177 (v5.12))."""
        if lk.kind.name in NO_SPIN_KINDS:
            return False
        if mode != "write":
            return lk.kind.shared is False and self._owner_on_cpu(lk)
        if lk.writer is not None:
            return self._owner_on_cpu(lk)
        return lk.kind.shared and bool(lk.readers)

    def _owner_on_cpu(self, lk: SimLock) -> bool:
        return lk.writer is not None and self.threads[lk.writer].cpu is not None

    def _stop_spinning(self, w: Waiter, t: SimThread, limit: int, kind: str) -> Any:
        yield self.env.timeout(limit)
        if w.spinning and not w.token.triggered:
            w.spinning = False
            if t.cpu is not None:
                self.cpu_put(t, f"spin {kind}")

    def _sleep(self, t: SimThread, label: str) -> None:
        """``t`` gives up its CPU to sleep; writers spinning on locks it holds stop
        spinning (the owner is no longer on a CPU) and sleep too."""
        self.cpu_put(t, t.op)
        for h in t.held:
            if not h.lock.kind.sleeps:
                continue
            for w in h.lock.waiters:
                if w.spinning:
                    w.spinning = False
                    spinner = self.threads[w.tid]
                    if spinner.cpu is not None:
                        self.cpu_put(spinner, f"spin {h.kind}")

    def unlock(self, kind: str, obj: object, mode: str) -> None:
        t = self._me()
        if t is None:
            return
        after = 0
        if self.hold_ppm < 1_000_000 and kind in RMAP_LOCK_KINDS and mode == "write":
            after = self._defer_past_hold(t, kind, obj)
        if kind in SPIN_KINDS:
            self.advance(t)
        else:
            self.settle(t)
        t.pending += t.table["lock"] + after
        entry = self.locks.get((kind, id(obj)))
        if entry is None:
            self.violation("bad_unlock", f"{t.name}: unlock of an unheld {kind}")
            return
        lk = entry[0]
        try:
            granted = lk.release(t.tid, mode, self.now)
        except ValueError as exc:
            self.violation("bad_unlock", f"{t.name}: {kind}: {exc}")
            return
        for i in range(len(t.held) - 1, -1, -1):
            h = t.held[i]
            if h.lock is lk and h.mode == mode:
                self.stats.held(kind, mode, t.op, self.now - h.since)
                del t.held[i]
                break
        key = (kind, id(obj))
        for w in granted:
            self.threads[w.tid].held.append(Hold(lk, key, kind, w.mode, self.now))
            w.token.succeed()
        if lk.idle():
            del self.locks[key]
        if self.cond_waiters:
            self._recheck()

    def _defer_past_hold(self, t: SimThread, kind: str, obj: object) -> int:
        """The hold-time calibration (:attr:`CostModel.hold_scale`): of the
        fitted cost of the steps ``t`` took under this rmap write lock, only the
        scaled share is spent inside it; the rest of the still unspent cost is
        taken out now and returned, to be spent right after the unlock (same
        operation, same total: the whole-operation fit is kept)."""
        key = (kind, id(obj))
        h = next((h for h in reversed(t.held) if h.key == key and h.mode == "write"), None)
        if h is None:
            return 0
        spent = self.now - h.since
        inside = spent + t.pending
        target = inside * self.hold_ppm // 1_000_000
        d = min(t.pending, max(0, inside - max(target, spent)))
        t.pending -= d
        return d

    def rcu_read_lock(self) -> None:
        t = self._me()
        if t is not None:
            t.pending += t.table["lock"]
            self.rcu_readers[t.tid] = self.rcu_readers.get(t.tid, 0) + 1

    def rcu_read_unlock(self) -> None:
        t = self._me()
        if t is None:
            return
        n = self.rcu_readers.get(t.tid, 0)
        if not n:
            self.violation("bad_unlock", f"{t.name}: unbalanced rcu_read_unlock")
            return
        if n == 1:
            del self.rcu_readers[t.tid]
            if self.rcu_waiters:
                for readers, ev in self.rcu_waiters:
                    readers.discard(t.tid)
                    if not readers and not ev.triggered:
                        ev.succeed()
                self.rcu_waiters = [(r, e) for r, e in self.rcu_waiters if r]
        else:
            self.rcu_readers[t.tid] = n - 1

    def synchronize_rcu(self) -> None:
        """Sleeps for a grace period: at least ``rcu_gp_ns``, and until every reader
        in a read-side section now has left it."""
        t = self._me()
        if t is None:
            return
        self.settle(t)
        readers = set(self.rcu_readers) - {t.tid}
        self._sleep(t, "synchronize_rcu")
        gp = self.env.timeout(int(self.costs.rcu_gp_ns))
        if readers:
            ev = self.env.event()
            self.rcu_waiters.append((readers, ev))
            self._block(self.env.all_of([gp, ev]))
        else:
            self._block(gp)
        self.cpu_get(t)

    def call_rcu(self, obj: object, callback: Callable[[], None]) -> None:
        def later() -> Any:
            yield self.env.timeout(int(self.costs.rcu_gp_ns))
            callback()

        self.env.process(later())

    def may_sleep(self, where: str) -> None:
        return None

    def slab_alloc(self, cache: str) -> object | None:
        t = self._me()
        if t is not None:
            t.pending += t.table["rmap"]
        return None

    def slab_free(self, cache: str, obj: object, typesafe: bool) -> None:
        t = self._me()
        if t is not None:
            t.pending += t.table["rmap"]

    def wait_until(self, kind: str, obj: object, fld: object, ready: Callable[[], bool]) -> None:
        """``migration_entry_wait()`` and the like: sleep until ``ready()``, re-checked
        after every unlock and every store; a :data:`SPIN_WAITS` kind
        (``read_seqcount_begin()``) spins on its CPU instead and pays no wake-up."""
        t = self._me()
        if t is None or ready():
            return
        self.settle(t)
        ev = self.env.event()
        self.cond_waiters.append((ready, ev))
        since = self.now
        if kind in SPIN_WAITS:
            self._block(ev)
            if self.trace is not None and t.cpu is not None and self.now > since:
                self.trace.wait(t.cpu, t.name, f"spin {kind}", since, self.now)
            self._waited(kind, "spin", t, since)
            return
        self._sleep(t, f"wait {kind}")
        self._block(ev)
        self._block(self.env.timeout(int(self.costs.wakeup_ns)))
        self.cpu_get(t)
        if self.trace is not None:
            self.trace.sleep(t.name, f"wait {kind}", since, self.now)
        self._waited(kind, "sleep", t, since)

    def _waited(self, kind: str, how: str, t: SimThread, since: int) -> None:
        """A ``wait_until`` that waited: counted as lock ``wait_KIND`` in mode
        ``spin`` or ``sleep`` (whom it waited behind is not known)."""
        waited = self.now - since
        self.stats.acquired(f"wait_{kind}", how, waited)
        self.stats.waited(f"wait_{kind}", how, t.op, [], waited)

    def _recheck(self) -> None:
        keep = []
        for ready, ev in self.cond_waiters:
            if ready():
                ev.succeed()
            else:
                keep.append((ready, ev))
        self.cond_waiters = keep

    def walk_begin(self, folio: object) -> None:
        t = self._me()
        if t is not None:
            pfn = int(getattr(folio, "pfn", -1))
            t.walk = SimWalk(
                pfn, f"{t.name}: rmap walk of folio#{pfn}", set(), start=self.now + t.pending
            )

    def walk_visit(self, mm_id: int, address: int) -> None:
        return None

    def walk_end(self, complete: bool) -> None:
        t = self._me()
        if t is None or t.walk is None:
            return
        w, t.walk = t.walk, None
        if not w.abandoned:
            self.stats.walk(t.op, self.now + t.pending - w.start)

    def violation(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.violations and len(self.violations) < 100:
            self.violations.append((kind, detail))

    # --- designs without runtime hooks: their ledger lock records as locks --------------

    def bridge_ledger(self, ledger: Any, names: frozenset[str]) -> None:
        """Turn a design's ledger lock records (``ledger.lock``/``ledger.unlock``)
        for the lock names in ``names`` into simulated locks: spin holds become a
        ``spinlock`` of the object the caller locks (found among the caller's
        locals: ``parent``, ``ctx``, ``current``), read holds of ``rcu`` an RCU
        read section.  Only for a design whose own code calls no lock or RCU
        hook (:func:`cowctx.contend.run.design_calls_hooks` decides, by running
        it): a workaround until it does; a design with hooks is simulated
        through them alone."""
        orig_lock, orig_unlock = ledger.lock, ledger.unlock
        globals_: dict[str, object] = {}

        def lock(name: str, mode: str, site: str) -> Any:
            hold = orig_lock(name, mode, site)
            if name in names and self._me() is not None:
                if mode == "read" and name == "rcu":
                    self.rcu_read_lock()
                    self._bridge[id(hold)] = ("rcu", None, mode)
                else:
                    obj = _caller_object(sys._getframe(1)) or globals_.setdefault(name, object())
                    self.lock("spinlock", obj, "write", try_only=False)
                    self._bridge[id(hold)] = ("spinlock", obj, "write")
            return hold

        def unlock(hold: Any) -> None:
            entry = self._bridge.pop(id(hold), None)
            if entry is not None and self._me() is not None:
                kind, obj, mode = entry
                if kind == "rcu":
                    self.rcu_read_unlock()
                else:
                    self.unlock(kind, obj, mode)
            orig_unlock(hold)

        ledger.lock = lock
        ledger.unlock = unlock


def _caller_object(frame: Any) -> object | None:
    """The lock's owner among the locals of the design function taking it."""
    for _ in range(3):
        frame = frame.f_back
        if frame is None:
            return None
        for name in ("parent", "ctx", "current", "context"):
            obj = frame.f_locals.get(name)
            if obj is not None and hasattr(obj, "ctx_id"):
                return obj
    return None
