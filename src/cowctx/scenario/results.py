"""The result object of SCENARIO.md (``--json``), built from a finished run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cowctx.metrics.ledger import WALK_UNITS
from cowctx.mm.constants import PAGE_SHIFT, vm_flags_perms
from cowctx.mm.folio import PTE_PFN_SHIFT, PTE_PRESENT, ZERO_PFN
from cowctx.scenario.schema import WINDOW_BASE, WINDOW_PAGES

if TYPE_CHECKING:
    from cowctx.scenario.runner import ScenarioRun

WINDOW_END = WINDOW_BASE + (WINDOW_PAGES << PAGE_SHIFT)


def build_result(run: ScenarioRun, timing: bool) -> dict[str, Any]:
    m = run.machine
    ledger = m.ledger
    steps = []
    for rec in run.steps:
        entry: dict[str, Any] = {"op": rec.op, "errno": rec.errno, "objects": rec.objects}
        if timing:
            entry["time_ns"] = rec.time_ns
        steps.append(entry)
    objects = {
        k: {"live": s.live, "allocated": s.allocated, "freed": s.freed}
        for k, s in ledger.objects.items()
    }
    live = [(name, t) for name, t in run.procs.items() if not t.exit_state]
    maps: dict[str, list[list[Any]]] = {}
    pages: dict[str, list[dict[str, Any]]] = {}
    folio_ids: dict[int, int] = {}
    for name, task in live:
        mm = task.mm
        assert mm is not None
        lines = []
        for vma in mm.vmas_in_range(WINDOW_BASE, WINDOW_END):
            start = max(vma.vm_start, WINDOW_BASE)
            end = min(vma.vm_end, WINDOW_END)
            lines.append(
                [
                    (start - WINDOW_BASE) >> PAGE_SHIFT,
                    (end - WINDOW_BASE) >> PAGE_SHIFT,
                    vm_flags_perms(vma.vm_flags),
                ]
            )
        maps[name] = lines
        plist = []
        for vpn, pte in mm.iter_ptes(WINDOW_BASE, WINDOW_END):
            if not pte & PTE_PRESENT:
                continue
            pfn = pte >> PTE_PFN_SHIFT
            page = vpn - (WINDOW_BASE >> PAGE_SHIFT)
            if pfn == ZERO_PFN:
                plist.append(
                    {"page": page, "folio": None, "mapcount": 0, "anon": False, "zero_page": True}
                )
                continue
            folio = m.mem_map[pfn]
            fid = folio_ids.setdefault(pfn, len(folio_ids))
            plist.append(
                {
                    "page": page,
                    "folio": fid,
                    "mapcount": folio.mapcount,
                    "anon": folio.anon,
                    "zero_page": False,
                }
            )
        pages[name] = plist
    locks = [
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
    walks: dict[str, dict[str, Any]] = {}
    for w in ledger.walks:
        agg = walks.setdefault(w.client, {"walks": 0, **dict.fromkeys(WALK_UNITS, 0)})
        agg["walks"] += 1
        for unit in WALK_UNITS:
            agg[unit] += w.cost[unit]
    return {
        "scenario": run.scenario.name,
        "design": run.design,
        "steps": steps,
        "final": {
            "objects": objects,
            "bytes": ledger.bytes_live(),
            "estimated": sorted(k for k, kind in ledger.kinds.items() if kind.estimate),
            "maps": maps,
            "pages": pages,
        },
        "locks": locks,
        "walks": walks,
        "oracle": {
            "checked": run.checked,
            "violations": [v.to_json() for v in run.violations],
            "kernel_limits": [v.to_json() for v in run.limits],
        },
    }
