"""The madvise advices real programs use beyond :mod:`cowctx.mm.madvise`'s
(mm/madvise.c, 6.18): read-ahead hints and core-dump flags (VMA flag changes that
split and merge), MADV_WILLNEED, MADV_POPULATE_READ/WRITE, MADV_GUARD_INSTALL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_MASK, PAGE_SIZE, VM_DONTDUMP, VM_SPECIAL
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.madvise import madvise_update_vma
from cowctx.mm.memory import handle_mm_fault, vmf_anon_prepare
from cowctx.mm.mm_types import MmStruct, VmAreaStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

VM_SEQ_READ = 0x8000
VM_RAND_READ = 0x10000
MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTDUMP = 16
MADV_DODUMP = 17
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_GUARD_INSTALL = 102
MADV_GUARD_REMOVE = 103

ADVICES = frozenset(
    {
        MADV_NORMAL,
        MADV_RANDOM,
        MADV_SEQUENTIAL,
        MADV_WILLNEED,
        MADV_DONTDUMP,
        MADV_DODUMP,
        MADV_POPULATE_READ,
        MADV_POPULATE_WRITE,
        MADV_GUARD_INSTALL,
        MADV_GUARD_REMOVE,
    }
)


def _new_flags(vma: VmAreaStruct, behavior: int) -> int:
    """``madvise_vma_behavior()``'s vm_flags for the flag-only advices."""
    flags = vma.vm_flags
    if behavior == MADV_NORMAL:
        return flags & ~(VM_RAND_READ | VM_SEQ_READ)
    if behavior == MADV_RANDOM:
        return (flags & ~VM_SEQ_READ) | VM_RAND_READ
    if behavior == MADV_SEQUENTIAL:
        return (flags & ~VM_RAND_READ) | VM_SEQ_READ
    if behavior == MADV_DONTDUMP:
        return flags | VM_DONTDUMP
    if behavior == MADV_DODUMP:
        if flags & VM_SPECIAL:
            raise SyscallError("EINVAL", "MADV_DODUMP on a special mapping")
        return flags & ~VM_DONTDUMP
    return flags


def do_madvise_more(m: Machine, mm: MmStruct, start: int, len_in: int, behavior: int) -> None:
    """``do_madvise()`` for :data:`ADVICES`: holes are skipped and reported as ENOMEM."""
    if behavior not in ADVICES:
        raise SyscallError("EINVAL", f"advice {behavior} not modelled")
    if start & ~PAGE_MASK:
        raise SyscallError("EINVAL", "unaligned start")
    end = start + ((len_in + PAGE_SIZE - 1) & PAGE_MASK)
    unmapped = False
    addr = start
    while addr < end:
        vma = mm.find_vma(addr)
        if vma is None or vma.vm_start >= end:
            unmapped = True
            break
        if vma.vm_start > addr:
            unmapped = True
            addr = vma.vm_start
        tmp = min(vma.vm_end, end)
        if behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
            # madvise_populate(): GUP faults, write ones for POPULATE_WRITE
            for page in range(addr, tmp, PAGE_SIZE):
                try:
                    handle_mm_fault(m, mm, page, behavior == MADV_POPULATE_WRITE)
                except AccessFault:
                    raise SyscallError("EFAULT", "populate hit an inaccessible page") from None
        elif behavior == MADV_GUARD_INSTALL:
            # madvise_guard_install(): guard markers are page-table entries, so the
            # VMA gets an anon_vma for fork to copy them
            if vma.vm_file is None:
                vmf_anon_prepare(m, vma)
        elif behavior not in (MADV_WILLNEED, MADV_GUARD_REMOVE):
            vma = madvise_update_vma(m, vma, addr, tmp, _new_flags(vma, behavior))
        addr = tmp
    if unmapped:
        raise SyscallError("ENOMEM", "part of the range is not mapped")
