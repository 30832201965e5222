"""mm/memory.c: page faults, copy-on-write, PTE copying at fork and zapping.

Model rules that stand in for kernel state the model does not track:
refcount == mapcount (+1 while in the swap cache), no GUP pins, no THP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import (
    PAGE_SHIFT,
    VM_EXEC,
    VM_MAYSHARE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
)
from cowctx.mm.errors import AccessFault
from cowctx.mm.folio import (
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SWP_EXCLUSIVE,
    PTE_WRITE,
    PTE_YOUNG,
    ZERO_PFN,
    Folio,
    is_migration_entry,
    is_swap_pte,
    pfn_pte,
    pte_pfn,
    pte_present,
    pte_swp_exclusive,
    pte_write,
    swp_offset,
)
from cowctx.mm.lru import folio_add_lru, folio_ref_count, folio_test_lru, lru_add_drain
from cowctx.mm.mm_types import MmStruct, VmAreaStruct, is_cow_mapping, linear_page_index
from cowctx.mm.swap import (
    delete_from_swap_cache,
    do_swap_page,
    folio_free_swap,
    free_swap_and_cache,
    swap_duplicate,
)

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

_PRESENT_WRITE_YOUNG_DIRTY = PTE_PRESENT | PTE_WRITE | PTE_YOUNG | PTE_DIRTY


def vmf_anon_prepare(m: Machine, vma: VmAreaStruct) -> None:
    """``vmf_anon_prepare()``: make sure ``vma`` can hold anon folios."""
    rt.point("load", vma, "anon_vma")
    if vma.anon_vma is None:
        taken = lk.anon_prepare_lock(vma.vm_mm)
        try:
            m.rmap.anon_vma_prepare(vma)
        finally:
            lk.anon_prepare_unlock(vma.vm_mm, taken)
        assert vma.anon_vma is not None, "anon_vma_prepare must set vma.anon_vma"


def folio_add_new_anon_rmap(m: Machine, folio: Folio, vma: VmAreaStruct, address: int) -> None:
    """``folio_add_new_anon_rmap(..., RMAP_EXCLUSIVE)``: a fresh exclusive anon folio."""
    folio.anon = True
    folio.mapcount = 1
    folio.anon_exclusive = True
    m.rmap.folio_set_anon(folio, vma, address, True)


def folio_remove_rmap_pte(m: Machine, folio: Folio) -> None:
    """``folio_remove_rmap_pte()`` plus the folio_put that frees an unused anon folio."""
    folio.mapcount -= 1
    folio_put_unmapped(m, folio)


def folio_ref_add(folio: Folio, delta: int) -> None:
    """``folio_ref_add()``/``folio_ref_sub()`` of a reference a holder takes for
    itself (``Folio.pinned``): an atomic store to the refcount, which every
    ``folio_ref_count()`` reads (a point: a reuse check races with it)."""
    if rt.current is not None:
        rt.point("store", folio, "refcount", True)
    folio.pinned += delta


def folio_get(folio: Folio) -> None:
    folio_ref_add(folio, 1)


def folio_put(m: Machine, folio: Folio) -> None:
    """``folio_put()`` of a holder's reference: the last reference frees an
    unmapped anon folio."""
    folio_ref_add(folio, -1)
    folio_put_unmapped(m, folio)


def folio_put_unmapped(m: Machine, folio: Folio) -> None:
    """The ``folio_put()`` that frees an anon folio nobody maps or holds: freed, or
    dropped from the swap cache once no swap entry refers to it."""
    if folio.mapcount == 0 and folio.anon and not folio.pinned and not folio.freed:
        if folio.swapcache is None:
            m.free_folio(folio)
        elif m.swap.swap_map[folio.swapcache] == 0:
            delete_from_swap_cache(m, folio)


def _file_folio(m: Machine, vma: VmAreaStruct, address: int) -> Folio:
    """``__do_fault()`` on a shmem file: the page-cache folio, SIGBUS beyond EOF."""
    file = vma.vm_file
    assert file is not None
    index = linear_page_index(vma, address)
    if index >= file.pages:
        raise AccessFault("SIGBUS", address, f"page {index} beyond the end of {file.name}")
    return m.filemap_get_folio(file, index)


def handle_mm_fault(m: Machine, mm: MmStruct, address: int, write: bool) -> Folio | None:
    """A user access to ``address``: resolve the fault if there is one and return
    the folio now mapped there (None for the zero page).

    ``access_error()`` and the fault paths of 6.18: ``do_anonymous_page``,
    ``do_read_fault``, ``do_cow_fault``, ``do_shared_fault``, ``do_wp_page``,
    ``do_swap_page``.
    """
    vma = mm.find_vma(address)
    rt.point("load", vma, "range")
    if vma is None or vma.vm_start > address:
        raise AccessFault("SIGSEGV", address, "no VMA")
    flags = vma.vm_flags
    if write:
        if not flags & VM_WRITE:
            raise AccessFault("SIGSEGV", address, "VMA not writable")
    elif not flags & (VM_READ | VM_WRITE | VM_EXEC):
        raise AccessFault("SIGSEGV", address, "VMA not accessible")
    vpn = address >> PAGE_SHIFT
    pgd = mm.pgd
    if rt.current is not None:
        lk.pte(mm, vpn, False)
    pte = pgd.get(vpn)
    mem_map = m.mem_map
    if pte is None:
        return do_pte_missing(m, vma, address, write)
    if not pte_present(pte):
        if is_migration_entry(pte):
            if rt.current is None:
                raise AssertionError(f"fault on a migration entry at {address:#x}")
            # migration_entry_wait(): sleep until the entry is replaced
            rt.wait_until("pte", mm, ("pte", vpn), lambda: pgd.get(vpn) != pte)
            return handle_mm_fault(m, mm, address, write)
        do_swap_page(m, vma, address, pte, write)
        return handle_mm_fault(m, mm, address, write)
    if rt.current is not None:
        # handle_pte_fault(): the rest runs under the PTL, on the PTE it read
        # (pte_same()); another thread changed it: the access is retried
        lk.ptl_lock(mm)
        lk.pte(mm, vpn, False)
        if pgd.get(vpn) != pte:
            lk.ptl_unlock(mm)
            return handle_mm_fault(m, mm, address, write)
    if write and not pte_write(pte):
        return do_wp_page(m, vma, address, pte)
    if rt.current is not None:
        lk.pte(mm, vpn, True)
    pgd[vpn] = pte | (PTE_YOUNG | PTE_DIRTY if write else PTE_YOUNG)
    lk.ptl_unlock(mm)
    pfn = pte_pfn(pte)
    return None if pfn == ZERO_PFN else mem_map[pfn]


def do_pte_missing(m: Machine, vma: VmAreaStruct, address: int, write: bool) -> Folio | None:
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    if vma.vm_file is None:  # do_anonymous_page()
        if not write:
            mm.pgd[vpn] = pfn_pte(ZERO_PFN, PTE_PRESENT | PTE_YOUNG)
            return None
        vmf_anon_prepare(m, vma)
        folio = m.alloc_folio(0)
        if rt.current is not None and _pte_changed(m, mm, vpn, None, folio):
            return handle_mm_fault(m, mm, address, write)
        folio_add_new_anon_rmap(m, folio, vma, address)
        folio_add_lru(m, folio)  # folio_add_lru_vma()
        mm.pgd[vpn] = pfn_pte(folio.pfn, _PRESENT_WRITE_YOUNG_DIRTY)
        lk.ptl_unlock(mm)
        return folio
    if not write:  # do_read_fault()
        do_fault_around(m, vma, address)
        pte = mm.pgd.get(vpn)
        if pte is not None:
            return m.mem_map[pte_pfn(pte)]
        folio = _file_folio(m, vma, address)
        folio.mapcount += 1
        writable = (vma.vm_flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE)
        mm.pgd[vpn] = pfn_pte(folio.pfn, PTE_PRESENT | PTE_YOUNG | (PTE_WRITE if writable else 0))
        return folio
    if vma.vm_flags & VM_SHARED:  # do_shared_fault()
        folio = _file_folio(m, vma, address)
        folio.mapcount += 1
        mm.pgd[vpn] = pfn_pte(folio.pfn, _PRESENT_WRITE_YOUNG_DIRTY)
        return folio
    # do_cow_fault(): copy the page-cache folio into a new anon folio
    vmf_anon_prepare(m, vma)
    source = _file_folio(m, vma, address)
    folio = m.alloc_folio(source.content)
    folio_add_new_anon_rmap(m, folio, vma, address)
    folio_add_lru(m, folio)  # set_pte_range(): folio_add_lru_vma()
    mm.pgd[vpn] = pfn_pte(folio.pfn, _PRESENT_WRITE_YOUNG_DIRTY)
    return folio


def _pte_changed(
    m: Machine, mm: MmStruct, vpn: int, orig: int | None, new: Folio, copied: Folio | None = None
) -> bool:
    """Take the PTL and re-check the PTE the fault started from (``pte_none()`` /
    ``pte_same()`` under ``pte_offset_map_lock()``): if another thread changed it,
    drop the new folio and the lock (the fault is retried).  Explorer only.
    ``copied``: the folio ``new`` is a copy of, whose content the install step
    compares (``rt.copied()``, the ``lost_write`` check)."""
    lk.ptl_lock(mm)
    lk.pte(mm, vpn, False)
    if mm.pgd.get(vpn) == orig:
        if copied is None:
            lk.pte(mm, vpn, True)
        else:
            rt.points("store", [(mm, ("pte", vpn), True), (copied, "content", False)])
        return False
    lk.ptl_unlock(mm)
    m.free_folio(new)
    return True


FAULT_AROUND_PAGES = 16
"""``fault_around_bytes`` (64 KiB) in pages."""
PTRS_PER_PTE = 512


def do_fault_around(m: Machine, vma: VmAreaStruct, address: int) -> None:
    """``do_fault_around()`` → ``filemap_map_pages()``: a read fault on a file VMA
    also maps the already-cached pages of the aligned 16-page window around it
    (clipped to the VMA, the page table and the file), read-only in a private
    mapping, as the VMA's protection allows in a shared one."""
    file = vma.vm_file
    assert file is not None
    pte_off = (address >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)
    vma_off = (address - vma.vm_start) >> PAGE_SHIFT
    from_pte = max(pte_off & ~(FAULT_AROUND_PAGES - 1), pte_off - min(pte_off, vma_off))
    to_pte = (
        min(
            from_pte + FAULT_AROUND_PAGES,
            PTRS_PER_PTE,
            pte_off + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT) - vma_off,
        )
        - 1
    )
    pgoff = linear_page_index(vma, address)
    start_pgoff = pgoff + from_pte - pte_off
    end_pgoff = min(pgoff + to_pte - pte_off, file.pages - 1)
    writable = (vma.vm_flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE)
    bits = PTE_PRESENT | PTE_YOUNG | (PTE_WRITE if writable else 0)
    pgd = vma.vm_mm.pgd
    base = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
    for index in range(start_pgoff, end_pgoff + 1):
        folio = file.i_pages.get(index)
        if folio is None or (base + index) in pgd:
            continue
        pgd[base + index] = pfn_pte(folio.pfn, bits)
        folio.mapcount += 1


def wp_can_reuse_anon_folio(m: Machine, folio: Folio, vma: VmAreaStruct) -> bool:
    """``wp_can_reuse_anon_folio()`` for a small folio: reuse iff the faulting mapping
    holds the only reference; on success the folio moves to ``vma``'s anon rmap anchor.

    The order is the kernel's: a folio not on the LRU (waiting in ``lru_add``) makes it
    ``lru_add_drain()``, which moves every batch of the CPU; then more references than
    the mapping and the swap cache (another mapping, a batch such as ``lru_lazyfree``)
    give up before the swap cache is touched; only then is the swap-cache reference
    dropped, if no swap entry still uses the slot (``folio_free_swap()``).  Refcount
    reuse since commit 09854ba94c6a ("mm: do_wp_page() simplification") (v5.9).
    """
    if folio.ksm or folio_ref_count(m, folio) > 3:
        return False
    if not folio_test_lru(m, folio):
        lru_add_drain(m)
    if folio_ref_count(m, folio) > 1 + (folio.swapcache is not None):
        return False
    if not rt.trylock("folio_lock", folio):  # migration or reclaim has it
        return False
    try:
        if folio.swapcache is not None:
            folio_free_swap(m, folio)
        if folio_ref_count(m, folio) != 1:
            return False
        m.rmap.folio_move_anon_rmap(folio, vma)
        return True
    finally:
        rt.unlock("folio_lock", folio)


def do_wp_page(m: Machine, vma: VmAreaStruct, address: int, pte: int) -> Folio | None:
    """``do_wp_page()``: a write to a present, write-protected PTE.  Under the
    explorer it is entered with the PTL held (handle_mm_fault()) and drops it
    before ``wp_page_copy()``, which takes it again, as the kernel does."""
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    pfn = pte_pfn(pte)
    folio = None if pfn == ZERO_PFN else m.mem_map[pfn]
    if rt.current is not None:
        lk.pte(mm, vpn, True)
    if vma.vm_flags & (VM_SHARED | VM_MAYSHARE):  # wp_page_shared(): no copy
        mm.pgd[vpn] = pte | PTE_WRITE | PTE_YOUNG | PTE_DIRTY
        lk.ptl_unlock(mm)
        return folio
    if (
        folio is not None
        and folio.anon
        and (folio.anon_exclusive or wp_can_reuse_anon_folio(m, folio, vma))
    ):
        folio.anon_exclusive = True  # wp_page_reuse()
        mm.pgd[vpn] = pte | PTE_WRITE | PTE_YOUNG | PTE_DIRTY
        lk.ptl_unlock(mm)
        return folio
    if folio is not None:
        folio_get(folio)  # vmf->page's reference, put by wp_page_copy()
    lk.ptl_unlock(mm)  # pte_unmap_unlock() before wp_page_copy()
    return wp_page_copy(m, vma, address, folio, orig=pte, ref=folio is not None)


def wp_page_copy(
    m: Machine,
    vma: VmAreaStruct,
    address: int,
    old: Folio | None,
    unshare: bool = False,
    orig: int | None = None,
    ref: bool = False,
) -> Folio:
    """``wp_page_copy()``: break CoW into a new exclusive anon folio (mapped
    read-only for an unsharing fault, FAULT_FLAG_UNSHARE).  ``orig`` is
    ``vmf->orig_pte``, the PTE the fault decided on (the one at ``address`` now
    when not given): the copy is installed only if the PTE is still that one.
    ``ref``: the caller took a reference on ``old`` (``do_wp_page()``'s
    ``folio_get()``), dropped here once the copy is installed or abandoned: until
    then ``old`` cannot be freed, and another mapper's ``wp_can_reuse_anon_folio()``
    sees it as shared."""
    vmf_anon_prepare(m, vma)
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    if orig is None:
        orig = mm.pgd.get(vpn)
    new = m.alloc_folio(0)
    if old is not None:  # __wp_page_copy_user(), before the PTL is taken
        if rt.current is not None:
            rt.point("load", old, "content")
        new.content = old.content
    if rt.current is not None:
        if _pte_changed(m, mm, vpn, orig, new, old):
            if ref and old is not None:
                folio_put(m, old)
            return handle_mm_fault(m, mm, address, True)  # type: ignore[return-value]
        if old is not None:  # the PTE is the one the copy was made for
            rt.copied(old, new, f"wp_page_copy() in mm#{mm.mm_id} at {address:#x}")
    folio_add_new_anon_rmap(m, new, vma, address)
    folio_add_lru(m, new)  # folio_add_lru_vma()
    bits = PTE_PRESENT | PTE_YOUNG if unshare else _PRESENT_WRITE_YOUNG_DIRTY
    if old is not None and rt.current is not None:  # set_pte_at(), old's mapping goes
        lk.pte(mm, vpn, True, old)
    mm.pgd[vpn] = pfn_pte(new.pfn, bits)
    if old is not None:
        folio_remove_rmap_pte(m, old)
    lk.ptl_unlock(mm)
    if ref and old is not None:
        folio_put(m, old)
    return new


def zap_pte_range(m: Machine, mm: MmStruct, start: int, end: int) -> None:
    """``zap_pte_range()``: drop every mapping in ``[start, end)``."""
    pgd = mm.pgd
    mem_map = m.mem_map
    lk.ptl_lock(mm)
    active = rt.current is not None
    for vpn, pte in list(mm.iter_ptes(start, end)):
        pfn = pte_pfn(pte) if pte_present(pte) else ZERO_PFN
        folio = mem_map[pfn] if pfn != ZERO_PFN else None
        if active:  # the PTE, and the folio's count when it maps one
            lk.pte(mm, vpn, True, *([folio] if folio is not None else []))
        del pgd[vpn]
        if folio is not None:
            folio_remove_rmap_pte(m, folio)
        elif is_swap_pte(pte):
            free_swap_and_cache(m, swp_offset(pte))
        # else a migration entry (only while a migration runs): it just goes
    lk.ptl_unlock(mm)


def vma_needs_copy(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> bool:
    """``vma_needs_copy()``: only VMAs with anon state have PTEs worth copying;
    the child refaults everything else."""
    return src_vma.anon_vma is not None


def copy_page_range(m: Machine, dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> None:
    """``copy_page_range()`` → ``copy_present_ptes()`` / ``copy_nonpresent_pte()``.

    Anon folios lose PageAnonExclusive and gain a mapping; writable PTEs of a
    CoW mapping are write-protected in both; the child's PTE is old (and clean
    in a shared mapping).  Swap entries are duplicated and lose their
    exclusive mark in the parent.
    """
    rt.point("load", src_vma, "anon_vma")
    if not vma_needs_copy(dst_vma, src_vma):
        return
    lk.ptl_lock(src_vma.vm_mm)
    src_pgd = src_vma.vm_mm.pgd
    dst_pgd = dst_vma.vm_mm.pgd
    mem_map = m.mem_map
    cow = is_cow_mapping(src_vma.vm_flags)
    child_clear = PTE_YOUNG | (PTE_DIRTY if src_vma.vm_flags & VM_SHARED else 0)
    for vpn, pte in list(src_vma.vm_mm.iter_ptes(src_vma.vm_start, src_vma.vm_end)):
        if rt.current is not None:  # under the PTL: the PTE maps what it mapped
            pfn = pte_pfn(pte) if pte_present(pte) else ZERO_PFN
            if pfn != ZERO_PFN:  # copy_present_pte(): a mapping more
                lk.pte(src_vma.vm_mm, vpn, True, mem_map[pfn])
            else:
                lk.pte(src_vma.vm_mm, vpn, True)
            now = src_pgd.get(vpn)
            if now is None:
                continue
            pte = now
        if pte_present(pte):
            pfn = pte_pfn(pte)
            if pfn != ZERO_PFN:
                folio = mem_map[pfn]
                folio.mapcount += 1
                if folio.anon:
                    folio.anon_exclusive = False  # folio_try_dup_anon_rmap_pte()
            if cow and pte_write(pte):
                pte &= ~PTE_WRITE
                src_pgd[vpn] = pte
                if rt.current is not None:  # ptep_set_wrprotect(): no flush until dup_mmap's end
                    lk.tlb_defer_flush(src_vma.vm_mm, vpn, pfn)
            dst_pgd[vpn] = pte & ~child_clear
        elif is_swap_pte(pte):
            swap_duplicate(m, swp_offset(pte))
            if pte_swp_exclusive(pte):
                pte &= ~PTE_SWP_EXCLUSIVE
                src_pgd[vpn] = pte
            dst_pgd[vpn] = pte
        else:  # a migration entry (copy_nonpresent_pte()): the child gets it too,
            # readable in both for a CoW mapping; the folio is shared from now on
            if cow:
                pte &= ~PTE_WRITE
                src_pgd[vpn] = pte
            mem_map[pte_pfn(pte)].anon_exclusive = False
            dst_pgd[vpn] = pte
    lk.ptl_unlock(src_vma.vm_mm)
