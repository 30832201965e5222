"""``struct vm_area_struct``, ``struct mm_struct`` and ``struct task_struct``.

A rmap design that needs per-VMA or per-mm fields of its own (the kernel's
``anon_vma_chain`` list, or a CoW context pointer) subclasses these types and
names the subclasses in its ``vma_type`` / ``mm_type``; the machine model only
ever instantiates them through those attributes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from cowctx.concurrency import runtime as rt
from cowctx.mm.constants import (
    DEFAULT_BRK_BASE,
    DEFAULT_MMAP_BASE,
    PAGE_SHIFT,
    TASK_SIZE,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_SHARED,
    vm_flags_perms,
)
from cowctx.mm.file import File


class VmaTree:
    """The VMAs of an mm by ``vm_start``, in address order: the part of
    ``sortedcontainers.SortedDict`` the model used (``bisect_left``/``bisect_right``,
    ``peekitem``, ``values``, ``get``, item set and delete), as a sorted key list
    and a dict.  Making one is a few hundred nanoseconds where a ``SortedDict``
    took about 12 us (two per explored execution: the set-up's spawn and fork);
    an mm's VMAs are few enough that a list insert is no slower than its tree."""

    __slots__ = ("_keys", "_map")

    def __init__(self) -> None:
        self._keys: list[int] = []
        self._map: dict[int, VmAreaStruct] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def bisect_left(self, key: int) -> int:
        return bisect_left(self._keys, key)

    def bisect_right(self, key: int) -> int:
        return bisect_right(self._keys, key)

    def peekitem(self, index: int) -> tuple[int, VmAreaStruct]:
        key = self._keys[index]
        return key, self._map[key]

    def values(self) -> list[VmAreaStruct]:
        m = self._map
        return [m[k] for k in self._keys]

    def get(self, key: int) -> VmAreaStruct | None:
        return self._map.get(key)

    def __setitem__(self, key: int, vma: VmAreaStruct) -> None:
        if key not in self._map:
            keys = self._keys
            keys.insert(bisect_left(keys, key), key)
        self._map[key] = vma

    def __delitem__(self, key: int) -> None:
        del self._map[key]
        keys = self._keys
        del keys[bisect_left(keys, key)]


class VmAreaStruct:
    """``struct vm_area_struct``.

    ``anon_vma`` is opaque to the machine model: non-None means the VMA has
    been prepared for anonymous folios ("faulted"), exactly the test the
    kernel makes outside mm/rmap.c (``vma_needs_copy``, ``mprotect_fixup``,
    ``copy_vma``...).  What it points to is the design's business.
    """

    __slots__ = (
        "anon_vma",
        "vm_end",
        "vm_file",
        "vm_flags",
        "vm_id",
        "vm_mm",
        "vm_pgoff",
        "vm_start",
    )

    def __init__(self, mm: MmStruct, vm_id: int) -> None:
        self.vm_mm = mm
        self.vm_id = vm_id
        self.vm_start = 0
        self.vm_end = 0
        self.vm_pgoff = 0
        self.vm_flags = 0
        self.vm_file: File | None = None
        self.anon_vma: object | None = None

    def copy_fields_from(self, old: VmAreaStruct) -> None:
        """What ``vm_area_dup()`` copies.  Subclasses extend it with their own
        fields, initialising list heads afresh as ``vm_area_dup`` does."""
        self.vm_start = old.vm_start
        self.vm_end = old.vm_end
        self.vm_pgoff = old.vm_pgoff
        self.vm_flags = old.vm_flags
        self.vm_file = old.vm_file
        self.anon_vma = old.anon_vma

    def __repr__(self) -> str:
        return (
            f"<vma#{self.vm_id} {self.vm_start:#x}-{self.vm_end:#x} "
            f"{vm_flags_perms(self.vm_flags)} pgoff={self.vm_pgoff:#x}"
            f"{' file=' + self.vm_file.name if self.vm_file else ''}"
            f"{' faulted' if self.anon_vma is not None else ''}>"
        )


def vma_pages(vma: VmAreaStruct) -> int:
    return (vma.vm_end - vma.vm_start) >> PAGE_SHIFT


def vma_is_anonymous(vma: VmAreaStruct) -> bool:
    """``vma_is_anonymous()``: no ``vm_ops``, i.e. no file behind it."""
    return vma.vm_file is None


def is_cow_mapping(vm_flags: int) -> bool:
    """``is_cow_mapping()``: private and potentially writable."""
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def vma_is_shared(vma: VmAreaStruct) -> bool:
    return bool(vma.vm_flags & VM_MAYSHARE)


def linear_page_index(vma: VmAreaStruct, address: int) -> int:
    """``linear_page_index()``: the page offset an address has in its VMA's pgoff space."""
    return ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def vma_address(vma: VmAreaStruct, pgoff: int, nr_pages: int = 1) -> int | None:
    """``vma_address()``: where page offset ``pgoff`` is mapped in ``vma``, or None."""
    if pgoff >= vma.vm_pgoff:
        address = vma.vm_start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)
        return address if address < vma.vm_end else None
    if pgoff + nr_pages - 1 >= vma.vm_pgoff:
        return vma.vm_start
    return None


class MmStruct:
    """``struct mm_struct``: the VMA tree (``mm_mt``) and the page table.

    The page table is flat: virtual page number -> PTE (an int, see
    :mod:`cowctx.mm.folio`).  The VMA tree maps ``vm_start`` to the VMA.
    """

    __slots__ = (
        "brk",
        "map_count",
        "mm_id",
        "mm_mt",
        "mm_users",
        "mmap_base",
        "owner",
        "pgd",
        "start_brk",
        "task_size",
        "tlb_stale",
        "vmacache",
    )

    def __init__(self, mm_id: int) -> None:
        self.mm_id = mm_id
        self.mm_mt = VmaTree()
        self.pgd: dict[int, int] = {}
        self.map_count = 0
        self.mmap_base = DEFAULT_MMAP_BASE
        self.task_size = TASK_SIZE
        self.start_brk = DEFAULT_BRK_BASE
        self.brk = DEFAULT_BRK_BASE
        self.mm_users = 1
        self.owner: TaskStruct | None = None
        self.vmacache: VmAreaStruct | None = None
        self.tlb_stale: dict[int, int] | None = None
        """vpn -> pfn of PTEs fork write-protected without a TLB flush yet (until
        ``flush_tlb_mm()`` at the end of ``dup_mmap()``): a CPU that wrote there may
        still write through its old writable entry.  Explorer only."""

    # --- VMA tree (the maple tree's role) -------------------------------------------

    def find_vma(self, addr: int) -> VmAreaStruct | None:
        """``find_vma()``: the first VMA with ``vm_end > addr``.

        The last VMA found is cached (as the kernel's old per-thread vmacache
        did) because faults come in runs; any change to the tree drops it."""
        cached = self.vmacache
        if cached is not None and cached.vm_start <= addr < cached.vm_end:
            return cached
        mt = self.mm_mt
        i = mt.bisect_right(addr)
        if i:
            vma = mt.peekitem(i - 1)[1]
            if vma.vm_end > addr:
                self.vmacache = vma
                return vma
        if i < len(mt):
            return mt.peekitem(i)[1]
        return None

    def vma_lookup(self, addr: int) -> VmAreaStruct | None:
        """``vma_lookup()``: the VMA containing ``addr``."""
        vma = self.find_vma(addr)
        return vma if vma is not None and vma.vm_start <= addr else None

    def vma_next(self, vma: VmAreaStruct) -> VmAreaStruct | None:
        """The VMA after ``vma`` in address order (touching or not)."""
        mt = self.mm_mt
        i = mt.bisect_right(vma.vm_start)
        return mt.peekitem(i)[1] if i < len(mt) else None

    def vma_prev(self, vma: VmAreaStruct) -> VmAreaStruct | None:
        """The VMA before ``vma`` in address order (touching or not)."""
        i = self.mm_mt.bisect_left(vma.vm_start)
        return self.mm_mt.peekitem(i - 1)[1] if i else None

    def vma_before(self, addr: int) -> VmAreaStruct | None:
        """The last VMA that starts below ``addr``."""
        i = self.mm_mt.bisect_left(addr)
        return self.mm_mt.peekitem(i - 1)[1] if i else None

    def vmas_in_range(self, start: int, end: int) -> list[VmAreaStruct]:
        """``for_each_vma_range()``: VMAs overlapping ``[start, end)``, ascending."""
        out = []
        vma = self.find_vma(start)
        while vma is not None and vma.vm_start < end:
            out.append(vma)
            vma = self.vma_next(vma)
        return out

    def vmas(self) -> list[VmAreaStruct]:
        """Every VMA, ascending (``for_each_vma``)."""
        return self.mm_mt.values()

    def vma_store(self, vma: VmAreaStruct) -> None:
        self.vmacache = None
        self.mm_mt[vma.vm_start] = vma

    def vma_erase(self, vma: VmAreaStruct) -> None:
        self.vmacache = None
        if self.mm_mt.get(vma.vm_start) is vma:
            del self.mm_mt[vma.vm_start]

    def vma_set_range(self, vma: VmAreaStruct, start: int, end: int, pgoff: int) -> None:
        """``vma_set_range()`` plus the tree update a maple-tree store does."""
        self.vmacache = None
        rt.point("store", vma, "range", True)
        if vma.vm_start != start and self.mm_mt.get(vma.vm_start) is vma:
            del self.mm_mt[vma.vm_start]
            vma.vm_start = start
            self.mm_mt[start] = vma
        else:
            vma.vm_start = start
        vma.vm_end = end
        rt.point("store", vma, "pgoff", True)  # two stores: a torn update can be seen
        vma.vm_pgoff = pgoff

    def iter_ptes(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(vpn, pte) for every PTE slot in use in ``[start, end)``, ascending."""
        lo, hi = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        pgd = self.pgd
        if hi - lo <= len(pgd):
            for vpn in range(lo, hi):
                pte = pgd.get(vpn)
                if pte is not None:
                    yield vpn, pte
        else:
            for vpn in sorted(v for v in pgd if lo <= v < hi):
                yield vpn, pgd[vpn]

    def __repr__(self) -> str:
        return f"<mm#{self.mm_id} vmas={len(self.mm_mt)} ptes={len(self.pgd)}>"


class TaskStruct:
    """``struct task_struct``, reduced to what rmap cares about: the mm and the tree."""

    __slots__ = ("children", "comm", "exit_state", "mm", "parent", "pid")

    def __init__(self, pid: int, comm: str, mm: MmStruct | None, parent: TaskStruct | None) -> None:
        self.pid = pid
        self.comm = comm
        self.mm = mm
        self.parent = parent
        self.children: list[TaskStruct] = []
        self.exit_state = False

    def __repr__(self) -> str:
        return f"<task {self.comm} pid={self.pid}{' exited' if self.exit_state else ''}>"
