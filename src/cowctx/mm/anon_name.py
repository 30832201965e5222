"""``prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)``: ``madvise_set_anon_name()`` (mm/madvise.c,
6.18) names anonymous ranges; VMAs with different names never merge.

A name is any comparable object (the replay uses the user pointer of the string, as
the string itself is not recorded); None removes the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from cowctx.mm.errors import SyscallError
from cowctx.mm.mm_types import MmStruct
from cowctx.mm.vma import VmaMergeStruct, vma_modify

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


def madvise_set_anon_name(
    m: Machine, mm: MmStruct, start: int, len_in: int, name: object | None
) -> None:
    """Walk ``[start, start+len)`` as madvise does: each VMA part is split off or
    merged (``vma_modify_name()``) and named; a file VMA (not anon shmem) stops the
    walk with EBADF; holes give ENOMEM at the end."""
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
        if vma.vm_file is not None and not vma.vm_file.anon_shared:
            raise SyscallError("EBADF", "naming a file mapping")
        if vma.anon_name != name:
            vmg = VmaMergeStruct(
                mm=mm,
                start=addr,
                end=tmp,
                pgoff=vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT),
                vm_flags=vma.vm_flags,
                file=vma.vm_file,
                anon_vma=vma.anon_vma,
                anon_name=name,
                middle=vma,
            )
            vma_modify(m, vmg).anon_name = name
        addr = tmp
    if unmapped:
        raise SyscallError("ENOMEM", "part of the range is not mapped")
