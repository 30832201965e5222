"""One execution of concurrent threads, each a greenlet, switched at hook points.

A thread runs plain nested model calls; every hook of
:mod:`cowctx.concurrency.runtime` parks it with the accesses its next step
will make (its *pending* step) and switches to the scheduler, which asks a
chooser which enabled thread runs next.  A step is what a thread does from one
point to the next; its accesses (keys, write or not) decide which steps are
dependent.  Locks, RCU grace periods and waits make threads disabled until
they can proceed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from greenlet import GreenletExit, greenlet

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.locks import KINDS, LockState, held_rank
from cowctx.concurrency.rcu import GracePeriod, Rcu
from cowctx.concurrency.slab import Slab

Access = tuple[Hashable, bool]
"""(key, write)."""

RCU_KEY = ("rcu",)
_LOCK_OPS = {
    (True, False): "down_read",
    (True, True): "down_read_trylock",
    (False, False): "lock",
    (False, True): "lock_trylock",
}
"""A lock step's verb by (read mode, trylock)."""
_STOP = object()
"""A thread tells main that no thread can run any more."""
_tuple_new = tuple.__new__
"""Makes an :class:`Event` from a tuple without a Python-level call."""


Label = str | tuple[str, object, object]
"""A step's description; (verb, object, field) is formatted only when shown."""


def format_label(label: Label) -> str:
    if isinstance(label, str):
        return label
    verb, obj, fld = label
    return f"{verb} {rt.describe(obj)}{rt.describe_field(fld)}"


class Event(NamedTuple):
    """One step of one thread, as executed.  A named tuple: the scheduler makes
    one per step with ``tuple.__new__`` (no Python-level ``__init__``)."""

    tid: int
    accesses: list[Access]
    raw_label: Label

    def __repr__(self) -> str:
        return f"Event({self.tid}, {self.accesses!r}, {self.label!r})"

    @property
    def label(self) -> str:
        return format_label(self.raw_label)


class MappingProbe(Protocol):
    """The page tables as the walk tracking asks about them, between samples."""

    def maps(self, pfn: int, mm_id: int, address: int) -> bool:
        """A present PTE of a live ``mm_id`` maps ``pfn`` at ``address``."""
        ...

    def mm_maps(self, pfn: int, mm_id: int) -> bool:
        """A present PTE of a live ``mm_id`` maps ``pfn`` somewhere."""
        ...


@dataclass
class Walk:
    """An rmap walk in progress: what it must find, what it found."""

    pfn: int
    label: str
    alive: set[tuple[int, int]]
    visited: set[tuple[int, int]] = field(default_factory=set)
    abandoned: bool = False
    mms: set[int] = field(default_factory=set)
    """mms that mapped the folio (somewhere) at every step so far: a PTE that moves
    (mremap) is the same mapping to the walk's caller."""

    def update(self, now: set[tuple[int, int]], frozen: frozenset[int] = frozenset()) -> None:
        """Drop what no longer maps the folio, except in the mms in ``frozen``:
        their page-table lock is held, so a walker cannot see their PTEs'
        states until it is released."""
        keep = {x for x in self.alive if x[0] in frozen}
        self.alive = (self.alive & (now | self.visited)) | keep
        self.mms &= {mm for mm, _ in now} | {mm for mm, _ in self.visited} | frozen

    def update_probe(self, probe: MappingProbe, frozen: frozenset[int] = frozenset()) -> None:
        """:meth:`update` asking only about what the walk still tracks (the same
        sets as from a full scan of the page tables)."""
        pfn, visited = self.pfn, self.visited
        self.alive = {
            x for x in self.alive if x in visited or x[0] in frozen or probe.maps(pfn, x[0], x[1])
        }
        if self.mms:
            seen = {mm for mm, _ in visited}
            self.mms = {
                mm for mm in self.mms if mm in seen or mm in frozen or probe.mm_maps(pfn, mm)
            }

    def missed(self) -> list[str]:
        out = [f"mm#{mm} at {address:#x}" for mm, address in sorted(self.alive - self.visited)]
        seen = {mm for mm, _ in self.visited} | {mm for mm, _ in self.alive}
        out += [f"mm#{mm} (mapped throughout, wherever)" for mm in sorted(self.mms - seen)]
        return out


@dataclass
class Thread:
    tid: int
    name: str
    body: Callable[[], object]
    glet: greenlet | None = None
    pending: list[Access] = field(default_factory=list)
    label: Label = "start"
    ready: Callable[[], bool] | None = None
    """None: enabled; else enabled when it returns True."""
    waiting: str = ""
    """What a disabled thread waits for (deadlock reports)."""
    waits_on: Callable[[], list[int]] | None = None
    done: bool = False
    spin: int = 0
    """Spinlocks held (atomic context)."""
    held: list[tuple[LockState, str, int]] = field(default_factory=list)
    """Locks held: (state, mode, :func:`held_rank`)."""
    walk: Walk | None = None
    local: dict[str, object] = field(default_factory=dict)
    pte_store: bool = False
    """The pending step stores a PTE (see :meth:`Execution._after`)."""


class Deadlock(Exception):
    pass


class Execution:
    """Threads over one shared machine, run under one schedule."""

    def __init__(
        self,
        threads: Sequence[tuple[str, Callable[[], object]]],
        mappings_of: Callable[[int], set[tuple[int, int]]] | None = None,
        probe: MappingProbe | None = None,
    ) -> None:
        """``mappings_of(pfn)``: every (mm_id, address) mapping ``pfn`` now (walk
        tracking; None: none); ``probe``: the same, asked one mapping at a time
        (faster when given)."""
        self.threads = [Thread(i, name, body) for i, (name, body) in enumerate(threads)]
        self.mappings_of = mappings_of
        self.probe = probe
        self.trace: list[Event] = []
        self.violations: list[tuple[str, str]] = []
        self.locks: dict[tuple[str, int], LockState] = {}
        self.rcu = Rcu()
        self.slab = Slab()
        self.running: Thread | None = None
        self.main: greenlet | None = None
        self.dying = False
        self.ptl_held: dict[int, int] = {}
        """Page-table locks held, by mm id: the walks sample the other mms."""
        self._maps_dirty = False
        """A PTE store or a PTL release since the walks were last sampled: set
        when such a step is chosen, the sampling done before the next choice."""
        self._choose: Callable[[Execution, list[int]], int] | None = None
        self._oids: dict[int, int] = {}
        self._seen: list[object] = []
        self._objkeys: list[tuple[str, int]] = []
        """``("obj", oid)`` for each oid: built once, not at every access."""
        self._live = [t.tid for t in self.threads]
        """The threads not done, in order (a new list at each change: a chooser
        may keep the one it was given)."""
        self._nready = 0
        """Threads waiting on a ``ready`` condition: while none does, the enabled
        threads are ``_live``."""
        self.blocked: list[Event] = []
        """When the run ended (done, deadlocked or abandoned): the pending step of
        each thread that could not run (a wait, a blocking lock), for DPOR."""

    def oid(self, obj: object) -> int:
        """A name for ``obj`` that is the same in every execution of the same
        prefix (first-seen order), unlike ``id()``: DPOR compares the steps of
        one execution with those recorded in earlier ones."""
        n = self._oids.get(id(obj))
        if n is None:
            n = self._oids[id(obj)] = len(self._seen)
            self._seen.append(obj)  # keeps id(obj) from being reused
            self._objkeys.append(("obj", n))
        return n

    # --- driving ----------------------------------------------------------------------

    def enabled(self) -> list[int]:
        return [t.tid for t in self.threads if not t.done and (t.ready is None or t.ready())]

    def run(self, choose: Callable[[Execution, list[int]], int]) -> None:
        """Run to the end: ``choose(self, enabled)`` picks each step's thread; it may
        raise to abandon the execution (the explorer prunes so).

        The choice after a step is made where the step ends: in the thread that
        parks (:meth:`_yield`), which goes on without a switch when it is chosen
        again and switches straight to the chosen thread otherwise; the main
        greenlet only starts the first step and takes over when a thread ends.
        The order of choices, steps and after-step work is that of a loop in main.
        """
        self.main = greenlet.getcurrent()
        self._choose = choose
        for th in self.threads:
            th.glet = greenlet(self._body(th), parent=self.main)
        prev, rt.current = rt.current, self
        try:
            t = self._next(first=True)
            while t is not None:
                signal = t.glet.switch()  # type: ignore[union-attr]
                # back in main: a thread ended (None), or one hands over
                if isinstance(signal, BaseException):
                    raise signal
                if signal is _STOP:
                    break
                t = self._next()
        finally:
            self.blocked = [
                Event(t.tid, list(t.pending), t.label)
                for t in self.threads
                if not t.done and t.ready is not None and not t.ready()
            ]
            self._kill()
            rt.current = prev

    def _next(self, first: bool = False) -> Thread | None:
        """End the running step (RCU callbacks due, page-table sampling for the
        walks), then choose the next step: the thread that runs it, now
        ``running``, or None when no thread can run (a deadlock if any is not done)."""
        self.running = None
        if not first:
            if self.rcu.callbacks:
                self._run_callbacks(self.trace[-1])
            if self._maps_dirty and self.mappings_of is not None:
                self._sample_walks()
        enabled = self.enabled() if self._nready else self._live
        if not enabled:
            if any(not t.done for t in self.threads):
                self.violation("deadlock", self._cycle())
            return None
        t = self.threads[self._choose(self, enabled)]  # type: ignore[misc]
        self.trace.append(_tuple_new(Event, (t.tid, t.pending, t.label)))
        if t.pte_store:  # only point(), points() and pte() set it: sampled after the step
            self._maps_dirty = True
            t.pte_store = False
        if t.ready is not None:
            t.ready, t.waiting, t.waits_on = None, "", None
            self._nready -= 1
        self.running = t
        return t

    def _yield(self) -> None:
        """The running thread parks (its pending step set): the step it ran is
        over.  Returns when this thread is chosen to run its pending step.

        :meth:`_next` inlined (the explorer's hottest path): the same work in
        the same order."""
        me = self.running
        self.running = None
        try:
            if self.rcu.callbacks:
                self._run_callbacks(self.trace[-1])
            if self._maps_dirty and self.mappings_of is not None:
                self._sample_walks()
            enabled = self.enabled() if self._nready else self._live
            if enabled:
                t = self.threads[self._choose(self, enabled)]  # type: ignore[misc]
            elif any(not t.done for t in self.threads):
                self.violation("deadlock", self._cycle())
        except BaseException as exc:  # the chooser abandons the execution
            self.main.switch(exc)  # type: ignore[union-attr]
            raise  # pragma: no cover - main never switches back
        if not enabled:
            self.main.switch(_STOP)  # type: ignore[union-attr]
            return  # pragma: no cover - main never switches back
        self.trace.append(_tuple_new(Event, (t.tid, t.pending, t.label)))
        if t.pte_store:
            self._maps_dirty = True
            t.pte_store = False
        if t.ready is not None:
            t.ready, t.waiting, t.waits_on = None, "", None
            self._nready -= 1
        self.running = t
        if t is not me:
            t.glet.switch()  # type: ignore[union-attr]

    def _body(self, t: Thread) -> Callable[[], None]:
        def body() -> None:
            try:
                t.body()
            except GreenletExit:
                raise
            except Exception as exc:  # a kernel BUG()/oops in this thread
                self.violation("bug", f"{t.name}: {type(exc).__name__}: {exc}")
            finally:
                t.done = True
                t.label = "done"
                t.pending = []
                self._live = [tid for tid in self._live if tid != t.tid]

        return body

    def _kill(self) -> None:
        self.dying = True
        for t in self.threads:
            if t.glet is not None and not t.glet.dead and t.glet:
                with contextlib.suppress(GreenletExit):
                    t.glet.throw(GreenletExit)

    def _park(self, accesses: list[Access], label: Label) -> None:
        t = self.running
        assert t is not None and self.main is not None
        t.pending, t.label, t.pte_store = accesses, label, False
        self._yield()

    def _after(self, event: Event) -> None:
        """What the scheduler does after each step (inlined in :meth:`run`)."""
        if self.rcu.callbacks:
            self._run_callbacks(event)
        if not self._maps_dirty:
            self._maps_dirty = self._pte_stores(event)
        if self.mappings_of is not None and self._maps_dirty:
            self._sample_walks()

    def _run_callbacks(self, event: Event) -> None:
        for obj, callback in self.rcu.due():
            event.accesses.append((("obj", self.oid(obj)), True))
            callback()

    def _sample_walks(self) -> None:
        self._maps_dirty = False
        # an mm's page tables are sampled only between its PTL critical sections:
        # a walker (which takes the PTL to look) cannot see the states inside one
        assert self.mappings_of is not None
        probe = self.probe
        frozen: frozenset[int] | None = None
        for t in self.threads:
            w = t.walk
            if w is None:
                continue
            if frozen is None:  # made once, and only when a walk runs
                frozen = frozenset(mm for mm, n in self.ptl_held.items() if n)
            # its own unmaps are of mappings it visited
            if probe is not None:
                w.update_probe(probe, frozen)
            else:
                w.update(self.mappings_of(w.pfn), frozen)

    @staticmethod
    def _pte_stores(event: Event) -> bool:
        """Whether the step stored a PTE: a mapping can only vanish so (every PTE
        store is behind a ``("pte", vpn)`` point).  A store inside a PTL section
        is sampled once the PTL is released."""
        for key, write in event.accesses:
            if write and isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], tuple):
                return True
        return False

    def _cycle(self) -> str:
        """The wait-for cycle of a deadlock (or who waits for what)."""
        waits: dict[int, list[int]] = {}
        for t in self.threads:
            if not t.done:
                waits[t.tid] = t.waits_on() if t.waits_on is not None else []
        start = min(waits)
        for s in sorted(waits):  # find a cycle by following first edges
            seen: list[int] = []
            cur = s
            while cur in waits and cur not in seen and waits[cur]:
                seen.append(cur)
                cur = waits[cur][0]
            if cur in seen:
                start = cur
                cyc = seen[seen.index(cur) :]
                return (
                    " -> ".join(
                        f"{self.threads[i].name} waits for {self.threads[i].waiting}" for i in cyc
                    )
                    + f" -> {self.threads[start].name}"
                )
        return "; ".join(
            f"{self.threads[i].name} waits for {self.threads[i].waiting}" for i in sorted(waits)
        )

    def violation(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.violations:
            self.violations.append((kind, detail))

    # --- hooks (called from threads through cowctx.concurrency.runtime) ----------------

    def _me(self) -> Thread | None:
        return None if self.dying else self.running

    def point(self, kind: str, obj: object, fld: object, write: bool) -> None:
        # _access() and _park() inlined: this is the explorer's hottest function
        t = self.running
        if t is None or self.dying:
            return
        o = self._oids.get(id(obj))
        if o is None:
            o = self.oid(obj)
        # every field access also reads ("obj", o): whole-object writes (free,
        # reuse) are dependent with all of them
        t.pending = [((o, fld), write), (self._objkeys[o], False)]
        t.label = ("store" if write else "load", obj, fld)
        # a PTE store (fld ("pte", vpn)): the page tables are sampled after it
        t.pte_store = write and isinstance(fld, tuple)
        self._yield()
        if not self.slab.freed:
            return
        cache = self.slab.is_freed(obj)  # checked when the access happens
        if cache is not None:
            self.violation(
                "uaf", f"{t.name}: {kind} {rt.describe(obj)}.{fld} after kmem_cache_free({cache})"
            )

    def points(self, kind: str, accesses: list[tuple[object, object, bool]]) -> None:
        t = self.running
        if t is None or self.dying:
            return
        pending: list[Access] = []
        oids, objkeys = self._oids, self._objkeys
        pte_store = False
        for obj, fld, write in accesses:
            o = oids.get(id(obj))
            if o is None:
                o = self.oid(obj)
            pending.append(((o, fld), write))
            pending.append((objkeys[o], False))
            if write and isinstance(fld, tuple):
                pte_store = True
        obj, fld, _ = accesses[0]
        t.pending, t.label, t.pte_store = pending, (kind, obj, fld), pte_store
        self._yield()

    def pte(self, mm: object, vpn: int, write: bool, folios: tuple[object, ...]) -> None:
        """A PTE step (:func:`cowctx.mm.locking.pte`): exactly :meth:`point` of
        ``(mm, ("pte", vpn))`` without ``folios``, else :meth:`points` of it and
        each folio's ``mapcount`` and ``refcount`` stores (:func:`~cowctx.mm.locking.counts`)."""
        t = self.running
        if t is None or self.dying:
            return
        oids, objkeys = self._oids, self._objkeys
        o = oids.get(id(mm))
        if o is None:
            o = self.oid(mm)
        fld = ("pte", vpn)
        pending: list[Access] = [((o, fld), write), (objkeys[o], False)]
        for folio in folios:
            f = oids.get(id(folio))
            if f is None:
                f = self.oid(folio)
            fkey = objkeys[f]
            pending += (
                ((f, "mapcount"), True),
                (fkey, False),
                ((f, "refcount"), True),
                (fkey, False),
            )
        # a PTE store: the page tables are sampled after it
        t.pending, t.label, t.pte_store = pending, ("store" if write else "load", mm, fld), write
        self._yield()
        if folios or not self.slab.freed:
            return
        cache = self.slab.is_freed(mm)  # as point() checks, when the access happens
        if cache is not None:
            kind = "store" if write else "load"
            self.violation(
                "uaf", f"{t.name}: {kind} {rt.describe(mm)}.{fld} after kmem_cache_free({cache})"
            )

    def _access(self, obj: object, fld: object, write: bool, extra: list[Access]) -> None:
        verb = "store" if write else "load"
        o = self.oid(obj)
        # every field access also reads ("obj", o): whole-object writes (free,
        # reuse) are dependent with all of them
        self._park([((o, fld), write), (self._objkeys[o], False), *extra], (verb, obj, fld))

    def guarded_store(self, obj: object, fld: str, kind: str, lock_obj: object) -> None:
        t = self._me()
        if t is None:
            return
        o = self.oid(lock_obj)
        self._access(obj, fld, True, [(("lock", kind, o), False), (("unlocked", kind, o), False)])
        state = self._lock_state(kind, lock_obj)  # when the store happens
        others = [h for h in state.holders() if h != t.tid]
        if state.writer != t.tid and others:
            who = ", ".join(self.threads[h].name for h in others)
            self.violation(
                "unlocked_write",
                f"{t.name}: {rt.describe(obj)}.{fld} changed without {state.label}, "
                f"which {who} holds",
            )

    def _lock_state(self, kind: str, obj: object) -> LockState:
        o = self._oids.get(id(obj))
        if o is None:
            o = self.oid(obj)
        key = (kind, o)
        state = self.locks.get(key)
        if state is None:
            state = self.locks[key] = LockState(
                KINDS[kind],
                f"{kind} of {rt.describe(obj)}",
                lock_key=("lock", kind, o),
                unlocked_key=("unlocked", kind, o),
                ptl_mm=_mm_id(obj) if kind == "ptl" else None,
            )
        return state

    def lock(self, kind: str, obj: object, mode: str, try_only: bool) -> bool:
        # the explorer's second-hottest hook: LockState's can_take()/take() and
        # held_rank() inlined (held locks carry their rank), the same checks
        t = self.running
        if t is None or self.dying:
            return True
        o = self._oids.get(id(obj))
        state = self.locks.get((kind, o)) if o is not None else None
        if state is None:
            state = self._lock_state(kind, obj)
        lk = state.kind
        read = mode == "read"
        op = _LOCK_OPS[read, try_only]
        label = state.labels.get(op) or state.op_label(op)
        if not try_only:
            if lk.sleeps and (t.spin or self.rcu.in_reader(t.tid)):
                where = "under a spinlock" if t.spin else "in an RCU read-side section"
                self.violation("sleep_in_atomic", f"{t.name}: {state.label} ({mode}) {where}")
            rank = lk.rank
            for held, _, rank_held in t.held:
                if rank_held > rank:
                    self.violation(
                        "lock_order", f"{t.name}: {state.label} taken while holding {held.label}"
                    )
                    break
            t.pending, t.label = [(state.lock_key, not read)], label
            t.ready = state.can_read if read else state.can_write
            self._nready += 1
            t.waiting = state.label
            t.waits_on = state.holders
            self._yield()
        else:
            # a trylock's result also depends on releases: see unlock()
            t.pending, t.label, t.pte_store = (
                [(state.lock_key, True), (state.unlocked_key, False)],
                label,
                False,
            )
            self._yield()
        if state.writer is not None or (not read and state.readers):  # not can_take()
            assert try_only
            return False
        if read:
            readers = state.readers
            readers[t.tid] = readers.get(t.tid, 0) + 1
        else:
            state.writer = t.tid
        t.held.append((state, mode, held_rank(lk, mode)))
        if state.ptl_mm is not None:
            self.ptl_held[state.ptl_mm] = self.ptl_held.get(state.ptl_mm, 0) + 1
        if not lk.sleeps:
            t.spin += 1
        return True

    def unlock(self, kind: str, obj: object, mode: str) -> None:
        t = self.running
        if t is None or self.dying:
            return
        o = self._oids.get(id(obj))
        state = self.locks.get((kind, o)) if o is not None else None
        if state is None:
            state = self._lock_state(kind, obj)
        # A release is dependent only on trylocks: a blocking acquisition races
        # with the previous acquisition (that is the reordering that matters),
        # as in Nidhugg and the source-DPOR paper's treatment of locks.
        t.pending, t.label, t.pte_store = (
            [(state.unlocked_key, True)],
            state.labels.get("unlock") or state.op_label("unlock"),
            False,
        )
        self._yield()
        if not state.release(t.tid, mode):
            self.violation("bad_unlock", f"{t.name}: unlock of {state.label} it does not hold")
            return
        if state.ptl_mm is not None:
            self.ptl_held[state.ptl_mm] -= 1
            self._maps_dirty = True  # what changed inside the section is visible now
        held = t.held
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] is state and held[i][1] == mode:
                del held[i]
                break
        if not state.kind.sleeps:
            t.spin -= 1

    def rcu_read_lock(self) -> None:
        t = self.running
        if t is None or self.dying:
            return
        t.pending, t.label = [(RCU_KEY, True)], "rcu_read_lock"
        self._yield()
        self.rcu.read_lock(t.tid)

    def rcu_read_unlock(self) -> None:
        t = self.running
        if t is None or self.dying:
            return
        t.pending, t.label = [(RCU_KEY, True)], "rcu_read_unlock"
        self._yield()
        if not self.rcu.read_unlock(t.tid):
            self.violation("bad_unlock", f"{t.name}: unbalanced rcu_read_unlock")

    def synchronize_rcu(self) -> None:
        t = self._me()
        if t is None:
            return
        self.may_sleep("synchronize_rcu")
        self._park([(RCU_KEY, True)], "synchronize_rcu")
        gp: GracePeriod = self.rcu.start()
        if self.rcu.completed(gp):
            return
        t.pending, t.label = [(RCU_KEY, True)], "synchronize_rcu: grace period ends"
        t.ready = lambda: self.rcu.completed(gp)
        self._nready += 1
        t.waiting = "a grace period"
        t.waits_on = lambda: self.rcu.blocking(gp)
        self._yield()

    def call_rcu(self, obj: object, callback: Callable[[], None]) -> None:
        t = self._me()
        if t is None:
            callback()
            return
        self._park(
            [(RCU_KEY, True), (("obj", self.oid(obj)), True)], f"call_rcu {rt.describe(obj)}"
        )
        gp = self.rcu.start()
        if self.rcu.completed(gp):
            callback()
        else:
            self.rcu.callbacks.append((gp, obj, callback))

    def may_sleep(self, where: str) -> None:
        t = self._me()
        if t is None:
            return
        if t.spin or self.rcu.in_reader(t.tid):
            ctx = "under a spinlock" if t.spin else "in an RCU read-side section"
            self.violation("sleep_in_atomic", f"{t.name}: {where} may sleep {ctx}")

    def slab_alloc(self, cache: str) -> object | None:
        t = self._me()
        if t is None:
            return None
        free = self.slab.freelists.get(cache)
        accesses: list[Access] = [(("slab", cache), True)]
        if free:  # the object it will hand out again is written whole
            accesses.append((("obj", self.oid(free[-1])), True))
        self._park(accesses, f"kmem_cache_alloc({cache})")
        return self.slab.alloc(cache)

    def slab_free(self, cache: str, obj: object, typesafe: bool) -> None:
        if self.dying:
            return
        if self.running is not None:  # else an RCU callback run by the scheduler
            self._park(
                [(("slab", cache), True), (("obj", self.oid(obj)), True)],
                f"kmem_cache_free({cache}, {rt.describe(obj)})",
            )
        self.slab.free(cache, obj, typesafe)

    def wait_until(self, kind: str, obj: object, fld: object, ready: Callable[[], bool]) -> None:
        t = self._me()
        if t is None:
            return
        t.pending, t.label = (
            [((self.oid(obj), fld), False)],
            f"wait {kind} {rt.describe(obj)}.{fld}",
        )
        t.ready = ready
        self._nready += 1
        t.waiting = f"{kind} {rt.describe(obj)}.{fld}"
        t.waits_on = lambda: []
        self._yield()

    def walk_begin(self, folio: object) -> None:
        t = self._me()
        if t is None or self.mappings_of is None:
            return
        pfn: int = folio.pfn  # type: ignore[attr-defined]
        now = set(self.mappings_of(pfn))
        t.walk = Walk(pfn, f"{t.name}: rmap walk of folio#{pfn}", now, mms={mm for mm, _ in now})

    def walk_visit(self, mm_id: int, address: int) -> None:
        t = self._me()
        if t is not None and t.walk is not None:
            t.walk.visited.add((mm_id, address))

    def walk_end(self, complete: bool) -> None:
        t = self._me()
        if t is None or t.walk is None:
            return
        w, t.walk = t.walk, None
        if not complete or w.abandoned:
            return
        for what in w.missed():
            self.violation("missed", f"{w.label} missed {what}")


def _mm_id(obj: object) -> int:
    """The mm a page-table lock belongs to (the model has one per mm)."""
    mm_id = getattr(obj, "mm_id", None)
    return mm_id if isinstance(mm_id, int) else id(obj)
