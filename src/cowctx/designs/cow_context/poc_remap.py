"""The PoC's remap tracking as its C has it: mm/cow_context.c @ a4ac1966
(kernelorg-mirror/linux_kernel_git_ljs_linux, commit a4ac19665445), function by
function.

Representation, as in the C:

- ``remaps_entry_t`` is a tagged word: *empty* (NULL), *simple* (one offset held
  inline, ``offset << 2 | REMAP_IS_SIMPLE``) or *multi* (a ``struct dynarray``
  pointer, tagged ``REMAP_IS_ON_STACK`` for the walk's scratch array).  Here
  :data:`EMPTY`, :class:`Simple` and :class:`Multi`.
- ``struct dynarray {int nr, cap; void *contents[cap]}``: :class:`Dynarray`.  A
  heap one is kmalloc'd (``kmalloc_flex``: slots past ``nr`` hold whatever was
  there, modelled as :data:`POISON`); an on-stack one is zero-initialised.
  ``__dynarray_expand`` doubles the capacity with ``krealloc`` (always a new
  object: each doubling crosses a kmalloc size class), or copies a stack array
  to the heap.
- ``remap_mt``: a maple tree of pgoff ranges ``[index, last]`` (inclusive) to
  entries; :class:`RemapMt`.  A store over part of a range leaves the rest of
  it pointing at the same entry (a maple-tree store never copies values).

Offsets are signed (``long``); the dynarray keeps them sorted as the *unsigned*
words the C compares (``unsigned long val``), so negative offsets sort last.

Every heap dynarray allocation and free goes through :class:`Kmalloc`, which
reports them to the metrics ledger (count and kmalloc'd bytes), separately for
the walk's ``GFP_ATOMIC`` scratch arrays.

Concurrency (docs/stabilisation.md): the explorer's points are where the C
touches shared memory.  A heap dynarray a remap entry owns has one key per slot
(``__dynarray_set()``'s ``WRITE_ONCE`` and ``__dynarray_get_t()``'s
``READ_ONCE``, each a point, so a reader can see a half-shifted array) and one
for ``nr`` (``dynarray_set_nr()``'s ``smp_store_release``, ``dynarray_nr()``'s
``smp_load_acquire``; the explorer's interleavings are sequentially consistent,
which release/acquire gives for this one-writer pattern).  ``krealloc()`` frees
the old array at once (a reader holding it reads freed memory);
``dynarray_free_rcu()`` is ``kfree_rcu_mightsleep()``, which may sleep.  The
maple tree ``remap_mt`` is one key: a store replaces a range atomically, so a
reader sees the old entry or the new one (one point per store and per lookup).
The walk's scratch array lives on its stack (or is its own ``GFP_ATOMIC``
allocation): no points.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cowctx.concurrency import runtime as rt

U64 = (1 << 64) - 1
POISON = 0xDEAD_0000_0000_0000 - (1 << 64)
"""An uninitialised kmalloc'd slot read as an offset.  Its real value is
whatever the allocator left there; the model gives it one no VMA can have
(the address it points to is outside every mm), so a probe there finds
nothing."""

DYNARRAY_DEFAULT_CAP = 16
WALK_DEFAULT_STACK_SIZE = 16
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


def kmalloc_size(cap: int) -> int:
    """The kmalloc size class of ``struct_size(arr, contents, cap)`` on 64-bit
    (8 bytes of ``nr``/``cap`` plus 8 per slot); page-sized and up, the pages."""
    want = 8 + 8 * cap
    for size in KMALLOC_SIZES:
        if want <= size:
            return size
    return -(-want // 4096) * 4096


class Dynarray:
    """``struct dynarray``: ``nr`` used slots of ``contents[cap]``."""

    __slots__ = ("cap", "contents", "gfp", "nr", "on_heap", "serial")

    def __init__(self, nr: int, cap: int, fill: int, on_heap: bool, gfp: str) -> None:
        self.nr = nr
        self.cap = cap
        self.contents = [fill] * cap
        self.on_heap = on_heap
        self.gfp = gfp
        self.serial = 0

    @property
    def shared(self) -> bool:
        """A kmalloc'd array a remap entry owns (RCU readers may hold it)."""
        return self.on_heap and self.gfp != "GFP_ATOMIC"

    @property
    def name(self) -> str:
        return f"dynarray#{self.serial}"

    def values(self) -> list[int]:
        return self.contents[: self.nr]

    def __repr__(self) -> str:
        where = "heap" if self.on_heap else "stack"
        return f"<dynarray {where} {self.nr}/{self.cap} {self.values()}>"


@dataclass(frozen=True)
class Simple:
    """A simple entry: one offset inline (``mk_simple_remap()``)."""

    offset: int


@dataclass(frozen=True, eq=False)
class Multi:
    """A multi entry: a dynarray pointer, tagged when on the stack."""

    arr: Dynarray
    on_stack: bool = False


Entry = Simple | Multi | None
EMPTY: Entry = None


class Kmalloc:
    """kmalloc/krealloc/kfree of dynarrays, reported to a callback as
    ``(kind, count_delta, bytes_delta)``; ``kind`` is ``remap`` for arrays a
    remap entry owns (``GFP_KERNEL``) and ``walk`` for the walk's scratch
    (``GFP_ATOMIC``)."""

    def __init__(self, report: Callable[[str, int, int], None]) -> None:
        self.report = report
        self.serial = 0

    def alloc(self, nr: int, cap: int, gfp: str) -> Dynarray:
        arr = Dynarray(nr, cap, POISON, True, gfp)
        self.serial += 1
        arr.serial = self.serial
        self.report(_kind(gfp), 1, kmalloc_size(cap))
        return arr

    def free(self, arr: Dynarray) -> None:
        assert arr.on_heap
        self.report(_kind(arr.gfp), -1, -kmalloc_size(arr.cap))


def _kind(gfp: str) -> str:
    return "walk" if gfp == "GFP_ATOMIC" else "remap"


class Dynarrays:
    """The dynarray API of cow_context.c, bound to an allocator and to the
    switch that repairs ``__dynarray_append_value()``."""

    def __init__(self, kmalloc: Kmalloc, fixed_insert: bool, rcu_realloc: bool = False) -> None:
        self.kmalloc = kmalloc
        self.fixed_insert = fixed_insert
        self.rcu_realloc = rcu_realloc
        """The seqcount scheme: the array a grow replaces is freed after a grace
        period (kmalloc, copy, ``kfree_rcu()``), not by ``krealloc()``."""

    def __dynarray_dup(self, arr: Dynarray, cap: int, gfp: str) -> Dynarray:
        """``__dynarray_dup()``: a kmalloc'd copy of the ``nr`` used slots."""
        ret = self.kmalloc.alloc(arr.nr, cap, gfp)
        ret.contents[: arr.nr] = arr.contents[: arr.nr]
        return ret

    def dynarray_dup(self, arr: Dynarray, gfp: str) -> Dynarray:
        """``dynarray_dup()``: same capacity."""
        return self.__dynarray_dup(arr, arr.cap, gfp)

    def __dynarray_append_value(self, arr: Dynarray, new_val: int) -> None:
        """``__dynarray_append_value()``: insertion into the sorted array.

        The C finds the insert point ``insert_idx`` scanning down, then moves up
        only the slots *above* it (its loop breaks at ``i <= insert_idx``) and
        writes the new value at ``insert_idx``: the value that was there is
        lost and the one above it is duplicated (or, when ``insert_idx`` was the
        last used slot, the new top slot keeps whatever it held).  Correct only
        when the new value is the largest.  With ``dynarray_insert`` fixed, the
        slot at ``insert_idx`` moves up too."""
        assert arr.nr < arr.cap
        new_raw = new_val & U64
        i = arr.nr - 1
        while i >= 0:
            raw = arr.contents[i] & U64
            if raw == new_raw:
                return
            if raw < new_raw:
                break
            i -= 1
        insert_idx = i + 1
        lowest_moved = insert_idx if self.fixed_insert else insert_idx + 1
        for i in range(arr.nr - 1, lowest_moved - 1, -1):
            dynarray_set(arr, i + 1, arr.contents[i])
        dynarray_set(arr, insert_idx, new_val)
        dynarray_set_nr(arr, arr.nr + 1)  # "We assume we are the exclusive writer"

    def __dynarray_expand(self, arr: Dynarray, from_stack: bool, gfp: str) -> Dynarray:
        """``__dynarray_expand()``: double the capacity; a stack array is copied
        to the heap, a heap one is ``krealloc``'d (a new object: every doubling
        crosses a kmalloc size class, so the old one is freed at once)."""
        assert arr.nr == arr.cap
        new_cap = 2 * arr.cap
        if from_stack:
            return self.__dynarray_dup(arr, new_cap, gfp)
        ret = self.kmalloc.alloc(arr.nr, new_cap, arr.gfp)
        ret.contents[: arr.cap] = arr.contents
        self.kmalloc.free(arr)
        if arr.shared and self.rcu_realloc:
            rt.kfree_rcu("kmalloc", arr)
        elif arr.shared:  # krealloc(): kfree() of the old array, no grace period
            rt.slab_free("kmalloc", arr, False)
        return ret

    def __dynarray_maybe_expand(self, arr: Dynarray, from_stack: bool, gfp: str) -> Dynarray:
        """``__dynarray_maybe_expand()``: expand when full (before the duplicate
        check, so appending a value already there may still allocate)."""
        if arr.cap == arr.nr:
            return self.__dynarray_expand(arr, from_stack, gfp)
        return arr

    def __dynarray_append(self, arr: Dynarray, val: int, gfp: str) -> Dynarray:
        """``__dynarray_append()``: a heap array, grown in place or krealloc'd."""
        new_arr = self.__dynarray_maybe_expand(arr, False, gfp)
        self.__dynarray_append_value(new_arr, val)
        return new_arr

    def __dynarray_append_stack(self, arr: Dynarray, val: int, gfp: str) -> Dynarray:
        """``__dynarray_append_stack()``: a stack array, copied to the heap when full."""
        new_arr = self.__dynarray_maybe_expand(arr, True, gfp)
        self.__dynarray_append_value(new_arr, val)
        return new_arr

    @staticmethod
    def dynarray_shrink(arr: Dynarray) -> None:
        """``dynarray_shrink()``: drop the last slot."""
        dynarray_set_nr(arr, arr.nr - 1)

    # --- remaps entries ---------------------------------------------------------------

    @staticmethod
    def nr_remaps(remaps: Entry) -> int:
        """``nr_remaps()``."""
        if remaps is None:
            return 0
        if isinstance(remaps, Simple):
            return 1
        arr = remaps.arr
        if arr.shared:
            rt.point("load", arr, "nr")  # dynarray_nr(): smp_load_acquire
        return arr.nr

    @staticmethod
    def get_remap(remaps: Entry, index: int) -> int:
        """``get_remap()``."""
        if isinstance(remaps, Simple):
            return remaps.offset
        assert isinstance(remaps, Multi)
        arr = remaps.arr
        if arr.shared:
            rt.point("load", arr, ("slot", index))  # __dynarray_get_t(): READ_ONCE
        return arr.contents[index]

    @staticmethod
    def set_multi_remap(remaps: Entry, index: int, offset: int) -> None:
        """``set_multi_remap()``: overwrite one slot in place."""
        assert isinstance(remaps, Multi)
        dynarray_set(remaps.arr, index, offset)

    def free_remaps(self, remaps: Entry) -> None:
        """``free_remaps()``: only a heap multi entry owns memory, freed by
        ``dynarray_free_rcu()``: ``kfree_rcu_mightsleep()``, which may sleep
        (``kvfree_call_rcu()`` without an rcu_head calls ``might_sleep()``) even
        where the C calls it under ``rcu_read_lock()`` (``delete_remaps()``,
        the walk's scratch array)."""
        if isinstance(remaps, Multi) and not remaps.on_stack:
            arr = remaps.arr
            self.kmalloc.free(arr)
            if rt.active():
                rt.may_sleep("kfree_rcu_mightsleep (dynarray_free_rcu)")
                if arr.shared:
                    rt.kfree_rcu("kmalloc", arr)

    def append_remap_offset(self, remaps: Entry, new_offset: int, gfp: str) -> Entry:
        """``append_remap_offset()``: empty → simple; simple → its value in a
        one-slot stack array, which the append copies to a kmalloc'd array of
        capacity 2 (even when the value is already there); stack multi → stays
        on the stack until full; heap multi → appended in place."""
        if remaps is None:
            return Simple(new_offset)
        if isinstance(remaps, Simple):
            arr = Dynarray(1, 1, remaps.offset, False, gfp)
            return Multi(self.__dynarray_append_stack(arr, new_offset, gfp))
        if remaps.on_stack:
            new = self.__dynarray_append_stack(remaps.arr, new_offset, gfp)
            return Multi(new, on_stack=new is remaps.arr)
        new = self.__dynarray_append(remaps.arr, new_offset, gfp)
        return remaps if new is remaps.arr else Multi(new)

    def dup_remaps(self, remaps: Entry, gfp: str) -> Entry:
        """``dup_remaps()``: a simple entry is a value; a multi one is copied."""
        if remaps is None or isinstance(remaps, Simple):
            return remaps
        return Multi(self.dynarray_dup(remaps.arr, gfp))

    @staticmethod
    def same_remaps(a: Entry, b: Entry) -> bool:
        """``same_remaps()``: the raw words are equal."""
        if isinstance(a, Multi) and isinstance(b, Multi):
            return a.arr is b.arr and a.on_stack == b.on_stack
        return a == b


def dynarray_set(arr: Dynarray, index: int, value: int) -> None:
    """``__dynarray_set()``: one ``WRITE_ONCE`` of a slot."""
    if arr.shared:
        rt.point("store", arr, ("slot", index), True)
    arr.contents[index] = value


def dynarray_set_nr(arr: Dynarray, nr: int) -> None:
    """``dynarray_set_nr()``: ``smp_store_release(&arr->nr, nr)``."""
    if arr.shared:
        rt.point("store", arr, "nr", True)
    arr.nr = nr


def stack_multi(cap: int) -> Multi:
    """``DECLARE_DYNARRAY(name, cap)`` + ``mk_stack_multi_remaps()``: zeroed."""
    return Multi(Dynarray(0, cap, 0, False, "stack"), on_stack=True)


class RemapMt:
    """``context->remap_mt``: disjoint inclusive pgoff ranges to entries.

    Also answers the questions the design-independent checks and views ask
    (:meth:`lookup`, :meth:`as_function`, :meth:`segments`)."""

    __slots__ = ("_entries", "_lasts", "_starts", "dyn", "name")

    def __init__(self, dyn: Dynarrays, name: str = "remap_mt") -> None:
        self._starts: list[int] = []
        self._lasts: list[int] = []
        self._entries: list[Entry] = []
        self.dyn = dyn
        self.name = name

    # --- maple-tree operations -----------------------------------------------------

    def mas_walk(self, pgoff: int) -> tuple[Entry, int, int]:
        """``mas_walk()``: the entry holding ``pgoff`` and its range, or NULL and
        the range of the gap around it."""
        rt.point("load", self, "mt")
        i = bisect.bisect_right(self._starts, pgoff) - 1
        if i >= 0 and pgoff <= self._lasts[i]:
            return self._entries[i], self._starts[i], self._lasts[i]
        lo = self._lasts[i] + 1 if i >= 0 else 0
        hi = self._starts[i + 1] - 1 if i + 1 < len(self._starts) else U64
        return None, lo, hi

    def mas_find(self, pos: int, last: int) -> tuple[Entry, int, int] | None:
        """``mas_find()``/``mas_for_each()`` step: the first entry ending at or
        after ``pos`` and starting at or before ``last``."""
        rt.point("load", self, "mt")
        i = bisect.bisect_right(self._lasts, pos - 1)
        if i < len(self._starts) and self._starts[i] <= last:
            return self._entries[i], self._starts[i], self._lasts[i]
        return None

    def mas_for_each(self, index: int, last: int) -> Iterator[tuple[Entry, int, int]]:
        """``mas_for_each(mas, entry, last)`` from ``index``: each entry
        overlapping ``[index, last]``; the caller may store meanwhile (the walk
        resumes after the range last returned, as every caller's
        ``mas_set()`` makes it)."""
        pos = index
        while pos <= last:
            found = self.mas_find(pos, last)
            if found is None:
                return
            yield found
            pos = found[2] + 1

    def mas_store(self, index: int, last: int, entry: Entry) -> None:
        """``mas_store_gfp()``: ``[index, last]`` now holds ``entry`` (NULL makes
        a gap); ranges partly covered keep their remainder, same entry.
        One point: RCU readers see the tree before or after the store."""
        rt.point("store", self, "mt", True)
        starts, lasts, entries = self._starts, self._lasts, self._entries
        i = bisect.bisect_left(lasts, index)
        j = bisect.bisect_right(starts, last)
        new: list[tuple[int, int, Entry]] = []
        if i < j and starts[i] < index:
            new.append((starts[i], index - 1, entries[i]))
        if entry is not None:
            new.append((index, last, entry))
        if i < j and lasts[j - 1] > last:
            new.append((last + 1, lasts[j - 1], entries[j - 1]))
        starts[i:j] = [r[0] for r in new]
        lasts[i:j] = [r[1] for r in new]
        entries[i:j] = [r[2] for r in new]

    # --- reads for checks, views and the ledger ------------------------------------

    def offsets(self, entry: Entry) -> list[int]:
        return [self.dyn.get_remap(entry, k) for k in range(self.dyn.nr_remaps(entry))]

    def lookup(self, pgoff: int) -> tuple[int, set[int]]:
        """(entries scanned, offsets) at one page offset."""
        entry, _, _ = self.mas_walk(pgoff)
        if entry is None:
            return 0, set()
        return 1, set(self.offsets(entry))

    def segments(self) -> Iterator[tuple[int, int, frozenset[int]]]:
        """``[start, end)`` ranges and their offsets."""
        for s, e, v in zip(self._starts, self._lasts, self._entries, strict=True):
            yield s, e + 1, frozenset(self.offsets(v))

    def as_function(self) -> dict[int, frozenset[int]]:
        out: dict[int, frozenset[int]] = {}
        for a, b, offs in self.segments():
            if offs:
                for pgoff in range(a, b):
                    out[pgoff] = offs
        return out

    def __len__(self) -> int:
        return len(self._starts)

    def multi_entries(self) -> int:
        """Ranges holding a kmalloc'd dynarray."""
        return sum(1 for v in self._entries if isinstance(v, Multi))

    def entries(self) -> list[tuple[int, int, Entry]]:
        return list(zip(self._starts, self._lasts, self._entries, strict=True))

    def clear(self) -> None:
        """``delete_remaps()`` + ``mtree_destroy()``: free every dynarray."""
        for v in self._entries:
            self.dyn.free_remaps(v)
        self._starts, self._lasts, self._entries = [], [], []
