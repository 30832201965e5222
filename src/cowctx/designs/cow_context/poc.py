"""``cow_context_poc``: the CoW context PoC as its C has it, function by function.

Sources (kernelorg-mirror/linux_kernel_git_ljs_linux): mm/cow_context.c @
a4ac19665445 (every function below cites it unless it says otherwise); the
hooks in mm/rmap.c @ d91a1a12c587 (``__anon_vma_prepare``, the
``anon_vma_clone``/``unlink_anon_vmas``/``anon_vma_fork`` stubs,
``__folio_set_anon``, ``folio_move_anon_rmap``), mm/mmap.c @ d2a01aae3d44
(``dup_mmap`` → ``cow_context_do_fork``), mm/vma.c @ d2a01aae3d44
(``copy_vma`` → ``cow_context_do_remap``), mm/migrate.c @ 783e3bdb5f85
(``__folio_migrate_mapping``).  Remap tracking and its dynarrays are in
:mod:`cowctx.designs.cow_context.poc_remap`.

What the model cannot follow, said once here and in every report row it
affects: the PoC has no KSM rmap (``rmap_walk_ksm`` still reads
``vma->anon_vma``, the sentinel); this design uses our KSM rmap
(:class:`~cowctx.designs.cow_context.rmap.CowContextRmap`), so any KSM figure
for ``cow_context_poc`` is ours, not the PoC's.  The machine has no failing
migration, so the stale context pointer ``__folio_migrate_mapping()`` leaves on
``-EAGAIN`` is shown by :meth:`CowContextPoc.folio_migrate_mapping_eagain`
(tests/test_cow_context_poc.py), not by a scenario.  ``vma->anon_vma``'s
``DUMMY_ANON_VMA`` is stood for by the mm's own context (non-NULL is all the
C asks of it).

Concurrency: the walk and its writers call the explorer's hooks
(:mod:`cowctx.concurrency.runtime`) where the C touches shared memory, at the
C's granularity (docs/stabilisation.md, "The PoC at the C's granularity"):
``cow_context_walk()`` holds ``rcu_read_lock()`` over the whole walk, rmap_one
callbacks included; ``traverse_contexts()`` reads the children lists as RCU
lists (``list_first_or_null_rcu()``, ``list_next_or_null_rcu()``; a context
removed by ``list_del_rcu()`` keeps its next pointer); ``walk_context()`` reads
``context->mm`` with ``READ_ONCE()`` and pins it with ``mmget_not_zero()``;
``walk_context_remap()`` reads ``vm_start`` and ``vm_pgoff`` of each VMA it
finds as two unlocked loads; writers take ``list_write_lock`` and the maple
tree's ``mas_lock``, free contexts with ``kfree_rcu()`` and the mm with
``free_mm()`` (no grace period).  None of it changes a sequential run.

``cow_context_poc[fix,...]`` repairs the named faults (:class:`PocFixes`);
``cow_context_poc[stab_rwsem]``/``[stab_seqcount]``/``[stab_refcount]`` add a
stabilisation scheme
(:mod:`cowctx.designs.cow_context.stabilise`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, cast

from cowctx.concurrency import runtime as rt
from cowctx.designs.cow_context.fixes import PocFixes
from cowctx.designs.cow_context.options import CowContextOptions
from cowctx.designs.cow_context.poc_remap import (
    EMPTY,
    WALK_DEFAULT_STACK_SIZE,
    Dynarrays,
    Entry,
    Kmalloc,
    RemapMt,
    Simple,
    stack_multi,
)
from cowctx.designs.cow_context.rmap import (
    CHILDREN_LOCK,
    COW_CONTEXT,
    MAPLE_NODE,
    RCU,
    REMAP_ENTRY,
    REMAP_LOCK,
    CowContextRmap,
    _ctxm,
)
from cowctx.designs.cow_context.stabilise import Stabilisation
from cowctx.designs.cow_context.structs import CowContext
from cowctx.metrics.ledger import LockHold, ObjectKind
from cowctx.mm.constants import PAGE_SHIFT, VM_MAYSHARE, VM_SHARED
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import MmStruct, VmAreaStruct, vma_is_anonymous, vma_pages
from cowctx.rmap.protocol import RmapWalkControl

if TYPE_CHECKING:
    from cowctx.mm.vma import VmaMergeStruct, VmaPrepare

REMAP_DYNARRAY = ObjectKind("remap_dynarray", 0)
"""kmalloc'd ``struct dynarray`` owned by remap entries (bytes: next row)."""
REMAP_DYNARRAY_BYTES = ObjectKind("remap_dynarray_bytes", 1)
"""Their kmalloc size classes, summed (8 B header + 8 B per slot, rounded up)."""
WALK_SCRATCH = ObjectKind("walk_scratch_atomic", 0)
"""GFP_ATOMIC dynarrays a walk allocates when a pgoff has more than 16 offsets
(``walk_context()``'s stack scratch is full), freed at the end of the visit."""
WALK_SCRATCH_BYTES = ObjectKind("walk_scratch_atomic_bytes", 1)


class CowContextPoc(CowContextRmap):
    """The PoC (no fixes); subclasses made by :func:`cow_context_poc_design`
    carry :class:`PocFixes`."""

    name: ClassVar[str] = "cow_context_poc"
    fixes: ClassVar[PocFixes] = PocFixes()
    stab: ClassVar[Stabilisation] = Stabilisation()
    options = CowContextOptions(file_remap_entries=True, sentinel_merge=True)
    """What the base class reads: no ``vm_anon_pgoff`` (a folio of a private
    file VMA is indexed by file offset, ``linear_page_index()``) and the
    sentinel's merge rule (``vma_is_fork_child()`` is true of every faulted VMA:
    its ``anon_vma_chain`` is empty, never singular)."""
    remaps_may_pile_up: ClassVar[bool] = True
    object_kinds = (
        COW_CONTEXT,
        REMAP_ENTRY,
        MAPLE_NODE,
        REMAP_DYNARRAY,
        REMAP_DYNARRAY_BYTES,
        WALK_SCRATCH,
        WALK_SCRATCH_BYTES,
    )

    def __init__(self, machine):
        super().__init__(machine)
        self.dyn = Dynarrays(
            Kmalloc(self._kmalloc_report),
            self.fixes.dynarray_insert,
            rcu_realloc=self.stab.rcu_free,
        )
        self._dontunmap: tuple[VmAreaStruct, object] | None = None
        self._adjust: dict[int, tuple[int, int, int]] = {}
        self._sections: dict[tuple[int, int], int] = {}
        """(thread, context) -> depth of a scheme's write section."""
        self._forking: set[int] = set()
        """Child contexts whose fork holds the parent's write section."""
        self._reached: dict[int, list[tuple[CowContext, int]]] = {}
        """Thread -> the contexts its walk reached (and their counts)."""
        self._mremap: set[tuple[int, int]] = set()
        """(thread, context) of an mremap between copy_vma and drop_rmap_locks."""

    def _kmalloc_report(self, kind: str, count: int, nbytes: int) -> None:
        names = (
            ("remap_dynarray", "remap_dynarray_bytes")
            if kind == "remap"
            else ("walk_scratch_atomic", "walk_scratch_atomic_bytes")
        )
        for name, n in zip(names, (count, nbytes), strict=True):
            if n > 0:
                self.ledger.alloc(name, n)
            else:
                self.ledger.free(name, -n)

    def _account(self, ctx: CowContext) -> None:
        """Maple-tree ranges and nodes (dynarrays report themselves)."""
        entries = len(ctx.remaps)
        counts = (entries, 0, -(-entries // 16))
        for kind, old, new in (
            ("remap_entry", ctx.ledger_counts[0], counts[0]),
            ("maple_node", ctx.ledger_counts[2], counts[2]),
        ):
            if new > old:
                self.ledger.alloc(kind, new - old)
            elif new < old:
                self.ledger.free(kind, old - new)
        ctx.ledger_counts = counts

    def _remaps(self, ctx: CowContext) -> RemapMt:
        return cast(RemapMt, ctx.remaps)

    # --- contexts ---------------------------------------------------------------------

    def mm_init(self, mm: MmStruct) -> None:
        """``mm_init_cow_context()``: a root context with an empty ``remap_mt``."""
        super().mm_init(mm)
        ctx = _ctxm(mm)
        ctx.remaps = RemapMt(self.dyn, f"C{ctx.ctx_id}.remap_mt")  # type: ignore[assignment]

    def dup_mmap(self, mm: MmStruct, oldmm: MmStruct) -> None:
        """``dup_cow_context()``, at the end of a successful ``dup_mmap()``:
        ``list_add_rcu()`` puts the child at the *head* of the parent's
        children, so walks visit the newest child first."""
        child, parent = _ctxm(mm), _ctxm(oldmm)
        child.parent = parent
        self._write_begin(parent, "dup_cow_context")
        hold = self._lock(CHILDREN_LOCK, "spin", "dup_cow_context")
        rt.lock("spinlock", parent.list_write_lock)
        rt.point("store", parent, "children", True)  # list_add_rcu() at the head
        parent.children.insert(0, child)
        rt.unlock("spinlock", parent.list_write_lock)
        hold.objects = 1
        self.ledger.unlock(hold)
        rt.point("store", parent, "refcount", True)  # get_cow_context()
        parent.refcount += 1
        self._write_end(parent)
        if child.ctx_id in self._forking:  # the section anon_vma_fork() opened
            self._forking.discard(child.ctx_id)
            self._write_end(parent)

    def put_cow_context(self, ctx: CowContext) -> None:
        """``put_cow_context()`` → ``__put_cow_context()``: at refcount 0,
        ``delete_child_from_parent()`` (``list_del_rcu()`` under the parent's
        ``list_write_lock``; the context keeps its next pointer for readers),
        ``delete_remaps()`` under ``rcu_read_lock()`` (each dynarray by
        ``kfree_rcu_mightsleep()``), ``kfree_rcu()`` of the context, and cascade
        up.  (The base class's order of ledger updates is kept.)"""
        rt.point("store", ctx, "refcount", True)
        ctx.refcount -= 1
        current: CowContext | None = ctx
        while current is not None and current.refcount == 0:
            parent = current.parent
            if parent is not None:
                self._write_begin(parent, "__put_cow_context")
                hold = self._lock(CHILDREN_LOCK, "spin", "__put_cow_context")
                rt.lock("spinlock", parent.list_write_lock)
                rt.point("store", parent, "children", True)
                siblings = parent.children
                i = siblings.index(current)
                current.rcu_next = siblings[i + 1] if i + 1 < len(siblings) else None
                del siblings[i]
                rt.unlock("spinlock", parent.list_write_lock)
                hold.objects = 1
                self.ledger.unlock(hold)
                self._write_end(parent)
            rt.rcu_read_lock()
            current.remaps.clear()  # delete_remaps()
            rt.rcu_read_unlock()
            self._account(current)
            current.freed = True
            del self.contexts[current.ctx_id]
            self.ledger.free("cow_context")
            rt.kfree_rcu("cow_context", current)
            if parent is not None:
                rt.point("store", parent, "refcount", True)  # refcount_dec_and_test()
                parent.refcount -= 1
            current = parent

    def mmput(self, mm: MmStruct) -> None:
        """``__mmdrop()`` (kernel/fork.c): ``drop_cow_context()`` then
        ``free_mm()``.  While a walker holds the mm (``mmget_not_zero()``),
        the kernel's teardown waits for its ``mmput_async()``; the model runs
        ``exit_mmap()`` at once (the machine's, like a munmap of everything) and
        defers only this, to the walker's put, after its RCU section."""
        if self._mm_refs.get(mm.mm_id):
            self._mmdrop_deferred[mm.mm_id] = mm
            return
        self.__mmdrop(mm)

    def __mmdrop(self, mm: MmStruct) -> None:
        ctx = _ctxm(mm)
        self._write_begin(ctx, "drop_cow_context")
        rt.point("store", ctx, "mm", True)  # WRITE_ONCE(context->mm, NULL)
        ctx.mm = None
        self._write_end(ctx)
        self.put_cow_context(ctx)
        if self.stab.rcu_free:  # the scheme: the mm outlives RCU readers
            rt.kfree_rcu("mm_struct", mm)
        else:
            rt.slab_free("mm_struct", mm, False)  # free_mm(): kmem_cache_free()

    # mmget_not_zero() / mmput_async(): the corrected design's (CowContextRmap),
    # which are the C's: atomic_inc_not_zero(&mm->mm_users), and the walker's put
    # that runs a deferred __mmdrop() once the walk is done with the mm.

    # --- the stabilisation schemes' write sections (stabilise.py) ---------------------

    @staticmethod
    def _who() -> int:
        ex = rt.current
        return ex.running.tid if ex is not None and ex.running is not None else -1

    def _write_begin(self, ctx: CowContext, site: str) -> None:
        """A scheme's write section on ``ctx`` (nothing in the PoC)."""
        if not self.stab.any:
            return
        if not self._section_enter(ctx):
            return
        if self.stab.stab_rwsem:
            rt.lock("cow_context", ctx, "write")
            self.ledger.unlock(self._lock("cow_context.rwsem", "write", site))
        elif self.stab.stab_refcount:
            rt.may_sleep("waiting for the context's walkers")
            rt.wait_until("writer", ctx, "writing", lambda: not ctx.writing)
            rt.point("store", ctx, "writing", True)
            ctx.writing = True
            rt.wait_until("walkers", ctx, "walkers", lambda: ctx.walkers == 0)
            rt.point("load", ctx, "walkers")
            self.ledger.unlock(self._lock("cow_context.walkers", "write", site))
        else:
            rt.point("store", ctx, "seq", True)  # write_seqcount_begin()
            ctx.seq += 1
            self.ledger.unlock(self._lock("cow_context.seqcount", "write", site))

    def _write_end(self, ctx: CowContext) -> None:
        if not self.stab.any:
            return
        if not self._section_leave(ctx):
            return
        if self.stab.stab_rwsem:
            rt.unlock("cow_context", ctx, "write")
        elif self.stab.stab_refcount:
            rt.point("store", ctx, "writing", True)
            ctx.writing = False
        else:
            rt.point("store", ctx, "seq", True)  # write_seqcount_end()
            ctx.seq += 1

    # --- should_track_remap() and the remap entry points -------------------------------

    @staticmethod
    def should_track_anon_remap(vma: VmAreaStruct) -> bool:
        """``should_track_anon_remap()``: faulted anonymous VMA, offset != 0."""
        if not vma_is_anonymous(vma) or vma.anon_vma is None:
            return False
        return vma.vm_pgoff != vma.vm_start >> PAGE_SHIFT

    @staticmethod
    def should_track_map_private_remap(vma: VmAreaStruct) -> bool:
        """``should_track_map_private_remap()``: faulted private file VMA whose
        file offset is not its virtual page (nearly always)."""
        if vma_is_anonymous(vma) or vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return False
        if vma.anon_vma is None:
            return False
        return vma.vm_pgoff != vma.vm_start >> PAGE_SHIFT

    def should_track_remap(self, vma: VmAreaStruct) -> bool:
        """``should_track_remap()``: implies the VMA's offset is not 0."""
        return self.should_track_anon_remap(vma) or self.should_track_map_private_remap(vma)

    def cow_context_vma_unmap(self, vma: VmAreaStruct) -> None:
        """``cow_context_vma_unmap()`` (from ``remove_vma()``)."""
        if not self.should_track_remap(vma):
            return
        offset = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
        self.find_and_unmap_existing(_ctxm(vma.vm_mm), vma.vm_pgoff, vma_pages(vma), offset)

    def cow_context_vma_adjust(
        self, vma: VmAreaStruct, old_pgoff: int, old_pages: int, offset: int
    ) -> None:
        """``cow_context_vma_adjust()``: remove the VMA's offset over its old
        range, add it over the new one.  No caller in the PoC; with
        ``adjust_on_change`` it runs from ``vma_complete()`` (the old range was
        noted at ``vma_prepare()``)."""
        if not self.should_track_remap(vma):
            return
        ctx = _ctxm(vma.vm_mm)
        self.find_and_unmap_existing(ctx, old_pgoff, old_pages, offset)
        self.add_new_remap(ctx, vma.vm_pgoff, vma_pages(vma), offset)

    def __cow_context_do_remap(self, vma: VmAreaStruct, pgoff_orig: int, is_remap: bool) -> None:
        """``__cow_context_do_remap()``; ``vma`` is after the move.  Since
        ``should_track_remap()`` requires a non-zero new offset, the
        ``!new_offset`` branch (a move home) is dead: moving home returns early
        and leaves the old offset's entries.  A move rewrites every entry holding
        the old offset, whole (``find_and_remap_existing()``) and adds a new
        range only if there was none; ``remap_adds`` always adds."""
        pgoff = vma.vm_pgoff
        nr_pages = vma_pages(vma)
        old_offset = pgoff_orig - pgoff
        new_offset = (vma.vm_start >> PAGE_SHIFT) - pgoff
        ctx = _ctxm(vma.vm_mm)
        if not self.should_track_remap(vma):
            return
        if not old_offset and not new_offset:
            return
        if not new_offset:  # unreachable: should_track_remap() said new_offset != 0
            self.find_and_unmap_existing(ctx, pgoff, nr_pages, old_offset)
            return
        if (
            is_remap
            and not self.fixes.remap_adds
            and self.find_and_remap_existing(ctx, pgoff, nr_pages, old_offset, new_offset)
        ):
            return
        self.add_new_remap(ctx, pgoff, nr_pages, new_offset)

    def cow_context_do_remap(self, vma: VmAreaStruct, orig_addr: int) -> None:
        """``cow_context_do_remap()``: ``orig_addr`` is the source VMA's
        ``vm_start`` (``copy_vma()`` passes ``vma->vm_start``), not the moved
        range's, so a partial move computes a wrong old offset."""
        self.__cow_context_do_remap(vma, orig_addr >> PAGE_SHIFT, True)

    def cow_context_do_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``cow_context_do_fork()``: the child's VMA into the child's tree, then
        the parent's private-file entry re-added (``no_fork_readd`` skips it)."""
        self.__cow_context_do_remap(vma, vma.vm_start >> PAGE_SHIFT, False)
        if not self.fixes.no_fork_readd:
            self.cow_context_do_map_private_cow(pvma)

    def cow_context_do_map_private_cow(self, vma: VmAreaStruct) -> None:
        """``cow_context_do_map_private_cow()``: track a faulted private file VMA
        at its (file-offset) offset."""
        if not self.should_track_map_private_remap(vma):
            return
        offset = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
        self.add_new_remap(_ctxm(vma.vm_mm), vma.vm_pgoff, vma_pages(vma), offset)

    # --- remap tree writers (cow_context.c) ------------------------------------------

    def store_new_remaps_entry(
        self, ctx: CowContext, index: int, last: int, remaps: Entry, site: str
    ) -> None:
        """``store_new_remaps_entry()``: one maple-tree store under ``mas_lock``."""
        hold = self._lock(REMAP_LOCK, "spin", site)
        hold.vmas, hold.objects = 1, 1
        tree = self._remaps(ctx)
        rt.lock("spinlock", tree)  # mas_lock()
        tree.mas_store(index, last, remaps)
        rt.unlock("spinlock", tree)
        self.ledger.unlock(hold)
        self._account(ctx)

    def find_and_remap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int, new_offset: int
    ) -> bool:
        """``find_and_remap_existing()``: every entry overlapping the range that
        holds ``old_offset`` gets ``new_offset`` instead, over the entry's whole
        range (a simple entry is re-stored over ``[index, last]``; a dynarray
        slot is overwritten in place, unsorted).  Returns whether one did."""
        self._write_begin(ctx, "find_and_remap_existing")
        try:
            return self._find_and_remap_existing(ctx, pgoff, nr_pages, old_offset, new_offset)
        finally:
            self._write_end(ctx)

    def _find_and_remap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int, new_offset: int
    ) -> bool:
        last = pgoff + nr_pages - 1
        tree = self._remaps(ctx)
        found = False
        for remaps, index, e_last in list(tree.mas_for_each(pgoff, last)):
            for i in range(self.dyn.nr_remaps(remaps)):
                if self.dyn.get_remap(remaps, i) != old_offset:
                    continue
                found = True
                if isinstance(remaps, Simple):
                    self.store_new_remaps_entry(
                        ctx, index, e_last, Simple(new_offset), "find_and_remap_existing"
                    )
                else:
                    self.dyn.set_multi_remap(remaps, i, new_offset)
        return found

    def find_and_unmap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int
    ) -> None:
        """``find_and_unmap_existing()``: remove ``old_offset`` from every entry
        overlapping the range, whole (no split: the rest of an entry reaching
        past the range loses it too); ``split_on_unmap`` splits first.  Under
        ``rcu_read_lock()``; the shift down is in place (``set_multi_remap()``
        per slot) before ``shrink_remaps()`` publishes the smaller ``nr``."""
        self._write_begin(ctx, "find_and_unmap_existing")
        last = pgoff + nr_pages - 1
        if self.fixes.split_on_unmap:
            self._split_edges(ctx, pgoff, last)
        tree = self._remaps(ctx)
        rt.rcu_read_lock()
        for remaps, index, e_last in tree.mas_for_each(pgoff, last):
            unmapping = False
            for i in range(self.dyn.nr_remaps(remaps)):
                curr = self.dyn.get_remap(remaps, i)
                if unmapping:
                    self.dyn.set_multi_remap(remaps, i - 1, curr)
                elif curr == old_offset:
                    unmapping = True
            if unmapping:
                self.shrink_remaps(ctx, index, e_last, remaps)
        rt.rcu_read_unlock()
        self._write_end(ctx)

    def shrink_remaps(self, ctx: CowContext, index: int, last: int, remaps: Entry) -> None:
        """``shrink_remaps()``: one offset fewer (under ``concurrent_unmap_lock``):
        more than two stay a dynarray one shorter; two become simple; one
        becomes empty (re-stored, and the old dynarray freed)."""
        hold = self._lock("cow_context.concurrent_unmap_lock", "spin", "shrink_remaps")
        hold.objects = 1
        rt.lock("spinlock", ctx.unmap_lock)
        nr = self.dyn.nr_remaps(remaps)
        if nr > 2:
            assert remaps is not None and not isinstance(remaps, Simple)
            self.dyn.dynarray_shrink(remaps.arr)
            rt.unlock("spinlock", ctx.unmap_lock)
            self.ledger.unlock(hold)
            return
        new: Entry = Simple(self.dyn.get_remap(remaps, 0)) if nr == 2 else EMPTY
        rt.unlock("spinlock", ctx.unmap_lock)
        self.ledger.unlock(hold)
        rt.rcu_read_unlock()  # "Now we're allocating so must drop the lock."
        self.store_new_remaps_entry(ctx, index, last, new, "shrink_remaps")
        self.dyn.free_remaps(remaps)
        rt.rcu_read_lock()

    def split_remap(self, ctx: CowContext, pgoff: int, pgoff_split: int) -> None:
        """``split_remap()``: the part of the entry holding ``pgoff`` on the far
        side of it (``[pgoff_split, pgoff - 1]`` below, ``[pgoff + 1,
        pgoff_split]`` above) gets a copy (``dup_remaps()``)."""
        remaps, _, _ = self._remaps(ctx).mas_walk(pgoff)
        assert remaps is not None
        dup = self.dyn.dup_remaps(remaps, "GFP_KERNEL")
        if pgoff_split < pgoff:
            self.store_new_remaps_entry(ctx, pgoff_split, pgoff - 1, dup, "split_remap")
        else:
            self.store_new_remaps_entry(ctx, pgoff + 1, pgoff_split, dup, "split_remap")

    def _split_edges(self, ctx: CowContext, pgoff: int, last: int) -> None:
        """``add_new_remap()``'s two splits: no entry crosses ``pgoff`` or
        ``last``."""
        tree = self._remaps(ctx)
        remaps, index, _ = tree.mas_walk(pgoff)
        if remaps is not None and index < pgoff:
            self.split_remap(ctx, pgoff, index)
        remaps, _, e_last = tree.mas_walk(last)
        if remaps is not None and e_last > last:
            self.split_remap(ctx, last, e_last)

    def add_overlapping_remap(
        self, ctx: CowContext, pgoff: int, last: int, new_offset: int
    ) -> None:
        """``add_overlapping_remap()``: fill each gap of ``[pgoff, last]`` with a
        simple entry, append ``new_offset`` to each entry (re-stored if the
        append made a new one)."""
        tree = self._remaps(ctx)
        pgoff_prev = pgoff
        for remaps, left, right in tree.mas_for_each(pgoff, last):
            if left > pgoff_prev:
                self.store_new_remaps_entry(
                    ctx, pgoff_prev, left - 1, Simple(new_offset), "add_overlapping_remap"
                )
            new = self.dyn.append_remap_offset(remaps, new_offset, "GFP_KERNEL")
            if not self.dyn.same_remaps(new, remaps):
                self.store_new_remaps_entry(ctx, left, right, new, "add_overlapping_remap")
            pgoff_prev = right + 1
        if pgoff_prev <= last:
            self.store_new_remaps_entry(
                ctx, pgoff_prev, last, Simple(new_offset), "add_overlapping_remap"
            )

    def add_new_remap(self, ctx: CowContext, pgoff: int, nr_pages: int, new_offset: int) -> None:
        """``add_new_remap()``: split the entries crossing either end, then
        ``add_overlapping_remap()``."""
        self._write_begin(ctx, "add_new_remap")
        last = pgoff + nr_pages - 1
        self._split_edges(ctx, pgoff, last)
        self.add_overlapping_remap(ctx, pgoff, last, new_offset)
        self._write_end(ctx)

    # --- VMA hooks ------------------------------------------------------------------

    def anon_vma_prepare(self, vma: VmAreaStruct) -> None:
        """``__anon_vma_prepare()`` (rmap.c): the sentinel, then
        ``cow_context_do_map_private_cow()``."""
        vma.anon_vma = _ctxm(vma.vm_mm)
        self.cow_context_do_map_private_cow(vma)

    def anon_vma_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``dup_mmap()`` (mmap.c @ d2a01aae): ``cow_context_do_fork(tmp, mpnt)``
        for every VMA not wiped on fork, faulted or not, then the
        ``anon_vma_fork()`` stub (the sentinel is copied).  A scheme opens the
        parent's write section here, before ``copy_page_range()``, and
        :meth:`dup_mmap` closes it once the child is on the list."""
        child = _ctxm(vma.vm_mm)
        if self.stab.any and child.ctx_id not in self._forking:
            self._forking.add(child.ctx_id)
            self._write_begin(_ctxm(pvma.vm_mm), "dup_mmap")
        self.cow_context_do_fork(vma, pvma)
        vma.anon_vma = _ctxm(vma.vm_mm) if pvma.anon_vma is not None else None

    def anon_vma_clone(self, dst: VmAreaStruct, src: VmAreaStruct) -> None:
        """The ``anon_vma_clone()`` stub: the sentinel is copied, nothing else."""
        dst.anon_vma = _ctxm(dst.vm_mm) if src.anon_vma is not None else None

    def vma_prepare(self, vp: VmaPrepare) -> None:
        """(``adjust_on_change``) note each changing VMA's range and offset.  A
        scheme's write section from here to :meth:`vma_complete`."""
        self._write_begin(_ctxm(vp.vma.vm_mm), "vma_prepare")
        if self.fixes.adjust_on_change:
            for vma in (vp.vma, vp.adj_next):
                if vma is not None:
                    offset = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
                    self._adjust[vma.vm_id] = (vma.vm_pgoff, vma_pages(vma), offset)

    def vma_complete(self, vp: VmaPrepare) -> None:
        """The PoC has no cow-context call in split, merge, expand or shrink.
        With ``adjust_on_change``: ``cow_context_vma_adjust()`` for the changed
        VMAs and ``cow_context_do_map_private_cow``-like tracking of a split's
        new piece (its range left an entry the adjust removed)."""
        for removed in (vp.remove, vp.remove2):
            if removed is not None:
                self._merged_away.add(removed.vm_id)
        try:
            self._vma_complete(vp)
        finally:
            self._write_end(_ctxm(vp.vma.vm_mm))

    def _vma_complete(self, vp: VmaPrepare) -> None:
        if not self.fixes.adjust_on_change:
            return
        for vma in (vp.vma, vp.adj_next):
            if vma is not None and vma.vm_id in self._adjust:
                self.cow_context_vma_adjust(vma, *self._adjust.pop(vma.vm_id))
        if vp.insert is not None and self.should_track_remap(vp.insert):
            ins = vp.insert
            offset = (ins.vm_start >> PAGE_SHIFT) - ins.vm_pgoff
            self.add_new_remap(_ctxm(ins.vm_mm), ins.vm_pgoff, vma_pages(ins), offset)

    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        """The ``unlink_anon_vmas()`` stub (``vma->anon_vma = NULL``), then
        ``remove_vma()``'s ``cow_context_vma_unmap()``, which therefore never
        finds anything to track: entries are never removed.  With
        ``remove_entries`` the unmap comes first (a VMA merged away gives up
        nothing: its range now belongs to the VMA that absorbed it)."""
        ctx = _ctxm(vma.vm_mm)
        self._write_begin(ctx, "unlink_anon_vmas")
        merged = vma.vm_id in self._merged_away
        self._merged_away.discard(vma.vm_id)
        if self.fixes.remove_entries and not merged:
            self.cow_context_vma_unmap(vma)
        self._dontunmap = (vma, vma.anon_vma)
        vma.anon_vma = None
        if not merged:
            self.cow_context_vma_unmap(vma)  # remove_vma(): a no-op, anon_vma is NULL
        self._write_end(ctx)

    def dontunmap_complete(self, vma: VmAreaStruct) -> None:
        """``dontunmap_complete()`` under the PoC's config no longer unlinks
        anon state: the source keeps its sentinel (the machine unlinked it as
        Linux 6.18 does, so it is restored here, with its tracking if
        ``remove_entries`` took it away)."""
        if self._dontunmap is not None and self._dontunmap[0] is vma:
            vma.anon_vma = self._dontunmap[1]
            if self.fixes.remove_entries and self.should_track_remap(vma):
                offset = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
                self.add_new_remap(_ctxm(vma.vm_mm), vma.vm_pgoff, vma_pages(vma), offset)
        self._dontunmap = None

    def copy_vma(
        self,
        new_vma: VmAreaStruct,
        vma: VmAreaStruct,
        orig_addr: int,
        new_addr: int,
        length: int,
        merged: bool,
    ) -> None:
        """``copy_vma()`` (vma.c @ d2a01aae): ``cow_context_do_remap(new_vma,
        vma->vm_start)`` for a new VMA only (``faulted_in_anon_vma``: not an
        unfaulted anonymous VMA); a merge at the destination makes no call
        (``track_dest_merge`` makes it).  A scheme's write section from here to
        :meth:`drop_rmap_locks` (the PTEs moved)."""
        if self.stab.any:
            ctx = _ctxm(new_vma.vm_mm)
            self._write_begin(ctx, "copy_vma")
            self._mremap.add((self._who(), ctx.ctx_id))
        if merged and not self.fixes.track_dest_merge:
            return
        if vma_is_anonymous(vma) and vma.anon_vma is None:
            return
        self.cow_context_do_remap(new_vma, vma.vm_start)

    def drop_rmap_locks(self, vma: VmAreaStruct, need_rmap_locks: bool) -> None:
        """``move_page_tables()`` is done: a scheme closes the section
        :meth:`copy_vma` opened."""
        ctx = _ctxm(vma.vm_mm)
        key = (self._who(), ctx.ctx_id)
        if key in self._mremap:
            self._mremap.discard(key)
            self._write_end(ctx)

    # --- merge rules (Linux 6.18 is_mergeable_anon_vma() over the sentinel) ------------

    def is_mergeable_anon_vma(self, vmg: VmaMergeStruct, merge_next: bool) -> bool:
        """``is_mergeable_anon_vma()`` unchanged (vma.c @ d2a01aae), over the
        sentinel: ``vma_is_fork_child()`` is true of every VMA (its
        ``anon_vma_chain`` is empty, never singular) and false of NULL.  So a
        faulted range never joins an unfaulted VMA (case 1 refuses a
        ``middle`` or ``copied_from``, case 2 refuses every faulted target), two
        faulted VMAs always may (the sentinels are equal), and
        ``vma_merge_extend()`` (no ``middle``, no ``copied_from``) lets a faulted
        VMA grow over an unfaulted next."""
        tgt = vmg.next if merge_next else vmg.prev
        assert tgt is not None
        tgt_anon, src_anon = tgt.anon_vma is not None, vmg.anon_vma is not None
        if not tgt_anon and src_anon:
            return vmg.middle is None and vmg.copied_from is None
        return src_anon or not tgt_anon  # case 2 refuses; case 3: equal sentinels

    def are_anon_vmas_compatible(self, vma1: VmAreaStruct, vma2: VmAreaStruct) -> bool:
        """``are_anon_vmas_compatible()``: NULL or equal; sentinels are equal."""
        return True

    # --- folios -------------------------------------------------------------------------

    def folio_set_anon(
        self, folio: Folio, vma: VmAreaStruct, address: int, exclusive: bool = True
    ) -> None:
        """``__folio_set_anon()`` (rmap.c @ d91a1a12, COW_CONTEXT_ANON_RMAP):
        ``exclusive`` is ignored, the folio takes the faulting mm's context
        (``__folio_set_anon_cow()``), even for a swap-in of a page other mms
        share; ``shared_folio_root`` takes the root context then.  The index is
        ``linear_page_index()`` (file offset in a private file VMA)."""
        ctx = _ctxm(vma.vm_mm)
        if not exclusive and self.fixes.shared_folio_root:
            ctx = self.root_of(ctx)
        self.get_cow_context(ctx)
        folio.mapping = ctx
        folio.index = self.linear_anon_page_index(vma, address)

    # folio_move_anon_rmap(): the base class (context of the reusing mm, if another).

    def folio_migrate(self, dst: Folio, src: Folio) -> None:
        """``__folio_migrate_mapping()`` that succeeds: the new folio takes the
        context, with a reference; the old folio's goes with it (the machine
        frees it as no longer anon)."""
        dst.mapping, dst.index = src.mapping, src.index

    def folio_migrate_mapping_eagain(self, dst: Folio, src: Folio) -> None:
        """``__folio_migrate_mapping()`` returning ``-EAGAIN`` (refcount freeze
        failed): ``folio_set_cow_context(newfolio, context)`` has already run,
        with no reference; the caller then frees ``dst``.  With ``migrate_ref``
        nothing is set before the point of no return."""
        if not self.fixes.migrate_ref:
            dst.mapping = src.mapping

    # --- rmap walk (cow_context_walk) -----------------------------------------------

    def rmap_walk(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``cow_context_walk()``: ``traverse_contexts(folio->cow_context,
        walk_context)`` under RCU."""
        for _ in self.walk_steps(folio, rwc):
            pass

    def walk_steps(self, folio: Folio, rwc: RmapWalkControl) -> Iterator[tuple[str, object]]:
        """The walk, yielding before each context visit.  ``cow_context_walk()``
        holds ``rcu_read_lock()`` from the first ``folio->cow_context`` read to
        the end, over every rmap_one callback (its "TODO: We shouldn't be
        holding the RCU lock here").  With ``stab_seqcount`` the walk runs
        again while a context's count moved; with ``stab_rwsem`` it holds each
        context's rwsem for read instead of RCU."""
        while True:
            hold = self._lock(RCU, "read", "cow_context_walk")
            reached: list[tuple[CowContext, int]] = []
            self._reached[self._who()] = reached
            if self.stab.rcu_walk:
                rt.rcu_read_lock()
            try:
                rt.point("load", folio, "mapping")
                for ctx in self.traverse_contexts(cast(CowContext, folio.mapping)):
                    yield "context", ctx
                    if not self.walk_context(ctx, folio, rwc, hold):
                        break
            finally:
                again = self._walk_finish(reached)
                self.ledger.unlock(hold)
            if not again:
                return
            self.ledger.unlock(self._lock("cow_context.seqcount", "retry", "cow_context_walk"))

    def _walk_enter(self, ctx: CowContext) -> None:
        """The walk reaches ``ctx`` (before reading its children or remaps):
        ``down_read()`` (rwsem) or ``read_seqcount_begin()`` (seqcount)."""
        if not self.stab.any:
            return
        reached = self._reached.get(self._who())
        if self.stab.stab_rwsem:
            rt.lock("cow_context", ctx, "read")
            self.ledger.unlock(self._lock("cow_context.rwsem", "read", "cow_context_walk"))
        elif self.stab.stab_refcount:  # pin, then back off while a writer is there
            while True:
                rt.point("store", ctx, "walkers", True)
                ctx.walkers += 1
                rt.point("load", ctx, "writing")
                if not ctx.writing:
                    break
                rt.point("store", ctx, "walkers", True)
                ctx.walkers -= 1
                rt.wait_until("writer", ctx, "writing", lambda: not ctx.writing)
            self.ledger.unlock(self._lock("cow_context.walkers", "read", "cow_context_walk"))
        else:  # read_seqcount_begin(): spin while odd, return an even count
            while True:
                rt.wait_until("seqcount", ctx, "seq", lambda: ctx.seq % 2 == 0)
                rt.point("load", ctx, "seq")
                if ctx.seq % 2 == 0:
                    break
        if reached is not None:
            reached.append((ctx, ctx.seq))

    def _walk_leave(self, ctx: CowContext) -> None:
        """The walk is done with ``ctx`` and its subtree (post-order): nothing
        for the PoC and the schemes here; the range lock drops its node."""

    def _walk_finish(self, reached: list[tuple[CowContext, int]]) -> bool:
        """End of one pass: release what :meth:`_walk_enter` took (or re-check
        the counts: True means run again), leave RCU, then run the ``__mmdrop()``
        a walker's ``mmput_async()`` left to a worker."""
        again = False
        if self.stab.stab_rwsem:
            for ctx, _ in reversed(reached):
                rt.unlock("cow_context", ctx, "read")
        elif self.stab.stab_refcount:  # children first: the parent's pin keeps them
            for ctx, _ in reversed(reached):
                rt.point("store", ctx, "walkers", True)
                ctx.walkers -= 1
        elif self.stab.stab_seqcount:
            for ctx, seq in reached:
                rt.point("load", ctx, "seq")  # read_seqcount_retry()
                if ctx.seq != seq:
                    again = True
        if self.stab.rcu_walk:
            rt.rcu_read_unlock()
        pending = rt.local().pop("mmdrop", None)
        if isinstance(pending, list):
            for mm in pending:
                self.__mmdrop(mm)
        return again

    def traverse_contexts(self, root: CowContext) -> Iterator[CowContext]:
        """``traverse_contexts()``: the contexts in the order it calls back on
        them: the root first, then a post-order depth-first walk of its
        descendants, first child first (the newest: ``list_add_rcu()`` adds at
        the head).  Each step reads a children list once
        (``list_first_or_null_rcu()``, ``list_next_or_null_rcu()``); a context
        taken off its parent's list meanwhile still leads to the sibling that
        followed it then.  The caller stops at the first visit that returns
        false."""
        self._walk_enter(root)
        yield root
        parent: CowContext | None = None
        curr = root
        while True:
            if curr is not parent:
                rt.point("load", curr, "children")
                first = curr.children[0] if curr.children else None
                if first is not None:
                    self._walk_enter(first)
                    curr = first
                    continue
            if curr is root:
                return
            yield curr
            self._walk_leave(curr)
            parent = curr.parent
            assert parent is not None
            rt.point("load", parent, "children")
            siblings = parent.children
            if curr in siblings:
                i = siblings.index(curr)
                nxt = siblings[i + 1] if i + 1 < len(siblings) else None
            else:  # list_del_rcu() left curr->siblings.next as it was
                nxt = curr.rcu_next
            if nxt is not None:
                self._walk_enter(nxt)
                curr = nxt
            else:
                curr = parent

    def walk_context(
        self, ctx: CowContext, folio: Folio, rwc: RmapWalkControl, hold: LockHold
    ) -> bool:
        """``walk_context()``: ``READ_ONCE(context->mm)``, ``mmget_not_zero()``
        (skip a dead context); note whether the folio is exclusive, probe offset
        0, and if it was and still is exclusive end the whole walk (before any
        remap offset is probed, in *every* live context visited: "TODO: race vs.
        fork + unmap in parent"); else gather the offsets of the entries at the
        folio's pgoff into the 16-slot stack scratch (``GFP_ATOMIC`` beyond) and
        probe each; ``mmput_async()``."""
        rwc.cost.cost["anchors"] += 1
        hold.objects += 1
        rt.point("load", ctx, "mm")
        mm = ctx.mm
        if mm is None:
            return True
        if not self.mmget_not_zero(mm):
            return True
        try:
            return self._walk_context(ctx, mm, folio, rwc, hold)
        finally:
            self.mmput_async(mm)

    def _walk_context(
        self, ctx: CowContext, mm: MmStruct, folio: Folio, rwc: RmapWalkControl, hold: LockHold
    ) -> bool:
        rt.point("load", folio, "mapcount")
        rt.walk_resample()
        was_exclusive = folio.mapcount <= 1  # !folio_maybe_mapped_shared()
        if not self.walk_context_remap(mm, folio, rwc, 0, hold):
            return False
        rt.point("load", folio, "mapcount")
        rt.walk_resample()
        if was_exclusive and folio.mapcount <= 1 and not self.fixes.no_exclusive_abort:
            return False
        unique: Entry = stack_multi(WALK_DEFAULT_STACK_SIZE)
        scanned = 0
        for remaps, _, _ in self._remaps(ctx).mas_for_each(folio.index, folio.index):
            scanned += 1
            for i in range(self.dyn.nr_remaps(remaps)):
                unique = self.dyn.append_remap_offset(
                    unique, self.dyn.get_remap(remaps, i), "GFP_ATOMIC"
                )
        rwc.cost.cost["remap_entries"] += scanned
        ret = True
        n = self.dyn.nr_remaps(unique)
        rwc.cost.cost["offsets"] += n
        for i in range(n):
            if not self.walk_context_remap(mm, folio, rwc, self.dyn.get_remap(unique, i), hold):
                ret = False
                break
        self.dyn.free_remaps(unique)
        return ret

    def walk_context_remap(
        self, mm: MmStruct, folio: Folio, rwc: RmapWalkControl, offset: int, hold: LockHold
    ) -> bool:
        """``walk_context_remap()``: every VMA of the context's mm over the
        folio's pages at ``offset`` (``for_each_vma_range()`` under RCU, the
        mm's VMA tree as it is when the walk looks) whose own offset is
        ``offset`` goes to ``rwc_walk_one()`` (faulted or not: there is no
        ``anon_vma`` check).  "TODO: VMA is not stabilised": ``vm_start`` and
        ``vm_pgoff`` are two ``READ_ONCE()`` loads of a VMA nothing locks (the
        VMA cache is ``SLAB_TYPESAFE_BY_RCU`` since commit ef626c1698c1 ("mm:
        make vma cache SLAB_TYPESAFE_BY_RCU") (v6.15), so the memory stays a
        VMA, whose fields may change), and ``vm_start`` is read again for the
        address."""
        start = (folio.index + offset) << PAGE_SHIFT
        end = start + (1 << PAGE_SHIFT)
        rwc.cost.cost["vma_lookups"] += 1  # one VMA-tree walk per offset
        if start < 0 or end > mm.task_size:
            return True
        rt.point("load", mm, "mm_mt")
        if rt.active():
            rt.walk_unmapping(mm.mm_id, lambda a: bool(mm.vmas_in_range(a, a + 1)))
        for vma in mm.vmas_in_range(start, end):
            rt.point("load", vma, "range")  # READ_ONCE(vma->vm_start)
            vm_start = vma.vm_start
            rt.point("load", vma, "pgoff")  # READ_ONCE(vma->vm_pgoff)
            if (vm_start >> PAGE_SHIFT) - vma.vm_pgoff != offset:
                continue
            hold.vmas += 1
            rt.point("load", vma, "range")  # max(vma->vm_start, range_start)
            if not self.rwc_walk_one(folio, vma, max(vma.vm_start, start), rwc):
                return False
        return True

    @staticmethod
    def rwc_walk_one(folio: Folio, vma: VmAreaStruct, address: int, rwc: RmapWalkControl) -> bool:
        """``rwc_walk_one()``: ``invalid_vma``, ``rmap_one``, ``done``."""
        if rwc.invalid_vma is not None and rwc.invalid_vma(vma):
            return True
        if not rwc.rmap_one(folio, vma, address):
            return False
        return not (rwc.done is not None and rwc.done(folio))

    # --- checks -------------------------------------------------------------------------

    def expected_remaps(self, mm: MmStruct) -> dict[int, frozenset[int]]:
        """What ``cow_context_verify_vma()`` needs: every VMA
        ``should_track_remap()`` accepts, over its pgoff range."""
        out: dict[int, set[int]] = {}
        for vma in mm.vmas():
            if self.should_track_remap(vma):
                off = (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff
                for pgoff in range(vma.vm_pgoff, vma.vm_pgoff + vma_pages(vma)):
                    out.setdefault(pgoff, set()).add(off)
        return {k: frozenset(v) for k, v in out.items()}


def cow_context_poc_design(fixes: frozenset[str]) -> type[CowContextPoc]:
    """The PoC with exactly ``fixes`` repaired (see :class:`PocFixes`)."""
    return _poc_design(fixes)


def _unknown(fixes: frozenset[str]) -> set[str]:
    return set(fixes) - set(PocFixes.names()) - set(Stabilisation.names())


_CACHE: dict[frozenset[str], type[CowContextPoc]] = {}


def _poc_design(fixes: frozenset[str]) -> type[CowContextPoc]:
    unknown = _unknown(fixes)
    if unknown:
        raise KeyError(
            f"unknown cow_context_poc fix(es): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(PocFixes.names() + Stabilisation.names())}"
        )
    if not fixes:
        return CowContextPoc
    if fixes not in _CACHE:
        order = PocFixes.names() + Stabilisation.names()
        name = f"cow_context_poc[{','.join(f for f in order if f in fixes)}]"
        stab = Stabilisation(**dict.fromkeys(fixes & set(Stabilisation.names()), True))
        if len(stab.enabled()) > 1:
            raise KeyError(f"cow_context_poc: {', '.join(stab.enabled())} are exclusive")
        _CACHE[fixes] = type(
            "CowContextPocFixed",
            (stab.design_base(CowContextPoc),),
            {
                "name": name,
                "fixes": PocFixes(**dict.fromkeys(fixes & set(PocFixes.names()), True)),
                "stab": stab,
            },
        )
    return _CACHE[fixes]
