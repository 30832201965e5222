"""The per-CPU LRU batches (mm/lru.py): a MADV_FREE'd folio waiting in ``lru_lazyfree`` is
copied by a CoW write, a drain (exit, MADV_FREE, MADV_PAGEOUT, populate, a full batch) makes
it lazily freeable, and ``wp_can_reuse_anon_folio()`` checks references before it touches the
swap cache.  The kernel side of each is a scenario file in scenarios/kernel-fuzz/ (checked by
test_kernel_diff.py); the referee's wait for swap writes is tested at the end."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

from cowctx.linux import pagemap
from cowctx.linux.views import with_swap
from cowctx.mm.folio import is_swap_pte
from cowctx.mm.lru import FOLIO_BATCH_SIZE
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import ScenarioRun, run_scenario

from .helpers import ROOT, page, scenario

KF = ROOT / "scenarios" / "kernel-fuzz"
COW_COPIES = KF / "madvise-free-batch-cow-copies.yaml"
DRAINED_BY_EXIT = KF / "madvise-free-batch-drained-by-exit.yaml"
COW_KEEPS_SLOT = KF / "pageout-swapcache-cow-keeps-slot.yaml"


def run_swap(steps: list[dict[str, Any]]) -> ScenarioRun:
    """Inline steps on anon_vma with swap on, the oracle after every step."""
    run = run_scenario(scenario("t", steps), with_swap("anon_vma"))
    assert [str(v) for v in run.violations] == []
    return run


def pfn_at(run: ScenarioRun, proc: str, n: int) -> int | None:
    folio = run.machine.folio_at(run.procs[proc], page(n))
    return None if folio is None else folio.pfn


def swapped(run: ScenarioRun, proc: str, n: int) -> bool:
    mm = run.procs[proc].mm
    pte = None if mm is None else mm.pgd.get(page(n) >> 12)
    return pte is not None and is_swap_pte(pte)


def steps_of(path: Any) -> list[dict[str, Any]]:
    return [s.model_dump(exclude_none=True) for s in load_scenario(path).steps]


def test_cow_write_copies_a_folio_waiting_in_the_lazyfree_batch() -> None:
    steps = steps_of(COW_COPIES)
    free = steps.index({**steps[4]})
    before = run_swap(steps[: free + 1])
    folio = before.machine.folio_at(before.procs["p1"], page(230))
    assert folio is not None and not folio.lazyfree  # queued, not yet lazily freeable
    assert [f.pfn for f in before.machine.fbatches.lru_lazyfree] == [folio.pfn]
    after = run_swap(steps[: free + 2])
    assert pfn_at(after, "p1", 230) != folio.pfn  # copied, not reused
    full = run_swap(steps)
    assert full.machine.ledger.vmscan["nr_unmap_fail"] == 0
    assert swapped(full, "p1", 230)  # the swap-backed copy went out


def test_exit_drains_the_batch_and_the_write_reuses_the_lazyfree_folio() -> None:
    steps = steps_of(DRAINED_BY_EXIT)
    exited = next(i for i, s in enumerate(steps) if s["op"] == "exit")
    run = run_swap(steps[: exited + 1])
    folio = run.machine.folio_at(run.procs["p1"], page(230))
    assert folio is not None and folio.lazyfree
    assert run.machine.fbatches.lru_lazyfree == []
    after = run_swap(steps[: exited + 2])
    assert pfn_at(after, "p1", 230) == folio.pfn  # reused
    full = run_swap(steps)
    assert full.machine.ledger.vmscan["nr_unmap_fail"] == 1  # redirtied lazyfree: kept
    assert not swapped(full, "p1", 230) and pfn_at(full, "p1", 230) == folio.pfn


@pytest.mark.parametrize(
    ("between", "reused"),
    [
        ({"op": "munmap", "proc": "p1", "page": 100, "pages": 1}, False),
        ({"op": "madvise", "proc": "p1", "page": 100, "pages": 1, "advice": "dontneed"}, False),
        ({"op": "mprotect", "proc": "p1", "page": 100, "pages": 1, "prot": "r"}, False),
        ({"op": "fork", "proc": "p0", "child": "p2"}, False),
        ({"op": "madvise", "proc": "p1", "page": 100, "pages": 1, "advice": "free"}, True),
        ({"op": "madvise", "proc": "p1", "page": 100, "pages": 1, "advice": "cold"}, True),
        ({"op": "mmap", "proc": "p1", "page": 50, "pages": 2, "flags": ["populate"]}, True),
        ({"op": "exec", "proc": "p0"}, True),
    ],
)
def test_which_steps_drain(between: dict[str, Any], reused: bool) -> None:
    """As measured on 6.18 (tools in docs/kernel-referee.md): unmap paths no longer drain."""
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "proc": "p0", "page": 230, "pages": 1},
        {"op": "write", "proc": "p0", "page": 230},
        {"op": "mmap", "proc": "p0", "page": 100, "pages": 4},
        {"op": "write", "proc": "p0", "page": 100, "pages": 4},
        {"op": "fork", "proc": "p0", "child": "p1"},
        {"op": "munmap", "proc": "p0", "page": 230, "pages": 1},
        {"op": "madvise", "proc": "p1", "page": 230, "pages": 1, "advice": "free"},
        between,
    ]
    run = run_swap(steps)
    old = pfn_at(run, "p1", 230)
    run = run_swap([*steps, {"op": "write", "proc": "p1", "page": 230}])
    assert (pfn_at(run, "p1", 230) == old) is reused


@pytest.mark.parametrize("pages", [FOLIO_BATCH_SIZE - 1, FOLIO_BATCH_SIZE])
def test_the_lazyfree_batch_moves_when_full(pages: int) -> None:
    run = run_swap(
        [
            {"op": "mmap", "proc": "p0", "page": 0, "pages": pages},
            {"op": "write", "proc": "p0", "page": 0, "pages": pages},
            {"op": "madvise", "proc": "p0", "page": 0, "pages": pages, "advice": "free"},
        ]
    )
    folios = [run.machine.folio_at(run.procs["p0"], page(n)) for n in range(pages)]
    full = pages == FOLIO_BATCH_SIZE
    assert all(f is not None and f.lazyfree is full for f in folios)
    assert len(run.machine.fbatches.lru_lazyfree) == (0 if full else pages)


def test_cow_of_a_shared_swapcache_folio_keeps_its_slot() -> None:
    """wp_can_reuse_anon_folio() gives up on the refcount before folio_free_swap(): the
    folio stays clean in the swap cache, and the next MADV_PAGEOUT frees it unwritten."""
    run = run_swap(steps_of(COW_KEEPS_SLOT))
    last = run.result().steps[-1].vmscan
    assert last is not None
    assert (last["nr_scanned"], last["nr_reclaimed"]) == (1, 1)
    assert swapped(run, "p0", 103) and not swapped(run, "p1", 103)


def test_writeback_wait_times_out_with_the_pfns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that never leaves PG_writeback: the wait gives up and names it."""
    flags = struct.pack("<Q", 1 << pagemap.KPF_WRITEBACK)
    monkeypatch.setattr(os, "open", lambda *a, **k: -1)
    monkeypatch.setattr(os, "close", lambda fd: None)
    monkeypatch.setattr(os, "pread", lambda fd, n, off: flags)
    with pytest.raises(pagemap.WritebackTimeout, match="PFNs 7, 9 still under writeback"):
        pagemap.wait_writeback([9, 7], timeout_s=0.01)


def test_writeback_wait_returns_when_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def pread(fd: int, n: int, off: int) -> bytes:
        reads.append(off // 8)
        busy = len(reads) <= 2  # under writeback for the first poll of both pages
        return struct.pack("<Q", (1 << pagemap.KPF_WRITEBACK) if busy else 0)

    monkeypatch.setattr(os, "open", lambda *a, **k: -1)
    monkeypatch.setattr(os, "close", lambda fd: None)
    monkeypatch.setattr(os, "pread", pread)
    assert pagemap.wait_writeback([5, 6]) == 2
    assert pagemap.wait_writeback([]) == 0


@pytest.mark.parametrize("swap", [True, False])
def test_a_swap_pageout_ends_with_the_batches_drained(swap: bool) -> None:
    """With swap the model's MADV_PAGEOUT ends as the referee's step does: every batch
    drained (the kept folio is on the LRU, no batch reference); without swap reclaim puts
    the kept folio back through lru_add, where it waits."""
    steps = [
        {"op": "mmap", "proc": "p0", "page": 0, "pages": 2},
        {"op": "write", "proc": "p0", "page": 0},
        {"op": "madvise", "proc": "p0", "page": 0, "pages": 2, "advice": "pageout"},
    ]
    run = run_swap(steps) if swap else run_scenario(scenario("t", steps))
    kept = [f.pfn for f in run.machine.fbatches.lru_add]
    assert kept == ([] if swap else [pfn_at(run, "p0", 0)])


@pytest.mark.kernel
def test_drain_lru_batches_returns_to_the_home_cpu() -> None:
    from cowctx.linux.swap import drain_lru_batches

    before = os.sched_getaffinity(0)
    home = {min(before)}
    try:
        drain_lru_batches(sorted(before), home)
        assert os.sched_getaffinity(0) == home
    finally:
        os.sched_setaffinity(0, before)


def test_madvise_free_skips_a_shared_pg_dirty_folio() -> None:
    """A folio that left the swap cache is PG_dirty: MADV_FREE touches it only when this is
    its only mapping, so after the fork it stays swap-backed and is swapped out later."""
    run = run_swap(steps_of(KF / "madvise-free-skips-shared-dirty-folio.yaml"))
    assert swapped(run, "p0", 10)
    assert run.machine.ledger.vmscan["nr_reclaimed"] == 0
    alone = [s for s in steps_of(KF / "madvise-free-skips-shared-dirty-folio.yaml")]
    alone = [s for s in alone if s["op"] not in ("fork", "exit")]
    run = run_swap(alone)  # mapped once: cleaned, lazily freeable, discarded
    assert not swapped(run, "p0", 10) and pfn_at(run, "p0", 10) is None
    assert run.machine.ledger.vmscan["nr_reclaimed"] == 1


def test_migration_keeps_pg_dirty() -> None:
    """folio_migrate_flags() moves PG_dirty to the new folio: a shared folio that left
    the swap cache and was migrated is still skipped by MADV_FREE after the fork."""
    steps = steps_of(KF / "madvise-free-skips-shared-dirty-folio.yaml")
    fork = next(i for i, s in enumerate(steps) if s["op"] == "fork")
    migrated = [*steps[: fork + 1], {"op": "migrate", "page": 10}, *steps[fork + 1 :]]
    run = run_swap(migrated)
    assert swapped(run, "p0", 10)
    assert run.machine.ledger.vmscan["nr_reclaimed"] == 0
