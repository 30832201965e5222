"""Folio migration: ``try_to_migrate()``, copy, ``remove_migration_ptes()``.

A mapping ``try_to_migrate`` misses keeps the old folio mapped (the kernel
would then fail the migration); a migration entry ``remove_migration_ptes``
misses is left behind (a task faulting on it would wait forever).  Both are
violations; the machine is repaired so a run can go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_MIGRATION, PTE_PFN_SHIFT, PTE_PRESENT, Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.oracle.oracle import scan_page_tables
from cowctx.rmap.walk import page_vma_mapped_walk, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass
class MigrateResult:
    new: Folio | None
    problems: list[str] = field(default_factory=list)


def migrate_folio(
    m: Machine, folio: Folio, mappings: set[tuple[int, int]] | None = None
) -> MigrateResult:
    """``migrate_pages()`` for one mapped anon (or KSM) folio."""
    assert folio.anon and folio.mapcount, folio
    # the mappings to check afterwards: given by a caller migrating many folios
    # (one page-table scan for all), else found by scanning the page tables
    before = mappings if mappings is not None else scan_page_tables(m).get(folio.pfn, set())
    mms = {mm.mm_id: mm for mm in m.live_mms()}
    problems: list[str] = []
    record = m.ledger.walk("try_to_migrate", shared=folio.mapcount > 1)

    def try_to_migrate_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        if page_vma_mapped_walk(f, vma, address, record):
            pgd = vma.vm_mm.pgd
            vpn = address >> PAGE_SHIFT
            pgd[vpn] = (pgd[vpn] & ~PTE_PRESENT) | PTE_MIGRATION  # keeps pfn and bits
            f.mapcount -= 1
        return True

    rmap_walk(m, folio, record, try_to_migrate_one, done=lambda f: f.mapcount == 0)
    if folio.mapcount:
        for mm_id, address in sorted(before):
            pte = mms[mm_id].pgd[address >> PAGE_SHIFT]
            if pte & PTE_PRESENT:
                problems.append(f"try_to_migrate missed mm#{mm_id} at {address:#x}")
        _restore(m, folio, folio, before, mms)
        return MigrateResult(None, problems)
    new = m.alloc_folio(folio.content)
    new.anon, new.ksm = True, folio.ksm
    new.anon_exclusive = folio.anon_exclusive
    if folio.ksm:
        node = folio.mapping
        new.mapping, new.index = node, folio.index
        node.folio = new  # type: ignore[attr-defined]
    else:
        m.rmap.folio_migrate(new, folio)
    new.lazyfree, new.dirty = folio.lazyfree, folio.dirty  # folio_migrate_flags()
    if folio.swapcache is not None:  # folio_migrate_mapping(): the swap cache follows
        new.swapcache, folio.swapcache = folio.swapcache, None
        m.swap.cache[new.swapcache] = new
    record = m.ledger.walk("remove_migration_ptes", shared=len(before) > 1)

    def remove_migration_pte(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        if page_vma_mapped_walk(f, vma, address, record, migration_of=folio):
            _map_new(vma.vm_mm.pgd, address >> PAGE_SHIFT, new)
        return True

    rmap_walk(m, new, record, remove_migration_pte)
    for mm_id, address in sorted(before):
        pte = mms[mm_id].pgd[address >> PAGE_SHIFT]
        if pte & PTE_MIGRATION:
            problems.append(f"remove_migration_ptes missed mm#{mm_id} at {address:#x}")
    _restore(m, folio, new, before, mms)
    if folio.ksm:
        folio.mapcount = 0
    folio.anon = folio.ksm = False  # the old folio's rmap state moved to `new`
    m.free_folio(folio)
    return MigrateResult(new, problems)


def _restore(m: Machine, old: Folio, new: Folio, mappings: set[tuple[int, int]], mms: dict) -> None:  # type: ignore[type-arg]
    """Turn any migration entry of ``old`` left behind into a PTE of ``new``."""
    for mm_id, address in mappings:
        pgd = mms[mm_id].pgd
        vpn = address >> PAGE_SHIFT
        pte = pgd[vpn]
        if pte & PTE_MIGRATION and pte >> PTE_PFN_SHIFT == old.pfn:
            _map_new(pgd, vpn, new)


def _map_new(pgd: dict[int, int], vpn: int, new: Folio) -> None:
    """A migration entry becomes a present PTE of ``new``, keeping its bits."""
    bits = pgd[vpn] & ((1 << PTE_PFN_SHIFT) - 1) & ~PTE_MIGRATION
    pgd[vpn] = (new.pfn << PTE_PFN_SHIFT) | bits | PTE_PRESENT
    new.mapcount += 1
