"""Design-independent pieces of an rmap walk: the page-table check every client
makes on a candidate (``page_vma_mapped_walk``) and a helper to run a walk."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cowctx.metrics.ledger import WalkRecord
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import (
    Folio,
    is_migration_entry,
    pte_pfn,
    pte_present,
)
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.rmap.protocol import RmapWalkControl

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


def page_vma_mapped_walk(
    folio: Folio,
    vma: VmAreaStruct,
    address: int,
    cost: WalkRecord,
    migration_of: Folio | None = None,
) -> bool:
    """``page_vma_mapped_walk()`` for one small folio: does ``vma``'s page table
    map ``folio`` at ``address``?  With ``migration_of`` (``PVMW_MIGRATION``) it
    looks instead for a migration entry of that folio."""
    c = cost.cost
    c["pt_probes"] += 1
    if vma.vm_start <= address < vma.vm_end:
        pte = vma.vm_mm.pgd.get(address >> PAGE_SHIFT)
        if pte is not None:
            if migration_of is None:
                hit = pte_present(pte) and pte_pfn(pte) == folio.pfn
            else:
                hit = is_migration_entry(pte) and pte_pfn(pte) == migration_of.pfn
            if hit:
                c["hits"] += 1
                return True
    c["misses"] += 1
    return False


def rmap_walk(
    m: Machine,
    folio: Folio,
    record: WalkRecord,
    rmap_one: Callable[[Folio, VmAreaStruct, int], bool],
    done: Callable[[Folio], bool] | None = None,
    try_lock: bool = False,
) -> RmapWalkControl:
    """``rmap_walk()``: KSM folios through their stable node, anon folios through
    the design; costs go to ``record`` (from ``m.ledger.walk(...)``)."""
    rwc = RmapWalkControl(rmap_one=rmap_one, cost=record, done=done, try_lock=try_lock)
    if folio.ksm:
        m.ksm.rmap_walk_ksm(folio, rwc)
    else:
        m.rmap.rmap_walk(folio, rwc)
    return rwc
