"""Stack growth: ``expand_stack()`` / ``expand_downwards()`` (mm/mmap.c, 6.18)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_MASK, PAGE_SHIFT, VM_ACCESS_FLAGS, VM_GROWSDOWN
from cowctx.mm.memory import vmf_anon_prepare
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.mm.vma import VmaPrepare, vma_complete, vma_prepare

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

RLIMIT_STACK = 8 << 20
"""The default ``ulimit -s`` (8 MiB)."""
STACK_GUARD_GAP = 256 << PAGE_SHIFT
"""``stack_guard_gap``: 256 pages."""


def expand_downwards(m: Machine, vma: VmAreaStruct, address: int) -> None:
    """``expand_downwards()``: lower ``vm_start`` (and ``vm_pgoff``) to ``address``.

    The anon_vma is prepared first, as the kernel does ("We must make sure the
    anon_vma is allocated so that the anon_vma locking is not a noop"), and the
    VMA's chains are re-keyed under the anon_vma lock.
    """
    address &= PAGE_MASK
    if address >= vma.vm_start:
        return
    vmf_anon_prepare(m, vma)
    grow = (vma.vm_start - address) >> PAGE_SHIFT
    vp = VmaPrepare(vma=vma)
    vma_prepare(m, vp)
    vma.vm_mm.vma_set_range(vma, address, vma.vm_end, vma.vm_pgoff - grow)
    vma_complete(m, vp)


def expand_stack(m: Machine, mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``expand_stack()`` as a fault below a VM_GROWSDOWN VMA calls it: the VMA that
    now covers ``address``, or None where the kernel refuses (SIGSEGV)."""
    vma = mm.find_vma(address)
    if vma is None:
        return None
    if vma.vm_start <= address:
        return vma
    if not vma.vm_flags & VM_GROWSDOWN:
        return None
    address &= PAGE_MASK
    if vma.vm_end - address > RLIMIT_STACK:
        return None
    prev = mm.vma_before(vma.vm_start)
    if (
        prev is not None
        and not prev.vm_flags & VM_GROWSDOWN
        and prev.vm_flags & VM_ACCESS_FLAGS
        and address - prev.vm_end < STACK_GUARD_GAP
    ):
        return None
    expand_downwards(m, vma, address)
    return vma
