"""``folio_referenced()``: count and clear the accessed bits of a folio's PTEs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_YOUNG, Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.rmap.walk import page_vma_mapped_walk, pvmw_done, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass
class ReferencedResult:
    referenced: int
    """PTEs that had the accessed bit set (now cleared)."""
    mappings_found: int
    mapcount: int


def folio_referenced(m: Machine, folio: Folio) -> ReferencedResult:
    """``folio_referenced()`` with ``folio_referenced_one()``: the walk stops as soon
    as it has seen as many mappings as the folio's mapcount (``pra->mapcount``).
    anon_vma takes its lock with ``try_lock`` here: contended (only under the
    explorer), the walk gives up and the folio is kept (rotated)."""
    remaining = folio.mapcount
    referenced = 0
    found = 0
    record = m.ledger.walk("folio_referenced", shared=folio.mapcount > 1)

    def folio_referenced_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        nonlocal remaining, referenced, found
        if not page_vma_mapped_walk(f, vma, address, record):
            return True
        found += 1
        pgd = vma.vm_mm.pgd
        vpn = address >> PAGE_SHIFT
        if pgd[vpn] & PTE_YOUNG:
            pgd[vpn] &= ~PTE_YOUNG
            referenced += 1
        remaining -= 1
        rt.walk_visit(vma.vm_mm.mm_id, address)
        pvmw_done(vma, address)
        return remaining > 0

    if remaining:
        rt.walk_begin(folio)
        rmap_walk(m, folio, record, folio_referenced_one, try_lock=True)
        rt.walk_end(complete=remaining > 0)
    return ReferencedResult(referenced, found, folio.mapcount)
