"""Invariants of the CoW context design (reference/cow-context.md section 7.4):
P1 the hierarchy invariant, P3 refcount conservation, P4 remap tracking equals
what the VMAs need; plus the context tree's shape.  P2 (every walk finds every
mapping) is the oracle's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.designs.cow_context.structs import CowContext, CowContextMm
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import ZERO_PFN, pte_pfn, pte_present

if TYPE_CHECKING:
    from cowctx.designs.cow_context.rmap import CowContextRmap


def check_cow_context_invariants(rmap: CowContextRmap) -> list[str]:
    problems: list[str] = []
    m = rmap.machine
    live = rmap.contexts
    folio_refs: dict[int, int] = {}
    for folio in m.mem_map.values():
        if folio.anon and not folio.ksm:
            ctx = folio.mapping
            if not isinstance(ctx, CowContext) or ctx.freed:
                problems.append(f"{folio!r}: context {ctx!r} is not live")
                continue
            folio_refs[ctx.ctx_id] = folio_refs.get(ctx.ctx_id, 0) + 1
    for ctx in live.values():
        expected = (
            (1 if ctx.mm is not None else 0)
            + len(ctx.children)
            + folio_refs.get(ctx.ctx_id, 0)
            + rmap.ksm_refs.get(ctx.ctx_id, 0)
        )
        if ctx.refcount != expected:
            problems.append(f"C{ctx.ctx_id}: refcount {ctx.refcount}, expected {expected}")
        # between executions' steps every write section has ended and every
        # pin has been dropped (a thread that died inside one leaves it counted)
        for what, n in (("writers", ctx.writers), ("walkers", ctx.walkers)):
            if n:
                problems.append(f"C{ctx.ctx_id}: {what} {n}, with no thread running")
        if ctx.parent is not None and (ctx.parent.freed or ctx not in ctx.parent.children):
            problems.append(f"C{ctx.ctx_id}: not in its parent's children list")
        for child in ctx.children:
            if child.parent is not ctx or child.freed:
                problems.append(f"C{ctx.ctx_id}: child C{child.ctx_id} is not its child")
    for mm in m.live_mms():
        assert isinstance(mm, CowContextMm)
        ctx = mm.cow_context
        if ctx is None or ctx.freed or ctx.mm is not mm:
            problems.append(f"mm#{mm.mm_id}: context {ctx!r} does not point back")
            continue
        for vma in mm.vmas():
            if vma.anon_vma is not None and vma.anon_vma is not ctx:
                problems.append(f"mm#{mm.mm_id} {vma!r}: anon_vma is not the mm's context")
        want = rmap.expected_remaps(mm)
        have = ctx.remaps.as_function()
        missing: list[int] = []
        extra: list[int] = []
        if want != have:
            missing = sorted(p for p in want if want[p] - have.get(p, frozenset()))
            extra = sorted(p for p in have if have[p] - want.get(p, frozenset()))
            if getattr(rmap, "remaps_may_pile_up", False):
                extra = []  # the PoC never removes entries: stale ones are cost
        if missing or extra:
            problems.append(
                f"C{ctx.ctx_id} (mm#{mm.mm_id}): remap set does not match the VMAs: "
                f"missing at pgoffs {_ranges(missing)}, extra at {_ranges(extra)}"
            )
        for vpn, pte in mm.pgd.items():
            if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
                continue
            mapped = m.mem_map.get(pte_pfn(pte))
            if mapped is None or not mapped.anon or mapped.ksm:
                continue
            problems.extend(_hierarchy(rmap, mm, ctx, vpn << PAGE_SHIFT, mapped))
    return problems


def _hierarchy(
    rmap: CowContextRmap, mm: CowContextMm, ctx: CowContext, address: int, folio
) -> list[str]:
    """P1 (``cow_context_verify_vma()``): the mapping mm's context is the folio's
    or a descendant, and the VMA's offset is 0 or tracked at the folio's index."""
    out = []
    fctx = folio.mapping
    walker: CowContext | None = ctx
    while walker is not None and walker is not fctx:
        walker = walker.parent
    if walker is None:
        out.append(
            f"mm#{mm.mm_id} {address:#x}: {folio!r} belongs to C{fctx.ctx_id}, "
            f"not an ancestor of C{ctx.ctx_id}"
        )
    vma = mm.vma_lookup(address)
    if vma is not None:
        off = rmap.vma_offset(vma)
        if (address >> PAGE_SHIFT) - off != folio.index:
            out.append(
                f"mm#{mm.mm_id} {address:#x}: {folio!r} index is not the VMA's (offset {off})"
            )
        elif off and off not in ctx.remaps.lookup(folio.index)[1]:
            out.append(
                f"mm#{mm.mm_id} {address:#x}: offset {off} not tracked at index {folio.index:#x}"
            )
    return out


def _ranges(pgoffs: list[int]) -> str:
    if not pgoffs:
        return "none"
    runs, start, prev = [], pgoffs[0], pgoffs[0]
    for p in pgoffs[1:]:
        if p != prev + 1:
            runs.append((start, prev))
            start = p
        prev = p
    runs.append((start, prev))
    return ", ".join(f"[{a:#x}, {b + 1:#x})" for a, b in runs[:4]) + (
        " ..." if len(runs) > 4 else ""
    )
