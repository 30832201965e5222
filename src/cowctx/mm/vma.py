"""mm/vma.c: VMA split, merge, expand and modify, as Linux 6.18 decides them.

The anon-rmap parts of each decision (``is_mergeable_anon_vma``,
``anon_vma_clone``, the interval-tree updates in ``vma_prepare`` /
``vma_complete``, ``unlink_anon_vmas`` of a removed VMA) go through the
design's hooks.  ``vm_ops->close`` never blocks a merge here: no modelled VMA
has one (anonymous and shmem VMAs have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_SHIFT, SYSCTL_MAX_MAP_COUNT, VM_IGNORE_MERGE, VM_SPECIAL
from cowctx.mm.errors import SyscallError
from cowctx.mm.file import File
from cowctx.mm.mm_types import MmStruct, VmAreaStruct, vma_pages

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass(slots=True)
class VmaMergeStruct:
    """``struct vma_merge_struct`` (the fields this model needs)."""

    mm: MmStruct
    start: int
    end: int
    pgoff: int
    vm_flags: int
    file: File | None
    anon_vma: object | None = None
    prev: VmAreaStruct | None = None
    middle: VmAreaStruct | None = None
    next: VmAreaStruct | None = None
    target: VmAreaStruct | None = None
    copied_from: VmAreaStruct | None = None
    just_expand: bool = False
    remove_middle: bool = False
    remove_next: bool = False
    adjust_middle_start: bool = False
    adjust_next_start: bool = False


@dataclass(slots=True)
class VmaPrepare:
    """``struct vma_prepare``: who changes range (``vma``, ``adj_next``), who is
    inserted (a split's new VMA) and who is removed (merges)."""

    vma: VmAreaStruct
    adj_next: VmAreaStruct | None = None
    remove: VmAreaStruct | None = None
    remove2: VmAreaStruct | None = None
    insert: VmAreaStruct | None = None

    @property
    def anon_vma(self) -> object | None:
        """The anon_vma ``vma_prepare()`` locks: ``vma``'s, else ``adj_next``'s."""
        if self.vma.anon_vma is not None:
            return self.vma.anon_vma
        return self.adj_next.anon_vma if self.adj_next is not None else None


# --- vma_prepare / vma_complete -------------------------------------------------------


def vma_prepare(m: Machine, vp: VmaPrepare) -> None:
    m.rmap.vma_prepare(vp)


def vma_complete(m: Machine, vp: VmaPrepare) -> None:
    """``vma_complete()``: insert a split's new VMA, finish the anon update, then
    dispose of removed VMAs (``anon_vma_merge()`` is ``unlink_anon_vmas()``)."""
    mm = vp.vma.vm_mm
    if vp.insert is not None:
        mm.vma_store(vp.insert)
        mm.map_count += 1
    m.rmap.vma_complete(vp)
    for removed in (vp.remove, vp.remove2):
        if removed is None:
            continue
        if removed.anon_vma is not None:
            m.rmap.unlink_anon_vmas(removed)
        mm.map_count -= 1
        m.vm_area_free(removed)


# --- split ------------------------------------------------------------------------------


def __split_vma(m: Machine, vma: VmAreaStruct, addr: int, new_below: bool) -> VmAreaStruct:
    """``__split_vma()``: a new VMA takes the part below ``addr`` (``new_below``) or
    from ``addr`` up; the original struct keeps the rest.  Returns the new VMA."""
    assert vma.vm_start < addr < vma.vm_end, (vma, hex(addr))
    new = m.vm_area_dup(vma)
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
    m.rmap.anon_vma_clone(new, vma)
    vp = VmaPrepare(vma=vma, insert=new)
    vma_prepare(m, vp)
    mm = vma.vm_mm
    if new_below:
        pgoff = vma.vm_pgoff + ((addr - new.vm_start) >> PAGE_SHIFT)
        mm.vma_set_range(vma, addr, vma.vm_end, pgoff)
    else:
        mm.vma_set_range(vma, vma.vm_start, addr, vma.vm_pgoff)
    vma_complete(m, vp)
    return new


def split_vma(m: Machine, vma: VmAreaStruct, addr: int, new_below: bool) -> VmAreaStruct:
    """``split_vma()``: as ``__split_vma`` but refuses beyond ``sysctl_max_map_count``."""
    if vma.vm_mm.map_count >= SYSCTL_MAX_MAP_COUNT:
        raise SyscallError("ENOMEM", "map count limit")
    return __split_vma(m, vma, addr, new_below)


# --- mergeability ---------------------------------------------------------------------


def is_mergeable_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """``is_mergeable_vma()``: flags (ignoring ``VM_IGNORE_MERGE``) and file equal.
    Mempolicy, userfaultfd context and anon_vma_name are always equal here."""
    tgt = vmg.next if merge_next else vmg.prev
    assert tgt is not None
    if (tgt.vm_flags ^ vmg.vm_flags) & ~VM_IGNORE_MERGE:
        return False
    return tgt.vm_file is vmg.file


def can_vma_merge_before(m: Machine, vmg: VmaMergeStruct) -> bool:
    """``can_vma_merge_before()``: the range may sit in front of ``vmg.next``."""
    assert vmg.next is not None
    pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
    return (
        is_mergeable_vma(vmg, True)
        and m.rmap.is_mergeable_anon_vma(vmg, True)
        and vmg.next.vm_pgoff == vmg.pgoff + pglen
    )


def can_vma_merge_after(m: Machine, vmg: VmaMergeStruct) -> bool:
    """``can_vma_merge_after()``: the range may follow ``vmg.prev``."""
    assert vmg.prev is not None
    return (
        is_mergeable_vma(vmg, False)
        and m.rmap.is_mergeable_anon_vma(vmg, False)
        and vmg.prev.vm_pgoff + vma_pages(vmg.prev) == vmg.pgoff
    )


def can_vma_merge_left(m: Machine, vmg: VmaMergeStruct) -> bool:
    return vmg.prev is not None and vmg.prev.vm_end == vmg.start and can_vma_merge_after(m, vmg)


def can_vma_merge_right(m: Machine, vmg: VmaMergeStruct, can_merge_left: bool) -> bool:
    """``can_vma_merge_right()``; with a left merge too, prev and next must also be
    compatible with each other."""
    nxt = vmg.next
    if nxt is None or vmg.end != nxt.vm_start or not can_vma_merge_before(m, vmg):
        return False
    if not can_merge_left:
        return True
    assert vmg.prev is not None
    return m.rmap.are_anon_vmas_compatible(vmg.prev, nxt)


# --- merge ---------------------------------------------------------------------------


def dup_anon_vma(m: Machine, dst: VmAreaStruct, src: VmAreaStruct) -> None:
    """``dup_anon_vma()``: an expanding ``dst`` without anon state takes ``src``'s,
    to cover anon pages it imports."""
    if src.anon_vma is not None and dst.anon_vma is None:
        dst.anon_vma = src.anon_vma
        m.rmap.anon_vma_clone(dst, src)


def commit_merge(m: Machine, vmg: VmaMergeStruct) -> None:
    """``commit_merge()``: apply the ranges a merge decided, under ``vma_prepare``."""
    assert vmg.target is not None
    vma = vmg.middle if vmg.adjust_next_start else vmg.target
    assert vma is not None
    removes = []
    if vmg.remove_middle:
        removes.append(vmg.middle)
    if vmg.remove_next:
        removes.append(vmg.next)
    if vmg.adjust_middle_start:
        adjust = vmg.middle
    elif vmg.adjust_next_start:
        adjust = vmg.next
    else:
        adjust = None
    vp = VmaPrepare(
        vma=vma,
        adj_next=adjust,
        remove=removes[0] if removes else None,
        remove2=removes[1] if len(removes) > 1 else None,
    )
    vma_prepare(m, vp)
    mm = vmg.mm
    for removed in removes:
        assert removed is not None
        mm.vma_erase(removed)  # the maple-tree store overwrites them
    mm.vma_set_range(vma, vmg.start, vmg.end, vmg.pgoff)
    if adjust is not None:  # vmg_adjust_set_range()
        if vmg.adjust_middle_start:
            pgoff = adjust.vm_pgoff + ((vmg.end - adjust.vm_start) >> PAGE_SHIFT)
        else:
            pgoff = adjust.vm_pgoff - ((adjust.vm_start - vmg.end) >> PAGE_SHIFT)
        mm.vma_set_range(adjust, vmg.end, adjust.vm_end, pgoff)
    vma_complete(m, vp)


def vma_merge_existing_range(m: Machine, vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """``vma_merge_existing_range()``: ``[start, end)`` of ``vmg.middle`` gets new
    attributes (``vmg.vm_flags``); merge it into prev and/or next if it may.

    Returns the VMA now covering the range, or None (the caller splits).
    """
    middle = vmg.middle
    assert middle is not None
    start, end = vmg.start, vmg.end
    left_side = start == middle.vm_start
    right_side = end == middle.vm_end
    if vmg.vm_flags & VM_SPECIAL or (not left_side and not right_side):
        return None
    mm = vmg.mm
    vmg.prev = mm.vma_prev(middle) if left_side else None
    merge_left = left_side and can_vma_merge_left(m, vmg)
    if right_side:
        vmg.next = mm.vma_next(middle)
        merge_right = can_vma_merge_right(m, vmg, merge_left)
    else:
        vmg.next = None
        merge_right = False
    if not merge_left and not merge_right:
        return None
    merge_both = merge_left and merge_right
    vmg.remove_middle = left_side and right_side
    vmg.remove_next = merge_both
    prev, nxt = vmg.prev, vmg.next
    if merge_right:
        vmg.target = nxt
    if merge_left:
        vmg.target = prev
    if merge_both:
        assert prev is not None and nxt is not None
        vmg.start, vmg.end, vmg.pgoff = prev.vm_start, nxt.vm_end, prev.vm_pgoff
        dup_anon_vma(m, prev, nxt if nxt.anon_vma is not None else middle)
    elif merge_left:
        assert prev is not None
        vmg.start, vmg.pgoff = prev.vm_start, prev.vm_pgoff
        if not vmg.remove_middle:
            vmg.adjust_middle_start = True
        dup_anon_vma(m, prev, middle)
    else:
        assert nxt is not None
        pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
        if vmg.remove_middle:
            vmg.end = nxt.vm_end
            vmg.pgoff = nxt.vm_pgoff - pglen
        else:
            vmg.adjust_next_start = True
            vmg.start, vmg.end, vmg.pgoff = middle.vm_start, start, middle.vm_pgoff
        dup_anon_vma(m, nxt, middle)
    commit_merge(m, vmg)
    return vmg.target


def vma_expand(m: Machine, vmg: VmaMergeStruct) -> None:
    """``vma_expand()``: grow ``vmg.target`` over ``[start, end)``, removing next
    if the range reaches its end; anon state follows what is absorbed."""
    target, nxt = vmg.target, vmg.next
    assert target is not None
    remove_next = nxt is not None and target is not nxt and vmg.end == nxt.vm_end
    if remove_next:
        assert nxt is not None
        dup_anon_vma(m, target, nxt)
    if vmg.copied_from is not None:
        dup_anon_vma(m, target, vmg.copied_from)
    vmg.remove_next = remove_next
    commit_merge(m, vmg)


def vma_merge_new_range(m: Machine, vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """``vma_merge_new_range()``: a new range (mmap, brk, mremap's destination)
    between ``vmg.prev`` and ``vmg.next`` joins one or both if it may."""
    prev, nxt = vmg.prev, vmg.next
    if vmg.vm_flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    can_merge_left = can_vma_merge_left(m, vmg)
    can_merge_right = not vmg.just_expand and can_vma_merge_right(m, vmg, can_merge_left)
    if can_merge_right:
        assert nxt is not None
        vmg.end = nxt.vm_end
        vmg.target = nxt
    if can_merge_left:
        assert prev is not None
        vmg.start, vmg.target, vmg.pgoff = prev.vm_start, prev, prev.vm_pgoff
    if vmg.target is None:
        return None
    vma_expand(m, vmg)
    return vmg.target


def vma_modify(m: Machine, vmg: VmaMergeStruct) -> VmAreaStruct:
    """``vma_modify()``: merge if possible, else split so that exactly
    ``[start, end)`` can be changed.  Returns that VMA."""
    merged = vma_merge_existing_range(m, vmg)
    if merged is not None:
        return merged
    vma = vmg.middle
    assert vma is not None
    if vma.vm_start < vmg.start:
        split_vma(m, vma, vmg.start, True)
    if vma.vm_end > vmg.end:
        split_vma(m, vma, vmg.end, False)
    return vma


def vma_modify_flags(
    m: Machine, vma: VmAreaStruct, start: int, end: int, new_flags: int
) -> VmAreaStruct:
    """``vma_modify_flags()``: give ``[start, end)`` of ``vma`` the flags ``new_flags``
    (the caller then sets them on the returned VMA)."""
    pgoff = vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT)
    vmg = VmaMergeStruct(
        mm=vma.vm_mm,
        start=start,
        end=end,
        pgoff=pgoff,
        vm_flags=new_flags,
        file=vma.vm_file,
        anon_vma=vma.anon_vma,
        middle=vma,
    )
    return vma_modify(m, vmg)
