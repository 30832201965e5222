"""The result of running a scenario on one design or on the kernel (SCENARIO.md's
``--json`` object), as one typed value both sides build.

The model builds it from a finished run (:func:`build_result`), the kernel referee
from what it observed; ``expect``, ``kernel-diff``, the reports and the JSON output
all read this type, and :func:`number_folios` is the one canonical numbering of
folios that makes "which pages share a folio" comparable across the two sides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cowctx.metrics.ledger import WALK_UNITS, Ledger
from cowctx.mm.constants import PAGE_SHIFT, vm_flags_perms
from cowctx.mm.folio import ZERO_PFN, pte_pfn, pte_present
from cowctx.scenario.schema import WINDOW_BASE, WINDOW_PAGES

if TYPE_CHECKING:
    from cowctx.oracle.oracle import Violation
    from cowctx.scenario.runner import ScenarioRun

WINDOW_END = WINDOW_BASE + (WINDOW_PAGES << PAGE_SHIFT)


@dataclass(frozen=True)
class Counts:
    """Objects of one kind: allocated and freed (and, at the end, live)."""

    allocated: int = 0
    freed: int = 0
    live: int | None = None
    """Set in the final state; per step only allocations and frees are known."""

    def to_json(self) -> dict[str, int]:
        if self.live is None:
            return {"allocated": self.allocated, "freed": self.freed}
        return {"live": self.live, "allocated": self.allocated, "freed": self.freed}


@dataclass(frozen=True)
class MapLine:
    """One window VMA as /proc/PID/maps shows it, in window pages, end exclusive."""

    start: int
    end: int
    perms: str

    def to_json(self) -> list[object]:
        return [self.start, self.end, self.perms]


@dataclass(frozen=True)
class PageRow:
    """One present page of the window: ``folio`` is the canonical folio number
    (:func:`number_folios`), None for the zero page."""

    page: int
    folio: int | None
    mapcount: int
    anon: bool
    zero_page: bool

    def to_json(self) -> dict[str, object]:
        return {
            "page": self.page,
            "folio": self.folio,
            "mapcount": self.mapcount,
            "anon": self.anon,
            "zero_page": self.zero_page,
        }


@dataclass(frozen=True)
class RawPage:
    """A present page before numbering: ``key`` identifies its folio on the side
    that saw it (a pfn, a head pfn), None for the zero page."""

    page: int
    key: int | None
    mapcount: int
    anon: bool


def number_folios(
    rows_by_proc: Iterable[tuple[str, Iterable[RawPage]]],
) -> dict[str, list[PageRow]]:
    """Folio numbers in order of first appearance, the zero page None.

    ``rows_by_proc`` comes in process creation order with pages ascending, so equal
    numbers mean equal folios and the numbering is the same on every side that maps
    the same pages the same way."""
    ids: dict[int, int] = {}
    out: dict[str, list[PageRow]] = {}
    for proc, rows in rows_by_proc:
        out[proc] = [
            PageRow(r.page, None, 0, False, True)
            if r.key is None
            else PageRow(r.page, ids.setdefault(r.key, len(ids)), r.mapcount, r.anon, False)
            for r in rows
        ]
    return out


@dataclass
class StepResult:
    op: str
    errno: str | None
    objects: dict[str, Counts]
    time_ns: int | None = None
    proc: str | None = None
    """The kernel side names the process (the model's steps carry it in the scenario)."""
    graph: dict[str, Any] | None = None
    """The anon_vma graph after this step (``kernel-diff --graph-every-step``)."""
    vmscan: dict[str, int] | None = None
    """The step's ``mm_vmscan_reclaim_pages`` counters, when reclaim ran: what the kernel
    traced, or what the model's reclaim decided (``metrics.ledger.VMSCAN_COUNTERS``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.proc is not None:
            out["proc"] = self.proc
        out["errno"] = self.errno
        if self.time_ns is not None:
            out["time_ns"] = self.time_ns
        out["objects"] = {k: c.to_json() for k, c in self.objects.items()}
        if self.vmscan is not None:
            out["vmscan"] = self.vmscan
        if self.graph is not None:
            out["graph"] = self.graph
        return out


@dataclass
class FinalState:
    objects: dict[str, Counts]
    maps: dict[str, list[MapLine]]
    pages: dict[str, list[PageRow]]
    bytes: dict[str, int] | None = None
    """Bytes live per kind (model only)."""
    estimated: list[str] | None = None
    """Kinds whose size is a modelled estimate (model only)."""
    swap: dict[str, list[dict[str, int]]] | None = None
    """Swapped-out window pages per process, slots numbered canonically (linux/views.py)."""
    graph: dict[str, Any] | None = None
    """The anon_vma graph (designs/anon_vma/graph.py, linux/graph.py)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objects": {k: c.to_json() for k, c in self.objects.items()}}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        if self.estimated is not None:
            out["estimated"] = self.estimated
        out["maps"] = {p: [m.to_json() for m in lines] for p, lines in self.maps.items()}
        out["pages"] = {p: [r.to_json() for r in rows] for p, rows in self.pages.items()}
        if self.swap is not None:
            out["swap"] = self.swap
        if self.graph is not None:
            out["graph"] = self.graph
        return out


@dataclass
class OracleReport:
    checked: bool
    violations: list[Violation]
    kernel_limits: list[Violation]

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "violations": [v.to_json() for v in self.violations],
            "kernel_limits": [v.to_json() for v in self.kernel_limits],
        }


@dataclass
class ScenarioResult:
    """One scenario on one design (or ``linux``): SCENARIO.md's result object."""

    scenario: str
    design: str
    steps: list[StepResult]
    final: FinalState
    locks: list[dict[str, Any]] | None = None
    """Model only: acquisitions per (lock, mode, op, site) and what they covered."""
    walks: dict[str, dict[str, int]] | None = None
    """Model only: rmap walk cost per client."""
    oracle: OracleReport | None = None
    """Model only."""
    kernel: dict[str, Any] = field(default_factory=dict)
    """Kernel only: ``other_events``, ``pids``, ``kernel``, ``wall_ns``."""
    available: bool | None = None
    agree: bool | None = None
    diffs: list[str] | None = None
    """Set by ``kernel-diff`` on both results of a pair."""
    expect: list[str] | None = None
    """Set by ``cowctx run``: the ``expect`` block's failures (empty: it passed)."""

    @property
    def violations(self) -> list[Violation]:
        return self.oracle.violations if self.oracle is not None else []

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "design": self.design,
            "steps": [s.to_json() for s in self.steps],
            "final": self.final.to_json(),
        }
        if self.locks is not None:
            out["locks"] = self.locks
        if self.walks is not None:
            out["walks"] = self.walks
        if self.oracle is not None:
            out["oracle"] = self.oracle.to_json()
        out.update(self.kernel)
        if self.available is not None:
            out["available"] = self.available
            out["agree"] = self.agree
            out["diffs"] = self.diffs
        if self.expect is not None:
            out["expect"] = {"passed": not self.expect, "failures": self.expect}
        return out


def ledger_locks(ledger: Ledger) -> list[dict[str, Any]]:
    """The ledger's lock records as the result's ``locks`` rows, sorted."""
    return [
        {
            "lock": lock,
            "mode": mode,
            "op": op,
            "site": site,
            "acquisitions": s.acquisitions,
            "vmas": s.vmas,
            "objects": s.objects,
            "max_vmas": s.max_vmas,
            "max_objects": s.max_objects,
        }
        for (lock, mode, op, site), s in sorted(ledger.locks.items())
    ]


def ledger_walks(ledger: Ledger) -> dict[str, dict[str, int]]:
    """The ledger's walks summed per client: the result's ``walks`` block."""
    walks: dict[str, dict[str, int]] = {}
    for w in ledger.walks:
        agg = walks.setdefault(w.client, {"walks": 0, **dict.fromkeys(WALK_UNITS, 0)})
        agg["walks"] += 1
        for unit in WALK_UNITS:
            agg[unit] += w.cost[unit]
    return walks


def build_result(run: ScenarioRun, timing: bool) -> ScenarioResult:
    """The model's result of a finished run."""
    m = run.machine
    ledger = m.ledger
    steps = [
        StepResult(
            rec.op,
            rec.errno,
            {k: Counts(c["allocated"], c["freed"]) for k, c in rec.objects.items()},
            rec.time_ns if timing else None,
            vmscan=rec.vmscan,
        )
        for rec in run.steps
    ]
    objects = {k: Counts(s.allocated, s.freed, s.live) for k, s in ledger.objects.items()}
    maps: dict[str, list[MapLine]] = {}
    raw: list[tuple[str, list[RawPage]]] = []
    for name, task in run.procs.items():
        if task.exit_state:
            continue
        mm = task.mm
        assert mm is not None
        maps[name] = [
            MapLine(
                (max(vma.vm_start, WINDOW_BASE) - WINDOW_BASE) >> PAGE_SHIFT,
                (min(vma.vm_end, WINDOW_END) - WINDOW_BASE) >> PAGE_SHIFT,
                vm_flags_perms(vma.vm_flags),
            )
            for vma in mm.vmas_in_range(WINDOW_BASE, WINDOW_END)
        ]
        rows = []
        for vpn, pte in mm.iter_ptes(WINDOW_BASE, WINDOW_END):
            if not pte_present(pte):
                continue
            page = vpn - (WINDOW_BASE >> PAGE_SHIFT)
            pfn = pte_pfn(pte)
            if pfn == ZERO_PFN:
                rows.append(RawPage(page, None, 0, False))
            else:
                folio = m.mem_map[pfn]
                rows.append(RawPage(page, pfn, folio.mapcount, folio.anon))
        raw.append((name, rows))
    locks = ledger_locks(ledger)
    walks = ledger_walks(ledger)
    return ScenarioResult(
        scenario=run.scenario.name,
        design=run.design,
        steps=steps,
        final=FinalState(
            objects,
            maps,
            number_folios(raw),
            bytes=ledger.bytes_live(),
            estimated=sorted(k for k, kind in ledger.kinds.items() if kind.estimate),
        ),
        locks=locks,
        walks=walks,
        oracle=OracleReport(run.checked, run.violations, run.limits),
    )
