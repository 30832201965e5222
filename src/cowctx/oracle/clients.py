"""The rmap walk clients checked against the truth.

The clients do what their kernel functions do and report what they did; here the
page tables scanned before the client ran say what it should have done.  A
mapping the client's walk missed is a problem; a migration entry left behind is
turned into a PTE afterwards (a repair the kernel cannot make: a task faulting
there would wait for ever), so that a run can go on past the finding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.clients.migrate import MigrateResult, migrate_pages
from cowctx.clients.reclaim import ReclaimResult, reclaim_folio
from cowctx.clients.referenced import folio_referenced
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import is_migration_entry, migration_entry_to_pte, pte_pfn, pte_present
from cowctx.oracle.oracle import Mapping, scan_page_tables

if TYPE_CHECKING:
    from cowctx.mm.folio import Folio
    from cowctx.mm.machine import Machine


def _truth(m: Machine, folio: Folio, mappings: set[Mapping] | None) -> set[Mapping]:
    return mappings if mappings is not None else scan_page_tables(m).get(folio.pfn, set())


def check_migrate(
    m: Machine, folio: Folio, mappings: set[Mapping] | None = None
) -> tuple[MigrateResult, list[str]]:
    """:func:`migrate_pages` on ``folio`` and what it got wrong.  ``mappings``: the
    folio's mappings if the caller has them (one page-table scan for many folios)."""
    before = _truth(m, folio, mappings)
    old_pfn = folio.pfn
    result = migrate_pages(m, folio)
    mms = {mm.mm_id: mm for mm in m.live_mms()}
    problems: list[str] = []
    target = result.new or folio
    for mm_id, address in sorted(before):
        pgd = mms[mm_id].pgd
        vpn = address >> PAGE_SHIFT
        pte = pgd[vpn]
        if result.new is None and pte_present(pte) and (mm_id, address) not in result.unmapped:
            problems.append(f"try_to_migrate missed mm#{mm_id} at {address:#x}")
        elif is_migration_entry(pte) and pte_pfn(pte) == old_pfn:
            problems.append(f"remove_migration_ptes missed mm#{mm_id} at {address:#x}")
            pgd[vpn] = migration_entry_to_pte(pte, target.pfn)  # repair, see above
            target.mapcount += 1
    return result, problems


def check_reclaim(
    m: Machine, folio: Folio, mappings: set[Mapping] | None = None
) -> tuple[ReclaimResult, list[str]]:
    """:func:`reclaim_folio` on ``folio`` and the mappings its walk missed."""
    before = _truth(m, folio, mappings)
    result = reclaim_folio(m, folio)
    if result.freed:
        return result, []
    mms = {mm.mm_id: mm for mm in m.live_mms()}
    return result, [
        f"try_to_unmap missed mm#{mm_id} at {address:#x}"
        for mm_id, address in sorted(before)
        if pte_present(mms[mm_id].pgd[address >> PAGE_SHIFT])
    ]


def check_referenced(m: Machine, folio: Folio) -> list[str]:
    """:func:`folio_referenced` must find as many mappings as the folio's mapcount."""
    result = folio_referenced(m, folio)
    if result.mappings_found == result.mapcount:
        return []
    return [f"folio_referenced found {result.mappings_found} of {result.mapcount} mappings"]
