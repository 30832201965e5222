"""The referee's own swap file: created for a run, removed on every exit path.

Why: with no swap, MADV_PAGEOUT leaves private anonymous pages alone, so reclaim and swap-in
(where a folio comes back non-exclusive and is filed under the root anon_vma) could never be
compared with the model.  A swap file on the root filesystem works here (kernel-oracle.md,
"Added December 2026").  The file is ``cowctx-swap-<controller pid>.<start time>`` in
``SWAP_DIR``, sized for the scenario, with the highest priority so that the scenario's pages
go there even if the machine has other swap.  ``remove_stale_swapfiles()`` swaps off and
deletes what a killed controller left (that process is gone), as tracefs.py does for
instances.

The header is written here (``struct swap_header``, include/linux/swap.h: version 1,
last_page, no bad pages, magic ``SWAPSPACE2`` at the end of the first page), so no mkswap is
needed; swapon(2) and swapoff(2) are called through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import uuid
from pathlib import Path

from cowctx.linux.tracefs import INSTANCE_PREFIX, instance_owner_alive, own_instance_name

PAGE_SIZE = 4096
SWAP_DIR = Path(os.environ.get("COWCTX_SWAP_DIR", "/var/tmp"))
"""Where swap files go: must be on a filesystem swapon accepts (ext4 here, not tmpfs)."""
PREFIX = "cowctx-swap-"
SWAP_FLAG_PREFER = 0x8000
SWAP_FLAG_PRIO_MASK = 0x7FFF
MIN_PAGES = 64


class SwapError(RuntimeError):
    """The swap file could not be set up or removed; the message says which call failed."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def active_swaps() -> list[str]:
    """Paths in /proc/swaps."""
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.strip()]


def swap_unavailable_reason() -> str | None:
    """None when a swap file can be switched on here, else why not."""
    if not Path("/proc/swaps").exists():
        return "no /proc/swaps: kernel without CONFIG_SWAP"
    if os.geteuid() != 0:
        return "swapon needs root"
    if not SWAP_DIR.is_dir():
        return f"{SWAP_DIR} does not exist"
    return None


def header(pages: int) -> bytes:
    """The first page of a swap area of ``pages`` pages."""
    page = bytearray(PAGE_SIZE)
    # union swap_header.info at offset 1024: version, last_page, nr_badpages, sws_uuid[16],
    # sws_volume[16]
    info = (1).to_bytes(4, "little") + (pages - 1).to_bytes(4, "little") + bytes(4)
    info += uuid.uuid4().bytes + b"cowctx".ljust(16, b"\0")
    page[1024 : 1024 + len(info)] = info
    page[PAGE_SIZE - 10 :] = b"SWAPSPACE2"
    return bytes(page)


class SwapFile:
    """One swap file, on (``enable``) and gone (``remove``) again; ``remove`` is safe to
    call more than once and after a failed ``enable``."""

    def __init__(self, pages: int, directory: Path | None = None) -> None:
        self.pages = max(MIN_PAGES, pages)
        d = directory or SWAP_DIR
        # like the tracefs instance: pid and start time, a name no later process reuses
        owner = own_instance_name()[len(INSTANCE_PREFIX) :]
        self.path = d / f"{PREFIX}{owner}"
        k = 0
        while self.path.exists():
            k += 1
            self.path = d / f"{PREFIX}{owner}-{k}"
        self.created = False
        self.on = False

    def enable(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.created = True
        try:
            os.posix_fallocate(fd, 0, self.pages * PAGE_SIZE)
            os.pwrite(fd, header(self.pages), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        libc = _libc()
        flags = SWAP_FLAG_PREFER | SWAP_FLAG_PRIO_MASK
        if libc.swapon(str(self.path).encode(), flags) != 0:
            e = ctypes.get_errno()
            raise SwapError(f"swapon {self.path}: {os.strerror(e)}")
        self.on = True

    def remove(self) -> None:
        """swapoff (which reads back whatever is still swapped out), then delete."""
        problem = None
        if self.on:
            if _libc().swapoff(str(self.path).encode()) != 0:
                e = ctypes.get_errno()
                problem = f"swapoff {self.path}: {os.strerror(e)}"
            else:
                self.on = False
        if self.created and not self.on:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.created = False
        if problem:
            raise SwapError(problem)

    def __enter__(self) -> SwapFile:
        self.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def remove_stale_swapfiles(directory: Path | None = None) -> list[str]:
    """Swap off and delete the swap files of controllers that died (their pid is gone)."""
    d = directory or SWAP_DIR
    removed = []
    active = set(active_swaps())
    for path in d.glob(PREFIX + "*"):
        if instance_owner_alive(INSTANCE_PREFIX + path.name[len(PREFIX) :]):
            continue
        if str(path) in active and _libc().swapoff(str(path).encode()) != 0:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    return removed


def pages_for(scenario: object) -> int:
    """Swap pages enough for the scenario: every page it maps, once per process."""
    steps = getattr(scenario, "steps", [])
    mapped = sum(getattr(s, "pages", 0) or 0 for s in steps if s.op in ("mmap", "mremap"))
    mapped += sum(getattr(s, "new_pages", 0) or 0 for s in steps if s.op == "mremap")
    procs = 1 + sum(1 for s in steps if s.op == "fork")
    return mapped * procs + MIN_PAGES


def wants_swap(scenario: object) -> bool:
    """Whether the run gets a swap file: the scenario has MADV_PAGEOUT (nothing else reclaims
    in a scenario: the machine has plenty of memory) and maps no shmem, i.e. no file (memfd)
    and no shared mapping.  The model swaps anonymous folios only; with swap on, the kernel
    would also write dirty shmem folios to swap (``shmem_writeout()``), which the model keeps
    in the page cache, so such scenarios run without swap on both sides."""
    steps = getattr(scenario, "steps", [])
    if any(
        s.op == "mmap" and (getattr(s, "file", None) or getattr(s, "shared", False)) for s in steps
    ):
        return False
    return any(s.op == "madvise" and getattr(s, "advice", None) == "pageout" for s in steps)


DAMON_KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")


def damon_state() -> list[dict[str, str]]:
    """Each running kdamond's state and scheme actions: with swap on, a DAMON ``pageout``
    scheme could swap out idle anonymous pages of any process (kernel-oracle.md), so a run's
    record says whether one was active."""
    out = []
    for kd in sorted(DAMON_KDAMONDS.glob("[0-9]*")):
        try:
            state = (kd / "state").read_text().strip()
            actions = sorted(a.read_text().strip() for a in kd.glob("contexts/*/schemes/*/action"))
        except OSError:
            continue
        out.append({"kdamond": kd.name, "state": state, "actions": ",".join(actions)})
    return out


MADV_COLD = 20
"""include/uapi/asm-generic/mman-common.h (Python's mmap module does not name it)."""


def drain_lru_batches(cpus: list[int], home: set[int]) -> None:
    """``lru_add_drain()`` on each CPU of ``cpus``, then back to ``home``.

    Why: a swap write that completes after its folio went back on the LRU moves it to the
    tail (``folio_end_writeback()`` → ``folio_rotate_reclaimable()``), into the
    ``lru_move_tail`` batch of the CPU that took the completion interrupt, which keeps a
    reference until that CPU drains.  Whether that happens depends on the interrupt and on
    other tasks, and the reference makes a later reclaim keep the folio, a later write copy
    it.  So after a MADV_PAGEOUT with swap the referee drains every CPU: MADV_COLD on a page
    of its own (``madvise_cold()`` starts with ``lru_add_drain()``; the page is never
    touched, so nothing else happens), run on each CPU in turn.
    """
    area = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for cpu in cpus:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:  # not a CPU we may run on (offline, cpuset)
                continue
            area.madvise(MADV_COLD)
    finally:
        os.sched_setaffinity(0, home)
        area.close()
