"""The mm locks of the operations, as scheduling points for the explorer.

Sequentially (no explorer running) each helper returns at once: the model has
always run one operation at a time.  Under the explorer they are the kernel's
locks: ``mmap_write_lock()`` for mmap/munmap/mremap/mprotect/fork/exit,
``mmap_read_lock()`` for madvise, and for a fault ``lock_vma_under_rcu()`` (the
per-VMA lock, read) with the ``mmap_read_lock()`` fallback.

Deliberate difference: ``vma_start_write()`` is taken on every VMA of the mm
when the mmap lock is taken for writing (the kernel takes it on each VMA it is
about to change, and releases them all at ``mmap_write_unlock()``); it excludes
per-VMA-locked faults from more VMAs than the kernel does, never from fewer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, pte_pfn

if TYPE_CHECKING:
    from cowctx.mm.folio import Folio
    from cowctx.mm.machine import Machine
    from cowctx.mm.mm_types import MmStruct, VmAreaStruct


def mmap_write_lock(mm: MmStruct, lock_vmas: bool = True) -> list[VmAreaStruct]:
    """``mmap_write_lock()`` then ``vma_start_write()`` on the mm's VMAs (see
    above); returns the VMAs write-locked, for :func:`mmap_write_unlock`."""
    if rt.current is None:
        return []
    rt.lock("mmap_lock", mm, "write")
    if not lock_vmas:
        return []
    vmas = list(mm.vmas())
    for vma in vmas:
        rt.lock("vma_lock", vma, "write")
    return vmas


def mmap_write_unlock(mm: MmStruct, vmas: list[VmAreaStruct]) -> None:
    """``mmap_write_unlock()``: also ends every ``vma_start_write()`` (the mm's
    lock sequence moves on)."""
    if rt.current is None:
        return
    for vma in vmas:
        rt.unlock("vma_lock", vma, "write")
    rt.unlock("mmap_lock", mm, "write")


def mmap_read_lock(mm: MmStruct) -> None:
    if rt.current is not None:
        rt.lock("mmap_lock", mm, "read")


def mmap_read_unlock(mm: MmStruct) -> None:
    if rt.current is not None:
        rt.unlock("mmap_lock", mm, "read")


def lock_vma_under_rcu(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``lock_vma_under_rcu()``: find the VMA under RCU and read-lock it with a
    trylock (``vma_start_read()``), re-checking that it still covers ``address``;
    None means the caller falls back to the mmap lock."""
    rt.rcu_read_lock()
    vma = mm.find_vma(address)
    if vma is None or vma.vm_start > address:
        rt.rcu_read_unlock()
        return None
    rt.point("load", vma, "range")
    if not rt.trylock("vma_lock", vma, "read"):
        rt.rcu_read_unlock()
        return None
    if not vma.vm_start <= address < vma.vm_end or mm.find_vma(address) is not vma:
        rt.unlock("vma_lock", vma, "read")
        rt.rcu_read_unlock()
        return None
    rt.rcu_read_unlock()
    return vma


def fault_lock(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """Lock for a fault at ``address``: the per-VMA lock if it can be had (the
    VMA returned), else the mmap lock for reading (None)."""
    vma = lock_vma_under_rcu(mm, address)
    if vma is None:
        mmap_read_lock(mm)
    return vma


def fault_unlock(mm: MmStruct, vma: VmAreaStruct | None) -> None:
    if vma is not None:
        rt.unlock("vma_lock", vma, "read")
    else:
        mmap_read_unlock(mm)


def pte(mm: MmStruct, vpn: int, write: bool, *folios: Folio) -> None:
    """A load or store of the PTE of ``vpn`` in ``mm``; ``folios``: those whose
    mapcount the step changes too (:func:`counts`).

    The runtime's ``pte()`` hook, called directly (the model's most frequent
    point: a fork or exit makes one per PTE): the same step as
    ``rt.points("store" if write else "load", [(mm, ("pte", vpn), write),
    *counts(*folios)])`` (``rt.point()`` without folios), without the lists."""
    ex = rt.current
    if ex is not None:
        ex.pte(mm, vpn, write, folios)


def counts(*folios: Folio) -> list[tuple[object, object, bool]]:
    """The accesses of a step that changes each folio's mapcount: a store of
    ``mapcount`` (read by ``folio_mapcount()``, ``folio_mapped()``, the PoC's
    lockless ``folio_maybe_mapped_shared()``) and of ``refcount`` (each mapping
    holds a reference: ``folio_ref_count()`` reads it).  Every change of a part
    of the model's refcount (mapcount, swap cache, LRU batches, ``pinned``)
    stores ``refcount``; only mapcount changes store ``mapcount``."""
    out: list[tuple[object, object, bool]] = []
    for folio in folios:
        out += [(folio, "mapcount", True), (folio, "refcount", True)]
    return out


def ptl_lock(mm: MmStruct) -> None:
    """``pte_offset_map_lock()``: the page-table spinlock (one per mm in the model:
    scenarios fit in one page table)."""
    if rt.current is not None:
        rt.lock("ptl", mm)


def ptl_unlock(mm: MmStruct) -> None:
    if rt.current is not None:
        rt.unlock("ptl", mm)


class VmFaultRetry(Exception):
    """``VM_FAULT_RETRY`` of a fault under the per-VMA lock: redo it under the
    mmap lock."""


def handle_mm_fault_locked(m: Machine, mm: MmStruct, address: int, write: bool) -> Folio | None:
    """A fault as ``do_user_addr_fault()`` locks it: under the per-VMA lock when
    ``lock_vma_under_rcu()`` succeeds, retried under ``mmap_read_lock()`` on
    ``VM_FAULT_RETRY`` or when it does not."""
    from cowctx.mm.memory import handle_mm_fault

    vma = lock_vma_under_rcu(mm, address)
    if vma is not None:
        local = rt.local()
        local["vma_locked"] = True
        try:
            return handle_mm_fault(m, mm, address, write)
        except VmFaultRetry:
            pass
        finally:
            local["vma_locked"] = False
            rt.unlock("vma_lock", vma, "read")
    mmap_read_lock(mm)
    try:
        return handle_mm_fault(m, mm, address, write)
    finally:
        mmap_read_unlock(mm)


def anon_prepare_lock(mm: MmStruct) -> bool:
    """``vmf_anon_prepare()``: under the per-VMA lock, ``__anon_vma_prepare()``
    needs the mmap lock too (it looks at the neighbours): trylock it or retry.
    Returns whether it was taken (to be released by :func:`anon_prepare_unlock`)."""
    if rt.current is None or not rt.local().get("vma_locked"):
        return False
    if not rt.trylock("mmap_lock", mm, "read"):
        raise VmFaultRetry
    return True


def anon_prepare_unlock(mm: MmStruct, taken: bool) -> None:
    if taken:
        rt.unlock("mmap_lock", mm, "read")


def tlb_defer_flush(mm: MmStruct, vpn: int, pfn: int) -> None:
    """Fork write-protected the parent's writable PTE of ``vpn`` and flushes the
    TLB only at the end of ``dup_mmap()``: until then a CPU that wrote to ``pfn``
    there may write through its old entry."""
    if mm.tlb_stale is None:
        mm.tlb_stale = {}
    mm.tlb_stale[vpn] = pfn


def flush_tlb_mm(mm: MmStruct) -> None:
    """``flush_tlb_mm()``: no CPU keeps a stale entry of ``mm`` any more."""
    stale = mm.tlb_stale
    if rt.current is None or not stale:
        return
    rt.points("flush_tlb_mm", [(mm, ("pte", vpn), True) for vpn in sorted(stale)])
    mm.tlb_stale = None


USER_STORE_RETRIES = 64


def user_store(m: Machine, mm: MmStruct, address: int) -> Folio | None:
    """A user store to ``address`` as the MMU does it, under the explorer: through
    a present writable PTE (setting its accessed and dirty bits), or through this
    CPU's TLB entry for a PTE that fork write-protected and has not flushed yet;
    else the fault handler runs and the store is tried again, as the faulting
    instruction is.  Returns the folio the store goes to (the caller stores).

    The thread's TLB holds the translations it stored through; an entry is stale
    only while ``mm.tlb_stale`` names it and the PTE still maps that page (every
    other change of a PTE flushes it: ``ptep_clear_flush()``, ``flush_tlb_range()``,
    the unmap and migration batches).  Since commit fb49c455323f ("fork: lock VMAs
    of the parent process when forking") (v6.5) no fault of the parent can run
    meanwhile, so a stale store lands in a page that is either still its own or
    shared with the child, never in one a CoW has already copied."""

    vpn = address >> PAGE_SHIFT
    local = rt.local()
    tlb = local.get("tlb")
    if tlb is None:
        tlb = local["tlb"] = set()
    assert isinstance(tlb, set)
    pgd = mm.pgd
    mem_map = m.mem_map
    for _ in range(USER_STORE_RETRIES):
        pte = pgd.get(vpn)
        target = None
        if pte is not None and pte & PTE_PRESENT:
            pfn = pte_pfn(pte)
            stale = mm.tlb_stale
            if pte & PTE_WRITE or (
                stale is not None and stale.get(vpn) == pfn and (mm.mm_id, vpn, pfn) in tlb
            ):
                target = mem_map.get(pfn)
        # the step: the PTE (the walk, and the accessed/dirty bits) and the page
        accesses: list[tuple[object, object, bool]] = [(mm, ("pte", vpn), True)]
        if target is not None:
            accesses.append((target, "content", True))
        rt.points("user store", accesses)
        pte = pgd.get(vpn)
        if pte is not None and pte & PTE_PRESENT:
            pfn = pte_pfn(pte)
            if pte & PTE_WRITE:
                pgd[vpn] = pte | PTE_YOUNG | PTE_DIRTY
                tlb.add((mm.mm_id, vpn, pfn))
                return mem_map[pfn]
            stale = mm.tlb_stale
            if stale is not None and stale.get(vpn) == pfn and (mm.mm_id, vpn, pfn) in tlb:
                return mem_map[pfn]  # through the stale TLB entry
        handle_mm_fault_locked(m, mm, address, True)
    raise AssertionError(f"store to {address:#x} still faults after {USER_STORE_RETRIES} faults")
