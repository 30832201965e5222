"""Enumerate interleavings: source-DPOR with sleep sets under a preemption bound,
naive enumeration (to check it), seeded random and PCT schedulers, and replay.

Stateless model checking: every execution starts from a fresh program
(:class:`Program`) and is steered by a chooser.  Source-DPOR (Abdulla et al.,
POPL'14, Algorithm 1): after each execution, for every race ``e_i ⋖ e_j``
(dependent steps of different threads, not ordered by happens-before through
another step) one thread from the initials of ``notdep(e_i).e_j`` is added to
the backtrack set before ``e_i`` unless one is there already; sleep sets keep
equivalent orders from being run twice.  Under a preemption bound the thread is
also added at the previous context switch (loom's ``backtrack()``), so that a
schedule within the bound is not lost because its race needs the switch earlier.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cowctx.concurrency.scheduler import Access, Event, Execution


class Program(Protocol):
    """A concurrent program: a fresh execution per run, and what its end means."""

    def start(self) -> Execution: ...

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        """The final state (a canonical string) and the violations found at the end."""
        ...


@dataclass
class Found:
    kind: str
    detail: str
    schedule: list[str]


@dataclass
class Report:
    mode: str
    executions: int = 0
    pruned: int = 0
    final_states: set[str] = field(default_factory=set)
    violations: dict[tuple[str, str], Found] = field(default_factory=dict)
    seconds: float = 0.0
    bound: int | None = None
    complete: bool = True
    """False when a cap on executions stopped the search."""

    def add(
        self, ex: Execution, state: str, found: list[tuple[str, str]], names: list[str]
    ) -> None:
        self.executions += 1
        self.final_states.add(state)
        if not ex.violations and not found:
            return
        schedule = [names[e.tid] for e in ex.trace]
        for kind, detail in [*ex.violations, *found]:
            old = self.violations.get((kind, detail))
            if old is None or len(schedule) < len(old.schedule):
                self.violations[(kind, detail)] = Found(kind, detail, schedule)

    def to_json(self) -> dict[str, object]:
        per_s = self.executions / self.seconds if self.seconds else 0.0
        return {
            "mode": self.mode,
            "bound": self.bound,
            "executions": self.executions,
            "pruned": self.pruned,
            "final_states": len(self.final_states),
            "seconds": round(self.seconds, 3),
            "executions_per_second": round(per_s, 1),
            "complete": self.complete,
            "violations": [
                {"kind": f.kind, "detail": f.detail, "schedule": f.schedule}
                for f in sorted(self.violations.values(), key=lambda f: (f.kind, f.detail))
            ],
        }


class _Abandon(Exception):
    """The execution is cut short (all enabled threads asleep, or over the bound)."""


def dependent(a: list[Access], b: list[Access]) -> bool:
    for ka, wa in a:
        for kb, wb in b:
            if ka == kb and (wa or wb):
                return True
    return False


@dataclass
class Node:
    enabled: list[int]
    pending: dict[int, list[Access]]
    prev: int | None
    preemptions: int
    sleep: set[int]
    chosen: int = -1
    backtrack: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    cut: set[int] = field(default_factory=set)
    """Choices here whose subtree the bound cut short: not covered, so they must
    not go to sleep in the siblings (sleep sets assume full exploration)."""

    def cost(self, tid: int) -> int:
        return int(self.prev is not None and tid != self.prev and self.prev in self.enabled)


def explore(
    program: Program,
    names: list[str],
    *,
    naive: bool = False,
    bound: int | None = 2,
    max_executions: int | None = None,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Every interleaving up to ``bound`` preemptions (None: unbounded): source-DPOR
    with sleep sets, or with ``naive`` every schedule."""
    report = Report("naive" if naive else "dpor", bound=bound)
    t0 = time.perf_counter()
    stack: list[Node] = []
    while True:
        ex = program.start()
        depth = 0

        def choose(ex: Execution, enabled: list[int]) -> int:
            nonlocal depth
            if depth < len(stack):
                tid = stack[depth].chosen
                depth += 1
                return tid
            parent = stack[-1] if stack else None
            pending = {t.tid: list(t.pending) for t in ex.threads if not t.done}
            if parent is None:
                node = Node(enabled, pending, None, 0, set())
            else:
                event = ex.trace[-1]
                sleep: set[int] = set()
                if not naive:
                    for q in parent.sleep | (parent.done - parent.cut - {parent.chosen}):
                        if q in parent.pending and not dependent(parent.pending[q], event.accesses):
                            sleep.add(q)
                node = Node(
                    enabled,
                    pending,
                    parent.chosen,
                    parent.preemptions + parent.cost(parent.chosen),
                    sleep,
                )
            candidates = [t for t in enabled if t not in node.sleep]
            if not candidates:
                raise _Abandon
            # Continue the running thread when it can: no preemption.  The bound
            # only limits which backtrack choices are taken (_next), never the
            # continuation, so an execution may go past it (as GenMC's bounding
            # does) rather than lose a schedule that is within it.
            tid = node.prev if node.prev in candidates else candidates[0]
            node.chosen = tid
            node.backtrack = set(enabled) if naive else {tid}
            stack.append(node)
            depth += 1
            return tid

        abandoned = False
        try:
            ex.run(choose)
        except _Abandon:
            abandoned = True
        if abandoned:
            report.pruned += 1
        else:
            state, found = program.finish(ex)
            report.add(ex, state, found, names)
        if not naive:
            _races(ex.trace[: len(stack)], stack, bound, ex.blocked)
        if progress is not None:
            progress(report)
        if max_executions is not None and report.executions + report.pruned >= max_executions:
            report.complete = False
            break
        if not _next(stack, bound, report):
            break
    report.seconds = time.perf_counter() - t0
    return report


def _next(stack: list[Node], bound: int | None, report: Report) -> bool:
    """Move to the deepest node with an unexplored backtrack choice."""
    while stack:
        node = stack[-1]
        node.done.add(node.chosen)
        for tid in sorted(node.backtrack - node.done - node.sleep):
            if tid not in node.enabled:
                continue
            if bound is not None and node.preemptions + node.cost(tid) > bound:
                node.done.add(tid)
                node.cut.add(tid)
                report.pruned += 1
                continue
            node.chosen = tid
            return True
        stack.pop()
        if node.cut and stack:
            stack[-1].cut.add(stack[-1].chosen)
    return False


def _races(
    trace: list[Event], stack: list[Node], bound: int | None, blocked: Sequence[Event] = ()
) -> None:
    """Source-DPOR's race analysis of one execution.

    ``blocked``: the steps of threads that could not run when the execution ended
    (a ``wait_until()``, a blocking lock), analysed as if they ran last.  A wait
    is enabled only by some store (a sequence count made even, a migration entry
    removed): reversing its race with that store gives an execution where it is
    disabled, which may end with every other thread asleep.  Without its pending
    step in the analysis, the race with the store before (the one that made the
    count odd) is never seen, and the orders where the waiter reads before the
    writer's section are lost (``read_seqcount_begin()`` against a writer: DPOR
    explored one execution where naive enumeration explored hundreds).
    """
    n = len(trace)
    trace = [*trace, *blocked]
    if n == 0 or len(trace) < 2:
        return
    nthreads = 1 + max(max(nd.enabled, default=0) for nd in stack[:n])
    nthreads = max(nthreads, 1 + max(e.tid for e in trace))
    seq = [0] * len(trace)
    clocks: list[list[int]] = []
    last_of: dict[int, int] = {}
    by_key: dict[object, list[tuple[int, bool]]] = {}
    preds: list[list[int]] = []
    counts = [0] * nthreads
    for j, e in enumerate(trace):
        counts[e.tid] += 1
        seq[j] = counts[e.tid]
        dep: set[int] = set()
        for key, w in e.accesses:
            for i, wi in by_key.get(key, ()):
                if (w or wi) and trace[i].tid != e.tid:
                    dep.add(i)
        po = last_of.get(e.tid)
        c = list(clocks[po]) if po is not None else [0] * nthreads
        for i in dep:
            ci = clocks[i]
            for k in range(nthreads):
                if ci[k] > c[k]:
                    c[k] = ci[k]
        c[e.tid] = seq[j]
        clocks.append(c)
        preds.append(sorted(dep) + ([po] if po is not None else []))
        last_of[e.tid] = j
        if j < n:  # a blocked step races with no other blocked step
            for key, w in e.accesses:
                by_key.setdefault(key, []).append((j, w))

    def hb(i: int, k: int) -> bool:
        return i == k or (i < k and clocks[k][trace[i].tid] >= seq[i])

    for j in range(len(trace)):
        tj = trace[j].tid
        for i in preds[j]:
            if trace[i].tid == tj or i >= n:  # a blocked step has no node
                continue
            if any(k != i and hb(i, k) for k in preds[j]):
                continue  # ordered through another step: not a direct race
            v = [k for k in range(i + 1, min(j, n)) if not hb(i, k)] + [j]
            initials: list[int] = []
            seen: set[int] = set()
            for idx, k in enumerate(v):
                tk = trace[k].tid
                if tk in seen:
                    continue
                seen.add(tk)
                if not any(hb(v[m], k) for m in range(idx)):
                    initials.append(tk)
            node = stack[i]
            if node.backtrack & set(initials):
                continue
            choice = [q for q in initials if q in node.enabled]
            add = [choice[0]] if choice else list(node.enabled)
            node.backtrack.update(add)
            if bound is not None:
                for k in range(i - 1, -1, -1):
                    if k == 0 or stack[k].chosen != stack[k - 1].chosen:
                        stack[k].backtrack.update(q for q in add if q in stack[k].enabled)
                        break


def run_schedule(program: Program, names: list[str], schedule: list[str]) -> Report:
    """Re-run one schedule exactly (``--replay``)."""
    report = Report("replay", bound=None)
    t0 = time.perf_counter()
    ex = program.start()
    index = {name: i for i, name in enumerate(names)}
    pos = 0

    def choose(ex: Execution, enabled: list[int]) -> int:
        nonlocal pos
        if pos >= len(schedule):
            raise ValueError(f"schedule ends after {pos} steps; threads still runnable")
        name = schedule[pos]
        tid = index.get(name)
        if tid is None or tid not in enabled:
            raise ValueError(f"schedule step {pos}: thread {name!r} cannot run here")
        pos += 1
        return tid

    ex.run(choose)
    if pos != len(schedule):
        raise ValueError(f"schedule has {len(schedule)} steps, the execution took {pos}")
    state, found = program.finish(ex)
    report.add(ex, state, found, names)
    report.seconds = time.perf_counter() - t0
    return report


def random_walks(
    program: Program,
    names: list[str],
    runs: int,
    seed: int,
    *,
    pct_depth: int | None = None,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """``runs`` seeded executions: uniform choice among enabled threads, or PCT
    (Burckhardt et al., ASPLOS'10) for bug depth ``pct_depth``: random thread
    priorities, ``pct_depth - 1`` change points over the step count of the first run."""
    report = Report("random" if pct_depth is None else "pct", bound=None)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    steps_seen = 0
    for _ in range(runs):
        ex = program.start()
        if pct_depth is None:
            chooser: Callable[[Execution, list[int]], int] = _Uniform(rng)
        else:
            chooser = _Pct(rng, len(names), pct_depth, max(steps_seen, 1))
        ex.run(chooser)
        steps_seen = max(steps_seen, len(ex.trace))
        state, found = program.finish(ex)
        report.add(ex, state, found, names)
        if progress is not None:
            progress(report)
    report.seconds = time.perf_counter() - t0
    return report


class _Uniform:
    """``enabled[rng.randrange(len(enabled))]``, with the draws of CPython's
    ``Random._randbelow_with_getrandbits()`` (what ``randrange(n)`` does after
    its argument checks) made here: the same numbers, one call fewer per step
    (tests/test_concurrency_explorer.py checks they agree)."""

    def __init__(self, rng: random.Random) -> None:
        self.getrandbits = rng.getrandbits

    def __call__(self, ex: Execution, enabled: list[int]) -> int:
        n = len(enabled)
        k = n.bit_length()  # as _randbelow_with_getrandbits: draws even when n is 1
        r = self.getrandbits(k)
        while r >= n:
            r = self.getrandbits(k)
        return enabled[r]


class _Pct:
    """PCT: distinct random priorities (all above ``depth``); at each of the
    ``depth - 1`` change points the running thread drops below every other."""

    def __init__(self, rng: random.Random, nthreads: int, depth: int, steps: int) -> None:
        self.prio = list(range(depth, depth + nthreads))
        rng.shuffle(self.prio)
        self.changes = sorted(rng.randrange(1, steps + 1) for _ in range(depth - 1))
        self.depth = depth
        self.step = 0

    def __call__(self, ex: Execution, enabled: list[int]) -> int:
        prio = self.prio
        best = max(enabled, key=lambda t: prio[t])
        self.step += 1
        for n, c in enumerate(self.changes):
            if c == self.step:
                prio[best] = self.depth - 1 - n
                best = max(enabled, key=lambda t: prio[t])
        return best
