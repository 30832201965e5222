"""The CoW context PoC's known and suspected faults, each a switch.

``cow_context`` has every switch off (our corrected design); ``cow_context_poc``
has every one on (the PoC as reference/cow-context.md reads it).  A design
``cow_context[name,...]`` turns on only the named ones, so each fault's effect
(a missed mapping, a wrong remap set, or only cost) can be shown alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class CowContextOptions:
    exclusive_abort: bool = False
    """The walk gives up after probing offset 0 of the folio's own context when
    the folio is mapped exclusively (``!folio_maybe_mapped_shared``), instead of
    stopping once it has found ``mapcount`` mappings."""
    unmap_no_split: bool = False
    """Unmapping part of a tracked range removes the offset from every remap
    entry it overlaps, whole (``find_and_unmap_existing`` does not split)."""
    remap_in_place: bool = False
    """mremap updates tracking as ``cow_context_do_remap()``: the old offset is
    computed from the old VMA's ``vm_start`` (``orig_addr``), entries holding
    it are rewritten to the new offset whole and in place, a new entry is added
    only if none was found, and a move home removes the old offset's entries."""
    untracked_dest_merge: bool = False
    """When the mremap destination merges with a neighbour, the moved range is
    not tracked (no cow-context call on that path)."""
    file_remap_entries: bool = False
    """No ``vm_anon_pgoff``: anon folios in MAP_PRIVATE file VMAs are indexed by
    file offset, so every faulted private file VMA gets remap entries."""
    untracked_expand: bool = False
    """Split, merge, expand and shrink never touch remap entries
    (``cow_context_vma_adjust`` has no caller): a tracked VMA that grows leaves
    its new pages untracked.  (Found reading the PoC; not in the brief's list.)"""
    no_stabilisation: bool = False
    """Ablation of the walker reference count (docs/stabilisation.md section 6):
    the walk runs as the PoC's, under ``rcu_read_lock()`` only, over the
    ``rmap_one`` callbacks too, and writers take only their spinlocks and free
    the ``mm_struct`` without a grace period.  Sequentially nothing changes."""
    sentinel_merge: bool = False
    """``vma->anon_vma`` is the ``DUMMY_ANON_VMA`` sentinel with an empty chain,
    so every faulted VMA looks like a fork child to ``is_mergeable_anon_vma``:
    a faulted and an unfaulted VMA never merge.  (Cost only: more VMAs.)"""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def all_on(cls) -> CowContextOptions:
        return cls(**dict.fromkeys(cls.names(), True))

    def enabled(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]
