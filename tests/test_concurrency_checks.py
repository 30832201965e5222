"""Each check of the scheduler catches a deliberately broken program."""

from __future__ import annotations

from collections.abc import Callable

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.explorer import explore
from cowctx.concurrency.scheduler import Execution


class Prog:
    def __init__(self, **threads: Callable[[], None]) -> None:
        self.threads = threads
        self.names = list(threads)

    def start(self) -> Execution:
        return Execution(list(self.threads.items()))

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        return "", []


class Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gen = 0


A, B = Named("A"), Named("B")


def kinds(**threads: Callable[[], None]) -> dict[str, list[str]]:
    r = explore(Prog(**threads), list(threads), bound=None)
    out: dict[str, list[str]] = {}
    for kind, detail in sorted(r.violations):
        out.setdefault(kind, []).append(detail)
    return out


def test_lock_order_against_rmap_c() -> None:
    def bad() -> None:
        rt.lock("anon_vma", A, "write")
        rt.lock("mmap_lock", B, "read")
        rt.unlock("mmap_lock", B, "read")
        rt.unlock("anon_vma", A, "write")

    def good() -> None:
        rt.lock("mmap_lock", B, "read")
        rt.lock("anon_vma", A, "write")
        rt.unlock("anon_vma", A, "write")
        rt.unlock("mmap_lock", B, "read")

    assert kinds(t=bad) == {"lock_order": ["t: mmap_lock of B taken while holding anon_vma of A"]}
    assert kinds(t=good) == {}


def test_a_fault_under_the_vma_read_lock_may_lock_a_folio_a_writer_may_not() -> None:
    """vma_start_read() stands in for the fault's mmap lock (do_swap_page()'s
    folio_lock_or_retry()); the order's vma_start_write comes after folio_lock."""

    def locked(mode: str) -> Callable[[], None]:
        def t() -> None:
            rt.lock("vma_lock", A, mode)
            rt.lock("folio_lock", B)
            rt.unlock("folio_lock", B)
            rt.unlock("vma_lock", A, mode)

        return t

    assert kinds(fault=locked("read")) == {}
    assert kinds(writer=locked("write")) == {
        "lock_order": ["writer: folio_lock of B taken while holding vma_lock of A"]
    }


def test_a_trylock_against_the_order_is_allowed() -> None:
    def t() -> None:
        rt.lock("ptl", A)
        assert rt.trylock("anon_vma", B, "read")
        rt.unlock("anon_vma", B, "read")
        rt.unlock("ptl", A)

    assert kinds(t=t) == {}


def test_sleep_in_atomic() -> None:
    def under_spinlock() -> None:
        rt.lock("ptl", A)
        rt.may_sleep("try_to_unmap_one")
        rt.unlock("ptl", A)

    def rwsem_under_rcu() -> None:
        rt.rcu_read_lock()
        rt.lock("anon_vma", B, "read")
        rt.unlock("anon_vma", B, "read")
        rt.rcu_read_unlock()

    assert kinds(a=under_spinlock) == {
        "sleep_in_atomic": ["a: try_to_unmap_one may sleep under a spinlock"]
    }
    assert kinds(b=rwsem_under_rcu) == {
        "sleep_in_atomic": ["b: anon_vma of B (read) in an RCU read-side section"]
    }


def test_deadlock_cycle_is_printed() -> None:
    def ab() -> None:
        rt.lock("anon_vma", A, "write")
        rt.lock("anon_vma", B, "write")
        rt.unlock("anon_vma", B, "write")
        rt.unlock("anon_vma", A, "write")

    def ba() -> None:
        rt.lock("anon_vma", B, "write")
        rt.lock("anon_vma", A, "write")
        rt.unlock("anon_vma", A, "write")
        rt.unlock("anon_vma", B, "write")

    assert kinds(t1=ab, t2=ba)["deadlock"] == [
        "t1 waits for anon_vma of B -> t2 waits for anon_vma of A -> t1"
    ]


def test_synchronize_rcu_inside_a_reader_deadlocks() -> None:
    def t() -> None:
        rt.rcu_read_lock()
        rt.synchronize_rcu()
        rt.rcu_read_unlock()

    got = kinds(t=t)
    assert set(got) == {"sleep_in_atomic", "deadlock"}


def test_uaf_of_an_ordinary_cache_and_reuse_without_recheck() -> None:
    def freed() -> None:
        rt.slab_free("vm_area_struct", A, False)
        rt.point("load", A, "range")

    assert kinds(t=freed) == {"uaf": ["t: load A.range after kmem_cache_free(vm_area_struct)"]}

    obj = Named("AV")

    def reuse() -> None:
        gen = obj.gen
        rt.slab_free("anon_vma", obj, True)
        again = rt.slab_alloc("anon_vma")
        assert again is obj
        obj.gen += 1
        rt.use(obj, gen, "anon_vma_unlock_read")

    assert kinds(t=reuse)["uaf"] == [
        "t: anon_vma_unlock_read: AV was freed and reused (generation 0 -> 1) and used "
        "without the re-check"
    ]


def test_unlock_of_a_lock_not_held() -> None:
    def t() -> None:
        rt.unlock("anon_vma", A, "read")

    assert kinds(t=t) == {"bad_unlock": ["t: unlock of anon_vma of A it does not hold"]}


def test_hooks_are_no_ops_without_an_explorer() -> None:
    assert rt.current is None
    assert rt.trylock("anon_vma", A, "write")
    rt.lock("anon_vma", A, "write")
    rt.point("load", A, "x")
    rt.may_sleep("x")
    assert rt.slab_alloc("anon_vma") is None
    called = []
    rt.call_rcu(A, lambda: called.append(1))
    assert called == [1]


class Page:
    def __init__(self, name: str, content: int) -> None:
        self.name = name
        self.content = content


def test_lost_write_when_a_page_changes_after_its_copy() -> None:
    """``lost_write``: a thread copies a page and installs the copy in its place;
    a store to the old page in between is lost (and only then)."""
    old = Page("old", 1)

    def cow() -> None:  # wp_page_copy(): copy, then (PTL) install
        rt.point("load", old, "content")
        new = Page("new", old.content)
        rt.points("store", [(old, "pte", True), (old, "content", False)])  # install
        rt.copied(old, new, "install")

    def stale_store() -> None:  # a store through a stale TLB entry
        rt.point("store", old, "content", True)
        old.content = 2

    class Fresh(Prog):
        def start(self) -> Execution:
            old.content = 1
            return super().start()

    r = explore(Fresh(cow=cow, w=stale_store), ["cow", "w"], bound=None)
    assert {kind for kind, _ in r.violations} == {"lost_write"}
    ((_, detail),) = r.violations
    assert detail.startswith("cow: install: old was written after its content was copied to new")
    # the store before the copy, or after the install: 3 orders of 4 are clean
    assert r.executions == 3
    assert explore(Fresh(cow=cow), ["cow"], bound=None).violations == {}
