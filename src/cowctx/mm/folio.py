"""Folios and the page-table entries that map them.

Only order-0 folios are modelled (THP is ``madvise`` and mTHP ``never`` on the
reference machine, so plain mappings below 2 MiB never get large folios).  A
folio's ``mapcount`` is what ``folio_mapcount()`` returns (the kernel stores
``_mapcount`` biased by -1).
"""

from __future__ import annotations

ZERO_PFN = 0
"""The shared zero page's frame (``my_zero_pfn()``); never counted in mapcounts."""


class Folio:
    """``struct folio`` (one page).

    ``mapping`` is the rmap anchor: for an anon folio whatever the anon rmap
    design put there (``anon_vma`` or CoW context), for a page-cache folio the
    :class:`~cowctx.mm.file.File` whose cache holds it, for KSM folios the
    stable node.  ``content`` is the page's data, abstracted to an int: a byte
    value 0-255 for a page filled with that byte, larger values for pages whose
    data is unique (see :mod:`cowctx.mm.content`).
    """

    __slots__ = (
        "anon",
        "anon_exclusive",
        "anon_pg_dirty",
        "content",
        "dirty",
        "freed",
        "index",
        "ksm",
        "lazyfree",
        "mapcount",
        "mapping",
        "pfn",
        "pinned",
        "swapcache",
    )

    def __init__(self, pfn: int, content: int) -> None:
        self.pfn = pfn
        self.index = 0
        self.mapping: object | None = None
        self.anon = False
        self.ksm = False
        self.mapcount = 0
        self.anon_exclusive = False
        self.content = content
        self.swapcache: int | None = None
        self.freed = False
        self.pinned = 0
        """References held by migration or reclaim (isolated from the LRU): the
        last unmap does not free the folio then, its holder does."""
        self.lazyfree = False
        self.dirty = False
        self.anon_pg_dirty = False
        """PG_dirty of an anon folio as the kernel keeps it: set when the folio leaves the
        swap cache (``folio_free_swap()``), cleared by MADV_FREE and by the swap write.
        A store dirties only the PTE, so plain written anon folios are not PG_dirty;
        ``dirty`` above counts those too (reclaim's "must it be written again")."""
        """PG_dirty of a page-cache folio: written since it was read in.  A clean
        shmem folio holds only zeroes, so reclaim may drop it from the cache."""
        """MADV_FREE'd: not swap-backed; reclaim discards it unless a PTE was
        dirtied since (``folio_mark_lazyfree()``)."""

    def __repr__(self) -> str:
        kind = "ksm" if self.ksm else "anon" if self.anon else "file"
        return f"<folio pfn={self.pfn} {kind} index={self.index:#x} mapcount={self.mapcount}>"


def folio_nr_pages(folio: Folio) -> int:
    """``folio_nr_pages()``: always 1 in this model."""
    return 1


def is_zero_folio(folio: Folio) -> bool:
    return folio.pfn == ZERO_PFN


# --- page-table entries: plain ints, as cheap to copy as the kernel's --------------
#
# A present PTE holds a PFN and bits; a non-present PTE holds a swap or
# migration entry (the PFN field then carries the swap slot or the old PFN).

PTE_PRESENT = 0x01
PTE_WRITE = 0x02
PTE_YOUNG = 0x04
PTE_DIRTY = 0x08
PTE_SWP_EXCLUSIVE = 0x10
"""``pte_swp_exclusive()``: the swapped-out page was PageAnonExclusive."""
PTE_MIGRATION = 0x20
"""A migration entry (``is_migration_entry()``); the PFN field is the old folio."""
PTE_SWAP = 0x40
"""A swap entry (``is_swap_pte()``); the PFN field is the swap slot."""
PTE_PFN_SHIFT = 8


def mk_pte(pfn: int, write: bool, young: bool = True, dirty: bool = False) -> int:
    return (
        (pfn << PTE_PFN_SHIFT)
        | PTE_PRESENT
        | (PTE_WRITE if write else 0)
        | (PTE_YOUNG if young else 0)
        | (PTE_DIRTY if dirty else 0)
    )


def pfn_pte(pfn: int, bits: int) -> int:
    """``pfn_pte()``: a PTE of ``pfn`` with ``bits`` (PTE_PRESENT and the rest)."""
    return (pfn << PTE_PFN_SHIFT) | bits


def pte_flags(pte: int) -> int:
    """The bits of ``pte`` below the pfn (``pte_flags()``)."""
    return pte & ((1 << PTE_PFN_SHIFT) - 1)


def pte_present(pte: int) -> bool:
    return bool(pte & PTE_PRESENT)


def pte_pfn(pte: int) -> int:
    return pte >> PTE_PFN_SHIFT


def pte_write(pte: int) -> bool:
    return bool(pte & PTE_WRITE)


def pte_young(pte: int) -> bool:
    return bool(pte & PTE_YOUNG)


def pte_dirty(pte: int) -> bool:
    return bool(pte & PTE_DIRTY)


def pte_wrprotect(pte: int) -> int:
    return pte & ~PTE_WRITE


def pte_mkwrite(pte: int) -> int:
    return pte | PTE_WRITE


def pte_mkclean(pte: int) -> int:
    return pte & ~PTE_DIRTY


def swp_offset(pte: int) -> int:
    """The swap slot of a swap entry (``swp_offset(pte_to_swp_entry(pte))``)."""
    return pte >> PTE_PFN_SHIFT


def is_migration_entry(pte: int) -> bool:
    return bool(pte & PTE_MIGRATION)


def is_swap_pte(pte: int) -> bool:
    return bool(pte & PTE_SWAP)


def pte_mkold(pte: int) -> int:
    return pte & ~PTE_YOUNG


def swp_entry_to_pte(slot: int, exclusive: bool) -> int:
    """``swp_entry_to_pte()`` (with ``pte_swp_mkexclusive()`` when ``exclusive``)."""
    return pfn_pte(slot, PTE_SWAP | (PTE_SWP_EXCLUSIVE if exclusive else 0))


def pte_swp_exclusive(pte: int) -> bool:
    return bool(pte & PTE_SWP_EXCLUSIVE)


def make_migration_entry(pte: int) -> int:
    """The migration entry that replaces present ``pte`` in ``try_to_migrate_one()``:
    the old pfn and the PTE's bits are kept, so the entry can be restored."""
    return (pte & ~PTE_PRESENT) | PTE_MIGRATION


def migration_entry_to_pte(entry: int, pfn: int) -> int:
    """``remove_migration_pte()``: a present PTE of ``pfn`` with the entry's bits."""
    return pfn_pte(pfn, (pte_flags(entry) & ~PTE_MIGRATION) | PTE_PRESENT)
