"""Run a scenario on the model: steps become syscalls, faults and client calls on
a :class:`~cowctx.mm.machine.Machine`, with the oracle after every step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cowctx.designs import make_machine
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.folio import Folio
from cowctx.mm.ksm import folio_stable_node
from cowctx.mm.ksm_scan import ksm_do_scan
from cowctx.mm.machine import Machine
from cowctx.mm.mm_types import TaskStruct
from cowctx.oracle.clients import check_migrate, check_reclaim, check_referenced
from cowctx.oracle.oracle import LIMIT_KINDS, Violation, check_machine, scan_page_tables
from cowctx.rmap.protocol import AnonRmap
from cowctx.scenario import schema as S
from cowctx.scenario.lower import (
    ClientCall,
    Exec,
    Exit,
    Fork,
    KsmScan,
    Syscall,
    Touch,
    lower,
)
from cowctx.scenario.results import ScenarioResult, build_result


@dataclass
class StepRecord:
    op: str
    errno: str | None
    objects: dict[str, dict[str, int]]
    time_ns: int | None = None
    detail: str | None = None
    vmscan: dict[str, int] | None = None
    """What reclaim decided during the step (``mm_vmscan_reclaim_pages``), if it ran."""


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

    def result(self, timing: bool = False) -> ScenarioResult:
        return build_result(self, timing)


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
        scanned = dict(machine.ledger.vmscan)
        t0 = time.perf_counter_ns() if timing else 0
        errno, detail = run_step(run, step)
        elapsed = time.perf_counter_ns() - t0 if timing else None
        after = machine.ledger.counts()
        objects = {
            k: {"allocated": a - before.get(k, (0, 0))[0], "freed": f - before.get(k, (0, 0))[1]}
            for k, (a, f) in after.items()
        }
        vmscan = {k: n - scanned[k] for k, n in machine.ledger.vmscan.items()}
        reclaimed = vmscan if vmscan["nr_scanned"] else None
        run.steps.append(StepRecord(step.op, errno, objects, elapsed, detail, reclaimed))
        if check:
            for v in check_machine(machine, include_limits=True):
                found = Violation(v.kind, v.detail, v.folio, i, step.op)
                (run.limits if v.kind in LIMIT_KINDS else run.violations).append(found)
            if stop_on_violation and run.violations:
                break
    return run


def run_step(run: ScenarioRun, step: S.Step) -> tuple[str | None, str | None]:
    """One step on the run's machine: (errno, why) when it fails as the kernel would."""
    m = run.machine
    task = run.procs[step.proc]
    action = lower(step)
    try:
        if isinstance(action, Syscall):
            file = m.files[action.file] if action.file is not None else None
            m.syscall(task, action.nr, action.args, file)
        elif isinstance(action, Touch):
            m.access_range(task, action.addr, action.pages, action.write, action.value)
        elif isinstance(action, Fork):
            run.procs[action.child] = m.fork(task, action.child)
        elif isinstance(action, Exit):
            m.exit(task)
        elif isinstance(action, Exec):
            m.execve(task)
        elif isinstance(action, KsmScan):
            with m.operation("ksm"):
                ksm_do_scan(m)
        else:
            return _run_client(run, action, task)
    except SyscallError as err:
        return err.errno, err.why
    except AccessFault as fault:
        return fault.errno, fault.why
    return None, None


def _run_client(
    run: ScenarioRun, call: ClientCall, task: TaskStruct
) -> tuple[str | None, str | None]:
    m = run.machine
    folio = m.folio_at(task, call.addr)
    if folio is None or not folio.anon:
        return "ENOENT", "no anon folio mapped at that page"
    problems: list[str] = []
    unlisted = _ksm_unlisted(m, folio)
    with m.operation(call.client):
        if call.client == "migrate":
            problems = check_migrate(m, folio)[1]
        elif call.client == "reclaim":
            if folio.ksm:
                return "EBUSY", "KSM folios are not swapped by the model"
            problems = check_reclaim(m, folio)[1]
        else:
            problems = check_referenced(m, folio)
    index = len(run.steps)
    for p in problems:
        if unlisted and (p.startswith("folio_referenced") or any(u in p for u in unlisted)):
            run.limits.append(Violation("ksm_unlisted", p, folio.pfn, index, call.client))
        else:
            run.violations.append(Violation("client", p, folio.pfn, index, call.client))
    return None, None


def _ksm_unlisted(m: Machine, folio: Folio) -> list[str]:
    """The mappings of a KSM folio no rmap_item lists, as the clients name them
    (``mm#N at 0x...``): misses there are the kernel's too (``LIMIT_KINDS``)."""
    if not folio.ksm:
        return []
    listed = folio_stable_node(folio).listed()
    mappings = scan_page_tables(m).get(folio.pfn, set())
    return [f"mm#{mm_id} at {address:#x}" for mm_id, address in sorted(mappings - listed)]
