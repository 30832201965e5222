"""Stabilisation schemes for the PoC's lockless walk (issue 11, docs/stabilisation.md).

``cow_context_poc[stab_rwsem]``, ``[stab_seqcount]`` and ``[stab_refcount]`` are the
PoC's C (and any :class:`~cowctx.designs.cow_context.fixes.PocFixes` named with
them) with one scheme added.  All use the same *write sections*: every place a
context's state that a walker reads changes, on the context that owns it:

- its remap tree and dynarrays (``add_new_remap()``, ``find_and_remap_existing()``,
  ``find_and_unmap_existing()``), in the mm's own context;
- its mm's VMAs as the walker reads them (``vma_prepare()`` to ``vma_complete()``
  of a split, merge, expand or shrink; ``unlink_anon_vmas()``; mremap from
  ``copy_vma()`` to ``drop_rmap_locks()``, so the remap entry and the PTEs move
  together), where the anon_vma design takes the anon_vma lock;
- its children list (fork: the parent's, from the first ``anon_vma_fork()`` to
  ``dup_cow_context()``, so the child's copied PTEs and its place on the list
  appear together; ``__put_cow_context()``: the parent's, around
  ``list_del_rcu()``);
- ``context->mm`` (``drop_cow_context()``).

A thread's sections nest (an inner one on a context it already has is free).

What a walker does differs:

- **(e) rwsem**, the anon_vma-like baseline: a per-context ``rw_semaphore``
  (lock kind ``cow_context``, ranked where anon_vma's rwsem is).  Writers hold it
  for write over their section; the walker takes it for read on each context as
  it first reaches it (before reading its children or its remaps) and holds them
  all to the end of the walk.  The walk no longer needs RCU (the held locks pin
  every context it reached and its children list), so ``rmap_one`` may sleep.
- **(d) seqcount**: a per-context sequence count (``CowContext.seq``) that
  writers make odd for their section.  The walker stays under RCU; it waits for
  an even count on each context as it first reaches it (``read_seqcount_begin``)
  and, when the walk is over, re-reads every count (``read_seqcount_retry``):
  if one moved, the whole walk runs again.  Each retry is recorded in the ledger
  as a ``cow_context.seqcount`` hold in mode ``retry``.  A reader that retries
  may already have read freed memory, so the scheme also frees what readers can
  hold after a grace period: ``krealloc()`` of a remap dynarray becomes
  kmalloc, copy and ``kfree_rcu()`` of the old one, and the ``mm_struct`` a
  context points to is freed by ``call_rcu()`` after ``drop_cow_context()``.
  The walk still holds RCU over ``rmap_one``, which may sleep: this scheme
  does not fix that.
- **(c) walker reference count**: no RCU and no lock on the walk side.  A
  walker pins each context it reaches by incrementing ``CowContext.walkers``
  and then checking ``writing``; if a writer is there it backs off (decrements)
  and waits for it.  A writer waits for the previous writer, sets ``writing``,
  and waits (sleeping) until ``walkers`` drains to 0, then changes the context;
  the walker's references are dropped when the walk ends.  ``rmap_one`` may
  sleep; writers wait for every walk that reached their context.
- **(a) ephemeral ranged locks** (``stab_ranged``,
  :mod:`~cowctx.designs.cow_context.stabilise_ranged`): the same write
  sections, each a range of the context's pgoff space taken in a per-context
  range lock for the operation only (a node on the locker's stack, no object
  per mapping); the walker takes ``[folio->index]`` for read in each context it
  reaches, without RCU, so ``rmap_one`` may sleep.
- **(b) walks that tolerate races** (``stab_tolerant``,
  :mod:`~cowctx.designs.cow_context.stabilise_tolerant`): no write sections;
  the walk stays under RCU, probes page tables at each candidate address
  rather than trusting a VMA's ``vm_pgoff`` (type-safe VMAs re-checked),
  re-reads the remap entry until no new offset appears, visits parents before
  children (a fork lists the child before ``copy_page_range()``), remap
  dynarrays are copied and published rather than shifted in place, the
  ``mm_struct`` is freed after a grace period, and migration records the
  (mm, address) pairs it converted for ``remove_migration_ptes()``.
  ``rmap_one`` may not sleep (the seed's "MMU notifier a nightmare").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cowctx.designs.cow_context.poc import CowContextPoc


@dataclass(frozen=True)
class Stabilisation:
    stab_rwsem: bool = False
    """A per-context rwsem: writers for write, the walker for read on every
    context it reaches, held to the end of the walk, without RCU."""
    stab_seqcount: bool = False
    """A per-context sequence count: writers bump it around each change, the
    walker re-checks every context's count at the end and restarts the walk if
    one moved (RCU-deferred frees of dynarrays and mm_structs)."""
    stab_refcount: bool = False
    """A per-context walker count that writers wait to drain, without RCU."""
    stab_ranged: bool = False
    """Ephemeral ranged locks: per-context range locks over pgoff ranges, held
    by writers for their operation and by the walker over the folio's index in
    each context on its path, without RCU (seed, last slide, 1c)."""
    stab_tolerant: bool = False
    """Walks that tolerate races: page-table probes, re-checked type-safe VMAs,
    re-read remap entries, parent-first order, copy-and-publish dynarrays,
    RCU-freed mm, recorded migration pairs; under RCU (seed, last slide, 2)."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def enabled(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]

    @property
    def any(self) -> bool:
        """Whether the scheme has write sections (every one but ``stab_tolerant``)."""
        return self.stab_rwsem or self.stab_seqcount or self.stab_refcount or self.stab_ranged

    @property
    def rcu_free(self) -> bool:
        """Whether what a reader under RCU can hold is freed after a grace period:
        the array a dynarray grow replaces and the ``mm_struct``."""
        return self.stab_seqcount or self.stab_tolerant

    @property
    def rcu_walk(self) -> bool:
        """Whether the walk runs under ``rcu_read_lock()`` (the PoC's and the
        seqcount scheme's; not the rwsem's or the walker count's)."""
        return not (self.stab_rwsem or self.stab_refcount or self.stab_ranged)

    def design_base(self, base: type[CowContextPoc]) -> type[CowContextPoc]:
        """The class a design with this scheme derives from: the PoC's own, or
        the subclass that implements the scheme."""
        if self.stab_ranged:
            from cowctx.designs.cow_context.stabilise_ranged import RangedPoc

            return RangedPoc
        if self.stab_tolerant:
            from cowctx.designs.cow_context.stabilise_tolerant import TolerantPoc

            return TolerantPoc
        return base
