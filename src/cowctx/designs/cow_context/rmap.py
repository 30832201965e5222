"""The CoW context anonymous reverse map (LSF/MM 2026 proposal).

One context per mm; a folio points to the context of the mm that created it
(or last reused it exclusively); an rmap walk visits the folio's context and
every descendant, probing at offset 0 and at each offset remap tracking holds
for the folio's page offset, and confirms through the page table.  No
hierarchy-wide lock: only short spinlocks (a context's children list, remap
entry writes) and an RCU read section around the walk are recorded.

The switches of :class:`CowContextOptions` restore the PoC's behaviour one by
one; with all of them off this is our corrected design.

Concurrency (docs/stabilisation.md section 6): the walk and its writers call the
explorer's hooks (:mod:`cowctx.concurrency.runtime`) at the granularity of the
PoC's C (:mod:`.poc`): the children list under ``list_write_lock``, contexts
freed by ``kfree_rcu()``, the remap tree's stores under its lock, ``context->mm``
with ``mmget_not_zero()``, each VMA's ``vm_start`` and ``vm_pgoff`` as separate
loads.  The walk is stabilised by the *walker reference count* (the PoC's
``stab_refcount`` scheme, :mod:`.stabilise`, built in): a walker pins each
context it reaches (``walkers``) and backs off while a writer is in it; every
writer of what a walker reads opens a write section on the context that owns it
and waits for its walkers to drain.  No RCU over the walk, so ``rmap_one``
callbacks and MMU notifiers may sleep.  ``cow_context[no_stabilisation]`` is the
ablation: the PoC's RCU-only walk.  None of it changes a sequential run (the
ledger records no scheme holds: sequential results stay those of the design
before it was instrumented).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, cast

from cowctx.concurrency import runtime as rt
from cowctx.designs.cow_context.options import CowContextOptions
from cowctx.designs.cow_context.structs import CowContext, CowContextMm, CowContextVma
from cowctx.metrics.ledger import LockHold, ObjectKind
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_PFN_SHIFT, PTE_PRESENT, Folio
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.rmap.protocol import AnonRmap, RmapWalkControl

if TYPE_CHECKING:
    from cowctx.mm.vma import VmaMergeStruct, VmaPrepare

COW_CONTEXT = ObjectKind("cow_context", 100, estimate=True)
"""From the PoC's fields: refcount, mm, maple tree root, parent, two list heads,
an rcu_head and two spinlocks."""
REMAP_ENTRY = ObjectKind("remap_entry", 0, estimate=True)
"""A pgoff range in the remap maple tree; it lives in a maple node's slots."""
OFFSET_ARRAY = ObjectKind("offset_array", 144, estimate=True)
"""The dynarray of an entry with several offsets: 16 B header + 16 slots of 8 B."""
MAPLE_NODE = ObjectKind("maple_node", 256, estimate=True)
"""Remap maple tree nodes, at up to 16 ranges per node."""

REMAP_LOCK = "cow_context.remap_lock"
CHILDREN_LOCK = "cow_context.list_write_lock"
RCU = "rcu"


def cow_context_preorder(root: CowContext) -> Iterator[CowContext]:
    """``traverse_contexts()``: the context, then every descendant (depth first)."""
    stack = [root]
    while stack:
        ctx = stack.pop()
        yield ctx
        stack.extend(reversed(ctx.children))


def _ctxm(mm: MmStruct) -> CowContext:
    ctx = cast(CowContextMm, mm).cow_context
    assert ctx is not None
    return ctx


class CowContextRmap(AnonRmap):
    """The corrected CoW context design (every PoC switch off)."""

    name: ClassVar[str] = "cow_context"
    options: ClassVar[CowContextOptions] = CowContextOptions()
    vma_type = CowContextVma
    mm_type = CowContextMm
    object_kinds: ClassVar[tuple[ObjectKind, ...]] = (
        COW_CONTEXT,
        REMAP_ENTRY,
        OFFSET_ARRAY,
        MAPLE_NODE,
    )
    vma_size = 168
    """192 B less the ``anon_vma_chain`` list head and ``anon_vma`` pointer (24 B);
    ``vm_anon_pgoff`` fits in holes (the RFC packs it at no cost on 64-bit)."""

    def __init__(self, machine):
        super().__init__(machine)
        self._next_ctx_id = 0
        self.contexts: dict[int, CowContext] = {}
        """Every allocated, not yet freed context."""
        self.ksm_refs: dict[int, int] = {}
        self._merged_away: set[int] = set()
        self._sections: dict[tuple[int, int], int] = {}
        """(thread, context) -> depth of a write section."""
        self._forking: set[int] = set()
        """Child contexts whose fork holds the parent's write section."""
        self._mremap: set[tuple[int, int]] = set()
        """(thread, context) of an mremap between copy_vma and drop_rmap_locks."""
        self._mm_refs: dict[int, int] = {}
        """mm_id -> references walkers took with ``mmget_not_zero()``."""
        self._mmdrop_deferred: dict[int, MmStruct] = {}
        """mms whose ``__mmdrop()`` waits for a walker's ``mmput_async()``."""

    # --- offsets ------------------------------------------------------------------------

    def vma_offset(self, vma: VmAreaStruct) -> int:
        """``(vm_start >> PAGE_SHIFT) - anon pgoff``: where a folio of index ``i``
        sits in this VMA (virtual page ``i + offset``)."""
        if vma.vm_file is not None and not self.options.file_remap_entries:
            return cast(CowContextVma, vma).vm_anon_offset
        return (vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff

    def linear_anon_page_index(self, vma: VmAreaStruct, address: int) -> int:
        """``linear_anon_page_index()`` (``linear_page_index()`` with the PoC)."""
        return (address >> PAGE_SHIFT) - self.vma_offset(vma)

    def anon_range(self, vma: VmAreaStruct) -> tuple[int, int, int]:
        """(first pgoff, end pgoff, offset) of a VMA in folio-index space."""
        off = self.vma_offset(vma)
        return (vma.vm_start >> PAGE_SHIFT) - off, (vma.vm_end >> PAGE_SHIFT) - off, off

    # --- contexts ---------------------------------------------------------------------

    def _lock(self, lock: str, mode: str, site: str) -> LockHold:
        return self.ledger.lock(lock, mode, site)

    def mm_init(self, mm: MmStruct) -> None:
        """``mm_init_cow_context()``: a fresh root context holding the mm's reference."""
        ctx = CowContext(self._next_ctx_id, mm)
        self._next_ctx_id += 1
        self.contexts[ctx.ctx_id] = ctx
        self.ledger.alloc("cow_context")
        cast(CowContextMm, mm).cow_context = ctx

    def dup_mmap(self, mm: MmStruct, oldmm: MmStruct) -> None:
        """``dup_cow_context()`` at the end of ``dup_mmap()``: the child context joins
        the parent's children list (under the parent's spinlock), pinning it."""
        child, parent = _ctxm(mm), _ctxm(oldmm)
        self._stab_write_begin(parent)
        hold = self._lock(CHILDREN_LOCK, "spin", "dup_cow_context")
        rt.lock("spinlock", parent.list_write_lock)
        child.parent = parent
        rt.point("store", parent, "children", True)  # list_add_tail_rcu()
        parent.children.append(child)
        rt.point("store", parent, "refcount", True)
        parent.refcount += 1
        rt.unlock("spinlock", parent.list_write_lock)
        hold.objects = 1
        self.ledger.unlock(hold)
        self._stab_write_end(parent)
        if child.ctx_id in self._forking:  # the section anon_vma_fork() opened
            self._forking.discard(child.ctx_id)
            self._stab_write_end(parent)

    def mmput(self, mm: MmStruct) -> None:
        """``drop_cow_context()`` from ``__mmdrop()``: the context outlives its mm
        while children or folios hold it; walks then skip it but descend."""
        if self._mm_refs.get(mm.mm_id):
            self._mmdrop_deferred[mm.mm_id] = mm
            return
        self._mmdrop(mm)

    def _mmdrop(self, mm: MmStruct) -> None:
        """``__mmdrop()``: ``drop_cow_context()`` (``WRITE_ONCE(context->mm,
        NULL)`` in a write section: the context's walkers are done with the
        mm), then ``free_mm()`` with no grace period.  A real implementation
        clears ``context->mm`` in ``__mmput()`` (``__mmdrop()`` may run where
        sleeping is not allowed, ``mmdrop_sched()``)."""
        ctx = _ctxm(mm)
        self._stab_write_begin(ctx)
        rt.point("store", ctx, "mm", True)
        ctx.mm = None
        self._stab_write_end(ctx)
        self.put_cow_context(ctx)
        rt.slab_free("mm_struct", mm, False)

    def mmget_not_zero(self, mm: MmStruct) -> bool:
        """``mmget_not_zero()``: fails once the mm's last user has gone
        (``exit_mmap()`` under way, which unmaps what the walk would find)."""
        rt.point("store", mm, "mm_users", True)
        if mm.mm_users <= 0:
            rt.walk_skip_mm(mm.mm_id)
            return False
        self._mm_refs[mm.mm_id] = self._mm_refs.get(mm.mm_id, 0) + 1
        return True

    def mmput_async(self, mm: MmStruct) -> None:
        """``mmput_async()``: a ``__mmdrop()`` deferred to this reference runs once
        the walk has dropped its pins (a worker's, in the kernel)."""
        rt.point("store", mm, "mm_users", True)
        left = self._mm_refs[mm.mm_id] - 1
        if left:
            self._mm_refs[mm.mm_id] = left
            return
        del self._mm_refs[mm.mm_id]
        deferred = self._mmdrop_deferred.pop(mm.mm_id, None)
        if deferred is not None:
            pending = rt.local().setdefault("mmdrop", [])
            assert isinstance(pending, list)
            pending.append(deferred)

    def get_cow_context(self, ctx: CowContext) -> None:
        ctx.refcount += 1

    def put_cow_context(self, ctx: CowContext) -> None:
        """``__put_cow_context()``: free a context at refcount 0, unlinking it from
        its parent, and cascade up."""
        rt.point("store", ctx, "refcount", True)
        ctx.refcount -= 1
        current: CowContext | None = ctx if ctx.refcount == 0 else None
        while current is not None:
            # write sections on the parent (its children list), then on the
            # context itself (a walker that pinned it from folio->mapping before
            # the folio moved away): ancestor first, the walkers' order
            parent = current.parent
            if parent is not None:
                self._stab_write_begin(parent)
            self._stab_write_begin(current)
            if parent is not None:
                hold = self._lock(CHILDREN_LOCK, "spin", "__put_cow_context")
                rt.lock("spinlock", parent.list_write_lock)
                rt.point("store", parent, "children", True)  # list_del_rcu()
                siblings = parent.children
                i = siblings.index(current)
                current.rcu_next = siblings[i + 1] if i + 1 < len(siblings) else None
                del siblings[i]
                rt.unlock("spinlock", parent.list_write_lock)
                hold.objects = 1
                self.ledger.unlock(hold)
            rt.point("store", current, "remaps", True)
            current.remaps.clear()
            self._account(current)
            current.freed = True
            del self.contexts[current.ctx_id]
            self.ledger.free("cow_context")
            self._stab_write_end(current)
            rt.kfree_rcu("cow_context", current)
            current = None
            if parent is not None:
                # the section ends while the child's reference still pins the
                # parent; then refcount_dec_and_test(): the decrement and its
                # test are one atomic step, so one of two racing puts cascades on
                self._stab_write_end(parent)
                rt.point("store", parent, "refcount", True)
                parent.refcount -= 1
                if parent.refcount == 0:
                    current = parent

    def root_of(self, ctx: CowContext) -> CowContext:
        while ctx.parent is not None:
            ctx = ctx.parent
        return ctx

    # --- remap tracking ---------------------------------------------------------------

    def _account(self, ctx: CowContext) -> None:
        """Report remap memory changes: entries, offset arrays, maple nodes."""
        entries = len(ctx.remaps)
        counts = (entries, ctx.remaps.multi_entries(), -(-entries // 16))
        for kind, old, new in zip(
            ("remap_entry", "offset_array", "maple_node"), ctx.ledger_counts, counts, strict=True
        ):
            if new > old:
                self.ledger.alloc(kind, new - old)
            elif new < old:
                self.ledger.free(kind, old - new)
        ctx.ledger_counts = counts

    def _write(self, ctx: CowContext, site: str, change: Callable[[], int]) -> None:
        """One store to the remap tree (``mas_store_gfp()`` under its lock), in a
        write section on the context."""
        self._stab_write_begin(ctx)
        rt.lock("spinlock", ctx.remaps)
        rt.point("store", ctx, "remaps", True)
        written = change()
        rt.unlock("spinlock", ctx.remaps)
        hold = self._lock(REMAP_LOCK, "spin", site)
        hold.vmas, hold.objects = 1, written
        self.ledger.unlock(hold)
        self._account(ctx)
        self._stab_write_end(ctx)

    # --- the walker reference count (docs/stabilisation.md section 6) -----------------

    @staticmethod
    def _who() -> int:
        ex = rt.current
        return ex.running.tid if ex is not None and ex.running is not None else -1

    def _section_enter(self, ctx: CowContext) -> bool:
        """Count a write section of the running thread on ``ctx``; True for the
        outermost (sections of one thread nest, only the outermost acts)."""
        key = (self._who(), ctx.ctx_id)
        depth = self._sections.get(key, 0)
        self._sections[key] = depth + 1
        return not depth

    def _section_leave(self, ctx: CowContext) -> bool:
        """End one of :meth:`_section_enter`'s sections; True when the outermost ends."""
        key = (self._who(), ctx.ctx_id)
        depth = self._sections[key] - 1
        if depth:
            self._sections[key] = depth
            return False
        del self._sections[key]
        return True

    def _stab_write_begin(self, ctx: CowContext) -> None:
        """A write section on ``ctx``: announce the writer (``writers``), then
        wait (sleeping) until no walker holds the context.  Sections of one
        thread nest; writers of several threads may overlap (each has its own
        lock for its data: ``list_write_lock``, the remap tree's, the mmap lock)."""
        if self.options.no_stabilisation:
            return
        if not self._section_enter(ctx):
            return
        rt.may_sleep("waiting for the context's walkers")
        rt.point("store", ctx, "writers", True)
        ctx.writers += 1
        rt.wait_until("walkers", ctx, "walkers", lambda: ctx.walkers == 0)
        rt.point("load", ctx, "walkers")

    def _stab_write_end(self, ctx: CowContext) -> None:
        if self.options.no_stabilisation:
            return
        if not self._section_leave(ctx):
            return
        rt.point("store", ctx, "writers", True)
        ctx.writers -= 1

    @staticmethod
    def _stab_pin(ctx: CowContext) -> None:
        """The walker pins ``ctx`` (``walkers``), then checks for a writer; if one
        is in, it backs off and waits for it (a spin: it may hold RCU here).
        Outside an explorer's execution no writer can be in: a count left
        non-zero is a section that never ended, which :meth:`check_invariants`
        reports (the oracle's walk must not spin on it)."""
        while True:
            rt.point("store", ctx, "walkers", True)
            ctx.walkers += 1
            rt.point("load", ctx, "writers")
            if not ctx.writers or not rt.active():
                return
            rt.point("store", ctx, "walkers", True)
            ctx.walkers -= 1
            rt.wait_until("writer", ctx, "writers", lambda: not ctx.writers)

    @staticmethod
    def _stab_unpin(ctx: CowContext) -> None:
        rt.point("store", ctx, "walkers", True)
        ctx.walkers -= 1

    def _stab_first(self, folio: Folio) -> CowContext:
        """``folio->mapping`` under RCU (contexts are freed by ``kfree_rcu()``),
        pinned before RCU is left; a context whose refcount is already 0 lost the
        folio to a reuse or a migration meanwhile: read the mapping again
        (outside an explorer's execution nothing can change it: a dead context
        there is :meth:`check_invariants`' to report, not a reason to spin)."""
        while True:
            rt.rcu_read_lock()
            rt.point("load", folio, "mapping")
            ctx = cast(CowContext, folio.mapping)
            self._stab_pin(ctx)
            rt.point("load", ctx, "refcount")
            alive = ctx.refcount > 0 or not rt.active()
            if not alive:
                self._stab_unpin(ctx)
            rt.rcu_read_unlock()
            if alive:
                return ctx

    def track(self, vma: VmAreaStruct, site: str) -> None:
        """Make sure a faulted VMA's pgoff range holds its offset (a no-op, taking
        no lock, when it already does, as after a split)."""
        if vma.anon_vma is None:
            return
        start, end, off = self.anon_range(vma)
        ctx = _ctxm(vma.vm_mm)
        if off == 0 or ctx.remaps.covers(start, end, off):
            return
        self._write(ctx, site, lambda: ctx.remaps.add(start, end, off))

    def untrack(self, vma: VmAreaStruct, site: str) -> None:
        """The VMA's range no longer holds its offset (unmap)."""
        start, end, off = self.anon_range(vma)
        ctx = _ctxm(vma.vm_mm)
        if off == 0 or not ctx.remaps.overlaps(start, end, off):
            return
        split = not self.options.unmap_no_split
        self._write(ctx, site, lambda: ctx.remaps.remove(start, end, off, split=split))

    def expected_remaps(self, mm: MmStruct) -> dict[int, frozenset[int]]:
        """What remap tracking must hold for ``mm``: every faulted VMA with a
        non-zero offset, over its pgoff range."""
        out: dict[int, set[int]] = {}
        for vma in mm.vmas():
            if vma.anon_vma is None:
                continue
            start, end, off = self.anon_range(vma)
            if off:
                for pgoff in range(start, end):
                    out.setdefault(pgoff, set()).add(off)
        return {k: frozenset(v) for k, v in out.items()}

    # --- VMA hooks --------------------------------------------------------------------

    def anon_vma_prepare(self, vma: VmAreaStruct) -> None:
        """``__anon_vma_prepare()``: the VMA becomes CoW-capable (``vma->anon_vma``
        is the mm's context, the PoC's ``DUMMY_ANON_VMA`` role); a MAP_PRIVATE
        file VMA fixes its anon pgoff at ``vm_start``.  Tracked if its offset is
        not 0 (with the PoC, every private file VMA:
        ``cow_context_do_map_private_cow()``)."""
        rt.point("store", vma, "anon_vma", True)
        vma.anon_vma = _ctxm(vma.vm_mm)
        cast(CowContextVma, vma).vm_anon_offset = 0
        self.track(vma, "cow_context_do_map_private_cow")

    def anon_vma_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``cow_context_do_fork()``: the child's VMA is tracked in the child's
        context; no per-VMA object, no lock over the hierarchy."""
        child = _ctxm(vma.vm_mm)
        if child.ctx_id not in self._forking and not self.options.no_stabilisation:
            # the parent's write section from before copy_page_range() until the
            # child is on its list (dup_mmap()): the child's PTEs and its place
            # in the hierarchy appear together to walkers
            self._forking.add(child.ctx_id)
            self._stab_write_begin(_ctxm(pvma.vm_mm))
        if pvma.anon_vma is None:
            return
        vma.anon_vma = child
        self.track(vma, "cow_context_do_fork")

    def anon_vma_clone(self, dst: VmAreaStruct, src: VmAreaStruct) -> None:
        """Split, ``copy_vma``, ``dup_anon_vma``: only the sentinel moves; tracking
        settles when the range is final (``vma_complete``, ``copy_vma``)."""
        if src.anon_vma is not None:
            dst.anon_vma = _ctxm(dst.vm_mm)
            # an unfaulted VMA absorbing a faulted one (dup_anon_vma) adopts its
            # anon offset: it has no folios of its own to disagree
            cast(CowContextVma, dst).vm_anon_offset = cast(CowContextVma, src).vm_anon_offset

    def vma_complete(self, vp: VmaPrepare) -> None:
        """After a split, merge, expand or shrink: every changed VMA's range holds
        its offset (``cow_context_vma_adjust()``, which the PoC never calls)."""
        for removed in (vp.remove, vp.remove2):
            if removed is not None:
                self._merged_away.add(removed.vm_id)
        try:
            if self.options.untracked_expand:
                return
            for vma in (vp.vma, vp.adj_next, vp.insert):
                if vma is not None:
                    self.track(vma, "cow_context_vma_adjust")
        finally:
            self._stab_write_end(_ctxm(vp.vma.vm_mm))

    def vma_prepare(self, vp: VmaPrepare) -> None:
        """A write section on the mm's context from here to :meth:`vma_complete`:
        the VMAs' ranges change (``vma_set_range()``) where the anon_vma design
        takes the anon_vma lock."""
        self._stab_write_begin(_ctxm(vp.vma.vm_mm))

    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        """``remove_vma()`` → ``cow_context_vma_unmap()``; a VMA merged away leaves
        its range to the VMA that absorbed it, and gives up nothing."""
        ctx = _ctxm(vma.vm_mm)
        self._stab_write_begin(ctx)
        if vma.vm_id in self._merged_away:
            self._merged_away.discard(vma.vm_id)
        elif vma.anon_vma is not None:
            self.untrack(vma, "cow_context_vma_unmap")
        rt.point("store", vma, "anon_vma", True)
        vma.anon_vma = None
        cast(CowContextVma, vma).vm_anon_offset = 0
        self._stab_write_end(ctx)

    def copy_vma(
        self,
        new_vma: VmAreaStruct,
        vma: VmAreaStruct,
        orig_addr: int,
        new_addr: int,
        length: int,
        merged: bool,
    ) -> None:
        """``copy_vma()`` → ``cow_context_do_remap()``: the moved range keeps its
        folio indexes, so it is tracked at its new offset.  A write section on
        the mm's context from here to :meth:`drop_rmap_locks`: the new offset
        and the moved PTEs appear to walkers together."""
        if not self.options.no_stabilisation:
            ctx = _ctxm(new_vma.vm_mm)
            self._stab_write_begin(ctx)
            self._mremap.add((self._who(), ctx.ctx_id))
        if vma.anon_vma is None:
            return
        if not merged and vma.vm_file is not None:  # the anon index travels with it
            cast(CowContextVma, new_vma).vm_anon_offset = cast(
                CowContextVma, vma
            ).vm_anon_offset + ((new_addr - orig_addr) >> PAGE_SHIFT)
        if merged:
            if self.options.untracked_dest_merge:
                off = self.vma_offset(new_vma)
                start = (new_addr >> PAGE_SHIFT) - off
                if off:
                    ctx = _ctxm(new_vma.vm_mm)
                    self._write(
                        ctx,
                        "copy_vma",
                        lambda: ctx.remaps.remove(
                            start,
                            start + (length >> PAGE_SHIFT),
                            off,
                            split=not self.options.unmap_no_split,
                        ),
                    )
            return
        if self.options.remap_in_place:
            self._poc_do_remap(new_vma, vma)
        else:
            self.track(new_vma, "cow_context_do_remap")

    def drop_rmap_locks(self, vma: VmAreaStruct, need_rmap_locks: bool) -> None:
        """``move_page_tables()`` is done: the section :meth:`copy_vma` opened ends."""
        ctx = _ctxm(vma.vm_mm)
        key = (self._who(), ctx.ctx_id)
        if key in self._mremap:
            self._mremap.discard(key)
            self._stab_write_end(ctx)

    def _poc_do_remap(self, new_vma: VmAreaStruct, vma: VmAreaStruct) -> None:
        """The PoC's ``__cow_context_do_remap(is_remap=true)``: old offset from the
        old VMA's start and the new VMA's pgoff; entries holding it are rewritten
        whole; a new entry only if none was found; moved home: old entries go."""
        start, end, new_off = self.anon_range(new_vma)
        old_off = (vma.vm_start >> PAGE_SHIFT) - start
        ctx = _ctxm(new_vma.vm_mm)
        if old_off == 0 and new_off == 0:
            return
        if new_off == 0:
            self._write(
                ctx,
                "cow_context_do_remap",
                lambda: ctx.remaps.remove(
                    start, end, old_off, split=not self.options.unmap_no_split
                ),
            )
            return

        def rewrite() -> int:
            found = ctx.remaps.rewrite(start, end, old_off, new_off)
            return found if found else ctx.remaps.add(start, end, new_off)

        self._write(ctx, "cow_context_do_remap", rewrite)

    # --- merge rules --------------------------------------------------------------------

    def is_mergeable_anon_vma(self, vmg: VmaMergeStruct, merge_next: bool) -> bool:
        """No fork-child rule: nothing locks the hierarchy.  The merged VMA has one
        anon offset, so every faulted VMA taking part must already have it: the
        range's own (``middle``, or for ``vma_merge_extend()`` the growing
        ``prev``) and the target's.  A faulted private file VMA moved by mremap
        merges with nothing (its new offset would have to be adopted by the
        target).  With ``sentinel_merge``, the PoC's rule: a faulted and an
        unfaulted VMA never merge.  The third party of a two-sided merge is
        :meth:`are_anon_vmas_compatible`'s."""
        tgt = vmg.next if merge_next else vmg.prev
        assert tgt is not None
        tgt_faulted, src_faulted = tgt.anon_vma is not None, vmg.anon_vma is not None
        if self.options.sentinel_merge:
            return tgt_faulted == src_faulted
        if not src_faulted:
            return True
        if vmg.copied_from is not None:
            return vmg.file is None or self.options.file_remap_entries
        src = vmg.middle if vmg.middle is not None else vmg.prev
        if not tgt_faulted or src is None or src is tgt:
            return True
        return self.vma_offset(tgt) == self.vma_offset(src)

    def are_anon_vmas_compatible(self, vma1: VmAreaStruct, vma2: VmAreaStruct) -> bool:
        """``are_anon_vmas_compatible()``: prev and next of a two-sided merge may
        both be faulted only with equal anon offsets (a new or unfaulted range
        between them brings none of its own to compare)."""
        if vma1.anon_vma is None or vma2.anon_vma is None:
            return True
        return self.vma_offset(vma1) == self.vma_offset(vma2)

    # --- folios -------------------------------------------------------------------------

    def folio_set_anon(
        self, folio: Folio, vma: VmAreaStruct, address: int, exclusive: bool = True
    ) -> None:
        """``__folio_set_anon_cow()``: the faulting mm's context, with a reference;
        a non-exclusive folio (swap-in shared by several mms) takes the root
        context, the oldest possible, as anon_vma takes ``anon_vma->root``."""
        ctx = _ctxm(vma.vm_mm)
        if not exclusive:
            ctx = self.root_of(ctx)
        self.get_cow_context(ctx)
        folio.mapping = ctx
        folio.index = self.linear_anon_page_index(vma, address)

    def folio_move_anon_rmap(self, folio: Folio, vma: VmAreaStruct) -> None:
        """The folio moves down to the reusing mm's context."""
        new = _ctxm(vma.vm_mm)
        old = cast(CowContext, folio.mapping)
        if new is not old:
            self.get_cow_context(new)
            folio.mapping = new
            self.put_cow_context(old)

    def folio_free(self, folio: Folio) -> None:
        self.put_cow_context(cast(CowContext, folio.mapping))

    # --- rmap walk ----------------------------------------------------------------------

    def rmap_walk(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``cow_context_walk()``: run :meth:`walk_steps` to its end."""
        for _ in self.walk_steps(folio, rwc):
            pass

    def walk_steps(self, folio: Folio, rwc: RmapWalkControl) -> Iterator[tuple[str, object]]:
        """The walk as a sequence of kernel-visible steps (yielded before each
        context visit and each probe) so that an explorer can interleave it with
        writers.  The walk stops where its caller says (``rmap_one`` returns
        false, or ``done``), never on a count of its own: stopping once it had
        confirmed as many mappings as the folio had when it began let a walk
        racing a fork stop before a mapping the fork could not have made (the
        explorer: ``reclaim×fork+fork`` missed an older mapping;
        ``migrate×fork+fork`` left a migration entry, ``remove_migration_ptes()``
        looking for entries, not mapped PTEs).  The clients stop the walks the
        count stopped, so sequential results are unchanged.

        Stabilised (the design's own): ``folio->mapping`` is read and pinned
        under RCU, every other context is pinned as it is reached (before its
        ``mm``, remaps and children are read), and the pins are dropped when the
        walk ends; no RCU is held over ``rmap_one``.  ``no_stabilisation``: the
        whole walk under ``rcu_read_lock()``, as the PoC's."""
        exclusive = folio.mapcount <= 1  # !folio_maybe_mapped_shared()
        cost = rwc.cost.cost
        stab = not self.options.no_stabilisation
        hold = self._lock(RCU, "read", "cow_context_walk")
        pinned: list[CowContext] = []
        first = True
        if not stab:
            rt.rcu_read_lock()
        try:
            if stab:
                ctx0 = self._stab_first(folio)
                pinned.append(ctx0)
            else:
                rt.point("load", folio, "mapping")
                ctx0 = cast(CowContext, folio.mapping)
            index = folio.index
            stack = [ctx0]
            while stack:
                ctx = stack.pop()
                if stab and ctx is not ctx0:
                    self._stab_pin(ctx)
                    pinned.append(ctx)
                yield "context", ctx
                cost["anchors"] += 1
                hold.objects += 1
                rt.point("load", ctx, "mm")  # READ_ONCE(context->mm)
                mm = ctx.mm
                if mm is not None and self.mmget_not_zero(mm):
                    try:
                        rt.point("load", ctx, "remaps")
                        scanned, offsets = ctx.remaps.lookup(index)
                        for n, off in enumerate([0, *sorted(offsets)]):
                            if n == 1:
                                cost["remap_entries"] += scanned
                                cost["offsets"] += len(offsets)
                            yield "probe", (ctx, off)
                            verdict = self._probe(folio, mm, index, off, rwc, hold)
                            if verdict is None:
                                return
                            if (
                                n == 0
                                and first
                                and self.options.exclusive_abort
                                and exclusive
                                and folio.mapcount <= 1
                            ):
                                return
                    finally:
                        self.mmput_async(mm)
                first = False
                rt.point("load", ctx, "children")  # list_for_each_entry_rcu()
                stack.extend(reversed(ctx.children))
        finally:
            for ctx in reversed(pinned):  # children first: a parent's pin keeps them
                self._stab_unpin(ctx)
            if not stab:
                rt.rcu_read_unlock()
            self.ledger.unlock(hold)
            pending = rt.local().pop("mmdrop", None)
            if isinstance(pending, list):
                for dropped in pending:
                    self._mmdrop(dropped)

    def _probe(
        self, folio: Folio, mm: MmStruct, index: int, off: int, rwc: RmapWalkControl, hold: LockHold
    ) -> int | None:
        """``walk_context_remap()``: the VMA at ``index + off`` if its offset is
        ``off``; returns 1 when the PTE maps the folio, None to stop the walk.
        The VMA is found in the mm's VMA tree (lockless: a VMA whose range was
        cleared by a munmap is gone) and its ``vm_start`` and ``vm_pgoff`` are
        read as two loads; the write sections keep them from changing under a
        stabilised walk."""
        address = (index + off) << PAGE_SHIFT
        rwc.cost.cost["vma_lookups"] += 1
        rt.point("load", mm, "mm_mt")
        vma = mm.find_vma(address)
        if rt.active():
            rt.walk_unmapping(mm.mm_id, lambda a: bool(mm.vmas_in_range(a, a + 1)))
        if vma is None:
            return 0
        rt.points("load", [(vma, "range", False), (vma, "anon_vma", False)])
        vm_start, anon = vma.vm_start, vma.anon_vma
        rt.point("load", vma, "pgoff")
        if vma.vm_file is not None and not self.options.file_remap_entries:
            vma_off = cast(CowContextVma, vma).vm_anon_offset
        else:
            vma_off = (vm_start >> PAGE_SHIFT) - vma.vm_pgoff
        if vm_start > address or anon is None or vma_off != off:
            return 0
        hold.vmas += 1
        if rwc.invalid_vma is not None and rwc.invalid_vma(vma):
            return 0
        pte = mm.pgd.get(address >> PAGE_SHIFT)
        mapped = int(
            pte is not None and bool(pte & PTE_PRESENT) and pte >> PTE_PFN_SHIFT == folio.pfn
        )
        if not rwc.rmap_one(folio, vma, address):
            return None
        if rwc.done is not None and rwc.done(folio):
            return None
        return mapped

    # --- KSM ----------------------------------------------------------------------------

    def ksm_rmap_item_anchor(self, vma: VmAreaStruct, folio: Folio) -> object:
        """Our KSM rmap (the PoC leaves KSM as a TODO): an rmap_item pins the
        context the merged folio belonged to (every mm that could map it through
        fork descends from it), or the mapping mm's context when the page was
        already a KSM page."""
        ctx = cast(CowContext, folio.mapping) if folio.anon and not folio.ksm else _ctxm(vma.vm_mm)
        self.get_cow_context(ctx)
        self.ksm_refs[ctx.ctx_id] = self.ksm_refs.get(ctx.ctx_id, 0) + 1
        return ctx

    def ksm_rmap_item_release(self, anchor: object) -> None:
        ctx = cast(CowContext, anchor)
        self.ksm_refs[ctx.ctx_id] -= 1
        if not self.ksm_refs[ctx.ctx_id]:
            del self.ksm_refs[ctx.ctx_id]
        self.put_cow_context(ctx)

    def rmap_walk_ksm_item(
        self, folio: Folio, item: object, rwc: RmapWalkControl, search_new_forks: bool
    ) -> bool:
        """First pass: the rmap_item's own (mm, address).  Second pass: the same
        address in every other live mm of the anchor context's subtree (forks,
        and the mms the folio was shared with before it was merged)."""
        item_mm: MmStruct = item.mm  # type: ignore[attr-defined]
        address: int = item.address  # type: ignore[attr-defined]
        anchor = cast(CowContext, item.anchor)  # type: ignore[attr-defined]
        cost = rwc.cost.cost
        hold = self._lock(RCU, "read", "rmap_walk_ksm")
        try:
            mms = (
                [item_mm]
                if not search_new_forks
                else [
                    c.mm
                    for c in cow_context_preorder(anchor)
                    if c.mm is not None and c.mm is not item_mm
                ]
            )
            cost["anchors"] += 1 if not search_new_forks else 0
            for mm in mms:
                key = (mm.mm_id, address)
                if key in rwc.seen:
                    continue
                rwc.seen.add(key)
                cost["vma_lookups"] += 1
                vma = mm.find_vma(address)
                if vma is None or vma.vm_start > address or vma.anon_vma is None:
                    continue
                hold.vmas += 1
                if rwc.invalid_vma is not None and rwc.invalid_vma(vma):
                    continue
                if not rwc.rmap_one(folio, vma, address) or (
                    rwc.done is not None and rwc.done(folio)
                ):
                    return False
            return True
        finally:
            self.ledger.unlock(hold)

    # --- views and checks ---------------------------------------------------------------

    def graph(self) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """Contexts (parent edges, dead ones marked), mm -> context, remap entries."""
        nodes, edges = [], []
        for ctx in self.contexts.values():
            state = "dead" if ctx.mm is None else f"mm#{ctx.mm.mm_id}"
            remaps = "".join(
                f"\\n[{a:#x},{b:#x}) {sorted(s)}" for a, b, s in list(ctx.remaps.segments())[:4]
            )
            nodes.append(
                (
                    f"ctx{ctx.ctx_id}",
                    f"C{ctx.ctx_id} {state}\\nr={ctx.refcount}{remaps}",
                    "dead" if ctx.mm is None else "context",
                )
            )
            if ctx.parent is not None:
                edges.append((f"ctx{ctx.ctx_id}", f"ctx{ctx.parent.ctx_id}", "parent"))
            if ctx.mm is not None:
                edges.append((f"mm{ctx.mm.mm_id}", f"ctx{ctx.ctx_id}", "cow_context"))
        return nodes, edges

    def describe_folio(self, folio: Folio) -> str:
        ctx = folio.mapping
        return f"C{ctx.ctx_id}" if isinstance(ctx, CowContext) else repr(ctx)

    def check_invariants(self) -> list[str]:
        from cowctx.designs.cow_context.checks import check_cow_context_invariants

        return check_cow_context_invariants(self)
