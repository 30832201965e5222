"""A scenario with ``threads:`` as a program the explorer can run again and again.

Each execution builds a fresh machine, runs the scenario's ``steps`` one at a
time (the set-up), then hands each thread's steps to the scheduler.  Threads
run the same code as ``cowctx run`` (syscalls, faults, fork, exit) except the
rmap clients, which run as the kernel runs them (migrate, reclaim,
folio_referenced), without the oracle's repairs: what they got wrong is found
by the checks at the end and by the walk tracking of the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable

from cowctx.clients.migrate import migrate_pages
from cowctx.clients.reclaim import reclaim_folio
from cowctx.clients.referenced import folio_referenced
from cowctx.concurrency import runtime as rt
from cowctx.concurrency.scheduler import Execution
from cowctx.designs import get_design, make_machine
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.folio import (
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_WRITE,
    is_migration_entry,
    pte_pfn,
    pte_present,
)
from cowctx.mm.machine import Machine
from cowctx.mm.memory import folio_put
from cowctx.oracle.oracle import check_machine
from cowctx.scenario import schema as S
from cowctx.scenario.lower import ClientCall, lower
from cowctx.scenario.runner import ScenarioRun, run_step


class ScenarioProgram:
    """``scenario``'s threads on ``design``."""

    def __init__(self, scenario: S.Scenario, design: str) -> None:
        if not scenario.threads:
            raise ValueError(f"scenario {scenario.name!r} has no 'threads'")
        self.scenario = scenario
        self.design = design
        self.names = list(scenario.threads)
        self.run: ScenarioRun | None = None
        self.outcomes: dict[str, list[str]] = {}
        self._factory = get_design(design)
        """Resolved once: ``anon_vma[revert_...]`` builds a class per lookup."""

    def setup(self) -> ScenarioRun:
        """The scenario's ``steps`` on a fresh machine: what
        :func:`~cowctx.scenario.runner.run_scenario` does with ``check=False``,
        without the per-step records (object counts, vmscan) nobody reads here.
        Re-run for every execution (tests/test_concurrency_explorer.py checks it
        gives the same machine as ``run_scenario``)."""
        machine = make_machine(self._factory)
        procs = {"p0": machine.spawn("p0")}
        for name, spec in self.scenario.files.items():
            machine.create_file(name, spec.pages)
        run = ScenarioRun(self.scenario, self.design, machine, procs, checked=False)
        for step in self.scenario.steps:
            run_step(run, step)
        return run

    def start(self) -> Execution:
        run = self.setup()
        self.run = run
        self.outcomes = {name: [] for name in self.names}
        threads = [
            (name, self._body(run, name, steps)) for name, steps in self.scenario.threads.items()
        ]
        ex = Execution(
            threads,
            mappings_of=lambda pfn: mappings_of(run.machine, pfn),
            probe=_Probe(run.machine),
        )
        ex.threads[0].local["tlb"] = setup_tlb(run.machine)
        return ex

    def _body(self, run: ScenarioRun, name: str, steps: list[S.Step]) -> Callable[[], None]:
        out = self.outcomes[name]

        def body() -> None:
            for step in steps:
                errno = _thread_step(run, step)
                out.append(f"{step.op}:{errno or 'ok'}")

        return body

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        assert self.run is not None
        m = self.run.machine
        found = [(v.kind, v.detail) for v in stale_entries(m)]
        if not any(t.done is False for t in ex.threads):
            found += [(v.kind, v.detail) for v in check_machine(m)]
        return final_state(self.run, self.outcomes), found


def _thread_step(run: ScenarioRun, step: S.Step) -> str | None:
    if not isinstance(step, S.ClientStep):  # lower() makes a ClientCall of these only
        return run_step(run, step)[0]
    action = lower(step)
    assert isinstance(action, ClientCall)
    m = run.machine
    task = run.procs[step.proc]
    if task.exit_state or task.mm is None:
        return "ESRCH"
    # One step: the look-up and the caller's reference (under the PTL, as
    # follow_page(FOLL_GET) / folio_isolate_lru() do): the client runs on a
    # folio that a racing munmap or exit may unmap but cannot free under it.
    # The step names the PTE and the count of the folio it maps now.
    seen = m.folio_at(task, action.addr)
    pte_key = ("pte", action.addr >> PAGE_SHIFT)
    rt.points("load", [(task.mm, pte_key, False)] + ([(seen, "refcount", True)] if seen else []))
    if task.exit_state or task.mm is None:
        return "ESRCH"
    folio = m.folio_at(task, action.addr)
    if folio is None or not folio.anon or not folio.mapcount:
        return "ENOENT"
    folio.pinned += 1  # folio_get(), in the look-up's step
    try:
        if action.client == "migrate":
            migrate_pages(m, folio)
        elif action.client == "reclaim":
            if folio.ksm:
                return "EBUSY"
            reclaim_folio(m, folio)
        else:
            folio_referenced(m, folio)
    except (SyscallError, AccessFault) as err:
        return err.errno
    finally:
        folio_put(m, folio)
    return None


def setup_tlb(m: Machine) -> set[tuple[int, int, int]]:
    """The TLB of the CPU that ran the set-up, which the scenario's first thread
    (the main thread) goes on running on: a writable translation of every
    writable PTE, as (mm_id, vpn, pfn) (:func:`cowctx.mm.locking.user_store`).
    A TLB may hold any translation that was valid; holding them all only
    matters while a PTE is stale (fork), and lets a store go where the CPU's
    entry points."""
    out = set()
    for mm in m.live_mms():
        for vpn, pte in mm.pgd.items():
            if pte & PTE_PRESENT and pte & PTE_WRITE:
                out.add((mm.mm_id, vpn, pte >> PTE_PFN_SHIFT))
    return out


def mappings_of(m: Machine, pfn: int) -> set[tuple[int, int]]:
    """(mm_id, address) of every present PTE mapping ``pfn`` now."""
    out = set()
    # pte_present(pte) and pte_pfn(pte) == pfn, inlined: sampled after every
    # PTE store while a walk runs
    for mm in m.live_mms():
        for vpn, pte in mm.pgd.items():
            if pte & PTE_PRESENT and pte >> PTE_PFN_SHIFT == pfn:
                out.add((mm.mm_id, vpn << PAGE_SHIFT))
    return out


class _Probe:
    """:class:`~cowctx.concurrency.scheduler.MappingProbe` over a machine's page
    tables: what :func:`mappings_of` says, one mapping at a time."""

    def __init__(self, m: Machine) -> None:
        self.m = m

    def _pgd(self, mm_id: int) -> dict[int, int] | None:
        for task in self.m.tasks.values():
            mm = task.mm
            if not task.exit_state and mm is not None and mm.mm_id == mm_id:
                return mm.pgd
        return None

    def maps(self, pfn: int, mm_id: int, address: int) -> bool:
        pgd = self._pgd(mm_id)
        if pgd is None:
            return False
        pte = pgd.get(address >> PAGE_SHIFT)
        return pte is not None and bool(pte & PTE_PRESENT) and pte >> PTE_PFN_SHIFT == pfn

    def mm_maps(self, pfn: int, mm_id: int) -> bool:
        pgd = self._pgd(mm_id)
        return pgd is not None and any(
            pte & PTE_PRESENT and pte >> PTE_PFN_SHIFT == pfn for pte in pgd.values()
        )


class _Found:
    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail = kind, detail


def stale_entries(m: Machine) -> list[_Found]:
    """``stale``: a migration entry left behind once every thread is done, or a
    PTE to a folio that was freed (migration's old folio)."""
    out = []
    mem_map = m.mem_map
    for mm in m.live_mms():
        for vpn, pte in sorted(mm.pgd.items()):
            if is_migration_entry(pte):
                where = f"mm#{mm.mm_id} at {vpn << PAGE_SHIFT:#x}"
                out.append(
                    _Found("stale", f"migration entry of pfn {pte_pfn(pte)} left at {where}")
                )
            elif pte_present(pte) and pte_pfn(pte) not in mem_map:
                where = f"mm#{mm.mm_id} at {vpn << PAGE_SHIFT:#x}"
                out.append(_Found("stale", f"PTE to freed pfn {pte_pfn(pte)} at {where}"))
    return out


def final_state(run: ScenarioRun, outcomes: dict[str, list[str]]) -> str:
    """What an execution ended with, canonically: each process's VMAs and PTEs,
    each folio's rmap state, each thread's step outcomes."""
    m = run.machine
    lines = []
    for name in sorted(run.procs):
        task = run.procs[name]
        if task.exit_state or task.mm is None:
            lines.append(f"{name}: exited")
            continue
        mm = task.mm
        vmas = [
            (v.vm_start, v.vm_end, v.vm_pgoff, v.vm_flags, v.anon_vma is not None)
            for v in mm.vmas()
        ]
        lines.append(f"{name}: mm#{mm.mm_id} {vmas} {sorted(mm.pgd.items())}")
    for pfn in sorted(m.mem_map):
        f = m.mem_map[pfn]
        if f.anon:
            lines.append(f"folio#{pfn} map={f.mapcount} idx={f.index} {m.rmap.describe_folio(f)}")
    for name in sorted(outcomes):
        lines.append(f"{name}: {' '.join(outcomes[name])}")
    return "\n".join(lines)
