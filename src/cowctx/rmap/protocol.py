"""The hooks through which the machine model drives an anonymous rmap design.

Each hook sits where Linux 6.18 calls anon rmap code, and is named after the
kernel function at that place.  The machine model calls only these; a design
may read the machine model (VMA neighbours, page tables) but the machine model
never looks inside a design.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from cowctx.metrics.ledger import ObjectKind, WalkRecord
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import MmStruct, VmAreaStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine
    from cowctx.mm.vma import VmaMergeStruct, VmaPrepare


@dataclass
class RmapWalkControl:
    """``struct rmap_walk_control``.

    ``rmap_one(folio, vma, address)`` returns False to stop the walk;
    ``done(folio)`` returns True when the caller has all it needs.
    """

    rmap_one: Callable[[Folio, VmAreaStruct, int], bool]
    cost: WalkRecord
    done: Callable[[Folio], bool] | None = None
    invalid_vma: Callable[[VmAreaStruct], bool] | None = None
    try_lock: bool = False
    contended: bool = False
    seen: set[tuple[int, int]] = field(default_factory=set)
    """(mm_id, address) already handed to ``rmap_one``, for walks that could
    reach a mapping twice (KSM)."""


class AnonRmap(ABC):
    """An anonymous reverse-map design."""

    name: ClassVar[str]
    vma_type: ClassVar[type[VmAreaStruct]] = VmAreaStruct
    mm_type: ClassVar[type[MmStruct]] = MmStruct
    object_kinds: ClassVar[tuple[ObjectKind, ...]] = ()
    vma_size: ClassVar[int] = 192
    reverts: ClassVar[frozenset[str]] = frozenset()
    """Kernel fixes this design runs without (the explorer's race switches,
    e.g. ``anon_vma[revert_fork_vma_lock]``); empty for every real design."""
    """Bytes per ``vm_area_struct`` with this design's fields (6.18: 192)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.ledger = machine.ledger
        for kind in self.object_kinds:
            self.ledger.register(kind)

    # --- mm lifetime ------------------------------------------------------------------

    def mm_init(self, mm: MmStruct) -> None:
        """``mm_init()``: a new mm (first process, fork child, exec)."""

    def dup_mmap(self, mm: MmStruct, oldmm: MmStruct) -> None:
        """End of a successful ``dup_mmap()``: every VMA and PTE has been copied."""

    def mmput(self, mm: MmStruct) -> None:
        """The last user of ``mm`` is gone: ``exit_mmap()`` has unlinked every VMA."""

    # --- VMAs -------------------------------------------------------------------------

    @abstractmethod
    def anon_vma_prepare(self, vma: VmAreaStruct) -> None:
        """``__anon_vma_prepare()``: first anonymous fault of a VMA with no anon_vma.
        Must leave ``vma.anon_vma`` set."""

    @abstractmethod
    def anon_vma_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``anon_vma_fork()``: ``vma`` is the child's copy of ``pvma`` (its
        ``anon_vma`` still points at the parent's, as ``vm_area_dup`` left it)."""

    @abstractmethod
    def anon_vma_clone(self, dst: VmAreaStruct, src: VmAreaStruct) -> None:
        """``anon_vma_clone()`` outside fork: split, ``copy_vma``, ``dup_anon_vma``.
        ``dst.anon_vma`` already equals ``src.anon_vma``."""

    @abstractmethod
    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        """``unlink_anon_vmas()``: ``vma`` is going away (munmap, exit, merge)
        or loses its anon state (MREMAP_DONTUNMAP of the whole VMA)."""

    def vma_prepare(self, vp: VmaPrepare) -> None:
        """``vma_prepare()``: ``vp.vma`` (and ``vp.adj_next``) are about to change range."""

    def vma_complete(self, vp: VmaPrepare) -> None:
        """``vma_complete()``: the ranges have changed; ``vp.insert`` is in the tree;
        ``vp.remove``/``vp.remove2`` follow through :meth:`unlink_anon_vmas`."""

    @abstractmethod
    def is_mergeable_anon_vma(self, vmg: VmaMergeStruct, merge_next: bool) -> bool:
        """``is_mergeable_anon_vma()``: may the range in ``vmg`` merge with
        ``vmg.next`` (``merge_next``) or ``vmg.prev`` as far as anon state goes?"""

    @abstractmethod
    def are_anon_vmas_compatible(self, vma1: VmAreaStruct, vma2: VmAreaStruct) -> bool:
        """``are_anon_vmas_compatible()``: may prev and next both join one merge?"""

    def copy_vma(
        self,
        new_vma: VmAreaStruct,
        vma: VmAreaStruct,
        orig_addr: int,
        new_addr: int,
        length: int,
        merged: bool,
    ) -> None:
        """``copy_vma()`` in mremap: ``[orig_addr, +length)`` of ``vma`` now lives at
        ``[new_addr, +length)`` in ``new_vma`` (a new VMA, or a neighbour it
        merged into; its range is final)."""

    def move_page_tables(
        self,
        vma: VmAreaStruct,
        new_vma: VmAreaStruct,
        need_rmap_locks: bool,
    ) -> None:
        """``move_page_tables()`` is about to move PTEs from ``vma`` to ``new_vma``;
        ``need_rmap_locks`` as ``copy_vma()`` decided (``take_rmap_locks()``)."""

    def drop_rmap_locks(self, vma: VmAreaStruct, need_rmap_locks: bool) -> None:
        """``drop_rmap_locks()``: the PTEs have moved (a point for the explorer)."""

    def dontunmap_complete(self, vma: VmAreaStruct) -> None:
        """MREMAP_DONTUNMAP left ``vma`` in place with its pages moved away."""

    # --- folios -------------------------------------------------------------------------

    @abstractmethod
    def folio_set_anon(
        self, folio: Folio, vma: VmAreaStruct, address: int, exclusive: bool = True
    ) -> None:
        """``__folio_set_anon()``: set ``folio.mapping`` and ``folio.index`` for a
        new anon folio mapped at ``address`` of ``vma`` (called from
        ``folio_add_new_anon_rmap()`` and from a swap-in of a folio that is not yet
        anon).  Named without the leading underscores, which Python would mangle."""

    @abstractmethod
    def folio_move_anon_rmap(self, folio: Folio, vma: VmAreaStruct) -> None:
        """``folio_move_anon_rmap()``: the folio became exclusive to ``vma`` on reuse."""

    def folio_free(self, folio: Folio) -> None:
        """An anon folio is freed (references it held on rmap objects go)."""

    def folio_migrate(self, dst: Folio, src: Folio) -> None:
        """``folio_migrate_mapping()`` for anon folios: ``dst`` takes ``src``'s place."""
        dst.mapping = src.mapping
        dst.index = src.index

    @abstractmethod
    def rmap_walk(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``rmap_walk()`` for an anon folio: call ``rwc.rmap_one`` for every VMA
        that may map it, with the address it would be mapped at."""

    # --- KSM ---------------------------------------------------------------------------

    def ksm_rmap_item_anchor(self, vma: VmAreaStruct, folio: Folio) -> object:
        """KSM merges ``folio``, mapped in ``vma``: what its rmap_item keeps (and
        pins) to find the mapping again (anon_vma: ``vma->anon_vma`` with a
        reference).  ``folio`` still has its anon rmap state."""
        raise NotImplementedError(f"design {self.name} has no KSM rmap")

    def ksm_rmap_item_release(self, anchor: object) -> None:
        """The rmap_item holding ``anchor`` is removed."""
        raise NotImplementedError(f"design {self.name} has no KSM rmap")

    def rmap_walk_ksm_item(
        self, folio: Folio, item: object, rwc: RmapWalkControl, search_new_forks: bool
    ) -> bool:
        """One rmap_item of ``rmap_walk_ksm()``; returns False to stop the walk."""
        raise NotImplementedError(f"design {self.name} has no KSM rmap")

    # --- checks and views ---------------------------------------------------------------

    def check_invariants(self) -> list[str]:
        """The design's structural invariants; one message per violation."""
        return []

    def graph(self) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """The design's objects for ``cowctx graph``: (nodes, edges), a node being
        (id, label, kind) and an edge (from, to, label).  VMAs are ``vma<vm_id>``
        and mms ``mm<mm_id>`` (the machine draws those)."""
        return [], []

    def describe_folio(self, folio: Folio) -> str:
        """What ``folio.mapping`` points to, for messages."""
        return repr(folio.mapping)
