"""``cow_context_poc[stab_ranged]``: ephemeral ranged locks (the seed's last
technical slide, idea 1c: "Introduce ephemeral ranged locks to get mapping
granularity locking with far less overhead"; 1a: no object per mapping, 1b: no
lock at mm granularity).

Each CoW context has one range lock over its pgoff space (the space a folio's
``index`` and the remap tree live in), after the range locks proposed for the
kernel (Jan Kara's ``range_lock``, 2013; Davidlohr Bueso's
``range_rwlock``, 2017): a spinlock-protected tree of the ranges held or waited
for, each a node on the locker's *stack*, inserted for the operation and
removed at its end; nothing persists per mapping.  A node waits for every
overlapping node inserted before it in which either side writes (FIFO, no
starvation); readers share.

Writers take, for write, the pgoff range the operation changes, in the
context of the mm it changes, for the whole operation (the PoC's write sections
of :mod:`.stabilise`, each with its range):

============================  ======================================================
section                       range
============================  ======================================================
``vma_prepare()`` to          the hull of the pgoff ranges of every VMA it changes
``vma_complete()``            (``vma``, ``adj_next``, ``remove``, ``remove2``,
                              ``insert``) before the change: split, merge, shrink,
                              expand, mprotect
``unlink_anon_vmas()``        the VMA's pgoff range (munmap, exit)
``copy_vma()`` to             the moved range's pgoff range (mremap: the new
``drop_rmap_locks()``         offset and the PTE move together)
``add_new_remap()``,          the range the call names, grown to cover every remap
``find_and_remap_existing()``,  entry it changes in place (a dynarray a whole entry
``find_and_unmap_existing()``   shares)
fork: first ``anon_vma_fork()``  the parent's whole range: its children list and the
to ``dup_cow_context()``      copied PTEs change together, and fork copies every VMA
``__put_cow_context()``       the parent's whole range (its children list)
``drop_cow_context()``        the whole range (``context->mm``)
============================  ======================================================

A thread's sections nest: a range its own held node covers is free; one it
does not is a second node, which waits only for other threads' *granted*
nodes (an operation's range is computed up front in the kernel; the extra node
stands for that, and keeps the second acquisition from queueing behind a waiter
that waits for the first).

Lock order: the range lock ranks where ``anon_vma->rwsem`` does (below
``mmap_lock`` and ``vma_start_write()``, above the page-table lock); it is not
a kind in :mod:`cowctx.concurrency.locks` (a range lock is not one lock word):
its waits are explorer ``wait_until`` points, so a cycle shows as a
``deadlock`` and a wait in atomic context as ``sleep_in_atomic``
(``might_sleep()`` before every acquisition that can wait).

The walker (``cow_context_walk()``) runs without RCU: under
``rcu_read_lock()`` it reads ``folio->cow_context`` and pins the context with
``refcount_inc_not_zero()`` (as ``folio_get_anon_vma()`` pins an anon_vma),
leaves RCU, and takes ``[folio->index]`` for read; then on each context it
reaches, before reading its children list or its remaps, the same range for
read.  It holds the nodes of the path from the root to where it is (a child is
reached from its parent's list while the parent's node is held, so the
child cannot leave the list or be freed: both need the parent's whole range)
and drops a context's node once it has visited it and its subtree (post-order),
the root's and the pin at the end.  ``rmap_one`` callbacks and MMU notifiers
may sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

from cowctx.concurrency import runtime as rt
from cowctx.designs.cow_context.poc import CowContextPoc
from cowctx.designs.cow_context.poc_remap import Multi
from cowctx.designs.cow_context.rmap import RCU
from cowctx.designs.cow_context.structs import CowContext
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import VmAreaStruct, vma_pages
from cowctx.mm.vma import VmaPrepare
from cowctx.rmap.protocol import RmapWalkControl

WHOLE = (-(1 << 63), 1 << 63)
"""A context's whole pgoff space, ``[lo, hi)``."""
RANGE_LOCK = "cow_context.range"
"""The ledger's name of the range lock (modes ``read``, ``write``)."""


@dataclass(eq=False)
class RangeNode:
    """``struct range_lock`` on the locker's stack: ``[lo, hi)`` of one context."""

    lo: int
    hi: int
    write: bool
    tid: int
    seq: int
    nested: bool = False
    granted: bool = False

    def conflicts(self, other: RangeNode) -> bool:
        return (
            other.tid != self.tid
            and (self.write or other.write)
            and self.lo < other.hi
            and other.lo < self.hi
        )


@dataclass
class RangeTree:
    """A context's range lock: the nodes held or waited for, in arrival order."""

    nodes: list[RangeNode] = field(default_factory=list)
    seq: int = 0

    def ready(self, node: RangeNode) -> bool:
        """FIFO: no conflicting node came earlier or holds it; a nested node
        waits for holders only."""
        for other in self.nodes:
            if other is node or not node.conflicts(other):
                continue
            if other.granted or (not node.nested and other.seq < node.seq):
                return False
        return True


def _span(vma: VmAreaStruct) -> tuple[int, int]:
    return vma.vm_pgoff, vma.vm_pgoff + vma_pages(vma)


class RangedPoc(CowContextPoc):
    """The PoC with ephemeral per-context range locks (see the module)."""

    def __init__(self, machine):
        super().__init__(machine)
        self._trees: dict[int, RangeTree] = {}
        self._held: dict[tuple[int, int], list[tuple[RangeNode | None, CowContext]]] = {}
        """(thread, context) -> its open write sections (None: covered, free)."""
        self._next_range: tuple[int, int] | None = None
        """The range of the next write section (set by the entry points below)."""
        self._path: dict[int, list[tuple[CowContext, RangeNode]]] = {}
        """Thread -> the walker's held read nodes, root first."""
        self._pinned: dict[int, CowContext] = {}
        self._index: dict[int, int] = {}
        """Thread -> the index of the folio its walk is after."""

    # --- the range lock ---------------------------------------------------------------

    def _tree(self, ctx: CowContext) -> RangeTree:
        tree = self._trees.get(ctx.ctx_id)
        if tree is None:
            tree = self._trees[ctx.ctx_id] = RangeTree()
        return tree

    def _insert(self, ctx: CowContext, lo: int, hi: int, write: bool, nested: bool) -> RangeNode:
        """``range_lock()``'s first half: insert the node (under the tree's
        spinlock; never sleeps, so legal under RCU)."""
        rt.point("store", ctx, "range_tree", True)
        tree = self._tree(ctx)
        tree.seq += 1
        node = RangeNode(lo, hi, write, self._who(), tree.seq, nested)
        tree.nodes.append(node)
        return node

    def _wait(self, ctx: CowContext, node: RangeNode) -> None:
        """``range_lock()``'s second half: sleep until no conflicting node is
        ahead (or, nested, holds it)."""
        tree = self._tree(ctx)
        if not tree.ready(node):
            rt.may_sleep("range_lock")
            rt.wait_until("range", ctx, "range_tree", lambda: tree.ready(node))
        node.granted = True

    def _release(self, ctx: CowContext, node: RangeNode) -> None:
        """``range_unlock()``: remove the node, waking who waited on it."""
        rt.point("store", ctx, "range_tree", True)
        tree = self._tree(ctx)
        tree.nodes.remove(node)
        if not tree.nodes:
            del self._trees[ctx.ctx_id]

    # --- write sections ---------------------------------------------------------------

    def _write_begin(self, ctx: CowContext, site: str) -> None:
        lo, hi = self._next_range or WHOLE
        self._next_range = None
        key = (self._who(), ctx.ctx_id)
        stack = self._held.setdefault(key, [])
        mine = [n for n, _ in stack if n is not None]
        if any(n.write and n.lo <= lo and hi <= n.hi for n in mine):
            stack.append((None, ctx))
            return
        node = self._insert(ctx, lo, hi, True, nested=bool(mine))
        self._wait(ctx, node)
        stack.append((node, ctx))
        hold = self._lock(RANGE_LOCK, "write", site)
        hold.objects = 1
        self.ledger.unlock(hold)

    def _write_end(self, ctx: CowContext) -> None:
        key = (self._who(), ctx.ctx_id)
        stack = self._held[key]
        node, _ = stack.pop()
        if not stack:
            del self._held[key]
        if node is not None:
            self._release(ctx, node)

    def _set_range(self, lo: int, hi: int) -> None:
        self._next_range = (lo, hi)

    def _entries_hull(self, ctx: CowContext, lo: int, hi: int) -> tuple[int, int]:
        """``[lo, hi)`` grown over every remap entry overlapping it that holds a
        dynarray (changed in place for its whole range).  Read under the
        mmap lock the writer holds, which serialises the tree's writers."""
        for index, last, entry in self._remaps(ctx).entries():
            if isinstance(entry, Multi) and index < hi and lo <= last:
                lo, hi = min(lo, index), max(hi, last + 1)
        return lo, hi

    def add_new_remap(self, ctx: CowContext, pgoff: int, nr_pages: int, new_offset: int) -> None:
        self._set_range(*self._entries_hull(ctx, pgoff, pgoff + nr_pages))
        super().add_new_remap(ctx, pgoff, nr_pages, new_offset)

    def find_and_remap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int, new_offset: int
    ) -> bool:
        self._set_range(*self._entries_hull(ctx, pgoff, pgoff + nr_pages))
        return super().find_and_remap_existing(ctx, pgoff, nr_pages, old_offset, new_offset)

    def find_and_unmap_existing(
        self, ctx: CowContext, pgoff: int, nr_pages: int, old_offset: int
    ) -> None:
        self._set_range(*self._entries_hull(ctx, pgoff, pgoff + nr_pages))
        super().find_and_unmap_existing(ctx, pgoff, nr_pages, old_offset)

    def vma_prepare(self, vp: VmaPrepare) -> None:
        spans = [
            _span(v)
            for v in (vp.vma, vp.adj_next, vp.remove, vp.remove2, vp.insert)
            if v is not None
        ]
        self._set_range(min(lo for lo, _ in spans), max(hi for _, hi in spans))
        super().vma_prepare(vp)

    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        self._set_range(*_span(vma))
        super().unlink_anon_vmas(vma)

    def copy_vma(
        self,
        new_vma: VmAreaStruct,
        vma: VmAreaStruct,
        orig_addr: int,
        new_addr: int,
        length: int,
        merged: bool,
    ) -> None:
        self._set_range(*_span(new_vma))
        super().copy_vma(new_vma, vma, orig_addr, new_addr, length, merged)

    # (fork, __put_cow_context() and drop_cow_context() take the whole range: the
    # default of a section no entry point above has ranged.)

    # --- the walk ---------------------------------------------------------------------

    def walk_steps(self, folio: Folio, rwc: RmapWalkControl) -> Iterator[tuple[str, object]]:
        """``cow_context_walk()`` under range locks: pin the folio's context under
        RCU, then range-lock ``[folio->index]`` in each context on the path."""
        hold = self._lock(RCU, "read", "cow_context_walk")
        me = self._who()
        self._path[me] = []
        self._index[me] = folio.index
        try:
            root = self._pin_root(folio)
            if root is None:
                return
            for ctx in self.traverse_contexts(root):
                yield "context", ctx
                if not self.walk_context(ctx, folio, rwc, hold):
                    break
        finally:
            self._walk_done(me)
            self.ledger.unlock(hold)

    def _pin_root(self, folio: Folio) -> CowContext | None:
        """Under RCU: ``folio->cow_context``, ``refcount_inc_not_zero()`` (None
        at 0: the context is being freed, the folio no longer holds it), the
        node inserted; out of RCU: wait for it."""
        rt.rcu_read_lock()
        rt.point("load", folio, "mapping")
        ctx = cast(CowContext, folio.mapping)
        rt.point("store", ctx, "refcount", True)
        if ctx.refcount <= 0:
            rt.rcu_read_unlock()
            return None
        ctx.refcount += 1
        self._pinned[self._who()] = ctx
        node = self._insert(ctx, folio.index, folio.index + 1, False, nested=False)
        rt.rcu_read_unlock()
        self._wait(ctx, node)
        self._path[self._who()].append((ctx, node))
        self.ledger.unlock(self._lock(RANGE_LOCK, "read", "cow_context_walk"))
        return ctx

    def _walk_enter(self, ctx: CowContext) -> None:
        """A context reached from its parent's list: ``[folio->index]`` for read."""
        path = self._path.get(self._who())
        if path is None or (path and path[0][0] is ctx):
            return  # the root, locked by _pin_root()
        index = self._index[self._who()]
        node = self._insert(ctx, index, index + 1, False, nested=False)
        self._wait(ctx, node)
        path.append((ctx, node))
        self.ledger.unlock(self._lock(RANGE_LOCK, "read", "cow_context_walk"))

    def _walk_leave(self, ctx: CowContext) -> None:
        """The walk is done with ``ctx`` and its subtree: drop its node.  The
        PoC's ``traverse_contexts()`` calls it after each post-order visit; no
        RCU is needed there, the held parent keeps the child on its list."""
        path = self._path[self._who()]
        for i in range(len(path) - 1, 0, -1):
            if path[i][0] is ctx:
                self._release(ctx, path.pop(i)[1])
                return

    def _walk_done(self, me: int) -> None:
        """Drop every node still held (children first), the pin, then run a
        ``__mmdrop()`` a walker's ``mmput_async()`` left to a worker."""
        self._index.pop(me, None)
        path = self._path.pop(me, [])
        for ctx, node in reversed(path):
            self._release(ctx, node)
        pinned = self._pinned.pop(me, None)
        if pinned is not None:
            self.put_cow_context(pinned)
        self._walk_finish([])
