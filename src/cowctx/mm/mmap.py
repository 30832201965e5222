"""mmap, munmap and brk: ``do_mmap()``, ``__mmap_region()``, ``do_vmi_munmap()``,
``do_brk_flags()`` and top-down ``get_unmapped_area()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_STACK,
    MMAP_MIN_ADDR,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    SYSCTL_MAX_MAP_COUNT,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    calc_vm_prot_bits,
)
from cowctx.mm.errors import AccessFault, SyscallError
from cowctx.mm.file import File
from cowctx.mm.lru import lru_add_drain
from cowctx.mm.memory import handle_mm_fault, zap_pte_range
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.mm.vma import VmaMergeStruct, __split_vma, vma_merge_new_range

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

PMD_SIZE = 2 << 20


def page_align(length: int) -> int:
    return (length + PAGE_SIZE - 1) & PAGE_MASK


# --- placement -----------------------------------------------------------------------


def unmapped_area_topdown(mm: MmStruct, length: int, align: int = PAGE_SIZE) -> int:
    """``unmapped_area_topdown()``: the highest free, aligned range below ``mmap_base``."""
    high = mm.mmap_base
    low = max(PAGE_SIZE, MMAP_MIN_ADDR)
    gap_end = high
    for vma in reversed(mm.vmas()):
        if vma.vm_start >= high:
            continue
        candidate = (gap_end - length) & ~(align - 1)
        if vma.vm_end <= candidate and candidate >= low:
            return candidate
        gap_end = min(gap_end, vma.vm_start)
    candidate = (gap_end - length) & ~(align - 1)
    if candidate >= low:
        return candidate
    raise SyscallError("ENOMEM", "no room in the address space")


def get_unmapped_area(mm: MmStruct, file: File | None, addr: int, length: int, flags: int) -> int:
    """``__get_unmapped_area()`` / ``arch_get_unmapped_area_topdown()``."""
    if length > mm.task_size:
        raise SyscallError("ENOMEM", "length beyond TASK_SIZE")
    if flags & MAP_FIXED:
        if addr & ~PAGE_MASK:
            raise SyscallError("EINVAL", "unaligned MAP_FIXED address")
        if addr > mm.task_size - length:
            raise SyscallError("ENOMEM", "fixed range beyond TASK_SIZE")
        return addr
    if addr:
        addr = page_align(addr)
        if addr <= mm.task_size - length and addr >= MMAP_MIN_ADDR:
            vma = mm.find_vma(addr)
            if vma is None or addr + length <= vma.vm_start:
                return addr
    align = PMD_SIZE if file is None and length % PMD_SIZE == 0 else PAGE_SIZE
    return unmapped_area_topdown(mm, length, align)


# --- mmap ----------------------------------------------------------------------------


def do_mmap(
    m: Machine,
    mm: MmStruct,
    addr: int,
    length: int,
    prot: int,
    flags: int,
    file: File | None,
    pgoff: int,
) -> int:
    """``do_mmap()``: validate, place, build ``vm_flags`` and call ``mmap_region()``."""
    if not length:
        raise SyscallError("EINVAL", "zero length")
    if flags & MAP_ANONYMOUS:
        file = None
    if not flags & MAP_FIXED:
        addr = max(addr, MMAP_MIN_ADDR) if addr else 0  # round_hint_to_min()
    length = page_align(length)
    if not length or length > mm.task_size:
        raise SyscallError("ENOMEM", "length overflows")
    if pgoff + (length >> PAGE_SHIFT) < pgoff:
        raise SyscallError("EOVERFLOW")
    if mm.map_count > SYSCTL_MAX_MAP_COUNT:
        raise SyscallError("ENOMEM", "map count limit")
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    map_type = flags & (MAP_SHARED | MAP_PRIVATE)
    if map_type not in (MAP_SHARED, MAP_PRIVATE):
        raise SyscallError("EINVAL", "neither MAP_SHARED nor MAP_PRIVATE")
    addr = get_unmapped_area(mm, file, addr, length, flags)
    if flags & MAP_FIXED_NOREPLACE and mm.vmas_in_range(addr, addr + length):
        raise SyscallError("EEXIST", "MAP_FIXED_NOREPLACE range is in use")
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    vm_flags |= calc_vm_flag_bits(flags)
    if file is not None:
        if map_type == MAP_SHARED:
            vm_flags |= VM_SHARED | VM_MAYSHARE  # memfds are opened read-write
            if not file.f_mode_write:  # a read-only file: never writable through here
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
    elif map_type == MAP_SHARED:
        pgoff = 0
        vm_flags |= VM_SHARED | VM_MAYSHARE
    else:
        pgoff = addr >> PAGE_SHIFT
    if flags & MAP_NORESERVE:
        vm_flags |= VM_NORESERVE  # overcommit mode 0 (heuristic)
    addr = mmap_region(
        m,
        mm,
        file,
        addr,
        length,
        vm_flags,
        pgoff,
        anon_shared=file is None and map_type == MAP_SHARED,
    )
    if flags & MAP_POPULATE:
        mm_populate(m, mm, addr, length)
    return addr


def calc_vm_flag_bits(flags: int) -> int:
    """``calc_vm_flag_bits()``: MAP_GROWSDOWN is VM_GROWSDOWN, and MAP_STACK is
    VM_NOHUGEPAGE (commit c4608d1bf7c6 ("mm: mmap: map MAP_STACK to VM_NOHUGEPAGE")
    (v6.7); THP is built in on the reference kernel)."""
    return (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0) | (
        VM_NOHUGEPAGE if flags & MAP_STACK else 0
    )


def accountable_mapping(vm_flags: int) -> bool:
    """``accountable_mapping()``: private writable memory is charged (VM_ACCOUNT)."""
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


def mmap_region(
    m: Machine,
    mm: MmStruct,
    file: File | None,
    addr: int,
    length: int,
    vm_flags: int,
    pgoff: int,
    anon_shared: bool = False,
) -> int:
    """``__mmap_region()``: unmap what MAP_FIXED covers, then merge with a
    neighbour (``vma_merge_new_range``) or insert a new VMA."""
    end = addr + length
    if mm.vmas_in_range(addr, end):
        do_vmi_munmap(m, mm, addr, length)
    if accountable_mapping(vm_flags):
        vm_flags |= VM_ACCOUNT
    if mm.map_count >= SYSCTL_MAX_MAP_COUNT:
        raise SyscallError("ENOMEM", "map count limit")
    prev = mm.vma_before(addr)
    nxt = mm.find_vma(addr)
    if prev is not None or nxt is not None:
        vmg = VmaMergeStruct(
            mm=mm,
            start=addr,
            end=end,
            pgoff=pgoff,
            vm_flags=vm_flags,
            file=file,
            prev=prev,
            next=nxt,
        )
        if vma_merge_new_range(m, vmg) is not None:
            return addr
    vma = m.vm_area_alloc(mm)
    vma.vm_start, vma.vm_end, vma.vm_pgoff, vma.vm_flags = addr, end, pgoff, vm_flags
    vma.vm_file = m.shmem_zero_setup(length >> PAGE_SHIFT) if anon_shared else file
    mm.vma_store(vma)
    mm.map_count += 1
    return addr


def mm_populate(m: Machine, mm: MmStruct, start: int, length: int) -> None:
    """``__mm_populate(..., ignore_errors=1)``: fault the range in, with write
    faults where the mapping is private and writable (to break CoW), read faults
    elsewhere; PROT_NONE VMAs are skipped.  ``populate_vma_page_range()`` ends with
    ``lru_add_drain()`` for every VMA it faults (mm/lru.py; measured: not for a PROT_NONE
    one)."""
    end = start + length
    for vma in mm.vmas_in_range(start, end):
        if not vma.vm_flags & VM_ACCESS_FLAGS:
            continue
        write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
        for addr in range(max(start, vma.vm_start), min(end, vma.vm_end), PAGE_SIZE):
            try:
                handle_mm_fault(m, mm, addr, write)
            except AccessFault:
                break  # GUP stops at the first failure; the next VMA is tried
        lru_add_drain(m)


# --- munmap --------------------------------------------------------------------------


def do_vmi_munmap(m: Machine, mm: MmStruct, start: int, length: int) -> None:
    """``do_vmi_munmap()``."""
    if start & ~PAGE_MASK or start > mm.task_size or length > mm.task_size - start:
        raise SyscallError("EINVAL", "bad munmap range")
    end = start + page_align(length)
    if end == start:
        raise SyscallError("EINVAL", "zero length")
    if not mm.vmas_in_range(start, end):
        return
    do_vmi_align_munmap(m, mm, start, end)


def do_vmi_align_munmap(m: Machine, mm: MmStruct, start: int, end: int) -> None:
    """``vms_gather_munmap_vmas()`` + ``vms_complete_munmap_vmas()``: split at the
    edges, detach, zap, unlink anon state (``free_pgtables``), free."""
    vma = mm.find_vma(start)
    assert vma is not None
    if start > vma.vm_start:
        if end < vma.vm_end and mm.map_count >= SYSCTL_MAX_MAP_COUNT:
            raise SyscallError("ENOMEM", "map count limit")
        __split_vma(m, vma, start, True)
    detached: list[VmAreaStruct] = []
    for nxt in mm.vmas_in_range(start, end):
        if nxt.vm_end > end:
            __split_vma(m, nxt, end, False)
        detached.append(nxt)
    for vma in detached:
        mm.vma_erase(vma)
        mm.map_count -= 1
    for vma in detached:
        zap_pte_range(m, mm, vma.vm_start, vma.vm_end)
    for vma in detached:
        m.rmap.unlink_anon_vmas(vma)
    for vma in detached:
        m.vm_area_free(vma)


# --- brk -----------------------------------------------------------------------------


def do_brk(m: Machine, mm: MmStruct, brk: int) -> int:
    """``brk()``: move the program break; returns the new (or unchanged) break.

    Growth goes through ``do_brk_flags()``: the brk VMA is expanded in place
    when it may be (``vma_merge_new_range`` with ``just_expand``), which a
    fork child's brk VMA may not be (anon_vma rule), so a new VMA appears.
    """
    if brk < mm.start_brk:
        return mm.brk
    newbrk, oldbrk = page_align(brk), page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return brk
    if brk <= mm.brk:
        do_vmi_munmap(m, mm, newbrk, oldbrk - newbrk)
        mm.brk = brk
        return brk
    nxt = mm.find_vma(oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > nxt.vm_start:
        return mm.brk
    vm_flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_ACCOUNT
    prev = mm.vma_before(oldbrk)
    length = newbrk - oldbrk
    # vma_prev_limit(&vmi, mm->start_brk): only a VMA reaching above start_brk can be
    # expanded; the first growth never joins the bss below start_brk.
    if (
        prev is not None
        and prev.vm_end == oldbrk
        and prev.vm_end > mm.start_brk
        and prev.vm_file is None
    ):
        vmg = VmaMergeStruct(
            mm=mm,
            start=oldbrk,
            end=newbrk,
            pgoff=oldbrk >> PAGE_SHIFT,
            vm_flags=vm_flags,
            file=None,
            prev=prev,
            next=None,
            just_expand=True,
        )
        if vma_merge_new_range(m, vmg) is not None:
            mm.brk = brk
            return brk
    vma = m.vm_area_alloc(mm)
    vma.vm_start, vma.vm_end = oldbrk, oldbrk + length
    vma.vm_pgoff, vma.vm_flags = oldbrk >> PAGE_SHIFT, vm_flags
    mm.vma_store(vma)
    mm.map_count += 1
    mm.brk = brk
    return brk
