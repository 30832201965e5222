"""Folio migration as ``migrate_pages()`` does it for one anon (or KSM) folio.

What the kernel does, and no more: it cannot know which mappings its rmap walk
missed.  A mapping ``try_to_migrate()`` misses keeps the folio mapped, so the
migration fails and the entries it did install are turned back into PTEs of the
old folio; a migration entry ``remove_migration_ptes()`` misses stays behind.
Telling those apart from a correct run is the oracle's job
(:func:`cowctx.oracle.clients.check_migrate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import Folio, make_migration_entry, migration_entry_to_pte
from cowctx.mm.ksm import folio_stable_node
from cowctx.mm.memory import folio_get, folio_put, folio_put_unmapped, folio_ref_add
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.rmap.walk import page_vma_mapped_walk, pvmw_done, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

Mapping = tuple[int, int]
"""(mm_id, address)."""


@dataclass
class MigrateResult:
    new: Folio | None
    """The folio that took the old one's place; None when the old folio stayed
    mapped after ``try_to_migrate()`` and migration failed (``-EAGAIN``)."""
    unmapped: list[Mapping] = field(default_factory=list)
    """Where ``try_to_migrate()`` installed a migration entry."""
    remapped: list[Mapping] = field(default_factory=list)
    """Where ``remove_migration_ptes()`` turned one back into a PTE (of the new
    folio, or of the old one after a failure)."""


def migrate_pages(m: Machine, folio: Folio) -> MigrateResult:
    """``migrate_pages()`` of a one-folio list, MIGRATE_SYNC, to any free page.

    # Combination of migrate_folio_unmap(), migrate_folio_move() and
    # migrate_folio_undo_src() for an anon folio: try_to_migrate(), then either
    # folio_migrate_mapping() + folio_migrate_flags() + remove_migration_ptes(src, dst)
    # or, if the folio is still mapped, remove_migration_ptes(src, src).
    """
    assert folio.anon and folio.mapcount, folio
    record = m.ledger.walk("try_to_migrate", shared=folio.mapcount > 1)
    unmapped: list[Mapping] = []

    def try_to_migrate_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        rt.may_sleep("try_to_migrate_one (mmu notifiers)")
        if page_vma_mapped_walk(f, vma, address, record):
            pgd = vma.vm_mm.pgd
            vpn = address >> PAGE_SHIFT
            lk.pte(vma.vm_mm, vpn, True, f)  # the entry replaces the mapping (PTL held)
            pgd[vpn] = make_migration_entry(pgd[vpn])
            f.mapcount -= 1
            unmapped.append((vma.vm_mm.mm_id, address))
            rt.walk_visit(vma.vm_mm.mm_id, address)
            pvmw_done(vma, address)
        return True

    rt.lock("folio_lock", folio)
    folio_get(folio)  # isolated: migration's own reference
    rt.walk_begin(folio)
    rmap_walk(m, folio, record, try_to_migrate_one, done=lambda f: f.mapcount == 0)
    rt.walk_end(complete=folio.mapcount > 0)  # unmapped everywhere: nothing was missed
    try:
        return _migrate_rest(m, folio, unmapped)
    finally:
        rt.unlock("folio_lock", folio)
        folio_put(m, folio)  # the last reference if a racing munmap unmapped it meanwhile


def _migrate_rest(m: Machine, folio: Folio, unmapped: list[Mapping]) -> MigrateResult:
    if folio.mapcount:  # folio_mapped(src): migrate_folio_undo_src()
        return MigrateResult(None, unmapped, remove_migration_ptes(m, folio, folio, len(unmapped)))
    new = m.alloc_folio(folio.content)
    new.anon, new.ksm = True, folio.ksm
    new.anon_exclusive = folio.anon_exclusive
    if folio.ksm:
        node = folio_stable_node(folio)
        new.mapping, new.index = node, folio.index
        node.folio = new
    else:
        m.rmap.folio_migrate(new, folio)
    # folio_migrate_flags(): PG_dirty (anon_pg_dirty) and the lazyfree state go with it
    new.lazyfree, new.dirty = folio.lazyfree, folio.dirty
    new.anon_pg_dirty = folio.anon_pg_dirty
    if folio.swapcache is not None:  # folio_migrate_mapping(): the swap cache follows
        if rt.current is not None:  # its reference moves from one folio to the other
            rt.points("store", [(folio, "refcount", True), (new, "refcount", True)])
        new.swapcache, folio.swapcache = folio.swapcache, None
        m.swap.cache[new.swapcache] = new
    folio_get(new)  # migration's reference on dst, put after remove_migration_ptes()
    remapped = remove_migration_ptes(m, folio, new, len(unmapped))
    if folio.ksm:
        folio.mapcount = 0
    folio.anon = folio.ksm = False  # the old folio's rmap state moved to `new`
    m.free_folio(folio)
    folio_ref_add(new, -1)
    if rt.current is not None:
        # a racing munmap or exit zapped the entries, or unmapped dst once it was
        # mapped again: the last reference goes with migration's own.
        # (Sequentially an entry the walk missed is the oracle's to find and
        # repair: check_migrate().)
        folio_put_unmapped(m, new)
    return MigrateResult(new, unmapped, remapped)


def remove_migration_ptes(m: Machine, src: Folio, dst: Folio, entries: int) -> list[Mapping]:
    """``remove_migration_ptes(src, dst)``: walk ``dst``'s rmap for migration entries
    of ``src`` and map ``dst`` there (``entries``: how many were made, for the
    walk's shared/exclusive label)."""
    record = m.ledger.walk("remove_migration_ptes", shared=entries > 1)
    remapped: list[Mapping] = []

    def remove_migration_pte(f: Folio, vma: VmAreaStruct, address: int) -> bool:
        if page_vma_mapped_walk(f, vma, address, record, migration_of=src):
            pgd = vma.vm_mm.pgd
            vpn = address >> PAGE_SHIFT
            lk.pte(vma.vm_mm, vpn, True, dst)  # dst mapped again (PTL held)
            pgd[vpn] = migration_entry_to_pte(pgd[vpn], dst.pfn)
            dst.mapcount += 1
            remapped.append((vma.vm_mm.mm_id, address))
            pvmw_done(vma, address)
        return True

    rmap_walk(m, dst, record, remove_migration_pte)
    return remapped
