"""mremap (mm/mremap.c, Linux 6.18.44): ``do_mremap()``, ``check_mremap_params()``,
``check_prep_vma()``, ``mremap_at()``, ``mremap_to()``, ``remap_move()``,
``move_vma()``, ``copy_vma()`` (mm/vma.c) and ``dontunmap_complete()``.

Since Linux kernel commit d23cb648e365 ("mm/mremap: permit mremap() move of
multiple VMAs") (in v6.17) a same-length MREMAP_FIXED move may span several VMAs,
each moved on its own (``remap_move()``).  Since commit 61f67c230a5e ("mm/vma: fix
anon_vma UAF on mremap() faulted, unfaulted merge") (in v6.19; 6.18.y by 6.18.44)
``copy_vma()`` passes the source as ``copied_from``, so a merge at the destination
duplicates its anon state and a fork child is not merged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import (
    MAP_FIXED,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_MASK,
    PAGE_SHIFT,
    SYSCTL_MAX_MAP_COUNT,
    VM_DONTEXPAND,
    VM_LOCKED_MASK,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
)
from cowctx.mm.errors import SyscallError
from cowctx.mm.mm_types import MmStruct, VmAreaStruct, vma_is_anonymous
from cowctx.mm.mmap import do_vmi_munmap, get_unmapped_area, page_align
from cowctx.mm.vma import VmaMergeStruct, vma_merge_new_range

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass
class VmaRemapStruct:
    """``struct vma_remap_struct`` (``vrm``)."""

    mm: MmStruct
    addr: int
    old_len: int
    new_len: int
    flags: int
    new_addr: int
    vma: VmAreaStruct | None = None

    @property
    def implies_new_addr(self) -> bool:
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))


def do_mremap(
    m: Machine, mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    """``do_mremap()``: returns the address the range now lives at."""
    vrm = VmaRemapStruct(mm, addr, page_align(old_len), page_align(new_len), flags, new_addr)
    check_mremap_params(vrm)
    if flags & MREMAP_FIXED and vrm.old_len == vrm.new_len:
        return remap_move(m, vrm)
    vrm.vma = mm.vma_lookup(addr)
    check_prep_vma(vrm)
    if vrm.implies_new_addr:
        return mremap_to(m, vrm)
    return mremap_at(m, vrm)


def check_mremap_params(vrm: VmaRemapStruct) -> None:
    flags = vrm.flags
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        raise SyscallError("EINVAL", "unknown flags")
    if vrm.addr & ~PAGE_MASK:
        raise SyscallError("EINVAL", "unaligned address")
    if not vrm.new_len:
        raise SyscallError("EINVAL", "zero new length")
    if vrm.new_len > vrm.mm.task_size:
        raise SyscallError("EINVAL", "new length beyond TASK_SIZE")
    if not vrm.implies_new_addr:
        return
    if vrm.new_addr > vrm.mm.task_size - vrm.new_len:
        raise SyscallError("EINVAL", "new range beyond TASK_SIZE")
    if vrm.new_addr & ~PAGE_MASK:
        raise SyscallError("EINVAL", "unaligned new address")
    if not flags & MREMAP_MAYMOVE:
        raise SyscallError("EINVAL", "MREMAP_FIXED/DONTUNMAP without MREMAP_MAYMOVE")
    if flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        raise SyscallError("EINVAL", "MREMAP_DONTUNMAP with a size change")
    if vrm.addr < vrm.new_addr + vrm.new_len and vrm.new_addr < vrm.addr + vrm.old_len:
        raise SyscallError("EINVAL", "old and new ranges overlap")
    if vrm.mm.map_count + 2 >= SYSCTL_MAX_MAP_COUNT - 3:
        raise SyscallError("ENOMEM", "map count limit")


def check_prep_vma(vrm: VmaRemapStruct) -> None:
    """``check_prep_vma()``: the source VMA must hold the range being moved or grown."""
    vma = vrm.vma
    if vma is None:
        raise SyscallError("EFAULT", "no VMA at the old address")
    if not vrm.implies_new_addr:
        vrm.new_addr = vrm.addr
    expand = vrm.new_len > vrm.old_len
    shrink = vrm.new_len < vrm.old_len
    if not expand and not vrm.implies_new_addr:
        return
    if not vrm.old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        raise SyscallError("EINVAL", "zero old length on a private mapping")
    if vrm.flags & MREMAP_DONTUNMAP and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        raise SyscallError("EINVAL", "MREMAP_DONTUNMAP of a special mapping")
    length = vrm.new_len if shrink else vrm.old_len
    if length > vma.vm_end - vrm.addr:
        raise SyscallError("EFAULT", "old range leaves the VMA")
    if vrm.new_len == vrm.old_len:
        return
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        raise SyscallError("EFAULT", "cannot grow a special mapping")


def mremap_at(m: Machine, vrm: VmaRemapStruct) -> int:
    """No new address asked for: shrink, grow in place, or (MAYMOVE) move anywhere."""
    mm, vma = vrm.mm, vrm.vma
    assert vma is not None
    if vrm.new_len == vrm.old_len:
        return vrm.addr
    if vrm.new_len < vrm.old_len:
        do_vmi_munmap(m, mm, vrm.addr + vrm.new_len, vrm.old_len - vrm.new_len)
        return vrm.addr
    delta = vrm.new_len - vrm.old_len
    if vrm.addr + vrm.old_len == vma.vm_end and vma_expandable(mm, vma, delta):
        merged = vma_merge_extend(m, vma, delta)
        if merged is None:
            raise SyscallError("ENOMEM", "cannot extend")
        return vrm.addr
    if not vrm.flags & MREMAP_MAYMOVE:
        raise SyscallError("ENOMEM", "cannot grow in place")
    vrm_set_new_addr(vrm)
    return move_vma(m, vrm)


def vma_expandable(mm: MmStruct, vma: VmAreaStruct, delta: int) -> bool:
    end = vma.vm_end + delta
    return end <= mm.task_size and not mm.vmas_in_range(vma.vm_end, end)


def vma_merge_extend(m: Machine, vma: VmAreaStruct, delta: int) -> VmAreaStruct | None:
    """``vma_merge_extend()``: ``vma`` grows by ``delta`` (a new-range merge with
    itself as prev), absorbing a compatible next that starts at the new end."""
    start = vma.vm_end
    vmg = VmaMergeStruct(
        mm=vma.vm_mm,
        start=start,
        end=start + delta,
        pgoff=vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT),
        vm_flags=vma.vm_flags,
        file=vma.vm_file,
        anon_vma=vma.anon_vma,
        prev=vma,
        next=vma.vm_mm.vma_next(vma),
    )
    return vma_merge_new_range(m, vmg)


def vrm_set_new_addr(vrm: VmaRemapStruct) -> None:
    vma = vrm.vma
    assert vma is not None
    hint = vrm.new_addr if vrm.implies_new_addr else 0
    flags = (MAP_FIXED if vrm.flags & MREMAP_FIXED else 0) | (
        MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0
    )
    vrm.new_addr = get_unmapped_area(vrm.mm, vma.vm_file, hint, vrm.new_len, flags)


def mremap_to(m: Machine, vrm: VmaRemapStruct) -> int:
    """``mremap_to()``: MREMAP_FIXED clears the destination first; a shrink
    unmaps the tail before the move."""
    mm = vrm.mm
    if vrm.flags & MREMAP_FIXED:
        do_vmi_munmap(m, mm, vrm.new_addr, vrm.new_len)
        vrm.vma = mm.vma_lookup(vrm.addr)
        if vrm.vma is None:
            raise SyscallError("EFAULT", "source unmapped by the destination unmap")
    if vrm.new_len < vrm.old_len:
        do_vmi_munmap(m, mm, vrm.addr + vrm.new_len, vrm.old_len - vrm.new_len)
        vrm.vma = mm.vma_lookup(vrm.addr)
        if vrm.vma is None:
            raise SyscallError("EFAULT", "source gone after shrinking")
        vrm.old_len = vrm.new_len
    vrm_set_new_addr(vrm)
    return move_vma(m, vrm)


def remap_move(m: Machine, vrm: VmaRemapStruct) -> int:
    """``remap_move()``: MREMAP_FIXED without a size change may move every VMA in
    the range, keeping the gaps between them; the start must be mapped."""
    mm = vrm.mm
    start, end, new_addr = vrm.addr, vrm.addr + vrm.old_len, vrm.new_addr
    result: int | None = None
    cur = start
    while cur < end:  # for_each_vma_range(): the search never starts at or past end
        vma = mm.find_vma(cur)
        if vma is None or vma.vm_start >= end:
            break
        if result is None and start < vma.vm_start:
            raise SyscallError("EFAULT", "the range starts in a hole")
        addr = max(vma.vm_start, start)
        piece_end = min(end, vma.vm_end)
        vma_end = vma.vm_end
        # anon and shmem VMAs may always be moved together (vma_multi_allowed())
        piece = VmaRemapStruct(
            mm, addr, piece_end - addr, piece_end - addr, vrm.flags, new_addr + (addr - start), vma
        )
        check_prep_vma(piece)
        moved = mremap_to(m, piece)
        if result is None:
            result = moved
        cur = vma_end  # the iterator moves past the whole source VMA
    if result is None:
        raise SyscallError("EFAULT", "nothing mapped in the range")
    return result


def move_vma(m: Machine, vrm: VmaRemapStruct) -> int:
    """``move_vma()``: copy the VMA to the new place, move the page tables, then
    unmap the source (or, with MREMAP_DONTUNMAP, leave it empty)."""
    mm, vma = vrm.mm, vrm.vma
    assert vma is not None
    if mm.map_count >= SYSCTL_MAX_MAP_COUNT - 3:
        raise SyscallError("ENOMEM", "map count limit")
    m.ksm.ksm_madvise_unmergeable(vma, vrm.addr, vrm.addr + vrm.old_len, vma.vm_flags)
    new_pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma, vma, need_rmap_locks = copy_vma(m, vma, vrm.new_addr, vrm.new_len, new_pgoff, vrm.addr)
    vrm.vma = vma
    move_page_tables(m, vma, vrm.addr, new_vma, vrm.new_addr, vrm.old_len, need_rmap_locks)
    if vrm.flags & MREMAP_DONTUNMAP:
        dontunmap_complete(m, vrm, new_vma)
    elif vrm.old_len:
        do_vmi_munmap(m, mm, vrm.addr, vrm.old_len)  # unmap_source_vma()
    return vrm.new_addr


def copy_vma(
    m: Machine, vma: VmAreaStruct, addr: int, length: int, pgoff: int, orig_addr: int
) -> tuple[VmAreaStruct, VmAreaStruct, bool]:
    """``copy_vma()``: the destination VMA, by merging with a neighbour there
    (``vma_merge_copied_range``) or as a new copy with cloned anon state.

    An unfaulted anonymous VMA takes the destination's pgoff, so it can merge
    anywhere (even with itself); a faulted one keeps its pgoff because its
    folios' indexes must stay valid.  Returns (new_vma, source, need_rmap_locks):
    the source is the merged VMA when the merge swallowed it.
    """
    mm = vma.vm_mm
    vma_start = vma.vm_start
    if vma_is_anonymous(vma) and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    vmg = VmaMergeStruct(
        mm=mm,
        start=addr,
        end=addr + length,
        pgoff=pgoff,
        vm_flags=vma.vm_flags,
        file=vma.vm_file,
        anon_vma=vma.anon_vma,
        prev=mm.vma_before(addr),
        next=mm.find_vma(addr),
        copied_from=vma,
    )
    new_vma = vma_merge_new_range(m, vmg)
    if new_vma is not None:
        if new_vma.vm_start <= vma_start < new_vma.vm_end:
            assert vma.anon_vma is None or vma is new_vma, "self-merge of a faulted VMA"
            vma = new_vma
        m.rmap.copy_vma(new_vma, vma, orig_addr, addr, length, True)
        return new_vma, vma, new_vma.vm_pgoff <= vma.vm_pgoff
    new_vma = m.vm_area_dup(vma)
    mm.vma_set_range(new_vma, addr, addr + length, pgoff)
    m.rmap.anon_vma_clone(new_vma, vma)
    mm.vma_store(new_vma)
    mm.map_count += 1
    m.rmap.copy_vma(new_vma, vma, orig_addr, addr, length, False)
    return new_vma, vma, False


def move_page_tables(
    m: Machine,
    vma: VmAreaStruct,
    old_addr: int,
    new_vma: VmAreaStruct,
    new_addr: int,
    length: int,
    need_rmap_locks: bool,
) -> None:
    """``move_page_tables()``: PTEs move; folios keep their mapping and index."""
    m.rmap.move_page_tables(vma, new_vma, need_rmap_locks)
    mm = vma.vm_mm
    pgd = mm.pgd
    shift = (new_addr - old_addr) >> PAGE_SHIFT
    if not any(True for _ in mm.iter_ptes(old_addr, old_addr + length)):
        m.rmap.drop_rmap_locks(vma, need_rmap_locks)  # get_old_pmd() found no table
        return
    lk.ptl_lock(mm)  # move_ptes(): the old and the new page table's locks
    # ptep_get_and_clear() under the lock: a walker's migration or swap entry
    # stored before we took it is what moves.
    moved = list(mm.iter_ptes(old_addr, old_addr + length))
    active = rt.current is not None
    for vpn, _ in moved:  # ptep_get_and_clear() the whole range, then set_ptes()
        if active:
            lk.pte(mm, vpn, True)
        del pgd[vpn]
    for vpn, pte in moved:
        if active:
            lk.pte(mm, vpn + shift, True)
        pgd[vpn + shift] = pte
    lk.ptl_unlock(mm)
    m.rmap.drop_rmap_locks(vma, need_rmap_locks)


def dontunmap_complete(m: Machine, vrm: VmaRemapStruct, new_vma: VmAreaStruct) -> None:
    """``dontunmap_complete()``: the source stays mapped, empty, without VM_LOCKED;
    if all of it moved, it loses its anon state (``unlink_anon_vmas``)."""
    vma = vrm.vma
    assert vma is not None
    vma.vm_flags &= ~VM_LOCKED_MASK
    if new_vma is not vma and vrm.addr == vma.vm_start and vrm.addr + vrm.old_len == vma.vm_end:
        m.rmap.unlink_anon_vmas(vma)
    m.rmap.dontunmap_complete(vma)
