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
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def enabled(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]

    @property
    def any(self) -> bool:
        return self.stab_rwsem or self.stab_seqcount or self.stab_refcount

    @property
    def rcu_walk(self) -> bool:
        """Whether the walk runs under ``rcu_read_lock()`` (the PoC's and the
        seqcount scheme's; not the rwsem's or the walker count's)."""
        return not (self.stab_rwsem or self.stab_refcount)
