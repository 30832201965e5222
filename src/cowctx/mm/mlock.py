"""mlock(2), mlock2(2), munlock(2), mlockall(MCL_CURRENT), munlockall(2): mm/mlock.c (6.18).

Locking changes ``vm_flags`` (VM_LOCKED, VM_LOCKONFAULT), so VMAs split and merge
(``mlock_fixup()`` → ``vma_modify_flags()``); then ``__mm_populate()`` faults the
range in, with write faults in private writable mappings (their anon_vmas), unless
the lock is on-fault.  Pages are never reclaimed here, so being unevictable changes
nothing else.  Deliberate difference: ``mlockall(MCL_FUTURE)`` (``mm->def_flags``) is
not modelled; the caller reports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import (
    PAGE_MASK,
    PAGE_SIZE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_SPECIAL,
)
from cowctx.mm.errors import SyscallError
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.mm.mmap import mm_populate
from cowctx.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

MLOCK_ONFAULT = 0x01
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4


def mlock_fixup(m: Machine, vma: VmAreaStruct, start: int, end: int, newflags: int) -> VmAreaStruct:
    """``mlock_fixup()``: special and hugetlb VMAs are left alone."""
    if newflags == vma.vm_flags or vma.vm_flags & (VM_SPECIAL | VM_HUGETLB):
        return vma
    vma = vma_modify_flags(m, vma, start, end, newflags)
    vma.vm_flags = newflags
    return vma


def apply_vma_lock_flags(m: Machine, mm: MmStruct, start: int, length: int, flags: int) -> None:
    """``apply_vma_lock_flags()``: the range must be mapped without holes (ENOMEM)."""
    end = start + length
    vma = mm.vma_lookup(start)
    if vma is None:
        raise SyscallError("ENOMEM", "start is not mapped")
    nstart = start
    tmp = vma.vm_start
    v: VmAreaStruct | None = vma
    while v is not None and v.vm_start < end:  # for_each_vma_range(), after each fixup
        if v.vm_start != tmp:
            raise SyscallError("ENOMEM", "hole in the range")
        newflags = (v.vm_flags & ~VM_LOCKED_MASK) | flags
        done = mlock_fixup(m, v, nstart, min(v.vm_end, end), newflags)
        tmp = nstart = done.vm_end  # vma_iter_end(): a merge may reach past the range
        v = mm.find_vma(tmp)
    if tmp < end:
        raise SyscallError("ENOMEM", "range ends beyond the last VMA")


def do_mlock(m: Machine, mm: MmStruct, start: int, len_in: int, flags: int) -> None:
    """``do_mlock()``: lock ``[start, start+len)`` (on fault with MLOCK_ONFAULT), then
    populate unless on-fault."""
    length = ((len_in + (start & ~PAGE_MASK)) + PAGE_SIZE - 1) & PAGE_MASK
    start &= PAGE_MASK
    vm_flags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
    apply_vma_lock_flags(m, mm, start, length, vm_flags)
    if not flags & MLOCK_ONFAULT:
        mm_populate(m, mm, start, length)


def do_munlock(m: Machine, mm: MmStruct, start: int, len_in: int) -> None:
    """``munlock()``."""
    length = ((len_in + (start & ~PAGE_MASK)) + PAGE_SIZE - 1) & PAGE_MASK
    apply_vma_lock_flags(m, mm, start & PAGE_MASK, length, 0)


def do_mlockall(m: Machine, mm: MmStruct, flags: int) -> None:
    """``apply_mlockall_flags()`` for MCL_CURRENT (with MCL_ONFAULT), or munlockall
    (``flags`` 0), then ``mm_populate(0, TASK_SIZE)`` for MCL_CURRENT."""
    to_add = 0
    if flags & MCL_CURRENT:
        to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
    vma = mm.find_vma(0)
    while vma is not None:  # for_each_vma(), resuming after each fixup
        done = mlock_fixup(
            m, vma, vma.vm_start, vma.vm_end, (vma.vm_flags & ~VM_LOCKED_MASK) | to_add
        )
        vma = mm.find_vma(done.vm_end)
    if flags & MCL_CURRENT and not flags & MCL_ONFAULT:
        for vma in mm.vmas():
            mm_populate(m, mm, vma.vm_start, vma.vm_end - vma.vm_start)
