"""``cow_context_poc[stab_tolerant]``: walks that tolerate races (the seed's last
technical slide, idea 2: "Re-engineer rmap walks to operate on page tables,
tolerate races").

No write sections and no lock on the walk side: the walk stays under
``rcu_read_lock()`` as the PoC's, and each thing it reads is either published
whole or re-checked:

- **Page tables, not VMA fields** (2a, 2b).  A candidate address
  ``(folio->index + offset) << PAGE_SHIFT`` is probed whatever the VMA there
  says its offset is: the VMA found under RCU (``SLAB_TYPESAFE_BY_RCU`` since
  commit ef626c1698c1 ("mm: make vma cache SLAB_TYPESAFE_BY_RCU") (v6.15)) is
  re-checked for identity (``vma->vm_mm == mm``) and for covering the address
  (one ``READ_ONCE`` of its range), never for ``vm_pgoff``, and the rmap_one
  callback's ``page_vma_mapped_walk()`` decides from the PTE, under the
  page-table lock, whether the folio is mapped there.  A torn ``vm_start`` /
  ``vm_pgoff`` pair can then cost a probe, never a miss.  The page table the
  probe reaches must stay a page table for the RCU section (RCU-freed page
  tables, as ``pte_offset_map()`` already assumes); the machine never frees one
  under a walker, so the model has no point for it.
- **Remap entries re-read after the probes** until no new offset appears: a
  move (``copy_vma()`` adds the new offset before ``move_page_tables()`` moves
  the PTEs) is then seen at the old address or at the new one.
- **Dynarrays copied and published, never changed in place**: an append or a
  removal builds a new array and stores it in the maple tree (one atomic
  store; the reader sees the old array or the new one), the old one freed by
  ``kfree_rcu()``; a grow frees what it replaces after a grace period too.
- **Parents before children**: the walk visits a context when it first
  reaches it (pre-order), and a fork lists the child (``dup_cow_context()``)
  at its first ``anon_vma_fork()``, before ``copy_page_range()``, as
  ``anon_vma_fork()`` links the child's AVCs before the copy: a walk that saw
  the parent's PTE before the copy finds the child after it, and one that
  comes after the copy finds the child listed.
- **The mm outlives RCU readers**: ``free_mm()`` after ``drop_cow_context()``
  becomes ``call_rcu()``, so ``mmget_not_zero()`` on ``READ_ONCE(context->mm)``
  is safe.
- **Migration records its (mm, address) pairs** (2c: "Perhaps accumulate
  (mm, range) pairs per-folio?"): ``try_to_migrate()``'s walk records each
  place its callback turned into a migration entry, holding the mm
  (``mmget_not_zero()``); ``folio_migrate_mapping()`` hands the record to the
  new folio; ``remove_migration_ptes()`` restores exactly those first, then
  walks as well, for the entries a fork copied or an mremap moved since.

``rmap_one`` callbacks and MMU notifiers may **not** sleep: they run under the
walk's RCU section (2e: "MMU notifier a nightmare - Can't do under RCU, and
rmap walkers do it").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from cowctx.concurrency import runtime as rt
from cowctx.designs.cow_context.poc import CowContextPoc
from cowctx.designs.cow_context.poc_remap import EMPTY, U64, Dynarray, Entry, Multi, Simple
from cowctx.designs.cow_context.rmap import RCU, _ctxm
from cowctx.designs.cow_context.structs import CowContext
from cowctx.metrics.ledger import LockHold
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import Folio, is_migration_entry, pte_pfn
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.rmap.protocol import RmapWalkControl

Pair = tuple[MmStruct, int]
VMA_RECHECK = "cow_context.vma_recheck"
"""The ledger's name of a VMA lookup done again after a failed re-check."""


def _u64(offset: int) -> int:
    """The dynarray's order: offsets as the unsigned words the C compares."""
    return offset & U64


class TolerantPoc(CowContextPoc):
    """The PoC with a walk that tolerates races (see the module)."""

    def __init__(self, machine):
        super().__init__(machine)
        self._listed: set[int] = set()
        """Children a fork listed at its first ``anon_vma_fork()``."""
        self._records: dict[int, list[Pair]] = {}
        """pfn -> the (mm, address) pairs migration turned into entries."""

    # --- fork: the child is listed before copy_page_range() ----------------------------

    def anon_vma_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``dup_cow_context()`` at the first ``anon_vma_fork()`` (before the
        first ``copy_page_range()``), then the PoC's ``anon_vma_fork()``."""
        child = _ctxm(vma.vm_mm)
        if child.ctx_id not in self._listed and child.parent is None:
            self._listed.add(child.ctx_id)
            super().dup_mmap(vma.vm_mm, pvma.vm_mm)
        super().anon_vma_fork(vma, pvma)

    def dup_mmap(self, mm: MmStruct, oldmm: MmStruct) -> None:
        """The end of ``dup_mmap()``: already listed, unless no VMA was copied."""
        ctx = _ctxm(mm)
        if ctx.ctx_id in self._listed:
            self._listed.discard(ctx.ctx_id)
            return
        super().dup_mmap(mm, oldmm)

    # --- remap entries: copy and publish ------------------------------------------------

    def _copy(self, remaps: Entry) -> Entry:
        """A private copy a writer may change (a kmalloc'd dynarray is copied)."""
        if isinstance(remaps, Multi) and not remaps.on_stack:
            return self.dyn.dup_remaps(remaps, "GFP_KERNEL")
        return remaps

    def _publish(self, ctx: CowContext, index: int, last: int, old: Entry, new: Entry) -> None:
        """One maple-tree store of the new entry; the old array freed after a
        grace period."""
        self.store_new_remaps_entry(ctx, index, last, new, "publish_remaps")
        if old is not new:
            self.dyn.free_remaps(old)

    def add_overlapping_remap(
        self, ctx: CowContext, pgoff: int, last: int, new_offset: int
    ) -> None:
        """``add_overlapping_remap()``: each entry gets ``new_offset`` appended
        to a copy, published by one store (not in place)."""
        tree = self._remaps(ctx)
        pgoff_prev = pgoff
        for remaps, left, right in list(tree.mas_for_each(pgoff, last)):
            if left > pgoff_prev:
                self.store_new_remaps_entry(
                    ctx, pgoff_prev, left - 1, Simple(new_offset), "add_overlapping_remap"
                )
            if new_offset not in self._values(remaps):
                new = self.dyn.append_remap_offset(self._copy(remaps), new_offset, "GFP_KERNEL")
                self._publish(ctx, left, right, remaps, new)
            pgoff_prev = right + 1
        if pgoff_prev <= last:
            self.store_new_remaps_entry(
                ctx, pgoff_prev, last, Simple(new_offset), "add_overlapping_remap"
            )

    def _values(self, remaps: Entry) -> list[int]:
        return [self.dyn.get_remap(remaps, i) for i in range(self.dyn.nr_remaps(remaps))]

    def _entry_of(self, values: list[int]) -> Entry:
        """An entry holding ``values``: empty, simple, or a new dynarray."""
        if not values:
            return EMPTY
        if len(values) == 1:
            return Simple(values[0])
        arr: Dynarray = self.dyn.kmalloc.alloc(len(values), max(2, len(values)), "GFP_KERNEL")
        arr.contents[: len(values)] = values
        return Multi(arr)

    def _find_and_remap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int, new_offset: int
    ) -> bool:
        """``find_and_remap_existing()``: a copy with ``old_offset`` replaced,
        published (the PoC overwrites the slot in place)."""
        tree = self._remaps(ctx)
        found = False
        for remaps, index, e_last in list(tree.mas_for_each(pgoff, pgoff + nr_pages - 1)):
            values = self._values(remaps)
            if old_offset not in values:
                continue
            found = True
            values = sorted({new_offset if v == old_offset else v for v in values}, key=_u64)
            self._publish(ctx, index, e_last, remaps, self._entry_of(values))
        return found

    def find_and_unmap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int
    ) -> None:
        """``find_and_unmap_existing()``: a copy without ``old_offset``,
        published (the PoC shifts the array down in place)."""
        last = pgoff + nr_pages - 1
        if self.fixes.split_on_unmap:
            self._split_edges(ctx, pgoff, last)
        tree = self._remaps(ctx)
        for remaps, index, e_last in list(tree.mas_for_each(pgoff, last)):
            values = self._values(remaps)
            if old_offset not in values:
                continue
            values.remove(old_offset)
            self._publish(ctx, index, e_last, remaps, self._entry_of(values))

    # --- migration records -------------------------------------------------------------

    def folio_migrate(self, dst: Folio, src: Folio) -> None:
        """``__folio_migrate_mapping()``: the record goes with the context."""
        super().folio_migrate(dst, src)
        record = self._records.pop(src.pfn, None)
        if record is not None:
            self._records[dst.pfn] = record

    def _recording(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``try_to_migrate()``: each place the callback made a migration entry
        of ``folio`` is recorded, with the mm held."""
        record = self._records.setdefault(folio.pfn, [])
        inner = rwc.rmap_one

        def rmap_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
            ret = inner(f, vma, address)
            mm = vma.vm_mm
            pte = mm.pgd.get(address >> PAGE_SHIFT, 0)
            if is_migration_entry(pte) and pte_pfn(pte) == f.pfn and self.mmget_not_zero(mm):
                record.append((mm, address))
            return ret

        rwc.rmap_one = rmap_one

    def _restore_recorded(self, folio: Folio, rwc: RmapWalkControl, hold: LockHold) -> bool:
        """``remove_migration_ptes()``: the recorded pairs first."""
        record = self._records.pop(folio.pfn, [])
        ret = True
        for mm, address in record:
            if ret:
                ret = self._probe_address(mm, folio, rwc, address, hold)
            self.mmput_async(mm)
        return ret

    # --- the walk -----------------------------------------------------------------------

    def walk_steps(self, folio: Folio, rwc: RmapWalkControl) -> Iterator[tuple[str, object]]:
        """``cow_context_walk()`` under RCU, parents first, every context once."""
        hold = self._lock(RCU, "read", "cow_context_walk")
        client = rwc.cost.client
        if client == "try_to_migrate":
            self._recording(folio, rwc)
        rt.rcu_read_lock()
        try:
            if client == "remove_migration_ptes" and not self._restore_recorded(folio, rwc, hold):
                return
            rt.point("load", folio, "mapping")
            for ctx in self._preorder(cast(CowContext, folio.mapping)):
                yield "context", ctx
                if not self.walk_context(ctx, folio, rwc, hold):
                    break
        finally:
            self._walk_finish([])
            self.ledger.unlock(hold)

    def _preorder(self, root: CowContext) -> Iterator[CowContext]:
        """``traverse_contexts()``'s iteration (first child, next sibling, else
        up; the PoC's RCU list reads) calling back on each context when it
        first reaches it, so a parent is visited before its children."""
        yield root
        curr, came_up = root, False
        while True:
            if not came_up:
                rt.point("load", curr, "children")
                first = curr.children[0] if curr.children else None
                if first is not None:
                    curr = first
                    yield curr
                    continue
            if curr is root:
                return
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
                curr, came_up = nxt, False
                yield curr
            else:
                curr, came_up = parent, True

    def _walk_context(
        self, ctx: CowContext, mm: MmStruct, folio: Folio, rwc: RmapWalkControl, hold: LockHold
    ) -> bool:
        """``walk_context()`` (the PoC's exclusive shortcut kept unless
        ``no_exclusive_abort``), then the remap offsets at the folio's index,
        read again after each round of probes until none is new."""
        rt.point("load", folio, "mapcount")
        rt.walk_resample()
        was_exclusive = folio.mapcount <= 1
        if not self._probe_address(mm, folio, rwc, folio.index << PAGE_SHIFT, hold):
            return False
        rt.point("load", folio, "mapcount")
        rt.walk_resample()
        if was_exclusive and folio.mapcount <= 1 and not self.fixes.no_exclusive_abort:
            return False
        probed = {0}
        while True:
            offsets: list[int] = []
            for remaps, _, _ in self._remaps(ctx).mas_for_each(folio.index, folio.index):
                rwc.cost.cost["remap_entries"] += 1
                offsets += [o for o in self._values(remaps) if o not in probed]
            if not offsets:
                return True
            for offset in sorted(set(offsets)):
                probed.add(offset)
                rwc.cost.cost["offsets"] += 1
                address = (folio.index + offset) << PAGE_SHIFT
                if not self._probe_address(mm, folio, rwc, address, hold):
                    return False

    def _probe_address(
        self, mm: MmStruct, folio: Folio, rwc: RmapWalkControl, address: int, hold: LockHold
    ) -> bool:
        """The VMA covering ``address`` in ``mm`` (``vma_lookup()`` under RCU),
        re-checked, handed to ``rwc_walk_one()``: its ``page_vma_mapped_walk()``
        reads the PTE.  No ``vm_pgoff`` check.  A VMA that fails the re-check
        (reused by another mm, or a split or a munmap moved it off the address
        since the lookup), before the probe or, when the probe found nothing,
        after it (``page_vma_mapped_walk()`` checks the address against the
        VMA's range too), means the tree changed: look again, as
        ``lock_vma_under_rcu()``'s callers do."""
        if address < 0 or address + (1 << PAGE_SHIFT) > mm.task_size:
            rwc.cost.cost["vma_lookups"] += 1
            return True
        while True:
            rwc.cost.cost["vma_lookups"] += 1
            rt.point("load", mm, "mm_mt")
            if rt.active():
                rt.walk_unmapping(mm.mm_id, lambda a: bool(mm.vmas_in_range(a, a + 1)))
            again = False
            for vma in mm.vmas_in_range(address, address + (1 << PAGE_SHIFT)):
                rt.point("load", vma, "range")  # READ_ONCE(vm_start), READ_ONCE(vm_end)
                if vma.vm_mm is not mm or not vma.vm_start <= address < vma.vm_end:
                    again = True
                    break
                hold.vmas += 1
                hits = rwc.cost.cost["hits"]
                if not self.rwc_walk_one(folio, vma, address, rwc):
                    return False
                if rwc.cost.cost["hits"] == hits:  # nothing there: re-read after the probe
                    rt.point("load", vma, "range")
                    again = not vma.vm_start <= address < vma.vm_end
            if not again:
                return True
            self.ledger.unlock(self._lock(VMA_RECHECK, "retry", "cow_context_walk"))
