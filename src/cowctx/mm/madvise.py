"""madvise: ``do_madvise()`` → ``madvise_walk_vmas()`` → ``madvise_vma_behavior()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.metrics.ledger import VMSCAN_COUNTERS
from cowctx.mm import locking as lk
from cowctx.mm.constants import (
    MADV_BY_NAME,
    MADV_COLD,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_PAGEOUT,
    MADV_UNMERGEABLE,
    MADV_WIPEONFORK,
    PAGE_MASK,
    VM_DONTCOPY,
    VM_DONTEXPAND,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_MERGEABLE,
    VM_MIXEDMAP,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_SHARED,
    VM_WIPEONFORK,
)
from cowctx.mm.content import ZERO_CONTENT
from cowctx.mm.errors import SyscallError
from cowctx.mm.file import File
from cowctx.mm.folio import (
    ZERO_PFN,
    is_swap_pte,
    pte_dirty,
    pte_mkclean,
    pte_mkold,
    pte_pfn,
    pte_present,
    swp_offset,
)
from cowctx.mm.lru import folio_add_lru, folio_mark_lazyfree, lru_add_drain
from cowctx.mm.memory import folio_remove_rmap_pte, zap_pte_range
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.mm.swap import folio_free_swap, free_swap_and_cache
from cowctx.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

_VALID = frozenset(MADV_BY_NAME.values())
_FLAG_ADVICE = frozenset(
    {
        MADV_DONTFORK,
        MADV_DOFORK,
        MADV_WIPEONFORK,
        MADV_KEEPONFORK,
        MADV_MERGEABLE,
        MADV_UNMERGEABLE,
        MADV_HUGEPAGE,
        MADV_NOHUGEPAGE,
    }
)


def do_madvise(m: Machine, mm: MmStruct, start: int, len_in: int, behavior: int) -> None:
    """``do_madvise()``: holes in the range are skipped and reported as ENOMEM at
    the end; a per-VMA error stops the walk at once (earlier VMAs keep the advice).

    With swap, a MADV_PAGEOUT call (whatever its outcome) ends with every LRU batch
    drained: not the kernel's doing but the kernel referee's, which waits for the swap
    writes and then drains every CPU (linux/swap.py ``drain_lru_batches``; on the kernel a
    write completing after the folio went back on the LRU would leave a reference in a
    batch of whichever CPU took the interrupt).  Machines with swap run only where the
    referee's swap file is on, or in the model-only ``reclaim`` client."""
    if behavior == MADV_PAGEOUT and m.swap_enabled:
        try:
            _do_madvise(m, mm, start, len_in, behavior)
        finally:
            lru_add_drain(m)
        return
    _do_madvise(m, mm, start, len_in, behavior)


def _do_madvise(m: Machine, mm: MmStruct, start: int, len_in: int, behavior: int) -> None:
    if behavior not in _VALID:
        raise SyscallError("EINVAL", "unknown advice")
    if start & ~PAGE_MASK:
        raise SyscallError("EINVAL", "unaligned start")
    length = (len_in + ~PAGE_MASK) & PAGE_MASK
    if len_in and not length:
        raise SyscallError("EINVAL", "length overflows")
    end = start + length
    if end < start:
        raise SyscallError("EINVAL", "range wraps")
    if end == start:
        return
    unmapped_error = False
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            raise SyscallError("ENOMEM", "no VMA up to the end of the range")
        if start < vma.vm_start:
            unmapped_error = True
            start = vma.vm_start
            if start >= end:
                break
        tmp = min(vma.vm_end, end)
        prev = madvise_vma_behavior(m, vma, start, tmp, behavior)
        start = max(tmp, prev.vm_end)
        if start >= end:
            break
        vma = mm.find_vma(prev.vm_end)
    if unmapped_error:
        raise SyscallError("ENOMEM", "part of the range is not mapped")


def madvise_vma_behavior(
    m: Machine, vma: VmAreaStruct, start: int, end: int, behavior: int
) -> VmAreaStruct:
    """Apply ``behavior`` to ``[start, end)`` of ``vma``; returns ``*prev``."""
    if behavior in (MADV_DONTNEED, MADV_FREE):
        if vma.vm_flags & (VM_PFNMAP | VM_LOCKED):
            raise SyscallError("EINVAL", "VM_PFNMAP or VM_LOCKED")
        if behavior == MADV_DONTNEED:
            zap_pte_range(m, vma.vm_mm, start, end)
        elif vma.vm_file is not None:  # madvise_free_single_vma(): !vma_is_anonymous()
            raise SyscallError("EINVAL", "MADV_FREE on a non-anonymous VMA")
        else:
            madvise_free_pte_range(m, vma, start, end)
        return vma
    if behavior in (MADV_COLD, MADV_PAGEOUT):
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            raise SyscallError("EINVAL", "VM_LOCKED, VM_PFNMAP or VM_HUGETLB")
        madvise_cold_or_pageout(m, vma, start, end, behavior == MADV_PAGEOUT)
        return vma
    assert behavior in _FLAG_ADVICE
    new_flags = vma.vm_flags
    if behavior == MADV_DONTFORK:
        new_flags |= VM_DONTCOPY
    elif behavior == MADV_DOFORK:
        if vma.vm_flags & VM_IO:
            raise SyscallError("EINVAL", "VM_IO")
        new_flags &= ~VM_DONTCOPY
    elif behavior == MADV_WIPEONFORK:
        if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
            raise SyscallError("EINVAL", "MADV_WIPEONFORK needs private anonymous memory")
        new_flags |= VM_WIPEONFORK
    elif behavior == MADV_KEEPONFORK:
        new_flags &= ~VM_WIPEONFORK
    elif behavior == MADV_MERGEABLE:
        if not vma.vm_flags & VM_MERGEABLE and vma_ksm_compatible(vma):
            m.ksm.ksm_enter(vma.vm_mm)
            new_flags |= VM_MERGEABLE
    elif behavior == MADV_UNMERGEABLE:
        new_flags = m.ksm.ksm_madvise_unmergeable(vma, start, end, new_flags)
    elif behavior == MADV_HUGEPAGE:
        new_flags = (new_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif behavior == MADV_NOHUGEPAGE:
        new_flags = (new_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    return madvise_update_vma(m, vma, start, end, new_flags)


def madvise_update_vma(
    m: Machine, vma: VmAreaStruct, start: int, end: int, new_flags: int
) -> VmAreaStruct:
    """``madvise_update_vma()``: merge or split, then set the flags (ENOMEM → EAGAIN)."""
    if new_flags == vma.vm_flags:
        return vma
    try:
        vma = vma_modify_flags(m, vma, start, end, new_flags)
    except SyscallError as err:
        if err.errno == "ENOMEM":
            raise SyscallError("EAGAIN", err.why) from None
        raise
    vma.vm_flags = new_flags
    return vma


def madvise_free_pte_range(m: Machine, vma: VmAreaStruct, start: int, end: int) -> None:
    """``madvise_free_single_vma()`` → ``madvise_free_pte_range()``: drain the CPU's
    batches (``lru_add_drain()``), then clean the PTEs and queue the folios for
    ``lru_lazyfree`` (``folio_mark_lazyfree()``, mm/lru.py: they turn lazily freeable
    only when the batch drains); a folio in the swap cache or PG_dirty (it left the swap
    cache) is only touched when this is its only mapping (then its swap is freed and it
    is cleaned).  Nothing visible changes until reclaim."""
    lru_add_drain(m)
    pgd = vma.vm_mm.pgd
    for vpn, pte in list(vma.vm_mm.iter_ptes(start, end)):
        if is_swap_pte(pte):
            free_swap_and_cache(m, swp_offset(pte))
            del pgd[vpn]
            continue
        if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
            continue
        folio = m.mem_map[pte_pfn(pte)]
        if folio.swapcache is not None or folio.anon_pg_dirty:
            # only a folio mapped here alone; its swap is freed, then PG_dirty cleared
            if folio.mapcount != 1:
                continue
            if folio.swapcache is not None and not folio_free_swap(m, folio):
                continue
            folio.anon_pg_dirty = False  # folio_clear_dirty()
        pgd[vpn] = pte_mkclean(pte_mkold(pte))
        if not folio.ksm:
            folio_mark_lazyfree(m, folio)


def vma_ksm_compatible(vma: VmAreaStruct) -> bool:
    """``vma_ksm_compatible()``: KSM leaves shared and special mappings alone."""
    bad = VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_HUGETLB | VM_MIXEDMAP
    return not vma.vm_flags & bad


def madvise_cold_or_pageout(
    m: Machine, vma: VmAreaStruct, start: int, end: int, pageout: bool
) -> None:
    """``madvise_cold_or_pageout_pte_range()`` + ``reclaim_pages()``.

    ``madvise_cold()`` and ``madvise_pageout()`` start with ``lru_add_drain()`` (mm/lru.py:
    a MADV_FREE'd folio waiting in ``lru_lazyfree`` turns lazily freeable here).  Folios
    mapped more than once and the zero page are skipped.  COLD only clears the accessed
    bit.  PAGEOUT reclaims at once (a folio it keeps is put back through ``lru_add``,
    ``folio_putback_lru()``): an anon folio needs swap (the machine may have none: then
    it stays mapped) unless MADV_FREE made it lazily freeable; a shmem page-cache folio
    is unmapped and, with no swap to write it to, stays in the cache if dirty, and is
    dropped if clean (it holds only zeroes).
    """
    lru_add_drain(m)
    mm = vma.vm_mm
    pgd = mm.pgd
    stat = dict.fromkeys(VMSCAN_COUNTERS, 0)
    for vpn, pte in list(mm.iter_ptes(start, end)):
        if not pte_present(pte):
            continue
        pfn = pte_pfn(pte)
        if pfn == ZERO_PFN:
            continue
        folio = m.mem_map[pfn]
        if folio.mapcount != 1:
            continue
        pgd[vpn] = pte_mkold(pte)
        if not pageout:
            continue
        stat["nr_scanned"] += 1  # isolated for reclaim_pages(), references ignored
        if folio.anon:
            if folio.lazyfree:
                if not pte_dirty(pte):  # try_to_unmap_one(): discard a clean lazyfree folio
                    lk.pte(mm, vpn, True, folio)
                    del pgd[vpn]
                    folio_remove_rmap_pte(m, folio)
                    stat["nr_reclaimed"] += 1
                else:  # redirtied since MADV_FREE: swap-backed again, the unmap fails
                    folio.lazyfree = False
                    stat["nr_unmap_fail"] += 1
                    stat["nr_activate_anon"] += 1
            elif m.swap_enabled:
                # add_to_swap(), try_to_unmap(), pageout(): shrink_folio_list() finds the
                # folio under writeback and keeps it; the write then completes (the referee
                # waits for it at the end of the step), leaving the folio clean in the swap
                # cache (docs/kernel-referee.md, "Writeback").  A zero-filled folio is only
                # marked in the swap device's zeromap, with no I/O, and freed at once:
                # since Linux kernel commit 0ca0c24e3211 ("mm: store zero pages to be
                # swapped out in a bitmap") (in v6.12)
                writeback = folio.content != ZERO_CONTENT
                if m.reclaim_folio(folio, writeback_pending=writeback):
                    stat["nr_reclaimed"] += 1
                elif folio.mapcount:
                    stat["nr_unmap_fail"] += 1
                    stat["nr_activate_anon"] += 1
            else:  # no swap: add_to_swap() fails, activate_locked
                stat["nr_activate_anon"] += 1
        else:  # try_to_unmap(), then a dirty shmem folio finds no swap to go to
            lk.pte(mm, vpn, True, folio)
            del pgd[vpn]
            folio_remove_rmap_pte(m, folio)
            if not folio.dirty:  # __remove_mapping(): a clean one leaves the cache
                file = folio.mapping
                assert isinstance(file, File)
                del file.i_pages[folio.index]
                m.free_folio(folio)
                stat["nr_reclaimed"] += 1
            else:  # shmem is swap-backed: activated as anon
                stat["nr_activate_anon"] += 1
        if not folio.freed:  # reclaim_folio_list(): folio_putback_lru()
            folio_add_lru(m, folio)
    if stat["nr_scanned"]:  # trace_mm_vmscan_reclaim_pages() in reclaim_folio_list()
        for key, n in stat.items():
            m.ledger.vmscan[key] += n
