"""The KSM scan (``ksm_do_scan``) and unmerging (``break_ksm``).

One model scan does what ksmd converges to after two full passes over
unchanged pages: every anon page of a VM_MERGEABLE VMA (with an anon_vma) of
a registered mm merges with every other page of equal content.  Stale
rmap_items (their mapping is gone) and dead stable nodes are dropped at the
start of a scan, as ksmd drops them lazily; until then they pin their rmap
anchors (anon_vmas), which is how KSM delays anon_vma frees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT, VM_MERGEABLE
from cowctx.mm.folio import (
    ZERO_PFN,
    Folio,
    pfn_pte,
    pte_flags,
    pte_pfn,
    pte_present,
    pte_wrprotect,
)
from cowctx.mm.ksm import KsmRmapItem, KsmStableNode
from cowctx.mm.memory import folio_remove_rmap_pte, wp_page_copy
from cowctx.mm.mm_types import MmStruct, VmAreaStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


def _maps(mm: MmStruct, address: int, folio: Folio) -> bool:
    pte = mm.pgd.get(address >> PAGE_SHIFT)
    return pte is not None and pte_present(pte) and pte_pfn(pte) == folio.pfn


def remove_stale_rmap_items(m: Machine) -> None:
    """Drop rmap_items whose mm is gone or no longer maps the KSM page there, and
    stable nodes left with none (``remove_rmap_item_from_tree``,
    ``remove_node_from_stable_tree``): each drop puts the pinned anchor."""
    ksm = m.ksm
    live = {mm.mm_id for mm in m.live_mms()}
    for node in list(ksm.stable_nodes):
        keep = []
        for item in node.rmap_items:
            if (
                item.mm.mm_id in live
                and not node.folio.freed
                and _maps(item.mm, item.address, node.folio)
            ):
                keep.append(item)
            else:
                m.rmap.ksm_rmap_item_release(item.anchor)
        node.rmap_items = keep
        if not keep and (node.folio.freed or not node.folio.mapcount):
            ksm.stable_nodes.remove(node)
    for mm_id in [i for i in ksm.mm_slots if i not in live]:
        del ksm.mm_slots[mm_id]


def ksm_do_scan(m: Machine) -> int:
    """One full scan; returns how many PTEs now map a different (KSM) folio."""
    ksm = m.ksm
    remove_stale_rmap_items(m)
    by_content: dict[int, KsmStableNode] = {
        n.folio.content: n for n in ksm.stable_nodes if not n.folio.freed
    }
    known = {(id(i.mm), i.address) for n in ksm.stable_nodes for i in n.rmap_items}
    candidates: dict[int, list[tuple[VmAreaStruct, int, Folio]]] = {}
    for mm in list(ksm.mm_slots.values()):
        for vma in mm.vmas():
            if not vma.vm_flags & VM_MERGEABLE or vma.anon_vma is None:
                continue
            for vpn, pte in mm.iter_ptes(vma.vm_start, vma.vm_end):
                if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
                    continue
                folio = m.mem_map[pte_pfn(pte)]
                if not folio.anon:
                    continue
                address = vpn << PAGE_SHIFT
                if folio.ksm and (id(mm), address) in known:
                    continue
                candidates.setdefault(folio.content, []).append((vma, address, folio))
    merged = 0
    for content, group in candidates.items():
        node = by_content.get(content)
        if node is None and len({f.pfn for _, _, f in group}) < 2:
            continue  # a page only shared by fork is never substituted
        # the anchors are taken while every folio still has its anon rmap state
        anchors = [m.rmap.ksm_rmap_item_anchor(vma, folio) for vma, _, folio in group]
        if node is None:
            node = _make_stable(m, group[0][2])
            ksm.stable_nodes.append(node)
        kfolio = node.folio
        for (vma, address, folio), anchor in zip(group, anchors, strict=True):
            if folio is not kfolio:
                _replace_page(m, vma, address, folio, kfolio)
                merged += 1
            else:
                _wrprotect(vma, address)
            node.rmap_items.append(KsmRmapItem(vma.vm_mm, address, anchor))
    return merged


def _make_stable(m: Machine, folio: Folio) -> KsmStableNode:
    """``try_to_merge_one_page(..., kpage=NULL)`` + ``stable_tree_insert``: the
    folio becomes the KSM folio (mapping = stable node, never exclusive)."""
    m.rmap.folio_free(folio)  # it leaves the anon rmap for the stable tree
    node = KsmStableNode(folio)
    folio.ksm = True
    folio.anon_exclusive = False
    folio.mapping = node
    return node


def _wrprotect(vma: VmAreaStruct, address: int) -> None:
    pgd = vma.vm_mm.pgd
    vpn = address >> PAGE_SHIFT
    pgd[vpn] = pte_wrprotect(pgd[vpn])


def _replace_page(m: Machine, vma: VmAreaStruct, address: int, old: Folio, kfolio: Folio) -> None:
    """``replace_page()``: the PTE now maps the KSM folio, read-only."""
    vpn = address >> PAGE_SHIFT
    lk.pte(vma.vm_mm, vpn, True, kfolio, old)
    pte = vma.vm_mm.pgd[vpn]
    vma.vm_mm.pgd[vpn] = pte_wrprotect(pfn_pte(kfolio.pfn, pte_flags(pte)))
    kfolio.mapcount += 1
    folio_remove_rmap_pte(m, old)


def break_ksm_range(m: Machine, vma: VmAreaStruct, start: int, end: int) -> None:
    """``break_ksm()`` over a range: an unsharing fault copies each KSM page
    into a new exclusive anon folio (mapped read-only: unshare is not a write)."""
    for vpn, pte in list(vma.vm_mm.iter_ptes(start, end)):
        if not pte_present(pte):
            continue
        folio = m.mem_map.get(pte_pfn(pte))
        if folio is not None and folio.ksm:
            wp_page_copy(m, vma, vpn << PAGE_SHIFT, folio, unshare=True)
