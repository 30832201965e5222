"""VMA layout and page sharing of the scenario window, read from /proc.

/proc/PID/maps gives merges and splits; /proc/PID/pagemap gives the PFN behind each virtual
page, and /proc/kpagecount and /proc/kpageflags what that physical page is (anon, zero page,
KSM, THP) and how many PTEs map it.  PFNs differ from run to run, so pages are reported
with folio ids numbered in order of first appearance.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cowctx.scenario.results import MapLine
from cowctx.scenario.schema import WINDOW_BASE, WINDOW_PAGES

PAGE_SIZE = 4096
WINDOW_END = WINDOW_BASE + WINDOW_PAGES * PAGE_SIZE

PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_MMAP_EXCLUSIVE = 1 << 56
"""pagemap bit 56: the page is mapped exactly once (also for file pages)."""
PM_PFN_MASK = (1 << 55) - 1

KPF_WRITEBACK = 8
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_ANON = 12
KPF_THP = 22
KPF_KSM = 21
KPF_ZERO_PAGE = 24


def read_window_maps(pid: int) -> list[MapLine]:
    """The VMAs of `pid` that intersect the scenario window, sorted by start."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            rng, perms = line.split()[:2]
            lo_s, hi_s = rng.split("-")
            lo, hi = int(lo_s, 16), int(hi_s, 16)
            lo, hi = max(lo, WINDOW_BASE), min(hi, WINDOW_END)
            if lo >= hi:
                continue
            out.append(
                MapLine((lo - WINDOW_BASE) // PAGE_SIZE, (hi - WINDOW_BASE) // PAGE_SIZE, perms)
            )
    out.sort(key=lambda m: m.start)
    return out


@dataclass(frozen=True, slots=True)
class PageInfo:
    """What the kernel shows about one present page of the window."""

    page: int
    pfn: int
    head_pfn: int
    mapcount: int
    flags: int
    mapped_once: bool

    @property
    def anon(self) -> bool:
        return bool(self.flags >> KPF_ANON & 1)

    @property
    def zero_page(self) -> bool:
        return bool(self.flags >> KPF_ZERO_PAGE & 1)

    @property
    def ksm(self) -> bool:
        return bool(self.flags >> KPF_KSM & 1)

    @property
    def thp(self) -> bool:
        return bool(self.flags >> KPF_THP & 1)


class PhysReader:
    """Reads /proc/kpagecount and /proc/kpageflags, with a per-PFN cache."""

    def __init__(self) -> None:
        self._count = os.open("/proc/kpagecount", os.O_RDONLY)
        self._flags = os.open("/proc/kpageflags", os.O_RDONLY)
        self._cache: dict[int, tuple[int, int]] = {}
        self._head: dict[int, int] = {}

    def close(self) -> None:
        os.close(self._count)
        os.close(self._flags)

    def __enter__(self) -> PhysReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, pfn: int) -> tuple[int, int]:
        """(mapcount, flags) of one physical page."""
        hit = self._cache.get(pfn)
        if hit is None:
            (count,) = struct.unpack("<Q", os.pread(self._count, 8, pfn * 8))
            (flags,) = struct.unpack("<Q", os.pread(self._flags, 8, pfn * 8))
            hit = self._cache[pfn] = (count, flags)
        return hit

    def head_of(self, pfn: int, flags: int) -> int:
        """The head page of the folio containing `pfn`: walk back over tail pages.

        Heads are memoised, so the pages of a THP read in order cost one step each."""
        walked = []
        p = pfn
        while flags >> KPF_COMPOUND_TAIL & 1 and p > 0:
            known = self._head.get(p)
            if known is not None:
                p = known
                break
            walked.append(p)
            p -= 1
            flags = self.get(p)[1]
        for q in walked:
            self._head[q] = p
        return p


def read_window_pages(pid: int, maps: Sequence[MapLine], phys: PhysReader) -> list[PageInfo]:
    """Present pages of `pid` in the window VMAs, ascending by page."""
    out = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for m in maps:
            n = m.end - m.start
            vaddr = WINDOW_BASE + m.start * PAGE_SIZE
            raw = os.pread(fd, 8 * n, (vaddr // PAGE_SIZE) * 8)
            for i, entry in enumerate(struct.unpack(f"<{len(raw) // 8}Q", raw)):
                if not entry & PM_PRESENT:
                    continue
                pfn = entry & PM_PFN_MASK
                count, flags = phys.get(pfn)
                out.append(
                    PageInfo(
                        page=m.start + i,
                        pfn=pfn,
                        head_pfn=phys.head_of(pfn, flags),
                        mapcount=count,
                        flags=flags,
                        mapped_once=bool(entry & PM_MMAP_EXCLUSIVE),
                    )
                )
    finally:
        os.close(fd)
    return out


def read_range_pfns(pid: int, page: int, pages: int) -> list[int]:
    """PFNs of the present pages of `pid` in window pages [page, page + pages)."""
    out = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        vaddr = WINDOW_BASE + page * PAGE_SIZE
        raw = os.pread(fd, 8 * pages, (vaddr // PAGE_SIZE) * 8)
        for entry in struct.unpack(f"<{len(raw) // 8}Q", raw):
            if entry & PM_PRESENT and entry & PM_PFN_MASK:
                out.append(entry & PM_PFN_MASK)
    finally:
        os.close(fd)
    return out


class WritebackTimeout(RuntimeError):
    """Swap writes did not complete in time; the message names the PFNs."""


def wait_writeback(pfns: Iterable[int], timeout_s: float = 10.0) -> int:
    """Wait until no page of `pfns` is under writeback (kpageflags bit 8, PG_writeback);
    returns how many polls it took.  A page freed meanwhile has no PG_writeback either."""
    pending = sorted(set(pfns))
    if not pending:
        return 0
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    deadline = time.monotonic() + timeout_s
    polls = 0
    try:
        while True:
            polls += 1
            pending = [
                pfn
                for pfn in pending
                if struct.unpack("<Q", os.pread(fd, 8, pfn * 8))[0] >> KPF_WRITEBACK & 1
            ]
            if not pending:
                return polls
            if time.monotonic() > deadline:
                raise WritebackTimeout(
                    f"PFNs {', '.join(map(str, pending[:8]))} still under writeback "
                    f"after {timeout_s:.0f} s"
                )
            time.sleep(0.0002)
    finally:
        os.close(fd)


PM_SWAP_TYPE_BITS = 5
"""pagemap swap entries: type in bits 0-4, offset in bits 5-54."""


def read_window_swap(pid: int, maps: Sequence[MapLine]) -> list[tuple[int, int]]:
    """(page, swap entry) of every swapped-out page of `pid` in the window VMAs, the entry
    being the pagemap frame field (swap type and offset), ascending by page."""
    out = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for m in maps:
            n = m.end - m.start
            vaddr = WINDOW_BASE + m.start * PAGE_SIZE
            raw = os.pread(fd, 8 * n, (vaddr // PAGE_SIZE) * 8)
            for i, entry in enumerate(struct.unpack(f"<{len(raw) // 8}Q", raw)):
                if entry & PM_SWAP and not entry & PM_PRESENT:
                    out.append((m.start + i, entry & PM_PFN_MASK))
    finally:
        os.close(fd)
    return out


def number_swap_entries(
    by_proc: Iterable[tuple[str, list[tuple[int, int]]]],
) -> dict[str, list[dict[str, int]]]:
    """``{proc: [{"page", "slot"}]}``, slots numbered in order of first appearance (process
    creation order, pages ascending), so equal slot numbers mean a shared swap entry on
    either side and runs compare although the kernel's offsets differ."""
    ids: dict[int, int] = {}
    return {
        proc: [{"page": page, "slot": ids.setdefault(e, len(ids))} for page, e in entries]
        for proc, entries in by_proc
    }
