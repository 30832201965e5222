"""``struct anon_vma``, ``struct anon_vma_chain``, the VMA's ``anon_vma_chain``
list and the interval tree keyed by page offset (mm/interval_tree.c)."""

from __future__ import annotations

from collections.abc import Iterator

from cowctx.mm.mm_types import VmAreaStruct, vma_pages


class AnonVmaVma(VmAreaStruct):
    """``vm_area_struct`` with the ``anon_vma_chain`` list head.

    The list is a Python list ordered tail to head: ``list_add()`` (head
    insertion) is ``append``, so ``[0]`` is the oldest AVC (normally the
    root's) and ``[-1]`` the newest.
    """

    __slots__ = ("anon_vma_chain",)

    def __init__(self, mm, vm_id):
        super().__init__(mm, vm_id)
        self.anon_vma_chain: list[AnonVmaChain] = []

    def copy_fields_from(self, old: VmAreaStruct) -> None:
        super().copy_fields_from(old)
        self.anon_vma_chain = []  # INIT_LIST_HEAD() in vm_area_dup()


class AnonVma:
    """``struct anon_vma``.  ``root`` holds the rwsem of the whole hierarchy."""

    __slots__ = (
        "av_id",
        "freed",
        "gen",
        "num_active_vmas",
        "num_children",
        "parent",
        "rb_root",
        "refcount",
        "root",
    )

    def __init__(self, av_id: int) -> None:
        self.av_id = av_id
        self.gen = 0
        """Times this memory was handed out again (SLAB_TYPESAFE_BY_RCU reuse)."""
        self.reinit()

    def reinit(self) -> None:
        """``anon_vma_alloc()`` (with ``anon_vma_ctor()``'s state) on this memory."""
        self.root: AnonVma = self
        self.parent: AnonVma = self
        self.refcount = 1
        self.num_children = 0
        self.num_active_vmas = 0
        self.rb_root = AnonVmaIntervalTree()
        self.freed = False

    def __repr__(self) -> str:
        return (
            f"<AV{self.av_id} root=AV{self.root.av_id} parent=AV{self.parent.av_id} "
            f"c={self.num_children} a={self.num_active_vmas} r={self.refcount} "
            f"avcs={len(self.rb_root)}{' FREED' if self.freed else ''}>"
        )


class AnonVmaChain:
    """``struct anon_vma_chain``: one edge VMA -- anon_vma.  ``rb_start``/``rb_last``
    are the interval-tree key as of insertion (``avc_start_pgoff``,
    ``avc_last_pgoff``), so a missing pre/post update shows up as a stale key."""

    __slots__ = ("anon_vma", "rb_last", "rb_start", "vma")

    def __init__(self, vma: AnonVmaVma, anon_vma: AnonVma) -> None:
        self.vma = vma
        self.anon_vma = anon_vma
        self.rb_start = 0
        self.rb_last = -1

    def __repr__(self) -> str:
        return f"<AVC vma#{self.vma.vm_id} -> AV{self.anon_vma.av_id}>"


def avc_start_pgoff(avc: AnonVmaChain) -> int:
    return avc.vma.vm_pgoff


def avc_last_pgoff(avc: AnonVmaChain) -> int:
    return avc.vma.vm_pgoff + vma_pages(avc.vma) - 1


def _rb_start(avc: AnonVmaChain) -> int:
    return avc.rb_start


class AnonVmaIntervalTree:
    """``anon_vma->rb_root``: AVCs by page-offset interval.

    The kernel uses an augmented rbtree; this keeps the same contents and
    answers the same stabbing queries (``anon_vma_interval_tree_foreach``),
    in insertion order.
    """

    __slots__ = ("_avcs",)

    def __init__(self) -> None:
        self._avcs: dict[AnonVmaChain, None] = {}

    def insert(self, avc: AnonVmaChain) -> None:
        """``anon_vma_interval_tree_insert()``: key the AVC by its VMA's range now."""
        avc.rb_start = avc_start_pgoff(avc)
        avc.rb_last = avc_last_pgoff(avc)
        self._avcs[avc] = None

    def remove(self, avc: AnonVmaChain) -> None:
        del self._avcs[avc]

    def foreach(self, first: int, last: int) -> Iterator[AnonVmaChain]:
        """AVCs whose interval overlaps ``[first, last]``."""
        for avc in sorted(self._avcs, key=_rb_start):  # in-order: by start pgoff, ties as inserted
            if avc.rb_start <= last and avc.rb_last >= first:
                yield avc

    def __contains__(self, avc: AnonVmaChain) -> bool:
        return avc in self._avcs

    def __iter__(self) -> Iterator[AnonVmaChain]:
        return iter(list(self._avcs))

    def __len__(self) -> int:
        return len(self._avcs)

    def __bool__(self) -> bool:
        return bool(self._avcs)
