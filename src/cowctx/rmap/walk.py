"""Design-independent pieces of an rmap walk: the page-table check every client
makes on a candidate (``page_vma_mapped_walk``) and a helper to run a walk."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
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
    looks instead for a migration entry of that folio.

    Under the explorer a hit returns with the page-table lock held, as the
    kernel's does: the caller changes the PTE, then ``page_vma_mapped_walk_done()``
    (:func:`pvmw_done`)."""
    c = cost.cost
    c["pt_probes"] += 1
    mm = vma.vm_mm
    if rt.current is not None:
        rt.lock("ptl", mm)
        # a store: the caller may change the PTE before the next point
        rt.point("store", mm, ("pte", address >> PAGE_SHIFT), True)
    if vma.vm_start <= address < vma.vm_end:
        pte = mm.pgd.get(address >> PAGE_SHIFT)
        if pte is not None:
            if migration_of is None:
                hit = pte_present(pte) and pte_pfn(pte) == folio.pfn
            else:
                hit = is_migration_entry(pte) and pte_pfn(pte) == migration_of.pfn
            if hit:
                c["hits"] += 1
                return True
    c["misses"] += 1
    if rt.current is not None:
        rt.unlock("ptl", mm)
    return False


def pvmw_done(vma: VmAreaStruct, address: int) -> None:
    """``page_vma_mapped_walk_done()`` after a hit and the caller's PTE change."""
    if rt.current is not None:
        rt.unlock("ptl", vma.vm_mm)


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
