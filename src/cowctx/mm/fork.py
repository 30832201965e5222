"""Fork, exit and exec: ``dup_mmap()`` (mm/mmap.c in 6.18), ``exit_mmap()``,
``exec_mmap()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import VM_DONTCOPY, VM_LOCKED_MASK, VM_WIPEONFORK
from cowctx.mm.lru import lru_add_drain
from cowctx.mm.memory import copy_page_range, zap_pte_range
from cowctx.mm.mm_types import MmStruct, TaskStruct, VmAreaStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


def dup_mmap(m: Machine, mm: MmStruct, oldmm: MmStruct) -> None:
    """``dup_mmap()``: walk the parent's VMAs in ascending order.

    VM_DONTCOPY VMAs are left out; VM_WIPEONFORK ones are copied without anon
    state or PTEs; every other VMA goes through ``anon_vma_fork()`` and then
    ``copy_page_range()``.  VM_LOCKED/VM_LOCKONFAULT are not inherited.  A KSM
    parent's child is registered with KSM too (``ksm_fork()``).
    """
    # mmap_write_lock(oldmm) and, since Linux kernel commit fb49c455323f ("fork:
    # lock VMAs of the parent process when forking") (in v6.5), vma_start_write()
    # on each of them; the child's mm is invisible to other threads.
    held = lk.mmap_write_lock(oldmm, lock_vmas="fork_vma_lock" not in m.rmap.reverts)
    try:
        _dup_mmap(m, mm, oldmm)
    finally:
        lk.flush_tlb_mm(oldmm)  # the PTEs copy_page_range() write-protected
        lk.mmap_write_unlock(oldmm, held)


def _dup_mmap(m: Machine, mm: MmStruct, oldmm: MmStruct) -> None:
    if oldmm.mm_id in m.ksm.mm_slots:
        m.ksm.ksm_enter(mm)
    for mpnt in oldmm.vmas():
        if mpnt.vm_flags & VM_DONTCOPY:
            continue
        tmp = m.vm_area_dup(mpnt, mm)
        tmp.vm_mm = mm
        if mpnt.vm_flags & VM_WIPEONFORK:
            tmp.anon_vma = None
        else:
            m.rmap.anon_vma_fork(tmp, mpnt)
        tmp.vm_flags &= ~VM_LOCKED_MASK
        mm.vma_store(tmp)
        mm.map_count += 1
        if not mpnt.vm_flags & VM_WIPEONFORK:
            copy_page_range(m, tmp, mpnt)
    m.rmap.dup_mmap(mm, oldmm)


def copy_process(m: Machine, parent: TaskStruct, comm: str, pid: int) -> TaskStruct:
    """``copy_process()`` without CLONE_VM: a new task with a duplicated mm."""
    assert parent.mm is not None and not parent.exit_state
    mm = m.mm_alloc()
    child = TaskStruct(pid, comm, mm, parent)
    mm.owner = child
    mm.mmap_base, mm.start_brk, mm.brk = parent.mm.mmap_base, parent.mm.start_brk, parent.mm.brk
    dup_mmap(m, mm, parent.mm)
    parent.children.append(child)
    return child


def exit_mmap(m: Machine, mm: MmStruct) -> None:
    """``exit_mmap()``: zap every PTE, then ``free_pgtables()`` unlinks every VMA's
    anon state in ascending order, then the VMAs are freed.  It starts with
    ``lru_add_drain()`` (mm/lru.py)."""
    lru_add_drain(m)
    vmas = mm.vmas()
    held = lk.mmap_write_lock(mm)
    try:
        _exit_mmap(m, mm, vmas)
    finally:
        lk.mmap_write_unlock(mm, held)
    m.rmap.mmput(mm)


def _exit_mmap(m: Machine, mm: MmStruct, vmas: list[VmAreaStruct]) -> None:
    for vma in vmas:
        zap_pte_range(m, mm, vma.vm_start, vma.vm_end)
    assert not mm.pgd, "PTEs outside every VMA"
    for vma in vmas:
        m.rmap.unlink_anon_vmas(vma)
    for vma in vmas:
        mm.vma_erase(vma)
        m.vm_area_free(vma)
    mm.map_count = 0


def mmput(m: Machine, mm: MmStruct) -> None:
    """``mmput()``: an atomic decrement of ``mm_users``, which a lockless
    ``mmget_not_zero()`` (the PoC's walk) races with."""
    if rt.current is not None:
        rt.point("store", mm, "mm_users", True)
    mm.mm_users -= 1
    if mm.mm_users == 0:
        exit_mmap(m, mm)


def do_exit(m: Machine, task: TaskStruct) -> None:
    """``do_exit()``: drop the mm and hand the children to the subreaper."""
    assert not task.exit_state
    mm, task.mm = task.mm, None
    if mm is not None:
        mmput(m, mm)
    task.exit_state = True
    if task.parent is not None and task in task.parent.children:
        task.parent.children.remove(task)
    for child in task.children:
        child.parent = None
    task.children = []


def exec_mmap(m: Machine, task: TaskStruct) -> None:
    """``exec_mmap()``: a fresh mm replaces the old one, which is dropped."""
    old = task.mm
    assert old is not None
    mm = m.mm_alloc()
    mm.owner = task
    task.mm = mm
    mmput(m, old)
