"""The model's anon_vma graph in the form the kernel referee reads it (linux/graph.py).

Both sides name an anon_vma by the step that allocated it: ``AV(p1 fault step 4)`` is the first
anon_vma allocated by step 4, a fault (read/write) of p1; ``AV(p0 fork step 2 #1)`` the second
one allocated by step 2, a fork run by p0.  Within a step, allocation order is the kernel's
(faults in address order, ``dup_mmap()`` VMA by VMA), so names are the same on both sides as
long as the per-step counts are, and independent of pointers and of the model's ids.

Only what the kernel side can see is listed: the window VMAs of the live processes, the
anon_vmas in their chains plus the roots and parents those point to, and the anon folios
mapped in the window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from cowctx.designs.anon_vma.structs import AnonVma, AnonVmaVma
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import ZERO_PFN, pte_pfn, pte_present
from cowctx.scenario.schema import WINDOW_BASE, WINDOW_PAGES

if TYPE_CHECKING:
    from cowctx.scenario.runner import ScenarioRun

WINDOW_END = WINDOW_BASE + (WINDOW_PAGES << PAGE_SHIFT)
FAULT_OPS = frozenset({"read", "write"})


def anon_vma_name(proc: str, op: str, step: int, ordinal: int) -> str:
    """Canonical name of the ``ordinal``-th anon_vma allocated by ``step`` (``op`` run
    by ``proc``)."""
    cause = "fault" if op in FAULT_OPS else op
    return f"AV({proc} {cause} step {step}{f' #{ordinal}' if ordinal else ''})"


def model_births(run: ScenarioRun) -> dict[int, str]:
    """``av_id`` -> canonical name: ids are handed out in allocation order, and each
    step's record says how many anon_vmas it allocated."""
    names: dict[int, str] = {}
    next_id = 0
    for i, (step, rec) in enumerate(zip(run.scenario.steps, run.steps, strict=False)):
        n = rec.objects.get("anon_vma", {}).get("allocated", 0)
        for k in range(n):
            names[next_id] = anon_vma_name(step.proc, step.op, i, k)
            next_id += 1
    return names


def anon_vma_graph(run: ScenarioRun) -> dict[str, Any]:
    """``{"anon_vmas": {name: {root, parent, refcount, num_children, num_active_vmas}},
    "vmas": {proc: [{start, end, anon_vma, chain}]}, "folios": {proc: [{page, anon_vma,
    index, exclusive}]}}`` (``exclusive``: ``PageAnonExclusive``) with chains oldest first,
    for the live processes in creation order."""
    m = run.machine
    births = model_births(run)

    def nm(av: AnonVma) -> str:
        return births.get(av.av_id, f"AV(id {av.av_id})")

    graph: dict[str, Any] = {"anon_vmas": {}, "vmas": {}, "folios": {}}
    seen: dict[int, AnonVma] = {}
    for proc, task in run.procs.items():
        if task.exit_state or task.mm is None:
            continue
        rows = []
        for vma in task.mm.vmas_in_range(WINDOW_BASE, WINDOW_END):
            v = cast(AnonVmaVma, vma)
            chain = [avc.anon_vma for avc in v.anon_vma_chain]
            for av in chain:
                seen[av.av_id] = av
            own = cast("AnonVma | None", v.anon_vma)
            rows.append(
                {
                    "start": (max(v.vm_start, WINDOW_BASE) - WINDOW_BASE) >> PAGE_SHIFT,
                    "end": (min(v.vm_end, WINDOW_END) - WINDOW_BASE) >> PAGE_SHIFT,
                    "anon_vma": nm(own) if own is not None else None,
                    "chain": [nm(av) for av in chain],
                }
            )
        graph["vmas"][proc] = rows
        folios = []
        for vpn, pte in task.mm.iter_ptes(WINDOW_BASE, WINDOW_END):
            if not pte_present(pte):
                continue
            pfn = pte_pfn(pte)
            if pfn == ZERO_PFN:
                continue
            folio = m.mem_map[pfn]
            if not folio.anon or folio.ksm or not isinstance(folio.mapping, AnonVma):
                continue
            folios.append(
                {
                    "page": vpn - (WINDOW_BASE >> PAGE_SHIFT),
                    "anon_vma": nm(folio.mapping),
                    "index": folio.index,
                    "exclusive": folio.anon_exclusive,
                }
            )
        graph["folios"][proc] = folios
    todo = list(seen.values())
    while todo:
        av = todo.pop()
        for other in (av.root, av.parent):
            if other.av_id not in seen:
                seen[other.av_id] = other
                todo.append(other)
    for av in sorted(seen.values(), key=nm):
        graph["anon_vmas"][nm(av)] = {
            "root": nm(av.root),
            "parent": nm(av.parent),
            "refcount": av.refcount,
            "num_children": av.num_children,
            "num_active_vmas": av.num_active_vmas,
        }
    return graph


def is_anon_vma_run(run: ScenarioRun) -> bool:
    """Whether ``run`` ran the anon_vma design (or a subclass of it, as tests do)."""
    from cowctx.designs.anon_vma.rmap import AnonVmaRmap

    return isinstance(run.machine.rmap, AnonVmaRmap)
