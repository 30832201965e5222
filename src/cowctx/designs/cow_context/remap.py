"""Remap tracking: per CoW context, folio page offsets (pgoff ranges) mapped to
the set of VMA offsets (``vm_start >> PAGE_SHIFT`` minus the anon pgoff) that
VMAs covering them have; offset 0 is implicit and never stored.

The PoC keeps this in a maple tree of ranges whose values are a single offset
or a sorted dynamic array; here it is a sorted list of disjoint segments
``[start, end)`` with a set of offsets each.  Like maple-tree stores, adjacent
segments with equal sets are not coalesced.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RemapTree:
    __slots__ = ("_ends", "_sets", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._sets: list[set[int]] = []

    # --- reads ------------------------------------------------------------------------

    def lookup(self, pgoff: int) -> tuple[int, set[int]]:
        """(entries scanned, offsets) for one page offset: a maple-tree walk ends
        in the one range containing it."""
        i = bisect.bisect_right(self._starts, pgoff) - 1
        if i >= 0 and pgoff < self._ends[i]:
            return 1, self._sets[i]
        return 0, set()

    def covers(self, start: int, end: int, offset: int) -> bool:
        """Is ``offset`` stored for every page of ``[start, end)``?"""
        pos = start
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            i = 0
        while pos < end:
            if i >= len(self._starts) or self._starts[i] > pos or self._ends[i] <= pos:
                if i < len(self._starts) and self._ends[i] <= pos:
                    i += 1
                    continue
                return False
            if offset not in self._sets[i]:
                return False
            pos = self._ends[i]
            i += 1
        return True

    def overlaps(self, start: int, end: int, offset: int) -> bool:
        return any(offset in s for _, _, s in self._range(start, end))

    def segments(self) -> Iterator[tuple[int, int, frozenset[int]]]:
        for a, b, s in zip(self._starts, self._ends, self._sets, strict=True):
            yield a, b, frozenset(s)

    def as_function(self) -> dict[int, frozenset[int]]:
        """pgoff -> offsets, for comparisons (entry boundaries do not matter)."""
        out: dict[int, frozenset[int]] = {}
        for a, b, s in self.segments():
            if s:
                for pgoff in range(a, b):
                    out[pgoff] = s
        return out

    def __len__(self) -> int:
        return len(self._starts)

    def multi_entries(self) -> int:
        """Entries holding more than one offset (a dynarray in the PoC)."""
        return sum(1 for s in self._sets if len(s) > 1)

    # --- writes -----------------------------------------------------------------------

    def _range(self, start: int, end: int) -> Iterator[tuple[int, int, set[int]]]:
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while i < len(self._starts) and self._starts[i] < end:
            if self._ends[i] > start:
                yield self._starts[i], self._ends[i], self._sets[i]
            i += 1

    def _split_at(self, pos: int) -> None:
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self._starts[i] < pos < self._ends[i]:
            self._starts.insert(i + 1, pos)
            self._ends.insert(i + 1, self._ends[i])
            self._sets.insert(i + 1, set(self._sets[i]))
            self._ends[i] = pos

    def _drop_empty(self) -> None:
        keep = [i for i, s in enumerate(self._sets) if s]
        if len(keep) != len(self._sets):
            self._starts = [self._starts[i] for i in keep]
            self._ends = [self._ends[i] for i in keep]
            self._sets = [self._sets[i] for i in keep]

    def add(self, start: int, end: int, offset: int) -> int:
        """``add_new_remap()``: split entries at both ends, add ``offset`` to each,
        fill the gaps with new entries.  Returns the entries written."""
        self._split_at(start)
        self._split_at(end)
        written = 0
        pos = start
        i = bisect.bisect_left(self._starts, start)
        while pos < end:
            if i < len(self._starts) and self._starts[i] == pos:
                if offset not in self._sets[i]:
                    self._sets[i].add(offset)
                    written += 1
                pos = self._ends[i]
                i += 1
                continue
            gap_end = min(end, self._starts[i]) if i < len(self._starts) else end
            self._starts.insert(i, pos)
            self._ends.insert(i, gap_end)
            self._sets.insert(i, {offset})
            written += 1
            pos = gap_end
            i += 1
        return written

    def remove(self, start: int, end: int, offset: int, split: bool = True) -> int:
        """Remove ``offset`` from ``[start, end)``; with ``split=False`` (the PoC's
        ``find_and_unmap_existing``) from every overlapping entry, whole."""
        if split:
            self._split_at(start)
            self._split_at(end)
        written = 0
        for _, _, s in list(self._range(start, end)):
            if offset in s:
                s.discard(offset)
                written += 1
        self._drop_empty()
        return written

    def rewrite(self, start: int, end: int, old: int, new: int) -> int:
        """``find_and_remap_existing()``: entries overlapping the range that hold
        ``old`` get ``new`` instead, whole.  Returns how many."""
        found = 0
        for _, _, s in list(self._range(start, end)):
            if old in s:
                s.discard(old)
                if new:
                    s.add(new)
                found += 1
        self._drop_empty()
        return found

    def clear(self) -> None:
        self._starts, self._ends, self._sets = [], [], []
