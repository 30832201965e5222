"""mm/swap.c's per-CPU folio batches (``struct cpu_fbatches``), reduced to the two that
decide what a scenario sees: ``lru_add`` and ``lru_lazyfree``.

A batch holds a reference on each folio in it until it is drained, and a folio waiting in
the ``lru_add`` batch is not yet ``PG_lru``.  That reference is what
``wp_can_reuse_anon_folio()`` and ``do_swap_page()`` count: a MADV_FREE'd folio still
waiting in ``lru_lazyfree`` is copied by a CoW write, not reused (measured on 6.18).  The
machine has one CPU here because the kernel referee pins the scenario to one
(linux/executor.py); batches of other CPUs are not modelled.

``folio_mark_lazyfree()`` only queues the folio: ``PG_swapbacked`` is cleared (the model's
``folio.lazyfree``) when ``lru_lazyfree()`` runs at the drain.  A folio keeps ``PG_lru``
while it waits in ``lru_lazyfree`` (clearing it when batching, "mm/gup: clear the LRU flag of
a page before adding to LRU batch", was reverted by Hugh Dickins in 2025, before 6.18; the
measurement agrees: the write copies), so ``wp_can_reuse_anon_folio()`` does not drain for
it and sees the batch's reference.

Drains (``lru_add_drain()`` → ``lru_add_drain_cpu()``, every batch of the CPU) happen, of
what a scenario does, in ``madvise_free_single_vma()``, ``madvise_cold()`` /
``madvise_pageout()``, ``populate_vma_page_range()``, ``exit_mmap()`` (exit, exec), and
where ``wp_can_reuse_anon_folio()`` or a write ``do_swap_page()`` meets a folio that is
not ``PG_lru``.  Not in munmap or MADV_DONTNEED: commit "mm: remove unnecessary calls to
lru_add_drain" (Rik van Riel, v6.14) took them out of the unmap paths; measured: munmap,
MADV_DONTNEED, mmap, mprotect, mremap and fork leave the batch as it is.  A batch also
moves by itself when its ``FOLIO_BATCH_SIZE``-th folio is added (only that batch).

Deliberate differences: the model counts only the scenario's own folios (the controller
and other tasks on the CPU add folios to ``lru_add`` too, so on the kernel it may fill, and
move, earlier), and a folio whose last mapping goes while it waits is freed at once (the
kernel frees it at the drain; nothing a scenario observes differs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.concurrency import runtime as rt
from cowctx.mm.folio import Folio

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

FOLIO_BATCH_SIZE = 31
"""include/linux/pagevec.h: ``folio_batch_add()`` returns the space left; at 0 the batch
moves (``__folio_batch_add_and_move()``)."""


class CpuFbatches:
    """``struct cpu_fbatches`` of the machine's one CPU: folios in the order added."""

    __slots__ = ("lru_add", "lru_lazyfree")

    def __init__(self) -> None:
        self.lru_add: list[Folio] = []
        self.lru_lazyfree: list[Folio] = []

    def refs(self, folio: Folio) -> int:
        """The references the batches hold on ``folio`` (a folio sits in at most one)."""
        return sum(f is folio for f in self.lru_add) + sum(f is folio for f in self.lru_lazyfree)


def lru_access(m: Machine, write: bool) -> tuple[object, object, bool]:
    """The CPU's batches as one explorer key: a batch holds a reference on each
    of its folios, so a drain (or a full batch moving) changes the refcount of
    every folio in it; ``folio_ref_count()`` and ``folio_test_lru()`` read it.
    Adding a folio to a batch changes only that folio's count: the new folio is
    not yet mapped, or its change is declared with the step that maps it."""
    return (m.fbatches, "lru", write)


def _lru_point(m: Machine) -> None:
    if rt.current is not None:
        rt.points("store", [lru_access(m, True)])


def folio_test_lru(m: Machine, folio: Folio) -> bool:
    """``folio_test_lru()`` of a mapped anon folio: false while it waits in ``lru_add``."""
    return not any(f is folio for f in m.fbatches.lru_add)


def folio_add_lru(m: Machine, folio: Folio) -> None:
    """``folio_add_lru()``: queue a new (or put back) folio; ``lru_add()`` sets PG_lru."""
    batch = m.fbatches.lru_add
    if len(batch) + 1 >= FOLIO_BATCH_SIZE:  # folio_batch_move_lru(..., lru_add)
        _lru_point(m)
    batch.append(folio)
    if len(batch) >= FOLIO_BATCH_SIZE:
        batch.clear()


def folio_mark_lazyfree(m: Machine, folio: Folio) -> None:
    """``folio_mark_lazyfree()``: an anon, swap-backed folio not in the swap cache is queued
    for ``lru_lazyfree()``; it turns lazily freeable (``!PG_swapbacked``) at the drain."""
    if not folio.anon or folio.ksm or folio.lazyfree or folio.swapcache is not None:
        return
    if not folio_test_lru(m, folio):
        return
    batch = m.fbatches.lru_lazyfree
    _lru_point(m)  # the folio gains the batch's reference
    batch.append(folio)
    if len(batch) >= FOLIO_BATCH_SIZE:
        _move_lazyfree(batch)


def _move_lazyfree(batch: list[Folio]) -> None:
    """``folio_batch_move_lru(fbatch, lru_lazyfree)``: ``lru_lazyfree()`` re-checks each
    folio (it may have been freed, or added to the swap cache, since it was queued)."""
    for folio in batch:
        if folio.anon and not folio.freed and not folio.ksm and folio.swapcache is None:
            folio.lazyfree = True  # folio_clear_swapbacked()
    batch.clear()


def lru_add_drain(m: Machine) -> None:
    """``lru_add_drain()`` → ``lru_add_drain_cpu()``: every batch of this CPU moves."""
    fb = m.fbatches
    if fb.lru_add or fb.lru_lazyfree:
        _lru_point(m)
    fb.lru_add.clear()
    if fb.lru_lazyfree:
        _move_lazyfree(fb.lru_lazyfree)


def folio_ref_count(m: Machine, folio: Folio) -> int:
    """``folio_ref_count()`` as the model knows it: one per mapping, one for the swap
    cache, one per batch holding the folio, one per holder that took its own
    (``Folio.pinned``: migration's and reclaim's isolation, ``wp_page_copy()``'s
    reference on the old folio); no GUP pins."""
    if rt.current is not None:
        rt.points("load", [(folio, "refcount", False), lru_access(m, False)])
    return folio.mapcount + (folio.swapcache is not None) + m.fbatches.refs(folio) + folio.pinned
