"""Structural invariants of the anon_vma design (linux-anon-rmap.md section 1.6),
checked against the whole machine: chains, interval trees, counters, refcounts
and every mapped anon folio's anon_vma."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.designs.anon_vma.structs import AnonVma, AnonVmaVma, avc_last_pgoff, avc_start_pgoff

if TYPE_CHECKING:
    from cowctx.designs.anon_vma.rmap import AnonVmaRmap


def check_anon_vma_invariants(rmap: AnonVmaRmap) -> list[str]:
    problems: list[str] = []
    m = rmap.machine
    live = rmap.anon_vmas
    active: dict[int, int] = {}
    tree_members: dict[int, set[int]] = {av_id: set() for av_id in live}
    chain_sets: dict[int, frozenset[int]] = {}
    for mm in m.live_mms():
        for vma in mm.vmas():
            assert isinstance(vma, AnonVmaVma)
            chain = vma.anon_vma_chain
            av = vma.anon_vma
            where = f"mm#{mm.mm_id} {vma!r}"
            if (av is None) != (not chain):
                problems.append(f"{where}: anon_vma {av!r} but {len(chain)} AVCs")
                continue
            if av is None:
                continue
            assert isinstance(av, AnonVma)
            if av.freed:
                problems.append(f"{where}: vma->anon_vma AV{av.av_id} was freed")
            if all(avc.anon_vma is not av for avc in chain):
                problems.append(f"{where}: vma->anon_vma AV{av.av_id} is not in its chain")
            active[av.av_id] = active.get(av.av_id, 0) + 1
            roots = {avc.anon_vma.root.av_id for avc in chain}
            if len(roots) != 1:
                problems.append(f"{where}: chain spans roots {sorted(roots)}")
            ids = frozenset(avc.anon_vma.av_id for avc in chain)
            if len(ids) != len(chain):
                problems.append(f"{where}: chain links an anon_vma twice")
            if chain_sets.setdefault(av.av_id, ids) != ids:
                problems.append(f"{where}: VMAs sharing AV{av.av_id} have different chains")
            for avc in chain:
                if avc.vma is not vma:
                    problems.append(f"{where}: {avc!r} in the wrong VMA's chain")
                if avc.anon_vma.freed:
                    problems.append(f"{where}: {avc!r} links a freed anon_vma")
                    continue
                if avc not in avc.anon_vma.rb_root:
                    problems.append(f"{where}: {avc!r} missing from AV{avc.anon_vma.av_id}'s tree")
                    continue
                tree_members[avc.anon_vma.av_id].add(id(avc))
                if (avc.rb_start, avc.rb_last) != (avc_start_pgoff(avc), avc_last_pgoff(avc)):
                    problems.append(
                        f"{where}: {avc!r} has a stale interval-tree key "
                        f"[{avc.rb_start:#x}, {avc.rb_last:#x}]"
                    )
    for av in live.values():
        if av.root.freed:
            problems.append(f"AV{av.av_id}: root AV{av.root.av_id} freed first")
        if {id(avc) for avc in av.rb_root} != tree_members[av.av_id]:
            problems.append(f"AV{av.av_id}: tree holds AVCs no live chain has")
        if av.num_active_vmas != active.get(av.av_id, 0):
            problems.append(
                f"AV{av.av_id}: num_active_vmas {av.num_active_vmas}, "
                f"{active.get(av.av_id, 0)} VMAs use it"
            )
        children = sum(1 for x in live.values() if x.parent is av and x.rb_root)
        if av.num_children != children:
            problems.append(f"AV{av.av_id}: num_children {av.num_children}, expected {children}")
        extra = rmap.extra_refs(av)
        if av.root is av:
            descendants = sum(1 for x in live.values() if x.root is av and x is not av)
            expected = (1 if av.rb_root else 0) + descendants + extra
        else:
            expected = (1 if av.rb_root else 0) + extra
        if av.refcount != expected:
            problems.append(f"AV{av.av_id}: refcount {av.refcount}, expected {expected}")
        if not av.rb_root and av.refcount == 0:
            problems.append(f"AV{av.av_id}: dead but not freed")
    for folio in m.mem_map.values():
        if folio.anon and not folio.ksm and folio.mapcount:
            av = folio.mapping
            if not isinstance(av, AnonVma) or av.freed:
                problems.append(f"{folio!r}: mapping {av!r} is not a live anon_vma")
    return problems
