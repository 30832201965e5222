"""``struct cow_context`` and the VMA/mm fields the CoW context design adds."""

from __future__ import annotations

from cowctx.designs.cow_context.remap import RemapTree
from cowctx.mm.mm_types import MmStruct, VmAreaStruct


class LockName:
    """A spinlock embedded in a context, as the explorer names it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class CowContext:
    """One per mm: the mm back-pointer (None once the mm is gone), the fork
    parent and children, remap tracking, and a refcount held by the mm, each
    child context and each anon folio (and each KSM rmap_item) pointing here."""

    __slots__ = (
        "children",
        "ctx_id",
        "freed",
        "ledger_counts",
        "list_write_lock",
        "mm",
        "parent",
        "rcu_next",
        "refcount",
        "remaps",
        "seq",
        "unmap_lock",
        "walkers",
        "writers",
        "writing",
    )

    def __init__(self, ctx_id: int, mm: MmStruct) -> None:
        self.ctx_id = ctx_id
        self.mm: MmStruct | None = mm
        self.parent: CowContext | None = None
        self.children: list[CowContext] = []
        self.refcount = 1
        self.remaps = RemapTree()
        self.freed = False
        self.ledger_counts = (0, 0, 0)
        """(remap entries, offset arrays, maple nodes) last reported to the ledger."""
        self.rcu_next: CowContext | None = None
        """After ``list_del_rcu()``: the sibling that followed this one then (None:
        the list head), which ``siblings.next`` still points to for RCU readers."""
        self.seq = 0
        """The per-context sequence count of the ``stab_seqcount`` scheme."""
        self.walkers = 0
        """Walks holding this context (the ``stab_refcount`` scheme)."""
        self.writing = False
        """A writer's section is open on it (the ``stab_refcount`` scheme)."""
        self.writers = 0
        """Write sections open on it (``cow_context``'s own walker count: writers
        of different threads may overlap, each waits for the walkers)."""
        self.list_write_lock = LockName(f"C{ctx_id}.list_write_lock")
        self.unmap_lock = LockName(f"C{ctx_id}.concurrent_unmap_lock")

    @property
    def name(self) -> str:
        """How the explorer names the context in traces."""
        return f"C{self.ctx_id}"

    def __repr__(self) -> str:
        state = "FREED" if self.freed else "dead" if self.mm is None else f"mm#{self.mm.mm_id}"
        parent = f" parent=C{self.parent.ctx_id}" if self.parent else ""
        return f"<C{self.ctx_id} {state}{parent} r={self.refcount} remaps={len(self.remaps)}>"


class CowContextVma(VmAreaStruct):
    """``vm_area_struct`` without ``anon_vma_chain`` and with the anon page offset.

    ``vm_anon_offset`` is ``(vm_start >> PAGE_SHIFT) - vm_anon_pgoff`` for a
    MAP_PRIVATE file VMA: 0 from its first fault (``vm_anon_pgoff`` is set to
    ``vm_start >> PAGE_SHIFT`` then), changed only when it moves.  Keeping the
    offset rather than the pgoff makes splits and merges need no update.
    """

    __slots__ = ("vm_anon_offset",)

    def __init__(self, mm, vm_id):
        super().__init__(mm, vm_id)
        self.vm_anon_offset = 0

    def copy_fields_from(self, old: VmAreaStruct) -> None:
        super().copy_fields_from(old)
        self.vm_anon_offset = old.vm_anon_offset  # type: ignore[attr-defined]

    @property
    def vm_anon_pgoff(self) -> int:
        return (self.vm_start >> 12) - self.vm_anon_offset


class CowContextMm(MmStruct):
    __slots__ = ("cow_context",)

    def __init__(self, mm_id: int) -> None:
        super().__init__(mm_id)
        self.cow_context: CowContext | None = None
