"""mm/rmap.c's anon_vma functions, Linux 6.18.44.

Object lifetimes, the reuse heuristic (``num_children``/``num_active_vmas``,
commit 2555283eb40d, v6.2), the merge rules of mm/vma.c that depend on anon_vma
state (commit 879bca0a2c4f, v6.16; 6.18.y with the ``vma_is_fork_child`` /
``copied_from`` fixes of commit 61f67c230a5e) and every acquisition of the root
rwsem, recorded in the ledger with what it covered.  Each function names the
commit behind behaviour that changed across versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from cowctx.concurrency import runtime as rt
from cowctx.designs.anon_vma.structs import AnonVma, AnonVmaChain, AnonVmaVma
from cowctx.metrics.ledger import LockHold, ObjectKind
from cowctx.mm.constants import PAGE_SHIFT, VM_ACCESS_FLAGS, VM_SOFTDIRTY
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import VmAreaStruct, vma_pages
from cowctx.rmap.protocol import AnonRmap, RmapWalkControl

if TYPE_CHECKING:
    from cowctx.mm.vma import VmaMergeStruct, VmaPrepare

ANON_VMA = ObjectKind("anon_vma", 104)
"""96-byte object plus the free pointer kept outside it (SLAB_TYPESAFE_BY_RCU)."""
ANON_VMA_CHAIN = ObjectKind("anon_vma_chain", 64)

RWSEM = "anon_vma.rwsem"

REVERTS = {
    "prepare_lock": 'd9d332e0874f ("anon_vma_prepare: properly lock even newly allocated entries")',
    "root_recheck": '"mm: fix hang on anon_vma->root->lock" (Hugh Dickins, 2010): re-check '
    "folio_mapped() after taking the root lock",
    "mremap_rmap_locks": '"mm: avoid taking rmap locks in move_ptes()" (2012): need_rmap_locks '
    "when the destination is visited first",
    "vma_adjust_lock": '"Fix migration races in rmap_walk" (Mel Gorman, 2010): the anon_vma '
    "lock around a VMA's range change",
    "fork_vma_lock": 'fb49c455323f ("fork: lock VMAs of the parent process when forking")',
}
"""Kernel fixes the explorer's race switches take out (``anon_vma[revert_NAME]``)."""


def _avma(vma: VmAreaStruct) -> AnonVmaVma:
    return cast(AnonVmaVma, vma)


def _av(vma: VmAreaStruct) -> AnonVma | None:
    return cast("AnonVma | None", vma.anon_vma)


def folio_anon_vma(folio: Folio) -> AnonVma:
    """``folio_anon_vma()``: the anon_vma an anon folio's mapping points to."""
    return cast(AnonVma, folio.mapping)


def vma_is_fork_child(vma: VmAreaStruct | None) -> bool:
    """``vma_is_fork_child()``: faulted and with a chain that is not exactly one AVC,
    which a VMA that inherited links at fork keeps for life.

    Named so since Linux kernel commit 61f67c230a5e ("mm/vma: fix anon_vma UAF on
    mremap() faulted, unfaulted merge") (in v6.19, and 6.18.y by 6.18.44); it was
    ``vma_had_uncowed_parents()``, the ``list_is_singular()`` test of older kernels."""
    return vma is not None and vma.anon_vma is not None and len(_avma(vma).anon_vma_chain) != 1


def anon_vma_compatible(a: VmAreaStruct, b: VmAreaStruct) -> bool:
    """``anon_vma_compatible()``: ``a`` just below ``b``, mergeable but for the
    access bits, and linear in pgoff."""
    return (
        a.vm_end == b.vm_start
        and a.vm_file is b.vm_file
        and not (a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY)
        and b.vm_pgoff == a.vm_pgoff + vma_pages(a)
    )


def reusable_anon_vma(old: VmAreaStruct, a: VmAreaStruct, b: VmAreaStruct) -> AnonVma | None:
    """``reusable_anon_vma()``: ``old``'s anon_vma if compatible and not a fork child's."""
    if anon_vma_compatible(a, b):
        anon_vma = _av(old)
        if anon_vma is not None and len(_avma(old).anon_vma_chain) == 1:
            return anon_vma
    return None


class AnonVmaRmap(AnonRmap):
    """The anon_vma / anon_vma_chain reverse map."""

    name: ClassVar[str] = "anon_vma"
    vma_type = AnonVmaVma
    object_kinds = (ANON_VMA, ANON_VMA_CHAIN)

    def __init__(self, machine):
        super().__init__(machine)
        self._next_av_id = 0
        self.anon_vmas: dict[int, AnonVma] = {}
        """Every allocated, not yet freed anon_vma, by id."""
        self._prepare_holds: dict[int, LockHold] = {}
        self.ksm_refs: dict[int, int] = {}
        """anon_vma id -> references held by KSM rmap_items."""

    # --- objects ----------------------------------------------------------------------

    def anon_vma_alloc(self) -> AnonVma:
        reused = rt.slab_alloc("anon_vma")
        if reused is not None:  # SLAB_TYPESAFE_BY_RCU: same memory, a new object
            av = cast(AnonVma, reused)
            av.gen += 1
            av.reinit()
        else:
            av = AnonVma(self._next_av_id)
            self._next_av_id += 1
        self.anon_vmas[av.av_id] = av
        self.ledger.alloc("anon_vma")
        return av

    def anon_vma_free(self, av: AnonVma) -> None:
        """``anon_vma_free()``: if a walker may hold the root rwsem (it took it by
        trylock under RCU), take and drop it for writing first."""
        assert not av.freed, av
        if rt.current is not None:
            rt.lock("anon_vma", av.root, "write")
            rt.unlock("anon_vma", av.root, "write")
        av.freed = True
        del self.anon_vmas[av.av_id]
        self.ledger.free("anon_vma")
        rt.slab_free("anon_vma", av, True)

    def anon_vma_chain_alloc(self, vma: AnonVmaVma, anon_vma: AnonVma) -> AnonVmaChain:
        rt.slab_alloc("anon_vma_chain")
        self.ledger.alloc("anon_vma_chain")
        return AnonVmaChain(vma, anon_vma)

    def anon_vma_chain_free(self, avc: AnonVmaChain) -> None:
        self.ledger.free("anon_vma_chain")
        rt.slab_free("anon_vma_chain", avc, False)

    @staticmethod
    def anon_vma_chain_link(vma: AnonVmaVma, avc: AnonVmaChain, anon_vma: AnonVma) -> None:
        """``anon_vma_chain_link()``: head of the VMA's chain, into the anon_vma's tree."""
        rt.guarded_store(anon_vma, "tree", "anon_vma", anon_vma.root)
        vma.anon_vma_chain.append(avc)
        anon_vma.rb_root.insert(avc)

    def get_anon_vma(self, av: AnonVma) -> None:
        rt.point("store", av, "refcount", True)
        av.refcount += 1

    def put_anon_vma(self, av: AnonVma) -> None:
        """``put_anon_vma()`` → ``__put_anon_vma()``: the root goes last."""
        rt.point("store", av, "refcount", True)
        av.refcount -= 1
        if av.refcount:
            return
        root = av.root
        self.anon_vma_free(av)
        if root is not av:
            root.refcount -= 1
            if root.refcount == 0:
                self.anon_vma_free(root)

    # --- locking ----------------------------------------------------------------------

    def _lock(self, mode: str, site: str) -> LockHold:
        return self.ledger.lock(RWSEM, mode, site)

    # --- first fault --------------------------------------------------------------------

    def find_mergeable_anon_vma(self, vma: VmAreaStruct) -> AnonVma | None:
        """``find_mergeable_anon_vma()``: the next VMA first, then the previous one."""
        mm = vma.vm_mm
        nxt = mm.vma_next(vma)
        if nxt is not None and nxt.vm_start == vma.vm_end:
            anon_vma = reusable_anon_vma(nxt, vma, nxt)
            if anon_vma is not None:
                return anon_vma
        prev = mm.vma_prev(vma)
        if prev is not None:
            return reusable_anon_vma(prev, prev, vma)
        return None

    def anon_vma_prepare(self, vma: VmAreaStruct) -> None:
        """``__anon_vma_prepare()``: one AVC always; an anon_vma only when no
        touching neighbour has a reusable one (then a new root, num_children=1)."""
        v = _avma(vma)
        rt.may_sleep("__anon_vma_prepare")
        anon_vma = self.find_mergeable_anon_vma(vma)
        allocated = None
        if anon_vma is None:
            anon_vma = allocated = self.anon_vma_alloc()
            anon_vma.num_children += 1  # self-parent link for new root
        avc: AnonVmaChain | None = self.anon_vma_chain_alloc(v, anon_vma)
        # Before d9d332e0874f a newly allocated anon_vma was linked without its
        # lock ("nobody can see it yet"), but a type-safe one may be a reused
        # object a walker under RCU has just locked.
        real = allocated is None or "prepare_lock" not in self.reverts
        root = anon_vma.root
        if real:
            rt.lock("anon_vma", root, "write")
        hold = self._lock("write", "__anon_vma_prepare")
        mm = vma.vm_mm
        rt.lock("spinlock", mm)  # mm->page_table_lock against a racing fault
        rt.point("load", v, "anon_vma")
        if v.anon_vma is None:
            rt.point("store", v, "anon_vma", True)
            v.anon_vma = anon_vma
            assert avc is not None
            self.anon_vma_chain_link(v, avc, anon_vma)
            anon_vma.num_active_vmas += 1
            allocated = avc = None
        rt.unlock("spinlock", mm)
        hold.vmas, hold.objects = 1, 1
        self.ledger.unlock(hold)
        if real:
            rt.unlock("anon_vma", root, "write")
        if allocated is not None:
            self.put_anon_vma(allocated)
        if avc is not None:
            self.anon_vma_chain_free(avc)

    # --- fork and clone -------------------------------------------------------------

    def anon_vma_clone(self, dst: VmAreaStruct, src: VmAreaStruct) -> None:
        self._anon_vma_clone(_avma(dst), _avma(src))

    def _anon_vma_clone(self, dst: AnonVmaVma, src: AnonVmaVma) -> None:
        """``anon_vma_clone()``: link ``dst`` to every anon_vma of ``src``'s chain,
        oldest first, under one hold of the root lock.  With ``dst.anon_vma``
        unset (fork) the oldest anon_vma with no active VMA and fewer than two
        children is reused.

        Since Linux kernel commit 2555283eb40d ("mm/rmap: Fix anon_vma->degree
        ambiguity leading to double-reuse") (in v6.2) the reuse test reads two
        counters, ``num_children`` and ``num_active_vmas``; before, one ``degree``
        counted both and an anon_vma could be reused twice."""
        if not src.anon_vma_chain:
            return
        root = src.anon_vma_chain[0].anon_vma.root
        rt.lock("anon_vma", root, "write")
        hold = self._lock("write", "anon_vma_clone")
        for pavc in list(src.anon_vma_chain):
            anon_vma = pavc.anon_vma
            avc = self.anon_vma_chain_alloc(dst, anon_vma)
            self.anon_vma_chain_link(dst, avc, anon_vma)
            hold.objects += 1
            if (
                dst.anon_vma is None
                and src.anon_vma is not None
                and anon_vma.num_children < 2
                and anon_vma.num_active_vmas == 0
            ):
                rt.point("store", dst, "anon_vma", True)
                dst.anon_vma = anon_vma
        if dst.anon_vma is not None:
            _av(dst).num_active_vmas += 1  # type: ignore[union-attr]
        hold.vmas = 1
        self.ledger.unlock(hold)
        rt.unlock("anon_vma", root, "write")

    def anon_vma_fork(self, vma: VmAreaStruct, pvma: VmAreaStruct) -> None:
        """``anon_vma_fork()``: clone the parent's chain (maybe reusing an anon_vma);
        otherwise a new anon_vma under the parent VMA's, pinning the root.

        The child's anon_vma counts in ``parent->num_children`` and its VMA in its
        own ``num_active_vmas`` since Linux kernel commit 2555283eb40d ("mm/rmap:
        Fix anon_vma->degree ambiguity leading to double-reuse") (in v6.2).
        Deliberately 6.18.44's order: the anon_vma and AVC are allocated only when
        nothing was reused (7.0's "separate out fork-only logic on
        anon_vma_clone()" allocates first and frees on reuse; not in 6.18.44)."""
        v, pv = _avma(vma), _avma(pvma)
        rt.point("load", pv, "anon_vma")
        parent_av = _av(pv)
        if parent_av is None:
            return
        v.anon_vma = None
        self._anon_vma_clone(v, pv)
        if v.anon_vma is not None:
            return
        anon_vma = self.anon_vma_alloc()
        anon_vma.num_active_vmas += 1
        avc = self.anon_vma_chain_alloc(v, anon_vma)
        anon_vma.root = parent_av.root
        anon_vma.parent = parent_av
        self.get_anon_vma(anon_vma.root)
        rt.point("store", v, "anon_vma", True)
        v.anon_vma = anon_vma
        root = anon_vma.root
        rt.lock("anon_vma", root, "write")
        hold = self._lock("write", "anon_vma_fork")
        self.anon_vma_chain_link(v, avc, anon_vma)
        anon_vma.parent.num_children += 1
        hold.vmas, hold.objects = 1, 1
        self.ledger.unlock(hold)
        rt.unlock("anon_vma", root, "write")

    # --- teardown -------------------------------------------------------------------

    def unlink_anon_vmas(self, vma: VmAreaStruct) -> None:
        """``unlink_anon_vmas()``: every AVC of ``vma`` goes, newest first; an
        anon_vma whose tree empties is put after the lock is dropped."""
        v = _avma(vma)
        chain = v.anon_vma_chain
        if not chain and v.anon_vma is None:
            return
        root = chain[0].anon_vma.root if chain else None
        if root is not None:
            rt.lock("anon_vma", root, "write")
        hold = self._lock("write", "unlink_anon_vmas")
        hold.vmas = 1
        emptied: list[AnonVmaChain] = []
        for avc in reversed(chain):
            anon_vma = avc.anon_vma
            rt.guarded_store(anon_vma, "tree", "anon_vma", anon_vma.root)
            anon_vma.rb_root.remove(avc)
            hold.objects += 1
            if not anon_vma.rb_root:
                anon_vma.parent.num_children -= 1
                emptied.append(avc)
            else:
                self.anon_vma_chain_free(avc)
        if v.anon_vma is not None:
            _av(v).num_active_vmas -= 1  # type: ignore[union-attr]
            rt.point("store", v, "anon_vma", True)
            v.anon_vma = None
        self.ledger.unlock(hold)
        if root is not None:
            rt.unlock("anon_vma", root, "write")
        for avc in emptied:  # newest first, so the root is put last
            self.put_anon_vma(avc.anon_vma)
            self.anon_vma_chain_free(avc)
        v.anon_vma_chain = []

    # --- VMA changes (vma_prepare / vma_complete) ---------------------------------------

    def vma_prepare(self, vp: VmaPrepare) -> None:
        """Write-lock ``vp.anon_vma``'s root and take the changing VMAs' AVCs out of
        their trees (``anon_vma_interval_tree_pre_update_vma``)."""
        if vp.anon_vma is None:
            return
        root = cast(AnonVma, vp.anon_vma).root
        reverted = "vma_adjust_lock" in self.reverts
        if not reverted:
            rt.lock("anon_vma", root, "write")
        hold = self._lock("write", "vma_prepare")
        self._prepare_holds[id(vp)] = hold
        if reverted:  # 2010: the range changed in place, walkers could see it torn
            return
        for vma in (vp.vma, vp.adj_next):
            if vma is None:
                continue
            for avc in _avma(vma).anon_vma_chain:
                rt.guarded_store(avc.anon_vma, "tree", "anon_vma", avc.anon_vma.root)
                avc.anon_vma.rb_root.remove(avc)
                hold.objects += 1
            hold.vmas += 1

    def vma_complete(self, vp: VmaPrepare) -> None:
        hold = self._prepare_holds.pop(id(vp), None)
        if hold is None:
            return
        for vma in (vp.vma, vp.adj_next):
            if vma is None:
                continue
            for avc in _avma(vma).anon_vma_chain:
                rt.guarded_store(avc.anon_vma, "tree", "anon_vma", avc.anon_vma.root)
                if "vma_adjust_lock" in self.reverts:
                    avc.anon_vma.rb_root.remove(avc)  # re-keyed only now
                avc.anon_vma.rb_root.insert(avc)
        self.ledger.unlock(hold)
        if "vma_adjust_lock" not in self.reverts:
            rt.unlock("anon_vma", cast(AnonVma, vp.anon_vma).root, "write")

    def move_page_tables(
        self, vma: VmAreaStruct, new_vma: VmAreaStruct, need_rmap_locks: bool
    ) -> None:
        """``take_rmap_locks()``: only when rmap walkers could otherwise miss PTEs
        (held until :meth:`drop_rmap_locks`)."""
        if need_rmap_locks and "mremap_rmap_locks" in self.reverts:
            return
        if need_rmap_locks and vma.anon_vma is not None:
            rt.lock("anon_vma", _av(vma).root, "write")  # type: ignore[union-attr]
            hold = self._lock("write", "take_rmap_locks")
            hold.vmas = 2
            self.ledger.unlock(hold)

    def drop_rmap_locks(self, vma: VmAreaStruct, need_rmap_locks: bool) -> None:
        if need_rmap_locks and "mremap_rmap_locks" in self.reverts:
            return
        if need_rmap_locks and vma.anon_vma is not None:
            rt.unlock("anon_vma", _av(vma).root, "write")  # type: ignore[union-attr]

    # --- merge rules --------------------------------------------------------------------

    def is_mergeable_anon_vma(self, vmg: VmaMergeStruct, merge_next: bool) -> bool:
        """``is_mergeable_anon_vma()`` (6.18.y): case 1 (target unfaulted, range
        faulted) refuses a fork-child source or mremap source; case 2 (target
        faulted, range not) refuses a fork-child target; case 3 needs equality.

        Since Linux kernel commit 879bca0a2c4f ("mm/vma: fix incorrectly disallowed
        anonymous VMA merges") (in v6.16) the fork-child test is made on the VMA
        whose anon_vma survives the merge (before, an unfaulted VMA could hardly
        ever merge with a faulted neighbour on mprotect/madvise).  Since commit
        61f67c230a5e ("mm/vma: fix anon_vma UAF on mremap() faulted, unfaulted
        merge") (in v6.19; 6.18.y by 6.18.44) with its follow-up "mm/vma: enforce
        VMA fork limit on unfaulted,faulted mremap merge too", an mremap'd fork
        child (``copied_from``) is refused as well."""
        tgt = vmg.next if merge_next else vmg.prev
        assert tgt is not None
        tgt_anon, src_anon = tgt.anon_vma, vmg.anon_vma
        if tgt_anon is None and src_anon is not None:
            return not vma_is_fork_child(vmg.middle) and not vma_is_fork_child(vmg.copied_from)
        if tgt_anon is not None and src_anon is None:
            return not vma_is_fork_child(tgt)
        return src_anon is tgt_anon

    def are_anon_vmas_compatible(self, vma1: VmAreaStruct, vma2: VmAreaStruct) -> bool:
        a1, a2 = vma1.anon_vma, vma2.anon_vma
        return a1 is None or a2 is None or a1 is a2

    # --- folios -----------------------------------------------------------------------

    def folio_set_anon(
        self, folio: Folio, vma: VmAreaStruct, address: int, exclusive: bool = True
    ) -> None:
        """``__folio_set_anon()``: an exclusive folio points at the VMA's anon_vma,
        a non-exclusive one (swap-in) at the root, the oldest possible."""
        anon_vma: AnonVma = vma.anon_vma  # type: ignore[assignment]
        rt.point("store", folio, "mapping", True)
        folio.mapping = anon_vma if exclusive else anon_vma.root
        folio.index = ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff

    def folio_move_anon_rmap(self, folio: Folio, vma: VmAreaStruct) -> None:
        """``folio_move_anon_rmap()``: one store, no anon_vma lock needed."""
        rt.point("store", folio, "mapping", True)
        folio.mapping = vma.anon_vma

    # --- rmap walk ----------------------------------------------------------------------

    def rmap_walk(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """``rmap_walk_anon()``: only the anon_vma in ``folio->mapping`` is walked;
        every descendant VMA has an AVC in its tree.  Read lock on the root."""
        self._rmap_walk(folio, rwc)

    def _rmap_walk(self, folio: Folio, rwc: RmapWalkControl) -> None:
        """The walk with its points: the anon_vma is locked by
        ``folio_lock_anon_vma_read()`` for a try-lock walk, else by
        ``rmap_walk_anon_lock()`` (the caller holds the folio lock); the tree is
        walked one AVC at a time; ``anon_vma_unlock_read()`` re-reads ``->root``."""
        anon_vma, gen = self._walk_lock(folio, rwc.try_lock)
        if anon_vma is None:
            return
        cost = rwc.cost.cost
        hold = self._lock("read", "rmap_walk_anon")
        cost["anchors"] += 1
        rt.point("load", folio, "mapping")
        pgoff = folio.index
        rt.point("load", anon_vma, "tree")
        for avc in anon_vma.rb_root.foreach(pgoff, pgoff):
            rt.point("load", avc, "vma")
            cost["chain_entries"] += 1
            cost["vma_lookups"] += 1
            hold.objects += 1
            vma = avc.vma
            rt.point("load", vma, "range")
            start, end = vma.vm_start, vma.vm_end
            rt.point("load", vma, "pgoff")
            address = start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)  # vma_address()
            if not start <= address < end:
                continue
            hold.vmas += 1
            if rwc.invalid_vma is not None and rwc.invalid_vma(vma):
                continue
            if not rwc.rmap_one(folio, vma, address):
                break
            if rwc.done is not None and rwc.done(folio):
                break
        self.ledger.unlock(hold)
        # anon_vma_unlock_read(): up_read(&anon_vma->root->rwsem), root read again
        rt.point("load", anon_vma, "root")
        rt.use(anon_vma, gen, "anon_vma_unlock_read")
        rt.unlock("anon_vma", anon_vma.root, "read")

    def _walk_lock(self, folio: Folio, try_lock: bool) -> tuple[AnonVma | None, int]:
        """``folio_lock_anon_vma_read()`` (try-lock walks: folio_referenced) or
        ``rmap_walk_anon_lock()``: the anon_vma, its root read-locked, or None;
        and the generation of the anon_vma's memory when ``folio->mapping`` was read."""
        if not try_lock:
            rt.point("load", folio, "mapping")
            anon_vma = folio_anon_vma(folio)
            rt.lock("anon_vma", anon_vma.root, "read")
            return anon_vma, anon_vma.gen
        rt.rcu_read_lock()
        rt.point("load", folio, "mapping")
        anon_vma = folio_anon_vma(folio)
        gen = anon_vma.gen
        if not folio.mapcount:
            rt.rcu_read_unlock()
            rt.walk_abandon()
            return None, gen
        rt.point("load", anon_vma, "root")
        root = anon_vma.root
        if rt.trylock("anon_vma", root, "read"):
            # If the folio is still mapped, this anon_vma is still its anon_vma
            # and holding the rwsem keeps it from going away (anon_vma_free()).
            if "root_recheck" not in self.reverts:
                rt.point("load", folio, "mapcount")
                if not folio.mapcount:
                    rt.unlock("anon_vma", root, "read")
                    rt.rcu_read_unlock()
                    rt.walk_abandon()
                    return None, gen
            rt.rcu_read_unlock()
            return anon_vma, gen
        rt.rcu_read_unlock()  # rwc->try_lock: contended, give up
        rt.walk_abandon()
        return None, gen

    # --- KSM -------------------------------------------------------------------------

    def ksm_rmap_item_anchor(self, vma: VmAreaStruct, folio: Folio) -> object:
        """``try_to_merge_with_ksm_page()``: ``rmap_item->anon_vma = vma->anon_vma``
        with ``get_anon_vma()``: KSM can outlive every mapping of the anon_vma."""
        anon_vma = _av(vma)
        assert anon_vma is not None
        self.get_anon_vma(anon_vma)
        self.ksm_refs[anon_vma.av_id] = self.ksm_refs.get(anon_vma.av_id, 0) + 1
        return anon_vma

    def ksm_rmap_item_release(self, anchor: object) -> None:
        anon_vma = cast(AnonVma, anchor)
        self.ksm_refs[anon_vma.av_id] -= 1
        if not self.ksm_refs[anon_vma.av_id]:
            del self.ksm_refs[anon_vma.av_id]
        self.put_anon_vma(anon_vma)

    def rmap_walk_ksm_item(
        self, folio: Folio, item: object, rwc: RmapWalkControl, search_new_forks: bool
    ) -> bool:
        """``rmap_walk_ksm()`` for one rmap_item: the whole tree of its anon_vma,
        VMAs covering the item's address, of its own mm (first pass) or of
        other mms, i.e. forked since (second pass)."""
        anon_vma = cast(AnonVma, item.anchor)  # type: ignore[attr-defined]
        address: int = item.address  # type: ignore[attr-defined]
        item_mm = item.mm  # type: ignore[attr-defined]
        cost = rwc.cost.cost
        hold = self._lock("read", "rmap_walk_ksm")
        cost["anchors"] += 1
        go_on = True
        for avc in anon_vma.rb_root.foreach(0, 1 << 62):
            cost["chain_entries"] += 1
            hold.objects += 1
            vma = avc.vma
            if address < vma.vm_start or address >= vma.vm_end:
                continue
            if (vma.vm_mm is item_mm) == search_new_forks:
                continue
            cost["vma_lookups"] += 1
            hold.vmas += 1
            if rwc.invalid_vma is not None and rwc.invalid_vma(vma):
                continue
            if not rwc.rmap_one(folio, vma, address) or (rwc.done is not None and rwc.done(folio)):
                go_on = False
                break
        self.ledger.unlock(hold)
        return go_on

    def extra_refs(self, av: AnonVma) -> int:
        """References held beyond the tree and descendants (KSM rmap_items)."""
        return self.ksm_refs.get(av.av_id, 0)

    def graph(self) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """anon_vmas (parent edges), and an edge per AVC from its VMA."""
        nodes, edges = [], []
        for av in self.anon_vmas.values():
            label = f"AV{av.av_id}\\nc={av.num_children} a={av.num_active_vmas} r={av.refcount}"
            nodes.append((f"av{av.av_id}", label, "root" if av.root is av else "anon_vma"))
            if av.parent is not av:
                edges.append((f"av{av.av_id}", f"av{av.parent.av_id}", "parent"))
        for mm in self.machine.live_mms():
            for vma in mm.vmas():
                for avc in cast(AnonVmaVma, vma).anon_vma_chain:
                    own = avc.anon_vma is vma.anon_vma
                    edges.append(
                        (f"vma{vma.vm_id}", f"av{avc.anon_vma.av_id}", "anon_vma" if own else "avc")
                    )
        return nodes, edges

    def describe_folio(self, folio: Folio) -> str:
        av = folio.mapping
        return f"AV{av.av_id}" if isinstance(av, AnonVma) else repr(av)

    # --- invariants -------------------------------------------------------------------

    def check_invariants(self) -> list[str]:
        from cowctx.designs.anon_vma.checks import check_anon_vma_invariants

        return check_anon_vma_invariants(self)
