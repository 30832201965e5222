"""Anon reclaim: ``add_to_swap()``, ``try_to_unmap()``, pageout, swap-cache removal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_PFN_SHIFT, PTE_PRESENT, PTE_SWAP, PTE_SWP_EXCLUSIVE, Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.mm.swap import add_to_swap_cache, delete_from_swap_cache
from cowctx.oracle.oracle import scan_page_tables
from cowctx.rmap.walk import page_vma_mapped_walk, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass
class ReclaimResult:
    freed: bool
    problems: list[str] = field(default_factory=list)


def reclaim_folio(
    m: Machine, folio: Folio, mappings: set[tuple[int, int]] | None = None
) -> ReclaimResult:
    """``shrink_folio_list()`` for one anon folio: swap space, unmap every PTE to a
    swap entry (exclusive if the page was), write out, free.  A mapping the walk
    misses keeps the folio in memory (and in the swap cache) and is a violation."""
    assert folio.anon and not folio.ksm, folio
    before = mappings if mappings is not None else scan_page_tables(m).get(folio.pfn, set())
    if folio.swapcache is None:
        add_to_swap_cache(m, folio, m.swap.alloc(folio.content))
    slot = folio.swapcache
    assert slot is not None
    m.swap.data[slot] = folio.content
    record = m.ledger.walk("try_to_unmap", shared=folio.mapcount > 1)

    def try_to_unmap_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        if page_vma_mapped_walk(f, vma, address, record):
            vpn = address >> PAGE_SHIFT
            exclusive = PTE_SWP_EXCLUSIVE if f.anon_exclusive else 0
            vma.vm_mm.pgd[vpn] = (slot << PTE_PFN_SHIFT) | PTE_SWAP | exclusive
            m.swap.swap_map[slot] += 1
            f.mapcount -= 1
        return True

    rmap_walk(m, folio, record, try_to_unmap_one, done=lambda f: f.mapcount == 0)
    if folio.mapcount:
        mms = {mm.mm_id: mm for mm in m.live_mms()}
        problems = [
            f"try_to_unmap missed mm#{mm_id} at {address:#x}"
            for mm_id, address in sorted(before)
            if mms[mm_id].pgd[address >> PAGE_SHIFT] & PTE_PRESENT
        ]
        return ReclaimResult(False, problems)
    folio.anon_exclusive = False
    delete_from_swap_cache(m, folio)  # __remove_mapping(): frees the folio
    return ReclaimResult(True)
