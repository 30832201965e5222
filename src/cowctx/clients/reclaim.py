"""Anon reclaim of one folio: ``add_to_swap()``, ``try_to_unmap()``, pageout and
removal from the swap cache, as ``shrink_folio_list()`` does them.

A mapping ``try_to_unmap()`` misses keeps the folio mapped, so it stays in memory
(and in the swap cache, with the swap entries already installed), as on Linux.
Which mappings were missed is for the oracle to say
(:func:`cowctx.oracle.clients.check_reclaim`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import Folio, swp_entry_to_pte
from cowctx.mm.memory import folio_ref_add
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.mm.swap import add_to_swap_cache, delete_from_swap_cache
from cowctx.rmap.walk import page_vma_mapped_walk, pvmw_done, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass
class ReclaimResult:
    freed: bool
    """The folio was unmapped everywhere, written out and freed."""
    unmapped: list[tuple[int, int]] = field(default_factory=list)
    """(mm_id, address) where ``try_to_unmap()`` installed a swap entry."""


def reclaim_folio(m: Machine, folio: Folio, writeback_pending: bool = False) -> ReclaimResult:
    """``shrink_folio_list()`` for one anon folio that is to be swapped out.  With
    ``writeback_pending`` (MADV_PAGEOUT to a disk: the write is asynchronous) a folio that
    had to be written stays, unmapped, in the swap cache, and is clean once the write has
    completed (the kernel referee waits for that at the end of the step, so no later step
    meets it under writeback); a clean swap-cache folio (its slot already holds its data)
    is freed at once either way.

    # Combination of add_to_swap(), try_to_unmap() (try_to_unmap_one()),
    # pageout() and __remove_mapping() for a clean swap-backed anon folio.
    """
    assert folio.anon and not folio.ksm, folio
    if not rt.trylock("folio_lock", folio):  # migration has it: keep it on the LRU
        return ReclaimResult(False)
    try:
        return _shrink_locked_folio(m, folio, writeback_pending)
    finally:
        rt.unlock("folio_lock", folio)


def _shrink_locked_folio(m: Machine, folio: Folio, writeback_pending: bool) -> ReclaimResult:
    # add_to_swap() marks the folio dirty: a new swap slot must be written
    needs_write = folio.swapcache is None or folio.dirty
    if folio.swapcache is None:
        if rt.current is not None:  # add_to_swap(): the swap cache's reference
            rt.point("store", folio, "refcount", True)
        add_to_swap_cache(m, folio, m.swap.alloc(folio.content))
    slot = folio.swapcache
    assert slot is not None
    m.swap.data[slot] = folio.content
    record = m.ledger.walk("try_to_unmap", shared=folio.mapcount > 1)
    unmapped: list[tuple[int, int]] = []

    def try_to_unmap_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        rt.may_sleep("try_to_unmap_one (mmu notifiers)")
        if page_vma_mapped_walk(f, vma, address, record):
            lk.pte(vma.vm_mm, address >> PAGE_SHIFT, True, f)  # the swap entry (PTL held)
            vma.vm_mm.pgd[address >> PAGE_SHIFT] = swp_entry_to_pte(slot, f.anon_exclusive)
            m.swap.swap_map[slot] += 1
            f.mapcount -= 1
            unmapped.append((vma.vm_mm.mm_id, address))
            rt.walk_visit(vma.vm_mm.mm_id, address)
            pvmw_done(vma, address)
        return True

    folio_ref_add(folio, 1)  # isolated from the LRU: reclaim's own reference
    rt.walk_begin(folio)
    rmap_walk(m, folio, record, try_to_unmap_one, done=lambda f: f.mapcount == 0)
    rt.walk_end(complete=folio.mapcount > 0)  # unmapped everywhere: nothing was missed
    folio_ref_add(folio, -1)
    if folio.mapcount:  # still mapped: activate_locked, the folio stays
        return ReclaimResult(False, unmapped)
    folio.anon_exclusive = False
    if writeback_pending and needs_write:
        # pageout() started an asynchronous write: shrink_folio_list() finds the folio
        # under writeback and keeps it, unmapped, in the swap cache (nr_reclaimed 0);
        # the write clears its dirty bit (folio_clear_dirty_for_io())
        folio.dirty = folio.anon_pg_dirty = False
        return ReclaimResult(False, unmapped)
    delete_from_swap_cache(m, folio)  # __remove_mapping(): frees the folio
    return ReclaimResult(True, unmapped)
