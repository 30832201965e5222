"""Run a scenario on the model: steps become syscalls, faults and client calls on
a :class:`~cowctx.mm.machine.Machine`, with the oracle after every step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cowctx.clients.migrate import migrate_folio
from cowctx.clients.reclaim import reclaim_folio
from cowctx.clients.referenced import folio_referenced
from cowctx.designs import make_machine
from cowctx.mm.constants import (
    MADV_BY_NAME,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
    PROT_BY_NAME,
)
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.folio import Folio
from cowctx.mm.ksm_scan import ksm_do_scan
from cowctx.mm.machine import Machine
from cowctx.mm.mm_types import TaskStruct
from cowctx.oracle.oracle import LIMIT_KINDS, Violation, check_machine, scan_page_tables
from cowctx.rmap.protocol import AnonRmap
from cowctx.scenario import schema as S
from cowctx.scenario.results import build_result

PAGE = 1 << PAGE_SHIFT


def page_addr(page: int) -> int:
    """Virtual address of window page ``page``."""
    return S.WINDOW_BASE + page * PAGE


@dataclass
class StepRecord:
    op: str
    errno: str | None
    objects: dict[str, dict[str, int]]
    time_ns: int | None = None
    detail: str | None = None


@dataclass
class ScenarioRun:
    """A scenario run on one design: the machine at the end and what happened."""

    scenario: S.Scenario
    design: str
    machine: Machine
    procs: dict[str, TaskStruct]
    steps: list[StepRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    limits: list[Violation] = field(default_factory=list)
    """Walk misses Linux makes too (``oracle.LIMIT_KINDS``), kept apart."""
    checked: bool = True

    def result(self, timing: bool = False) -> dict[str, Any]:
        return build_result(self, timing)


class StepError(Exception):
    """A step the model cannot run as written (not a syscall error)."""


def run_scenario(
    scenario: S.Scenario,
    design: str | type[AnonRmap] = "anon_vma",
    *,
    check: bool = True,
    timing: bool = False,
    stop_on_violation: bool = False,
) -> ScenarioRun:
    """Run every step; with ``check`` the oracle compares every anon folio's rmap
    walk with the page tables after each step.  ``design`` is a design name or an
    :class:`AnonRmap` subclass (tests use deliberately broken ones)."""
    machine = make_machine(design)
    design = design if isinstance(design, str) else design.name
    procs = {"p0": machine.spawn("p0")}
    for name, spec in scenario.files.items():
        machine.create_file(name, spec.pages)
    run = ScenarioRun(scenario, design, machine, procs, checked=check)
    for i, step in enumerate(scenario.steps):
        before = machine.ledger.counts()
        t0 = time.perf_counter_ns() if timing else 0
        errno, detail = _run_step(run, step)
        elapsed = time.perf_counter_ns() - t0 if timing else None
        after = machine.ledger.counts()
        objects = {
            k: {"allocated": a - before.get(k, (0, 0))[0], "freed": f - before.get(k, (0, 0))[1]}
            for k, (a, f) in after.items()
        }
        run.steps.append(StepRecord(step.op, errno, objects, elapsed, detail))
        if check:
            for v in check_machine(machine, include_limits=True):
                found = Violation(v.kind, v.detail, v.folio, i, step.op)
                (run.limits if v.kind in LIMIT_KINDS else run.violations).append(found)
            if stop_on_violation and run.violations:
                break
    return run


def _run_step(run: ScenarioRun, step: S.Step) -> tuple[str | None, str | None]:
    m = run.machine
    task = run.procs[step.proc]
    try:
        if isinstance(step, S.MmapStep):
            flags = MAP_FIXED_NOREPLACE | (MAP_SHARED if step.shared else MAP_PRIVATE)
            file = None
            if step.file is None:
                flags |= MAP_ANONYMOUS
            else:
                file = m.files[step.file]
            if "noreserve" in step.flags:
                flags |= MAP_NORESERVE
            if "populate" in step.flags:
                flags |= MAP_POPULATE
            m.mmap(
                task,
                page_addr(step.page),
                step.pages * PAGE,
                PROT_BY_NAME[step.prot],
                flags,
                file,
                step.file_page,
            )
        elif isinstance(step, S.MunmapStep):
            m.munmap(task, page_addr(step.page), step.pages * PAGE)
        elif isinstance(step, S.MprotectStep):
            m.mprotect(task, page_addr(step.page), step.pages * PAGE, PROT_BY_NAME[step.prot])
        elif isinstance(step, S.MremapStep):
            flags = (
                (MREMAP_MAYMOVE if "maymove" in step.flags else 0)
                | (MREMAP_FIXED if "fixed" in step.flags else 0)
                | (MREMAP_DONTUNMAP if "dontunmap" in step.flags else 0)
            )
            new_addr = page_addr(step.new_page) if step.new_page is not None else 0
            m.mremap(
                task,
                page_addr(step.page),
                step.pages * PAGE,
                step.new_pages * PAGE,
                flags,
                new_addr,
            )
        elif isinstance(step, S.MadviseStep):
            m.madvise(task, page_addr(step.page), step.pages * PAGE, MADV_BY_NAME[step.advice])
        elif isinstance(step, S.ReadStep):
            m.access_range(task, page_addr(step.page), step.pages, False)
        elif isinstance(step, S.WriteStep):
            m.access_range(task, page_addr(step.page), step.pages, True, step.value)
        elif isinstance(step, S.ForkStep):
            run.procs[step.child] = m.fork(task, step.child)
        elif isinstance(step, S.ExitStep):
            m.exit(task)
        elif isinstance(step, S.ExecStep):
            m.execve(task)
        elif isinstance(step, S.KsmStep):
            with m.operation("ksm"):
                ksm_do_scan(m)
        elif isinstance(step, S.ClientStep):
            return _run_client(run, step, task)
        else:  # pragma: no cover - the schema admits nothing else
            raise StepError(f"unknown op {step.op}")
    except SyscallError as err:
        return err.errno, err.why
    except AccessFault as fault:
        return fault.errno, fault.why
    return None, None


def _run_client(
    run: ScenarioRun, step: S.ClientStep, task: TaskStruct
) -> tuple[str | None, str | None]:
    m = run.machine
    folio = m.folio_at(task, page_addr(step.page))
    if folio is None or not folio.anon:
        return "ENOENT", "no anon folio mapped at that page"
    problems: list[str] = []
    unlisted = _ksm_unlisted(m, folio)
    with m.operation(step.op):
        if step.op == "migrate":
            problems = migrate_folio(m, folio).problems
        elif step.op == "reclaim":
            if folio.ksm:
                return "EBUSY", "KSM folios are not swapped by the model"
            problems = reclaim_folio(m, folio).problems
        else:
            result = folio_referenced(m, folio)
            if result.mappings_found != result.mapcount:
                problems = [
                    f"folio_referenced found {result.mappings_found} of {result.mapcount} mappings"
                ]
    index = len(run.steps)
    for p in problems:
        if unlisted and (p.startswith("folio_referenced") or any(u in p for u in unlisted)):
            run.limits.append(Violation("ksm_unlisted", p, folio.pfn, index, step.op))
        else:
            run.violations.append(Violation("client", p, folio.pfn, index, step.op))
    return None, None


def _ksm_unlisted(m: Machine, folio: Folio) -> list[str]:
    """The mappings of a KSM folio no rmap_item lists, as the clients name them
    (``mm#N at 0x...``): misses there are the kernel's too (``LIMIT_KINDS``)."""
    if not folio.ksm:
        return []
    listed = folio.mapping.listed()  # type: ignore[union-attr]
    mappings = scan_page_tables(m).get(folio.pfn, set())
    return [f"mm#{mm_id} at {address:#x}" for mm_id, address in sorted(mappings - listed)]
