"""Named fixes to the PoC: ``cow_context_poc[fix,...]`` is the PoC's C
(mm/cow_context.c @ a4ac1966 and its hooks) with exactly those faults repaired,
so that each counterexample in scenarios/poc/ names the fix that removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class PocFixes:
    no_exclusive_abort: bool = False
    """``walk_context()`` no longer gives up the whole walk when the folio is
    (still) not mapped shared after probing offset 0 of a live context."""
    shared_folio_root: bool = False
    """``__folio_set_anon()`` honours ``exclusive``: a folio set up non-exclusive
    (swap-in of a page other mms share) takes the root context, not the
    faulting mm's."""
    remove_entries: bool = False
    """``remove_vma()`` calls ``cow_context_vma_unmap()`` while ``vma->anon_vma``
    is still set (before ``unlink_anon_vmas()``), so unmapping a tracked VMA
    removes its offset; the PoC's order makes that call a no-op."""
    split_on_unmap: bool = False
    """``find_and_unmap_existing()`` splits entries at the unmapped range's ends
    (as ``add_new_remap()`` does) instead of removing the offset from every
    overlapping entry whole.  Only reachable with ``remove_entries``."""
    remap_adds: bool = False
    """``__cow_context_do_remap()`` adds the moved range at its new offset
    (``add_new_remap()``) instead of rewriting every entry holding the old
    offset, whole and in place (``find_and_remap_existing()``)."""
    dynarray_insert: bool = False
    """``__dynarray_append_value()`` moves the slot at the insert point up too,
    so inserting an offset that is not the largest loses nothing."""
    track_dest_merge: bool = False
    """``copy_vma()`` calls ``cow_context_do_remap()`` when the destination
    merged with a neighbour too (the PoC calls it only for a new VMA)."""
    adjust_on_change: bool = False
    """``cow_context_vma_adjust()``, which has no caller in the PoC, runs for
    every VMA a split, merge, expand or shrink changes (``vma_complete()``)."""
    no_fork_readd: bool = False
    """``cow_context_do_fork()`` does not re-add the parent VMA's private-file
    entry (``cow_context_do_map_private_cow(pvma)``), which turns an inline
    offset into a kmalloc'd one-entry dynarray on the first fork.  Cost only."""
    migrate_ref: bool = False
    """``__folio_migrate_mapping()`` sets the new folio's context only past its
    ``-EAGAIN`` exits, together with the reference it takes."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def enabled(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]
