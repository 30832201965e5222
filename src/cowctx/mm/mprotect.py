"""mprotect: ``do_mprotect_pkey()`` and ``mprotect_fixup()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import (
    PAGE_MASK,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_HUGETLB,
    VM_NORESERVE,
    VM_SHARED,
    VM_WRITE,
    calc_vm_prot_bits,
)
from cowctx.mm.errors import SyscallError
from cowctx.mm.folio import (
    pte_mkwrite,
    pte_pfn,
    pte_present,
    pte_write,
    pte_wrprotect,
)
from cowctx.mm.mm_types import MmStruct, VmAreaStruct, vma_is_anonymous
from cowctx.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000


def do_mprotect_pkey(m: Machine, mm: MmStruct, start: int, length: int, prot: int) -> None:
    """``do_mprotect_pkey()``: apply ``prot`` VMA by VMA; a hole stops the walk with
    ENOMEM after the VMAs before it have changed (as the kernel leaves them)."""
    if start & ~PAGE_MASK:
        raise SyscallError("EINVAL", "unaligned start")
    if not length:
        return
    length = (length + ~PAGE_MASK) & PAGE_MASK
    end = start + length
    if end <= start:
        raise SyscallError("ENOMEM", "range wraps")
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP):
        raise SyscallError("EINVAL", "unknown prot bits")
    vma = mm.find_vma(start)
    if vma is None or vma.vm_start > start:
        raise SyscallError("ENOMEM", "start is not mapped")
    tmp = vma.vm_start
    nstart = start
    while vma is not None and vma.vm_start < end:
        if vma.vm_start != tmp:
            raise SyscallError("ENOMEM", "hole in the range")
        newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~VM_ACCESS_FLAGS)
        # newflags >> 4 shifts VM_MAY* onto VM_*: asking for what the VMA may not have
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            raise SyscallError("EACCES", "VM_MAY* bit missing")
        vma = mprotect_fixup(m, vma, nstart, min(vma.vm_end, end), newflags)
        tmp = nstart = vma.vm_end  # vma_iter_end(): a merge may reach beyond `end`
        vma = mm.find_vma(tmp)
    if tmp < end:
        raise SyscallError("ENOMEM", "range ends in a hole")


def mprotect_fixup(
    m: Machine, vma: VmAreaStruct, start: int, end: int, newflags: int
) -> VmAreaStruct:
    """``mprotect_fixup()``: account, merge or split, then change the PTEs.

    Making an unaccounted private mapping writable charges it (VM_ACCOUNT);
    making an anonymous VMA that has no anon_vma read-only uncharges it, so it
    can merge with fresh read-only mappings.  Returns the VMA covering the range.
    """
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return vma
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma_is_anonymous(vma) and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    vma = vma_modify_flags(m, vma, start, end, newflags)
    vma.vm_flags = newflags
    change_protection(m, vma, start, end)
    return vma


def change_protection(m: Machine, vma: VmAreaStruct, start: int, end: int) -> None:
    """``change_protection()``: removing write permission write-protects the PTEs;
    granting it on a private VMA makes writable at once only the PTEs of
    PageAnonExclusive folios (``MM_CP_TRY_CHANGE_WRITABLE`` +
    ``can_change_pte_writable()``); everything else is upgraded by the next
    write fault, which then decides CoW."""
    pgd = vma.vm_mm.pgd
    if not vma.vm_flags & VM_WRITE:
        for vpn, pte in list(vma.vm_mm.iter_ptes(start, end)):
            if pte_present(pte) and pte_write(pte):
                pgd[vpn] = pte_wrprotect(pte)
        return
    if vma.vm_flags & VM_SHARED:
        return
    mem_map = m.mem_map
    for vpn, pte in list(vma.vm_mm.iter_ptes(start, end)):
        if pte_present(pte) and not pte_write(pte):
            folio = mem_map[pte_pfn(pte)]
            if folio.anon and folio.anon_exclusive:
                pgd[vpn] = pte_mkwrite(pte)
