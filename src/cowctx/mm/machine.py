"""The machine: tasks, mms, physical memory, files, swap, and the syscall entry points.

One :class:`Machine` runs one anonymous rmap design (``rmap``), which it drives
only through the hooks of :class:`~cowctx.rmap.protocol.AnonRmap`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cowctx.concurrency import runtime as rt
from cowctx.metrics.ledger import Ledger, ObjectKind
from cowctx.mm import fork as _fork
from cowctx.mm import locking as _lk
from cowctx.mm import madvise as _madvise
from cowctx.mm import mmap as _mmap
from cowctx.mm import mprotect as _mprotect
from cowctx.mm import mremap as _mremap
from cowctx.mm.constants import (
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    SYS_MADVISE,
    SYS_MMAP,
    SYS_MPROTECT,
    SYS_MREMAP,
    SYS_MUNMAP,
)
from cowctx.mm.content import ContentSource
from cowctx.mm.file import File
from cowctx.mm.folio import ZERO_PFN, Folio, pte_pfn, pte_present
from cowctx.mm.ksm import Ksm
from cowctx.mm.lru import CpuFbatches
from cowctx.mm.memory import handle_mm_fault
from cowctx.mm.mm_types import MmStruct, TaskStruct, VmAreaStruct
from cowctx.mm.swap import SwapSpace
from cowctx.rmap.protocol import AnonRmap

VM_AREA_STRUCT = ObjectKind("vm_area_struct", 192)


class Machine:
    """A machine running Linux 6.18's mm with one anon rmap design plugged in."""

    def __init__(self, rmap: Callable[[Machine], AnonRmap]) -> None:
        self.ledger = Ledger()
        size = getattr(rmap, "vma_size", VM_AREA_STRUCT.size)
        self.ledger.register(
            ObjectKind("vm_area_struct", size, estimate=size != VM_AREA_STRUCT.size)
        )
        zero = Folio(ZERO_PFN, 0)
        self.mem_map: dict[int, Folio] = {ZERO_PFN: zero}
        self.zero_folio = zero
        self._next_pfn = ZERO_PFN + 1
        self._next_pid = 1
        self._next_mm_id = 1
        self._next_vma_id = 1
        self._next_file_id = 1
        self.tasks: dict[int, TaskStruct] = {}
        self.files: dict[str, File] = {}
        self.contents = ContentSource()
        self.swap = SwapSpace()
        self.swap_enabled = False
        """Whether reclaim may swap anon folios out (the reference machine has no
        swap, so MADV_PAGEOUT leaves anon folios alone); the ``reclaim`` client
        always uses the model's swap."""
        self.fbatches = CpuFbatches()
        """The per-CPU LRU batches of the machine's one CPU (mm/lru.py)."""
        self.ksm = Ksm(self)
        self.rmap: AnonRmap = rmap(self)

    # --- operation bracketing ---------------------------------------------------------

    @contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Label ledger records with ``name`` for the duration of one operation."""
        outer = self.ledger.op
        self.ledger.op = name
        try:
            yield
        finally:
            self.ledger.op = outer

    # --- physical memory --------------------------------------------------------------

    def alloc_folio(self, content: int) -> Folio:
        rt.point("alloc", self.mem_map, "folio", True)
        pfn = self._next_pfn
        self._next_pfn = pfn + 1
        folio = Folio(pfn, content)
        self.mem_map[pfn] = folio
        return folio

    def free_folio(self, folio: Folio) -> None:
        """The last reference to a folio is gone (an anon folio unmapped, a
        page-cache folio dropped from its cache)."""
        assert folio.mapcount == 0 and folio.swapcache is None, folio
        del self.mem_map[folio.pfn]
        folio.freed = True
        if folio.anon and not folio.ksm:
            self.rmap.folio_free(folio)

    def filemap_get_folio(self, file: File, index: int) -> Folio:
        """``shmem_get_folio()``: the page-cache folio, created on first use."""
        folio = file.i_pages.get(index)
        if folio is None:
            folio = self.alloc_folio(file.initial_content(index))
            folio.mapping = file
            folio.index = index
            file.i_pages[index] = folio
        return folio

    def create_file(self, name: str, pages: int) -> File:
        """A shmem file with distinct, non-uniform content on every page."""
        if name in self.files:
            raise ValueError(f"file {name!r} exists")
        base = self.contents.unique_block(pages)
        file = File(name, pages, lambda index: base + index)
        self.files[name] = file
        for index in range(pages):  # written when created: every page is cached, dirty
            self.filemap_get_folio(file, index).dirty = True
        return file

    def shmem_zero_setup(self, pages: int) -> File:
        """``shmem_zero_setup()``: the shmem object behind MAP_SHARED|MAP_ANONYMOUS."""
        name = f"dev/zero#{self._next_file_id}"
        self._next_file_id += 1
        return File(name, pages, lambda index: 0, anon_shared=True)

    # --- VMAs and mms -----------------------------------------------------------------

    def mm_alloc(self) -> MmStruct:
        if rt.current is not None:  # the mm_struct cache: ids in allocation order
            rt.point("store", self, "mm_id", True)
        mm = self.rmap.mm_type(self._next_mm_id)
        self._next_mm_id += 1
        self.rmap.mm_init(mm)
        return mm

    def vm_area_alloc(self, mm: MmStruct) -> VmAreaStruct:
        vma = self.rmap.vma_type(mm, self._next_vma_id)
        self._next_vma_id += 1
        self.ledger.alloc("vm_area_struct")
        return vma

    def vm_area_dup(self, old: VmAreaStruct, mm: MmStruct | None = None) -> VmAreaStruct:
        """``vm_area_dup()``: a copy of ``old`` (anon_vma pointer included), empty lists."""
        new = self.vm_area_alloc(mm or old.vm_mm)
        new.copy_fields_from(old)
        return new

    def vm_area_free(self, vma: VmAreaStruct) -> None:
        self.ledger.free("vm_area_struct")

    # --- tasks ------------------------------------------------------------------------

    def alloc_pid(self) -> int:
        """``alloc_pid()``: each pid once, taken in one step (no scheduling point
        between the read and the increment, so concurrent forks get distinct pids;
        the point makes two allocations dependent: which child gets which pid)."""
        if rt.current is not None:
            rt.point("store", self, "pid", True)
        pid = self._next_pid
        self._next_pid += 1
        return pid

    def spawn(self, comm: str) -> TaskStruct:
        """A new process with an empty address space (as after exec)."""
        task = TaskStruct(self.alloc_pid(), comm, None, None)
        with self.operation("exec"):
            task.mm = self.mm_alloc()
            task.mm.owner = task
        self.tasks[task.pid] = task
        return task

    def fork(self, parent: TaskStruct, comm: str) -> TaskStruct:
        """``fork()``: the child gets a copy of the parent's mm (``dup_mmap``).
        The pid is taken first (the kernel's ``alloc_pid()`` comes after
        ``copy_mm()``, but the model's fork cannot fail, so the order shows
        only in which pid a concurrent fork gets)."""
        pid = self.alloc_pid()
        with self.operation("fork"):
            child = _fork.copy_process(self, parent, comm, pid)
        self.tasks[child.pid] = child
        return child

    def exit(self, task: TaskStruct) -> None:
        """``do_exit()``: the mm goes (``exit_mmap``), children are reparented."""
        with self.operation("exit"):
            _fork.do_exit(self, task)

    def execve(self, task: TaskStruct) -> None:
        """``execve()`` of the same program: the task gets a fresh mm."""
        with self.operation("exec"):
            _fork.exec_mmap(self, task)

    def live_tasks(self) -> list[TaskStruct]:
        return [t for t in self.tasks.values() if not t.exit_state]

    def live_mms(self) -> list[MmStruct]:
        return [t.mm for t in self.tasks.values() if not t.exit_state and t.mm is not None]

    # --- syscalls ---------------------------------------------------------------------

    def mmap(
        self,
        task: TaskStruct,
        addr: int,
        length: int,
        prot: int,
        flags: int,
        file: File | None = None,
        pgoff: int = 0,
    ) -> int:
        mm = _mm(task)
        held = _lk.mmap_write_lock(mm)
        try:
            with self.operation("mmap"):
                result = _mmap.do_mmap(self, mm, addr, length, prot, flags, file, pgoff)
        finally:
            _lk.mmap_write_unlock(mm, held)
        return result

    def munmap(self, task: TaskStruct, addr: int, length: int) -> None:
        mm = _mm(task)
        held = _lk.mmap_write_lock(mm)
        try:
            with self.operation("munmap"):
                _mmap.do_vmi_munmap(self, mm, addr, length)
        finally:
            _lk.mmap_write_unlock(mm, held)

    def mprotect(self, task: TaskStruct, addr: int, length: int, prot: int) -> None:
        mm = _mm(task)
        held = _lk.mmap_write_lock(mm)
        try:
            with self.operation("mprotect"):
                _mprotect.do_mprotect_pkey(self, mm, addr, length, prot)
        finally:
            _lk.mmap_write_unlock(mm, held)

    def mremap(
        self, task: TaskStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int = 0
    ) -> int:
        mm = _mm(task)
        held = _lk.mmap_write_lock(mm)
        try:
            with self.operation("mremap"):
                result = _mremap.do_mremap(self, mm, addr, old_len, new_len, flags, new_addr)
        finally:
            _lk.mmap_write_unlock(mm, held)
        return result

    def madvise(self, task: TaskStruct, addr: int, length: int, advice: int) -> None:
        mm = _mm(task)
        held = _lk.mmap_write_lock(mm)  # for writing whatever the advice: fewer interleavings
        try:
            with self.operation("madvise"):
                _madvise.do_madvise(self, mm, addr, length, advice)
        finally:
            _lk.mmap_write_unlock(mm, held)

    def syscall(self, task: TaskStruct, nr: int, args: tuple[int, ...], file: File | None) -> int:
        """The model's ``sys_call_table``: syscall ``nr`` (x86-64) with the arguments the
        kernel would get; ``file`` is what the fd argument of an mmap refers to."""
        if nr == SYS_MMAP:
            addr, length, prot, flags, _fd, offset = args
            return self.mmap(task, addr, length, prot, flags, file, offset >> PAGE_SHIFT)
        if nr == SYS_MUNMAP:
            self.munmap(task, *args)
        elif nr == SYS_MPROTECT:
            self.mprotect(task, *args)
        elif nr == SYS_MREMAP:
            return self.mremap(task, *args)
        elif nr == SYS_MADVISE:
            self.madvise(task, *args)
        else:
            raise ValueError(f"syscall {nr} is not modelled")
        return 0

    def brk(self, task: TaskStruct, brk: int) -> int:
        with self.operation("brk"):
            result = _mmap.do_brk(self, _mm(task), brk)
        return result

    # --- user accesses ----------------------------------------------------------------

    def access(self, task: TaskStruct, addr: int, write: bool, value: int | None = None) -> int:
        """A load or store of the byte at ``addr``; returns the page's content.

        A store fills the page with ``value`` (a byte) or, without one, stamps
        it with content no other page has.  Faults as the kernel would; raises
        :class:`~cowctx.mm.errors.AccessFault` for SIGSEGV/SIGBUS.
        """
        return self._access_pages(task, addr & PAGE_MASK, 1, write, value)

    def access_range(
        self, task: TaskStruct, addr: int, pages: int, write: bool, value: int | None = None
    ) -> None:
        """Touch ``pages`` pages from ``addr`` in order (stops at the first fault)."""
        self._access_pages(task, addr & PAGE_MASK, pages, write, value)

    def _access_pages(
        self, task: TaskStruct, addr: int, pages: int, write: bool, value: int | None
    ) -> int:
        """The fault loop behind :meth:`access` and :meth:`access_range`; returns
        the last page's content.  Kept lean: it is the model's hottest path."""
        mm = _mm(task)
        ledger = self.ledger
        outer, ledger.op = ledger.op, "fault"
        content = 0
        try:
            for _ in range(pages):
                if rt.current is None:
                    folio = handle_mm_fault(self, mm, addr, write)
                elif write:  # the MMU first; it faults when it must
                    folio = _lk.user_store(self, mm, addr)
                else:
                    folio = _lk.handle_mm_fault_locked(self, mm, addr, write)
                if folio is not None:
                    if write:
                        folio.content = self.contents.unique() if value is None else value
                        folio.dirty = True
                    content = folio.content
                else:
                    content = 0
                addr += PAGE_SIZE
        finally:
            ledger.op = outer
        return content

    # --- hooks the mm code calls into other subsystems --------------------------------

    def reclaim_folio(self, folio: Folio, writeback_pending: bool = False) -> bool:
        """``shrink_folio_list()`` for one anon folio: swap it out.  With
        ``writeback_pending`` (MADV_PAGEOUT to a disk: the write is asynchronous) the
        unmapped folio stays in the swap cache instead of being freed."""
        from cowctx.clients.reclaim import reclaim_folio

        return reclaim_folio(self, folio, writeback_pending).freed

    # --- views ------------------------------------------------------------------------

    def folio_at(self, task: TaskStruct, addr: int) -> Folio | None:
        """The folio mapped at ``addr`` in ``task`` (None: nothing, or the zero page)."""
        pte = _mm(task).pgd.get(addr >> PAGE_SHIFT)
        if pte is None or not pte_present(pte):
            return None
        folio = self.mem_map[pte_pfn(pte)]
        return None if folio.pfn == ZERO_PFN else folio


def _mm(task: TaskStruct) -> MmStruct:
    if task.exit_state or task.mm is None:
        raise ValueError(f"{task} has no mm")
    return task.mm
