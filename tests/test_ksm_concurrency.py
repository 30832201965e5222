"""The KSM merge under the explorer (mm/ksm.c's locks and re-checks): a merge
may skip a page another thread holds and merge it in another schedule, and
replace_page()'s pte_same() re-check is what keeps a racing CoW's write."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cowctx.concurrency.explorer import Report, explore
from cowctx.concurrency.program import ScenarioProgram
from cowctx.mm import ksm_scan
from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import PTE_PFN_SHIFT, Folio, pfn_pte, pte_flags, pte_wrprotect
from cowctx.mm.machine import Machine
from cowctx.mm.memory import folio_remove_rmap_pte
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.scenario.loader import load_scenario

CONCURRENT = Path(__file__).parent.parent / "scenarios" / "concurrent"


def _explore(name: str, design: str) -> Report:
    p = ScenarioProgram(load_scenario(CONCURRENT / name), design)
    return explore(p, p.names, bound=2)


def _p0_pfns(state: str) -> list[int]:
    """The pfns p0's PTEs map, page by page, in a final state."""
    line = next(s for s in state.splitlines() if s.startswith("p0: "))
    ptes = ast.literal_eval(line[line.rindex(" [") + 1 :])
    return [pte >> PTE_PFN_SHIFT for _, pte in ptes]


@pytest.mark.parametrize("design", ["anon_vma", "cow_context"])
def test_ksm_merge_races_migration(design: str) -> None:
    """Migration's reference and folio lock make the merge skip page 1 in some
    schedules; in others the pages end merged (one pfn): both outcomes exist,
    and no schedule breaks a checker."""
    report = _explore("ksm-migrate.yaml", design)
    assert report.executions > 1
    assert not report.violations, report.violations
    merged = {len(set(_p0_pfns(s))) == 1 for s in report.final_states}
    assert merged == {True, False}


@pytest.mark.parametrize("design", ["anon_vma", "cow_context"])
def test_ksm_merge_races_cow_clean(design: str) -> None:
    report = _explore("ksm-cow.yaml", design)
    assert report.executions > 1
    assert not report.violations, report.violations
    # the write either lands before the merge (page 1 stays its own) or breaks
    # the KSM page afterwards (a new copy): page 1 never ends on page 0's folio
    assert all(len(set(_p0_pfns(s))) == 2 for s in report.final_states)


def _replace_page_without_pte_same(
    m: Machine, vma: VmAreaStruct, address: int, old: Folio, kfolio: Folio, orig_pte: int
) -> bool:
    """replace_page() with its pte_same() re-check left out (deliberately broken):
    the same lock and points, the PTE replaced whatever it maps now."""
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    lk.ptl_lock(mm)
    lk.pte(mm, vpn, True, kfolio, old)
    pte = mm.pgd[vpn]
    mm.pgd[vpn] = pte_wrprotect(pfn_pte(kfolio.pfn, pte_flags(pte)))
    kfolio.mapcount += 1
    folio_remove_rmap_pte(m, old)
    lk.ptl_unlock(mm)
    return True


def test_replace_page_without_pte_same_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the re-check, the CoW copy a racing write made between
    write_protect_page() and replace_page() is overwritten by the KSM page: the
    copy is left mapped by nobody and the old folio's mapcount goes negative,
    which the oracle's mapcount check reports."""
    monkeypatch.setattr(ksm_scan, "replace_page", _replace_page_without_pte_same)
    report = _explore("ksm-cow.yaml", "anon_vma")
    details = [d for kind, d in report.violations if kind == "mapcount"]
    assert any("mapcount=-1" in d for d in details), report.violations
    assert any("mapcount=1> but no PTE maps it" in d for d in details), report.violations
