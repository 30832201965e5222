"""KSM (mm/ksm.c), reduced to what matters to anon rmap: which mms and VMAs are
mergeable, stable nodes with their rmap_items, unmerging, and the KSM rmap
walk (``rmap_walk_ksm``).  The scan that merges pages is ``ksm_do_scan``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm.constants import VM_MERGEABLE
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import MmStruct, VmAreaStruct
from cowctx.rmap.protocol import RmapWalkControl

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


@dataclass(eq=False)
class KsmRmapItem:
    """``struct ksm_rmap_item`` in the stable tree: who mapped the KSM page, and
    the rmap anchor (anon_vma, or the design's equivalent) pinned at merge time."""

    mm: MmStruct
    address: int
    anchor: object


@dataclass(eq=False, repr=False)
class KsmStableNode:
    """``struct ksm_stable_node``: one KSM folio and its rmap_items."""

    folio: Folio
    rmap_items: list[KsmRmapItem] = field(default_factory=list)
    merging: int = 0
    """Merges into this node in flight: ksmd has installed (or made KSM)
    mappings of the folio that are not listed yet, and holds its reference on
    the folio until they are (``cmp_and_merge_page()``)."""

    def __repr__(self) -> str:
        return f"<stable node pfn={self.folio.pfn} rmap_items={len(self.rmap_items)}>"

    def listed(self) -> set[tuple[int, int]]:
        """(mm_id, address) of every rmap_item: the mappings KSM knows of."""
        return {(item.mm.mm_id, item.address) for item in self.rmap_items}


def folio_stable_node(folio: Folio) -> KsmStableNode:
    """``folio_stable_node()``: the stable node a KSM folio's mapping points to."""
    node = folio.mapping
    assert folio.ksm and isinstance(node, KsmStableNode), folio
    return node


class Ksm:
    """The KSM daemon's state."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.mm_slots: dict[int, MmStruct] = {}
        self.stable_nodes: list[KsmStableNode] = []

    def ksm_enter(self, mm: MmStruct) -> None:
        """``__ksm_enter()``: the mm will be scanned."""
        self.mm_slots.setdefault(mm.mm_id, mm)

    def ksm_madvise_unmergeable(
        self, vma: VmAreaStruct, start: int, end: int, vm_flags: int
    ) -> int:
        """``ksm_madvise(vma, start, end, MADV_UNMERGEABLE, &vm_flags)``: break every
        KSM page mapped in the range of a mergeable VMA with anon state (through
        ``unmerge_ksm_pages()``); returns ``vm_flags`` without VM_MERGEABLE.  Called
        by madvise and, on a copy of the flags, by mremap's ``prep_move_vma()``."""
        from cowctx.mm.ksm_scan import break_ksm_range

        if not vm_flags & VM_MERGEABLE:
            return vm_flags
        if vma.anon_vma is not None and self.stable_nodes:
            break_ksm_range(self.machine, vma, start, end)
        return vm_flags & ~VM_MERGEABLE

    def rmap_walk_ksm(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``rmap_walk_ksm()``: each rmap_item's anchor is walked, first for the
        rmap_item's own mm, then again for mms forked from it since the merge
        (they map the KSM page at the same address).

        A mapping ksmd installed and has not listed yet (``replace_page()``, or
        the new KSM page's own before ``stable_tree_insert()``) is not found: the
        kernel's walk misses it too, and its callers cope (ksmd's reference on
        the folio fails migration's refcount check in ``folio_migrate_mapping()``;
        ``folio_referenced()`` is an estimate).  Such a walk is marked incomplete
        for the explorer's checker (``rt.walk_abandon()``): it decides nothing."""
        node = folio.mapping
        assert isinstance(node, KsmStableNode)
        if rt.current is not None:
            rt.point("load", node, "rmap_items")
            if node.merging:
                rt.walk_abandon()
        for search_new_forks in (False, True):
            for item in list(node.rmap_items):
                if not self.machine.rmap.rmap_walk_ksm_item(folio, item, rwc, search_new_forks):
                    return
        if rt.current is not None and node.merging:
            rt.walk_abandon()
