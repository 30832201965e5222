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

from cowctx.concurrency import runtime as rt
from cowctx.mm import locking as lk
from cowctx.mm.constants import PAGE_SHIFT, VM_MERGEABLE
from cowctx.mm.folio import (
    ZERO_PFN,
    Folio,
    pfn_pte,
    pte_dirty,
    pte_flags,
    pte_pfn,
    pte_present,
    pte_write,
    pte_wrprotect,
)
from cowctx.mm.ksm import KsmRmapItem, KsmStableNode
from cowctx.mm.lru import folio_ref_count
from cowctx.mm.memory import folio_get, folio_put, folio_remove_rmap_pte, wp_page_copy
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
    """One full scan; returns how many PTEs now map a different (KSM) folio.

    ``ksm_do_scan()``: ``scan_get_next_rmap_item()`` looks at each mm's VMAs and
    pages under ``mmap_read_lock()``, then each merge is
    ``try_to_merge_with_ksm_page()`` (:func:`_merge_one`) under the mmap read
    lock again.  Under the explorer every merge may fail as the kernel's does
    (folio locked, extra reference, PTE changed, content changed): the page is
    then left as it is, for a later scan.

    Deliberate differences: the page of a group that becomes the KSM page is the
    first one scanned (the kernel: the second of ``try_to_merge_two_pages()``);
    every anchor of a group is pinned before the group's first merge (the
    design's anchor may read the folio's anon rmap state, which the merge ends),
    and put again if that merge fails; a group whose first merge fails is given
    up (``try_to_merge_two_pages()`` fails); a KSM page whose other merges all
    fail stays a KSM page (the kernel's ``break_cow()`` would unshare it).
    ``remove_stale_rmap_items()`` makes no points (ksmd's own lists)."""
    ksm = m.ksm
    remove_stale_rmap_items(m)
    by_content: dict[int, KsmStableNode] = {
        n.folio.content: n for n in ksm.stable_nodes if not n.folio.freed
    }
    known = {(id(i.mm), i.address) for n in ksm.stable_nodes for i in n.rmap_items}
    candidates: dict[int, list[tuple[VmAreaStruct, int, Folio]]] = {}
    for mm in list(ksm.mm_slots.values()):
        lk.mmap_read_lock(mm)
        for vma in mm.vmas():
            if rt.current is not None:
                rt.point("load", vma, "anon_vma")
            if not vma.vm_flags & VM_MERGEABLE or vma.anon_vma is None:
                continue
            for vpn, pte in list(mm.iter_ptes(vma.vm_start, vma.vm_end)):
                if rt.current is not None:  # folio_walk_start(): the PTE under the PTL
                    lk.pte(mm, vpn, False)
                    pte = mm.pgd.get(vpn, 0)
                if not pte_present(pte) or pte_pfn(pte) == ZERO_PFN:
                    continue
                folio = m.mem_map[pte_pfn(pte)]
                if not folio.anon:
                    continue
                address = vpn << PAGE_SHIFT
                if folio.ksm and (id(mm), address) in known:
                    continue
                if rt.current is not None:  # calc_checksum() / memcmp_pages()
                    rt.point("load", folio, "content")
                candidates.setdefault(folio.content, []).append((vma, address, folio))
        lk.mmap_read_unlock(mm)
    merged = 0
    for content, group in candidates.items():
        node = by_content.get(content)
        if node is None and len({f.pfn for _, _, f in group}) < 2:
            continue  # a page only shared by fork is never substituted
        anchors = [_anchor(m, vma, address, folio) for vma, address, folio in group]
        if node is not None:
            node.merging += 1
        for (vma, address, folio), anchor in zip(group, anchors, strict=True):
            if anchor is None:
                continue
            if node is None:
                node = _merge_one(m, vma.vm_mm, address, folio, None)
                if node is None:  # try_to_merge_two_pages() failed: give the group up
                    for other in anchors:
                        if other is not None:
                            m.rmap.ksm_rmap_item_release(other)
                    break
                ksm.stable_nodes.append(node)
                ok = True
            elif folio is node.folio:
                ok = _wrprotect(vma.vm_mm, address, folio)
            else:
                ok = _merge_one(m, vma.vm_mm, address, folio, node) is not None
                merged += ok
            if ok:
                stable_tree_append(node, KsmRmapItem(vma.vm_mm, address, anchor))
            else:
                m.rmap.ksm_rmap_item_release(anchor)
        if node is not None:
            node.merging -= 1  # ksmd's put_page(kpage)
    return merged


def find_mergeable_vma(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``find_mergeable_vma()``: the VMA at ``address`` if it is still mergeable
    and has anon state (the caller holds the mmap lock)."""
    vma = mm.find_vma(address)
    if vma is None or vma.vm_start > address:
        return None
    if rt.current is not None:
        rt.point("load", vma, "anon_vma")
    if not vma.vm_flags & VM_MERGEABLE or vma.anon_vma is None:
        return None
    return vma


def _anchor(m: Machine, vma: VmAreaStruct, address: int, folio: Folio) -> object | None:
    """The rmap_item's anchor, ``rmap_item->anon_vma = vma->anon_vma`` with
    ``get_anon_vma()`` as ``try_to_merge_with_ksm_page()`` takes it: under the
    mmap read lock, the VMA found again; None when it is gone."""
    mm = vma.vm_mm
    lk.mmap_read_lock(mm)
    try:
        if rt.current is not None:
            found = find_mergeable_vma(mm, address)
            if found is None:
                return None
            vma = found
        return m.rmap.ksm_rmap_item_anchor(vma, folio)
    finally:
        lk.mmap_read_unlock(mm)


def _merge_one(
    m: Machine, mm: MmStruct, address: int, folio: Folio, node: KsmStableNode | None
) -> KsmStableNode | None:
    """``try_to_merge_with_ksm_page()`` → ``try_to_merge_one_page()``: under the
    mmap read lock, the VMA found again (``find_mergeable_vma()``), the folio
    trylocked (migration and reclaim hold it: skip the page, as ksmd does), the
    PTE write-protected (:func:`write_protect_page`); then with ``node`` None the
    folio becomes the KSM folio of a new stable node (``kpage == NULL``, then
    ``stable_tree_insert()``), else ``pages_identical()`` and
    :func:`replace_page` map ``node``'s folio instead.  Returns the stable node,
    None when the merge fails.  ksmd holds its own reference on the folio from
    ``scan_get_next_rmap_item()`` to the end of the merge."""
    lk.mmap_read_lock(mm)
    folio_get(folio)
    try:
        vma = find_mergeable_vma(mm, address)
        if vma is None or folio.freed or not folio.anon:
            return None
        if not rt.trylock("folio_lock", folio):
            return None
        try:
            orig_pte = write_protect_page(m, vma, address, folio)
            if orig_pte is None:
                return None
            if node is None:
                # folio_set_stable_node(folio, NULL) under the folio lock:
                # folio->mapping changes (folio_test_ksm() reads it)
                if rt.current is not None:
                    rt.point("store", folio, "mapping", True)
                return _make_stable(m, folio)
            kfolio = node.folio
            if rt.current is not None:  # pages_identical()
                rt.points("load", [(folio, "content", False), (kfolio, "content", False)])
            if kfolio.freed or folio.content != kfolio.content:
                return None
            if not replace_page(m, vma, address, folio, kfolio, orig_pte):
                return None
            return node
        finally:
            rt.unlock("folio_lock", folio)
    finally:
        folio_put(m, folio)
        lk.mmap_read_unlock(mm)


def stable_tree_append(node: KsmStableNode, item: KsmRmapItem) -> None:
    """``stable_tree_append()``: under ``lock_page(kpage)`` (``cmp_and_merge_page()``
    takes it around the append), so a locked rmap walk of the KSM folio sees the
    list before or after."""
    kfolio = node.folio
    rt.lock("folio_lock", kfolio)
    if rt.current is not None:
        rt.point("store", node, "rmap_items", True)
    node.rmap_items.append(item)
    rt.unlock("folio_lock", kfolio)


def _make_stable(m: Machine, folio: Folio) -> KsmStableNode:
    """``try_to_merge_one_page(..., kpage=NULL)`` + ``stable_tree_insert``: the
    folio becomes the KSM folio (mapping = stable node, never exclusive)."""
    m.rmap.folio_free(folio)  # it leaves the anon rmap for the stable tree
    node = KsmStableNode(folio, merging=1)
    folio.ksm = True
    folio.anon_exclusive = False
    folio.mapping = node
    return node


def write_protect_page(m: Machine, vma: VmAreaStruct, address: int, folio: Folio) -> int | None:
    """``write_protect_page()``: under the page-table lock, the PTE must still map
    ``folio`` (``page_vma_mapped_walk()``); a writable, dirty or exclusive
    mapping is write-protected only if nobody else holds a reference
    (``folio_mapcount() + 1 + swapcache != folio_ref_count()`` fails: the 1 is
    ksmd's own), and the folio is no longer exclusive
    (``folio_try_share_anon_rmap_pte()``: a write fault copies instead of
    reusing it).  Returns the write-protected PTE (``orig_pte``), None on failure.

    Deliberate differences: the PTE keeps its dirty bit (the model's replace_page
    copies the flags); the references of the LRU batches are left out of the
    count: the kernel drains them with ``lru_add_drain_all()`` at the start of a
    full scan (``scan_get_next_rmap_item()``), which the model does not do (a
    drain would change the sequential model's LRU state)."""
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    lk.ptl_lock(mm)
    try:
        lk.pte(mm, vpn, True)
        pte = mm.pgd.get(vpn)
        if pte is None or not pte_present(pte) or pte_pfn(pte) != folio.pfn:
            return None
        if pte_write(pte) or pte_dirty(pte) or folio.anon_exclusive:
            swapped = folio.swapcache is not None
            refs = folio_ref_count(m, folio) - m.fbatches.refs(folio)
            if folio.mapcount + 1 + swapped != refs:
                return None  # GUP, migration's isolation, a walker's reference
            # folio_try_share_anon_rmap_pte(): no fault may reuse it any more
            folio.anon_exclusive = False
        pte = pte_wrprotect(pte)
        mm.pgd[vpn] = pte
        return pte
    finally:
        lk.ptl_unlock(mm)


def _wrprotect(mm: MmStruct, address: int, kfolio: Folio) -> bool:
    """Another mapping of the new KSM folio (shared by fork): write-protected,
    if it still maps it (``try_to_merge_one_page()`` returns at once for
    ``page == kpage``; fork left that PTE write-protected already)."""
    vpn = address >> PAGE_SHIFT
    lk.ptl_lock(mm)
    try:
        lk.pte(mm, vpn, True)
        pte = mm.pgd.get(vpn)
        if pte is None or not pte_present(pte) or pte_pfn(pte) != kfolio.pfn:
            return False
        mm.pgd[vpn] = pte_wrprotect(pte)
        return True
    finally:
        lk.ptl_unlock(mm)


def replace_page(
    m: Machine, vma: VmAreaStruct, address: int, old: Folio, kfolio: Folio, orig_pte: int
) -> bool:
    """``replace_page()``: under the page-table lock, if the PTE is still the
    write-protected one (``pte_same()``), it maps the KSM folio, read-only,
    instead of ``old``.  False when the PTE changed meanwhile."""
    mm = vma.vm_mm
    vpn = address >> PAGE_SHIFT
    lk.ptl_lock(mm)
    try:
        lk.pte(mm, vpn, True, kfolio, old)
        pte = mm.pgd.get(vpn)
        if pte != orig_pte:
            return False
        mm.pgd[vpn] = pte_wrprotect(pfn_pte(kfolio.pfn, pte_flags(pte)))
        kfolio.mapcount += 1
        folio_remove_rmap_pte(m, old)
        return True
    finally:
        lk.ptl_unlock(mm)


def break_ksm_range(m: Machine, vma: VmAreaStruct, start: int, end: int) -> None:
    """``break_ksm()`` over a range: an unsharing fault copies each KSM page
    into a new exclusive anon folio (mapped read-only: unshare is not a write)."""
    for vpn, pte in list(vma.vm_mm.iter_ptes(start, end)):
        if not pte_present(pte):
            continue
        folio = m.mem_map.get(pte_pfn(pte))
        if folio is not None and folio.ksm:
            wp_page_copy(m, vma, vpn << PAGE_SHIFT, folio, unshare=True)
