"""The oracle: which (mm, address) map each folio, found by scanning every page
table of every live mm, and the checks that compare each design's rmap walk
and structures with it after a step.

It knows nothing about either design: it asks the design to walk, and checks
the answer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowctx.mm.constants import PAGE_SHIFT, VM_SHARED, VM_WRITE
from cowctx.mm.folio import (
    ZERO_PFN,
    is_migration_entry,
    is_swap_pte,
    pte_pfn,
    pte_present,
    pte_write,
)
from cowctx.mm.ksm import folio_stable_node
from cowctx.rmap.walk import page_vma_mapped_walk, rmap_walk

if TYPE_CHECKING:
    from cowctx.mm.folio import Folio
    from cowctx.mm.machine import Machine
    from cowctx.mm.mm_types import VmAreaStruct

Mapping = tuple[int, int]
"""(mm_id, address)."""


@dataclass(frozen=True)
class Violation:
    """A disagreement between a design and the truth, or a broken invariant."""

    kind: str
    """One of :data:`VIOLATION_KINDS`: ``missed`` (a walk did not find a mapping),
    ``mapcount``, ``pte``, ``vma``, ``invariant`` (design structure), ``client`` (a
    client's result); or of :data:`LIMIT_KINDS`."""
    detail: str
    folio: int | None = None
    step: int | None = None
    op: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.step,
            "op": self.op,
            "kind": self.kind,
            "folio": self.folio,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        where = f"step {self.step} ({self.op}): " if self.step is not None else ""
        return f"{where}{self.kind}: {self.detail}"


def scan_page_tables(m: Machine) -> dict[int, set[Mapping]]:
    """pfn -> every (mm_id, address) whose present PTE maps it (zero page excluded)."""
    truth: dict[int, set[Mapping]] = {}
    for mm in m.live_mms():
        for vpn, pte in mm.pgd.items():
            if pte_present(pte):
                pfn = pte_pfn(pte)
                if pfn != ZERO_PFN:
                    truth.setdefault(pfn, set()).add((mm.mm_id, vpn << PAGE_SHIFT))
    return truth


def walk_mappings(m: Machine, folio: Folio) -> set[Mapping]:
    """What the design's rmap walk finds for ``folio`` (confirmed in the page table)."""
    found: set[Mapping] = set()
    m.ledger.muted += 1
    try:
        record = m.ledger.walk("oracle", shared=folio.mapcount > 1)

        def rmap_one(f: Folio, vma: VmAreaStruct, address: int) -> bool:
            if page_vma_mapped_walk(f, vma, address, record):
                found.add((vma.vm_mm.mm_id, address))
            return True

        rmap_walk(m, folio, record, rmap_one)
    finally:
        m.ledger.muted -= 1
    return found


VIOLATION_KINDS = frozenset({"missed", "mapcount", "pte", "vma", "invariant", "client"})
"""Every kind of :class:`Violation` (what an ``expect.violations`` block may name)."""

LIMIT_KINDS = frozenset({"ksm_unlisted"})
"""Misses the kernel makes too, reported apart from violations.

``ksm_unlisted``: a KSM page mapped at an (mm, address) no rmap_item lists and
not reachable as a fork of a listed one: ``rmap_walk_ksm()`` walks only the
rmap_items' anon_vmas, so e.g. a parent still mapping a page its child's scan
turned into a KSM page is invisible to migration and reclaim (they then fail
for that folio, as they do on Linux)."""


def check_machine(m: Machine, include_limits: bool = False) -> list[Violation]:
    """Every check: rmap walks against the truth, then the machine's and the
    design's structural invariants.  Kernel limits (:data:`LIMIT_KINDS`) are
    left out unless ``include_limits``."""
    out: list[Violation] = []
    truth = scan_page_tables(m)
    mem_map = m.mem_map
    for pfn, mappings in sorted(truth.items()):
        folio = mem_map.get(pfn)
        if folio is None:
            out.append(Violation("pte", f"PTEs {sorted(mappings)} map freed pfn {pfn}", pfn))
            continue
        if folio.mapcount != len(mappings):
            out.append(Violation("mapcount", f"{folio!r}: {len(mappings)} PTEs map it", pfn))
        if not folio.anon:
            continue
        found = walk_mappings(m, folio)
        known = folio_stable_node(folio).listed() if folio.ksm else None
        for mm_id, address in sorted(mappings - found):
            listed = known is None or (mm_id, address) in known
            if not listed and not include_limits:
                continue
            out.append(
                Violation(
                    "missed" if listed else "ksm_unlisted",
                    f"rmap walk of {folio!r} ({m.rmap.describe_folio(folio)}) missed "
                    f"mm#{mm_id} at {address:#x}",
                    pfn,
                )
            )
    for folio in mem_map.values():
        if folio.pfn not in truth and folio.mapcount:
            out.append(Violation("mapcount", f"{folio!r} but no PTE maps it", folio.pfn))
        if folio.anon and not folio.mapcount and folio.swapcache is None and folio.pfn:
            out.append(
                Violation("mapcount", f"{folio!r}: unmapped anon folio not freed", folio.pfn)
            )
    out.extend(check_page_tables(m))
    out.extend(Violation("invariant", msg) for msg in m.rmap.check_invariants())
    return out


def check_page_tables(m: Machine) -> list[Violation]:
    """PTEs only inside VMAs; a writable PTE only in a writable VMA; a writable PTE
    of a private anon folio only if that folio is exclusive (else CoW is broken)."""
    out: list[Violation] = []
    for mm in m.live_mms():
        vmas = mm.vmas()
        if len(vmas) != mm.map_count:
            out.append(
                Violation("vma", f"mm#{mm.mm_id}: map_count {mm.map_count}, {len(vmas)} VMAs")
            )
        for a, b in itertools.pairwise(vmas):
            if a.vm_end > b.vm_start or a.vm_start >= a.vm_end:
                out.append(Violation("vma", f"mm#{mm.mm_id}: {a!r} overlaps {b!r}"))
        for vpn, pte in mm.pgd.items():
            addr = vpn << PAGE_SHIFT
            vma = mm.vma_lookup(addr)
            if vma is None:
                out.append(Violation("pte", f"mm#{mm.mm_id}: PTE at {addr:#x} outside any VMA"))
                continue
            if is_migration_entry(pte):
                out.append(Violation("pte", f"mm#{mm.mm_id}: migration entry left at {addr:#x}"))
                continue
            if is_swap_pte(pte) or not pte_present(pte):
                continue
            if pte_write(pte):
                if not vma.vm_flags & VM_WRITE:
                    out.append(
                        Violation("pte", f"mm#{mm.mm_id}: writable PTE at {addr:#x} in {vma!r}")
                    )
                folio = m.mem_map.get(pte_pfn(pte))
                if (
                    folio is not None
                    and folio.anon
                    and not vma.vm_flags & VM_SHARED
                    and (folio.mapcount != 1 or not folio.anon_exclusive)
                ):
                    out.append(
                        Violation(
                            "pte",
                            f"mm#{mm.mm_id}: writable PTE at {addr:#x} maps shared {folio!r}",
                            folio.pfn,
                        )
                    )
    return out
