"""Workloads and background walkers as per-CPU loops of model operations.

A workload generator (:mod:`cowctx.workloads`) writes one sequential story: a root
process builds its memory, then forks children that do their part.  On N CPUs
each *worker* repeats one child's part for ever, as AIM7's tasks do: the set-up
is every step before the first fork; each worker is a fork of the root (so every
worker's memory hangs off the root's anon_vma hierarchy, the 2009 AIM7 shape);
the *unit* a worker repeats is the first fork and the steps of its parent and
child up to the next fork, the child's ``exit`` added when the story keeps it.
The parent's steps in the unit run as the worker's own; the child's run on the
worker's CPU too (it is scheduled there after fork).

Walkers run as the kernel runs them, on the root's folios in address order,
round and round: ``reclaim`` is ``shrink_folio_list()``'s reference check
(``folio_referenced()`` with ``rwc->try_lock``: a failed try-lock keeps the
folio, a rotation); ``migrate`` is compaction's ``migrate_pages()`` (blocking
``anon_vma_lock_read()``), which moves the folio to a new page; ``collapse`` is
khugepaged's lock pattern on each of the root's VMAs in turn: the scan of a
PMD's PTEs under ``mmap_read_lock()`` and the page-table lock
(``hpage_collapse_scan_pmd()``), then ``collapse_huge_page()``'s
``mmap_write_lock()``, ``vma_start_write()``, ``anon_vma_lock_write()`` (the
root) around a second pass over the PTEs.  The model has no THP: the collapse
walker takes the locks and pays the steps, it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cowctx.clients.migrate import migrate_pages
from cowctx.clients.referenced import folio_referenced
from cowctx.concurrency import runtime as rt
from cowctx.contend.sim import Body, SimThread, Simulator
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.scenario import schema as S
from cowctx.scenario.runner import ScenarioRun, run_scenario, run_step
from cowctx.workloads.registry import build_workload

WALKERS = ("reclaim", "migrate", "collapse")


class PlanError(ValueError):
    """A workload that cannot be turned into per-CPU loops (no fork)."""


@dataclass
class Plan:
    workload: str
    description: str
    setup: S.Scenario
    root: str
    child: str
    unit: list[S.Step]


def make_plan(workload: str, params: dict[str, float] | None = None, scale: float = 1.0) -> Plan:
    """The set-up and the repeated unit of ``workload`` (see the module docstring)."""
    sc = build_workload(workload, params, scale)
    steps = list(sc.steps)
    first = next((i for i, s in enumerate(steps) if s.op == "fork"), None)
    if first is None:
        raise PlanError(f"workload {workload}: no fork step, nothing to repeat per CPU")
    fork = steps[first]
    assert isinstance(fork, S.ForkStep)
    root, child = fork.proc, fork.child
    unit: list[S.Step] = [fork]
    for s in steps[first + 1 :]:
        if s.op == "fork":
            break
        if s.proc in (root, child):
            unit.append(s)
    if not any(s.op == "exit" and s.proc == child for s in unit):
        unit.append(S.ExitStep(op="exit", proc=child))
    setup = sc.model_copy(update={"steps": steps[:first], "name": f"{sc.name}-setup"})
    return Plan(workload, sc.description or "", setup, root, child, unit)


def start_machine(plan: Plan, design: str, workers: int) -> ScenarioRun:
    """Run the set-up sequentially and fork the workers from the root."""
    run = run_scenario(plan.setup, design, check=False)
    root = run.procs[plan.root]
    for i in range(workers):
        run.procs[f"w{i}"] = run.machine.fork(root, f"w{i}")
    return run


def _retarget(step: S.Step, root: str, child: str, worker: str, name: str) -> S.Step:
    update: dict[str, Any] = {"proc": worker if step.proc == root else name}
    if step.op == "fork":
        update["child"] = name
    return step.model_copy(update=update)


def worker_body(sim: Simulator, run: ScenarioRun, plan: Plan, worker: str) -> Body:
    """A worker repeating the plan's unit, each time with a fresh child."""

    def body(t: SimThread) -> None:
        k = 0
        while True:
            name = f"{worker}.{k}"
            for step in plan.unit:
                s = _retarget(step, plan.root, plan.child, worker, name)
                sim.begin(t, s.op)
                run_step(run, s)
                sim.end(t)
            sim.stats.unit(t.role)
            run.procs.pop(name, None)
            _forget_tlb(t, run, worker)
            k += 1

    return body


def _forget_tlb(t: SimThread, run: ScenarioRun, worker: str) -> None:
    """The child has exited: drop its entries from the thread's TLB (the one
    :func:`cowctx.mm.locking.user_store` keeps in the thread's ``local()``, as
    ``(mm_id, vpn, pfn)``), which would otherwise grow by each child's stores for
    the whole run.  Only the worker's own mm outlives a unit."""
    tlb = t.local.get("tlb")
    mm = run.procs[worker].mm
    if isinstance(tlb, set) and tlb and mm is not None:
        own = mm.mm_id
        t.local["tlb"] = {e for e in tlb if e[0] == own}


def root_pages(run: ScenarioRun, root: str) -> list[int]:
    """Addresses of the root's anonymous folios after set-up, in address order."""
    m = run.machine
    task = run.procs[root]
    out = []
    assert task.mm is not None
    for vpn in sorted(task.mm.pgd):
        folio = m.folio_at(task, vpn << PAGE_SHIFT)
        if folio is not None and folio.anon:
            out.append(vpn << PAGE_SHIFT)
    return out


PMD_PTES = 512


def collapse_body(sim: Simulator, run: ScenarioRun, plan: Plan, start: int, pace_ns: int) -> Body:
    """khugepaged's locks over the root's VMAs (see the module docstring)."""
    task = run.procs[plan.root]

    def scan(mm: object, first: int) -> None:
        rt.lock("ptl", mm)
        for vpn in range(first, first + PMD_PTES):
            rt.point("load", mm, ("pte", vpn))
        rt.unlock("ptl", mm)

    def body(t: SimThread) -> None:
        i = start
        while True:
            mm = task.mm
            vmas = mm.vmas() if mm is not None else []
            if mm is None or not vmas:
                return
            vma = vmas[i % len(vmas)]
            i += 1
            first = vma.vm_start >> PAGE_SHIFT
            sim.begin(t, "collapse")
            rt.lock("mmap_lock", mm, "read")
            scan(mm, first)
            rt.unlock("mmap_lock", mm, "read")
            rt.lock("mmap_lock", mm, "write")
            rt.lock("vma_lock", vma, "write")
            root = getattr(vma.anon_vma, "root", None)
            if root is not None:
                rt.lock("anon_vma", root, "write")
            scan(mm, first)
            if root is not None:
                rt.unlock("anon_vma", root, "write")
            rt.unlock("vma_lock", vma, "write")
            rt.unlock("mmap_lock", mm, "write")
            sim.stats.walk("collapse", sim.end(t))
            sim.stats.folio("collapse", False)
            sim.pause(t, pace_ns)

    return body


def walker_body(
    sim: Simulator, run: ScenarioRun, plan: Plan, kind: str, start: int, pace_ns: int
) -> Body:
    """A background walker over the root's folios (``reclaim`` or ``migrate``)."""
    if kind not in WALKERS:
        raise PlanError(f"unknown walker {kind!r}; known: {', '.join(WALKERS)}")
    if kind == "collapse":
        return collapse_body(sim, run, plan, start, pace_ns)
    m = run.machine
    task = run.procs[plan.root]
    pages = root_pages(run, plan.root)

    def body(t: SimThread) -> None:
        if not pages:
            return
        i = start
        while True:
            addr = pages[i % len(pages)]
            i += 1
            sim.begin(t, kind)
            folio = m.folio_at(task, addr)
            if folio is not None and folio.anon and folio.mapcount and not folio.ksm:
                if kind == "reclaim":
                    folio_referenced(m, folio)
                else:
                    migrate_pages(m, folio)
                sim.stats.folio(kind, t.failed_trylocks > 0)
            sim.end(t)
            sim.pause(t, pace_ns)

    return body
