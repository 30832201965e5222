"""mm/swapfile.c and mm/swap_state.c, reduced: swap slots with use counts and a
swap cache.  The reference machine has no swap, so only the model's own
``reclaim`` client swaps; swap-in is where a non-exclusive anon folio is set up
(``__folio_set_anon(..., exclusive=false)``), an rmap path worth exercising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT, VM_WRITE
from cowctx.mm.folio import (
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_WRITE,
    PTE_YOUNG,
    Folio,
    pfn_pte,
    pte_swp_exclusive,
    swp_offset,
)
from cowctx.mm.lru import folio_add_lru, folio_test_lru, lru_access, lru_add_drain
from cowctx.mm.mm_types import MmStruct, VmAreaStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


class SwapSpace:
    """Swap slots: use count per slot (``swap_map``), the data written there, and
    the swap cache (slot -> folio)."""

    def __init__(self) -> None:
        self.swap_map: dict[int, int] = {}
        self.data: dict[int, int] = {}
        self.cache: dict[int, Folio] = {}
        self._next_slot = 1

    def alloc(self, content: int) -> int:
        """``folio_alloc_swap()``: a slot for a folio about to be written out."""
        slot = self._next_slot
        self._next_slot += 1
        self.swap_map[slot] = 0
        self.data[slot] = content
        return slot

    def __len__(self) -> int:
        return len(self.swap_map)


def _swapcache_point(folio: Folio) -> None:
    """The swap cache's reference is part of the folio's refcount
    (``folio_ref_count()``): a change of membership is a store of it."""
    if rt.current is not None:
        rt.point("store", folio, "refcount", True)


def add_to_swap_cache(m: Machine, folio: Folio, slot: int) -> None:
    """No point: a swap-in's new folio is seen by no one before it is in the
    cache (its ``swapcache_prepare()`` check and insertion are one step);
    reclaim declares the store of a mapped folio's refcount itself."""
    folio.swapcache = slot
    m.swap.cache[slot] = folio


def delete_from_swap_cache(m: Machine, folio: Folio) -> None:
    """Drop ``folio`` from the swap cache; free the slot if no PTE uses it.  No
    point: the callers' step that decided it declares the folio's refcount
    (``folio_put()``, the PTE store that removed the last mapping, the one
    after :func:`free_swap_and_cache`'s trylock)."""
    slot = folio.swapcache
    assert slot is not None
    del m.swap.cache[slot]
    folio.swapcache = None
    _maybe_free_slot(m, slot)
    if folio.mapcount == 0 and folio.anon and not folio.freed:
        m.free_folio(folio)


def _maybe_free_slot(m: Machine, slot: int) -> None:
    swap = m.swap
    if swap.swap_map.get(slot) == 0 and slot not in swap.cache:
        del swap.swap_map[slot]
        del swap.data[slot]


def swap_duplicate(m: Machine, slot: int) -> None:
    """``swap_duplicate()``: fork copied a swap PTE."""
    m.swap.swap_map[slot] += 1


def folio_free_swap(m: Machine, folio: Folio, point: bool = True) -> bool:
    """``folio_free_swap()``: leave the swap cache if no swap PTE still needs the slot; the
    folio's data now lives only in memory, so it is marked dirty (``folio_set_dirty()``)."""
    if folio.swapcache is None:
        return False
    if point:  # (do_swap_page() declared it with its re-check of the PTE)
        _swapcache_point(folio)  # before the check: the check and the removal are one step
    slot = folio.swapcache
    if slot is None or m.swap.swap_map[slot] != 0:
        return False
    m.swap.cache.pop(slot)
    folio.swapcache = None
    folio.anon_pg_dirty = True
    _maybe_free_slot(m, slot)
    return True


def free_swap_and_cache(m: Machine, slot: int) -> None:
    """``free_swap_and_cache()``: a swap PTE was zapped."""
    swap = m.swap
    swap.swap_map[slot] -= 1
    if swap.swap_map[slot] == 0:
        folio = swap.cache.get(slot)
        # __try_to_reclaim_swap(): folio_trylock() fails while reclaim or
        # migration has the folio, which then deal with the swap cache themselves;
        # under the lock folio_free_swap() re-checks folio_test_swapcache()
        if folio is not None and folio.mapcount == 0 and rt.trylock("folio_lock", folio):
            if rt.current is not None:  # the re-check, and the swap cache's reference
                rt.points("store", [(folio, "mapcount", False), (folio, "refcount", True)])
            if folio.swapcache == slot and folio.mapcount == 0:
                delete_from_swap_cache(m, folio)
            rt.unlock("folio_lock", folio)
        _maybe_free_slot(m, slot)


def do_swap_page(m: Machine, vma: VmAreaStruct, address: int, pte: int, write: bool) -> None:
    """``do_swap_page()`` (order-0, no KSM copy, no writeback in flight: the referee waits
    for every swap write to complete).  A write that finds the folio off the LRU (waiting
    in ``lru_add``) drains the CPU's batches first, so that the refcount test of
    ``should_try_to_free_swap()`` sees only the swap cache (commit c145e0b47c77 ("mm:
    streamline COW logic in do_swap_page()") (v5.19))."""
    swap = m.swap
    slot = swp_offset(pte)
    folio = swap.cache.get(slot)
    if folio is None:  # swapin: a fresh folio into the swap cache (and lru_add)
        new = m.alloc_folio(swap.data[slot])
        # __read_swap_cache_async(): swapcache_prepare() fails if another fault
        # added a folio for the slot meanwhile; that one is used
        folio = swap.cache.get(slot)
        if folio is None:
            folio = new
            add_to_swap_cache(m, folio, slot)
            folio_add_lru(m, folio)
        else:
            m.free_folio(new)
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    if rt.current is not None and not _swapin_locked(m, mm, vpn, pte, folio, slot):
        return  # the fault is retried
    if write and not folio.ksm and not folio_test_lru(m, folio):
        lru_add_drain(m)
    exclusive = pte_swp_exclusive(pte)
    swap.swap_map[slot] -= 1  # swap_free()
    # should_try_to_free_swap(): our reference and the swap cache's are the only ones
    if write and not folio.ksm and folio.mapcount == 0 and not m.fbatches.refs(folio):
        folio_free_swap(m, folio, point=False)
    if not folio.ksm and (exclusive or (folio.mapcount == 0 and folio.swapcache is None)):
        exclusive = True
        writable = bool(vma.vm_flags & VM_WRITE)
    else:
        exclusive = writable = False
    if not folio.anon:
        m.rmap.folio_set_anon(folio, vma, address, exclusive)
        folio.anon = True
        folio.mapcount = 1
        folio.anon_exclusive = exclusive
    else:  # folio_add_anon_rmap_ptes()
        folio.mapcount += 1
        if exclusive:
            folio.anon_exclusive = True
    if rt.current is not None:
        lk.pte(mm, vpn, True)
    mm.pgd[vpn] = pfn_pte(
        folio.pfn,
        PTE_PRESENT | PTE_YOUNG | (PTE_WRITE | (PTE_DIRTY if write else 0) if writable else 0),
    )
    _maybe_free_slot(m, slot)
    if rt.current is not None:
        lk.ptl_unlock(mm)
        rt.unlock("folio_lock", folio)


def _swapin_locked(m: Machine, mm: MmStruct, vpn: int, pte: int, folio: Folio, slot: int) -> bool:
    """``folio_lock_or_retry()``, then under the PTL the re-checks of
    ``do_swap_page()``: the folio is still the swap cache's for this entry
    (migration or reclaim may have moved or dropped it meanwhile) and the PTE is
    still the swap entry (``pte_same()``).  False: both locks dropped, retry.
    Explorer only: sequentially nothing can change in between.  The step that
    re-checks goes on to map the folio (``folio_add_anon_rmap_ptes()``) and may
    drain the LRU batches: it declares the folio's counts and the batches."""
    rt.lock("folio_lock", folio)
    lk.ptl_lock(mm)
    rt.points("load", [(mm, ("pte", vpn), False), *lk.counts(folio), lru_access(m, True)])
    if folio.swapcache == slot and mm.pgd.get(vpn) == pte:
        return True
    lk.ptl_unlock(mm)
    rt.unlock("folio_lock", folio)
    return False
