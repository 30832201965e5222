"""The anon_vma design's internal state, as mm/rmap.c leaves it (linux-anon-rmap.md
sections 2-4): prepare and find_mergeable_anon_vma, fork and the reuse rule,
chain order, unlink and lifetime, the root rwsem in the ledger."""

from __future__ import annotations

from cowctx.designs.anon_vma import AnonVma

from .helpers import page, run


def vma_of(result, proc: str, n: int):
    return result.procs[proc].mm.vma_lookup(page(n))


def state(av: AnonVma) -> tuple[int, int, int]:
    """(num_children, num_active_vmas, refcount), as the reference writes it."""
    return av.num_children, av.num_active_vmas, av.refcount


def chain_ids(vma) -> list[int]:
    """Chain tail (oldest) to head (newest)."""
    return [avc.anon_vma.av_id for avc in vma.anon_vma_chain]


TOUCH = [{"op": "mmap", "page": 0, "pages": 16}, {"op": "write", "page": 0, "pages": 16}]


def test_first_write_fault_creates_a_root_with_a_self_child() -> None:
    r = run(TOUCH)
    av = vma_of(r, "p0", 0).anon_vma
    assert av.root is av and av.parent is av
    assert state(av) == (1, 1, 1)


def test_fork_gives_the_child_a_new_anon_vma_under_the_parents() -> None:
    """Worked example (a): AV0 (c=2, a=1, r=2), AV1 (c=0, a=1, r=1); the child's
    chain is [AV0, AV1] oldest first."""
    r = run([*TOUCH, {"op": "fork", "child": "p1"}])
    av0, av1 = vma_of(r, "p0", 0).anon_vma, vma_of(r, "p1", 0).anon_vma
    assert state(av0) == (2, 1, 2) and state(av1) == (0, 1, 1)
    assert av1.root is av0 and av1.parent is av0
    assert chain_ids(vma_of(r, "p1", 0)) == [av0.av_id, av1.av_id]
    assert len(av0.rb_root) == 2 and len(av1.rb_root) == 1


def test_reuse_picks_the_orphaned_non_root_anon_vma() -> None:
    """Worked example (f), continued: P1 exits after forking P2; P2's fork reuses
    AV1 (c=1, a=0) for P3 instead of allocating."""
    r = run(
        [
            *TOUCH,
            {"op": "fork", "child": "p1"},
            {"op": "fork", "proc": "p1", "child": "p2"},
            {"op": "exit", "proc": "p1"},
            {"op": "fork", "proc": "p2", "child": "p3"},
        ]
    )
    p2_vma, p3_vma = vma_of(r, "p2", 0), vma_of(r, "p3", 0)
    av0, av1, av2 = (r.machine.rmap.anon_vmas[i] for i in (0, 1, 2))
    assert p3_vma.anon_vma is av1
    assert chain_ids(p3_vma) == chain_ids(p2_vma) == [0, 1, 2]
    assert state(av1) == (1, 1, 1) and state(av2) == (0, 1, 1)  # only roots are pinned
    assert state(av0) == (2, 1, 3)  # self + AV1; p0's VMA; tree + AV1 + AV2
    assert r.machine.ledger.objects["anon_vma"].allocated == 3


def test_find_mergeable_anon_vma_prefers_next_and_rejects_fork_children() -> None:
    """Section 2.3: in rw / rwx / rw, faulting low, high, then middle: the middle
    reuses the high piece's anon_vma (next first)."""
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 24},
            {"op": "mprotect", "page": 8, "pages": 8, "prot": "rwx"},
            {"op": "write", "page": 0},
            {"op": "write", "page": 16},
            {"op": "write", "page": 8},
        ]
    )
    low, mid, high = (vma_of(r, "p0", n).anon_vma for n in (0, 8, 16))
    assert mid is high and low is not high
    assert state(high) == (1, 2, 1)
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 8},
            {"op": "write", "page": 0},
            {"op": "fork", "child": "p1"},
            {"op": "mmap", "proc": "p1", "page": 8, "pages": 8, "prot": "rwx"},
            {"op": "write", "proc": "p1", "page": 8},
        ]
    )
    inherited, new = vma_of(r, "p1", 0).anon_vma, vma_of(r, "p1", 8).anon_vma
    assert new is not inherited and new.root is new  # a fork child is never a donor


def test_unlink_frees_every_avc_and_the_root_last() -> None:
    r = run([*TOUCH, {"op": "fork", "child": "p1"}, {"op": "exit"}])
    av0 = r.machine.rmap.anon_vmas[0]
    assert state(av0) == (2, 0, 2)  # orphan: p1's AVC keeps its tree non-empty
    frees: list[int] = []
    rmap = r.machine.rmap
    original = rmap.anon_vma_free

    def anon_vma_free(av: AnonVma) -> None:
        frees.append(av.av_id)
        original(av)

    rmap.anon_vma_free = anon_vma_free
    r.machine.exit(r.procs["p1"])
    assert frees == [1, 0]
    assert r.machine.ledger.objects["anon_vma_chain"].live == 0


def test_split_clones_the_chain_and_merge_unlinks_the_removed() -> None:
    r = run(
        [
            *TOUCH,
            {"op": "fork", "child": "p1"},
            {"op": "mprotect", "proc": "p1", "page": 4, "pages": 8, "prot": "r"},
        ]
    )
    pieces = [vma_of(r, "p1", n) for n in (0, 4, 12)]
    assert len({id(v) for v in pieces}) == 3
    assert all(chain_ids(v) == [0, 1] for v in pieces)
    assert state(pieces[0].anon_vma) == (0, 3, 1)
    assert r.machine.ledger.objects["anon_vma_chain"].live == 1 + 3 * 2
    r.machine.mprotect(r.procs["p1"], page(4), 8 * 4096, 3)
    merged = vma_of(r, "p1", 0)
    assert (merged.vm_start, merged.vm_end) == (page(0), page(16))
    assert r.machine.ledger.objects["anon_vma_chain"].live == 3
    assert state(merged.anon_vma) == (0, 1, 1)


def test_interval_tree_keys_follow_vma_pgoff_ranges() -> None:
    r = run([*TOUCH, {"op": "munmap", "page": 4, "pages": 4}])
    av = vma_of(r, "p0", 0).anon_vma
    base = page(0) >> 12
    keys = sorted((avc.rb_start - base, avc.rb_last - base) for avc in av.rb_root)
    assert keys == [(0, 3), (8, 15)]


def test_the_root_rwsem_is_recorded_with_what_it_covered() -> None:
    r = run([*TOUCH, {"op": "fork", "child": "p1"}, {"op": "fork", "proc": "p1", "child": "p2"}])
    locks = r.result().to_json()["locks"]
    clones = [x for x in locks if x["site"] == "anon_vma_clone"]
    assert clones == [
        {
            "lock": "anon_vma.rwsem",
            "mode": "write",
            "op": "fork",
            "site": "anon_vma_clone",
            "acquisitions": 2,
            "vmas": 2,
            "objects": 3,
            "max_vmas": 1,
            "max_objects": 2,
        }
    ]
