"""The hooks the model calls at shared-memory accesses and synchronisation points.

Each hook costs one module-global load and a compare when no execution is being
explored (``current is None``): that is the whole price of concurrency for the
sequential model.  Under an explorer, ``current`` is the running
:class:`~cowctx.concurrency.scheduler.Execution` and each hook is a scheduling
point of the calling thread (a greenlet).

The page-table step, the most frequent, is not a function here: the model's
:func:`cowctx.mm.locking.pte` calls the running object's ``pte(mm, vpn, write,
folios)`` directly, the same step as :func:`points` of ``(mm, ("pte", vpn),
write)`` and each folio's ``mapcount`` and ``refcount`` stores, built by the
implementation only as far as it needs them.

Keys: an access is to ``(object, field)``.  Fields are coarse on purpose (one
``range`` for ``vm_start``/``vm_end``/``vm_pgoff``) so that two steps touching
the same kernel word are always seen as dependent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cowctx.concurrency.scheduler import Execution

current: Execution | None = None
"""The execution being explored, or None (sequential model: every hook is a no-op)."""


def point(kind: str, obj: object, field: object, write: bool = False) -> None:
    """A load (``write`` False) or store of ``obj``'s ``field``: a scheduling point."""
    ex = current
    if ex is not None:
        ex.point(kind, obj, field, write)


def points(kind: str, accesses: list[tuple[object, object, bool]]) -> None:
    """One scheduling point that makes several accesses ``(obj, field, write)``
    (the first names the step), e.g. the MMU's store: the PTE and the page."""
    ex = current
    if ex is not None:
        ex.points(kind, accesses)


def copied(src: object, dst: object, where: str) -> None:
    """``dst`` now replaces ``src`` (``wp_page_copy()`` installs its copy): a store
    to ``src`` since its content was copied is lost to the mapping (``lost_write``)."""
    ex = current
    if ex is not None and getattr(src, "content", None) != getattr(dst, "content", None):
        who = ex.running.name if ex.running is not None else "?"
        ex.violation(
            "lost_write",
            f"{who}: {where}: {describe(src)} was written after its content was copied "
            f"to {describe(dst)}, which replaces it: the write is lost",
        )


def lock(kind: str, obj: object, mode: str = "write") -> None:
    """Take a lock of kernel kind ``kind`` (see :mod:`cowctx.concurrency.locks`)
    that lives in ``obj``; ``mode`` ``read`` or ``write`` (rwsems), ``write`` else."""
    ex = current
    if ex is not None:
        ex.lock(kind, obj, mode, try_only=False)


def trylock(kind: str, obj: object, mode: str = "write") -> bool:
    """``down_read_trylock()`` and friends: never waits; always succeeds when alone."""
    ex = current
    if ex is not None:
        return ex.lock(kind, obj, mode, try_only=True)
    return True


def unlock(kind: str, obj: object, mode: str = "write") -> None:
    ex = current
    if ex is not None:
        ex.unlock(kind, obj, mode)


def rcu_read_lock() -> None:
    ex = current
    if ex is not None:
        ex.rcu_read_lock()


def rcu_read_unlock() -> None:
    ex = current
    if ex is not None:
        ex.rcu_read_unlock()


def synchronize_rcu() -> None:
    """Wait for every reader that was in a read-side section when this began."""
    ex = current
    if ex is not None:
        ex.synchronize_rcu()


def call_rcu(obj: object, callback: Callable[[], None]) -> None:
    """``call_rcu()``/``kfree_rcu()``: ``callback`` runs after a grace period
    (at once when sequential: no reader can exist)."""
    ex = current
    if ex is not None:
        ex.call_rcu(obj, callback)
    else:
        callback()


def kfree_rcu(cache: str, obj: object) -> None:
    """``kfree_rcu()``: ``obj`` goes back to ``cache`` (an ordinary one, not
    type-safe) after a grace period."""
    call_rcu(obj, lambda: slab_free(cache, obj, False))


def may_sleep(where: str) -> None:
    """A point that may sleep (``might_sleep()``): illegal under a spinlock or RCU."""
    ex = current
    if ex is not None:
        ex.may_sleep(where)


def slab_alloc(cache: str) -> Any:
    """An object of ``cache`` freed earlier that the allocator hands out again (a
    ``SLAB_TYPESAFE_BY_RCU`` cache reuses at once), or None for a fresh one.
    Sequential runs never reuse, so object ids stay as they were."""
    ex = current
    if ex is not None:
        return ex.slab_alloc(cache)
    return None


def slab_free(cache: str, obj: object, typesafe: bool) -> None:
    ex = current
    if ex is not None:
        ex.slab_free(cache, obj, typesafe)


def use(obj: Any, gen: int, what: str) -> None:
    """Act on ``obj`` (a type-safe object) read when its generation was ``gen``:
    if it was freed and reused since, the caller skipped the identity re-check."""
    ex = current
    if ex is not None and getattr(obj, "gen", gen) != gen:
        who = ex.running.name if ex.running is not None else "?"
        ex.violation(
            "uaf",
            f"{who}: {what}: {describe(obj)} was freed and reused (generation {gen} -> "
            f"{obj.gen}) and used without the re-check",
        )


def wait_until(kind: str, obj: object, field: object, ready: Callable[[], bool]) -> None:
    """Sleep until ``ready()`` (e.g. ``migration_entry_wait()``); a store to
    ``(obj, field)`` is what wakes the waiter."""
    ex = current
    if ex is not None:
        ex.wait_until(kind, obj, field, ready)


def walk_begin(folio: object) -> None:
    """An rmap walk of ``folio`` starts: the mappings it must find are those that
    exist now and still exist, untouched by other threads, when it ends."""
    ex = current
    if ex is not None:
        ex.walk_begin(folio)


def walk_visit(mm_id: int, address: int) -> None:
    ex = current
    if ex is not None:
        ex.walk_visit(mm_id, address)


def walk_end(complete: bool = True) -> None:
    """The walk is over; ``complete`` False: it stopped early by design (a
    reference count reached, or it gave up on a contended lock), so what it did
    not visit was not missed."""
    ex = current
    if ex is not None:
        ex.walk_end(complete)


def walk_abandon() -> None:
    """The walk gives up (contended try-lock, folio no longer mapped)."""
    ex = current
    if ex is not None and ex.running is not None and ex.running.walk is not None:
        ex.running.walk.abandoned = True


def walk_skip_mm(mm_id: int) -> None:
    """The walk leaves out an mm on purpose: it is being torn down
    (``mmget_not_zero()`` failed once ``mm_users`` reached 0) and ``exit_mmap()``
    unmaps what it still maps, so a mapping of it the walk does not visit is
    not missed."""
    ex = current
    if ex is not None and ex.running is not None and ex.running.walk is not None:
        w = ex.running.walk
        w.alive = {(mm, address) for mm, address in w.alive if mm != mm_id}
        w.mms.discard(mm_id)


def walk_unmapping(mm_id: int, covered: Callable[[int], bool]) -> None:
    """The walk looked ``mm_id``'s VMAs up in its VMA tree (lockless, as the
    CoW context PoC does): a mapping at an address no VMA covers any more is
    being torn down by a munmap that already cleared the range
    (``vms_complete_munmap_vmas()`` zaps after ``vma_iter_clear_gfp()``), so a
    walk that finds VMAs through the tree need not find it."""
    ex = current
    if ex is not None and ex.running is not None and ex.running.walk is not None:
        w = ex.running.walk
        tracked = [a for mm, a in w.alive if mm == mm_id]
        w.alive = {(mm, a) for mm, a in w.alive if mm != mm_id or covered(a)}
        now = ex.mappings_of(w.pfn) if ex.mappings_of is not None else set()
        # where the mm maps the folio now, or (its PTE already cleared inside
        # the munmap's PTL section) where the walk last saw it mapped
        mine = [a for mm, a in now if mm == mm_id] or tracked
        if mine and not any(covered(a) for a in mine):
            w.mms.discard(mm_id)


def walk_resample() -> None:
    """The walk read something a page-table change updates without taking the
    page-table lock (the PoC's lockless ``folio_maybe_mapped_shared()``): it may
    have seen the effect of a change still inside another thread's PTL section,
    so what it must find is re-sampled now (the scheduler otherwise samples only
    between PTL sections)."""
    ex = current
    if ex is not None and ex.running is not None and ex.running.walk is not None:
        w = ex.running.walk
        if ex.mappings_of is not None:
            w.update(ex.mappings_of(w.pfn))


def local() -> dict[str, object]:
    """The running thread's own variables (an empty dict when sequential)."""
    ex = current
    if ex is not None and ex.running is not None:
        return ex.running.local
    return {}


def active() -> bool:
    """True while an explorer runs threads (code that only matters then may check)."""
    return current is not None


def describe_field(fld: object) -> str:
    """``.name``, or `` pte 0x...`` for a PTE slot ``("pte", vpn)``."""
    if isinstance(fld, tuple) and len(fld) == 2 and fld[0] == "pte":
        return f" pte {fld[1] << 12:#x}"
    return f".{fld}"


def describe(obj: object) -> str:
    """A kernel-ish name for an object in traces and messages."""
    for attr, fmt in (
        ("av_id", "AV{}"),
        ("vm_id", "vma#{}"),
        ("mm_id", "mm#{}"),
        ("pfn", "folio#{}"),
    ):
        value = getattr(obj, attr, None)
        if value is not None:
            return fmt.format(value)
    vma, av = getattr(obj, "vma", None), getattr(obj, "anon_vma", None)
    if vma is not None and av is not None:  # an anon_vma_chain
        return f"AVC(vma#{vma.vm_id}->AV{av.av_id})"
    name = getattr(obj, "name", None)
    return str(name) if isinstance(name, str) else type(obj).__name__


def guarded_store(obj: object, field: str, lock_kind: str, lock_obj: object) -> None:
    """A store to ``obj``'s ``field``, which the lock ``lock_kind`` of ``lock_obj``
    protects: if the storing thread does not hold it while another thread does,
    that thread is looking at a structure being changed under it."""
    ex = current
    if ex is not None:
        ex.guarded_store(obj, field, lock_kind, lock_obj)
