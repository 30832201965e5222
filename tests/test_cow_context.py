"""The CoW context design's own state (reference/cow-context.md): context
lifetime, remap tracking kept exact, folios moving down, KSM, and what each
cost-only PoC switch costs."""

from __future__ import annotations

from typing import Any

from cowctx.designs.cow_context.structs import CowContext

from .helpers import page, run

TOUCH: list[dict[str, Any]] = [
    {"op": "mmap", "page": 0, "pages": 8},
    {"op": "write", "page": 0, "pages": 8},
]
MOVE = {
    "op": "mremap",
    "page": 0,
    "pages": 8,
    "new_pages": 8,
    "new_page": 100,
    "flags": ["maymove", "fixed"],
}


def ctx_of(result, proc: str) -> CowContext:
    return result.procs[proc].mm.cow_context


def folio_at(result, proc: str, n: int):
    return result.machine.folio_at(result.procs[proc], page(n))


def test_fork_links_contexts_and_folios_hold_references() -> None:
    r = run(
        [*TOUCH, {"op": "fork", "child": "p1"}, {"op": "write", "proc": "p1", "page": 0}],
        design="cow_context",
    )
    parent, child = ctx_of(r, "p0"), ctx_of(r, "p1")
    assert child.parent is parent and parent.children == [child]
    assert parent.refcount == 1 + 1 + 8  # mm, child context, 8 folios
    assert child.refcount == 1 + 1  # mm, the copied folio
    assert folio_at(r, "p1", 0).mapping is child
    assert r.machine.ledger.objects["cow_context"].live == 2


def test_dead_context_stays_while_referenced_and_walks_descend_through_it() -> None:
    r = run(
        [
            *TOUCH,
            {"op": "fork", "child": "p1"},
            {"op": "exit"},
            {"op": "referenced", "proc": "p1", "page": 3},
        ],
        design="cow_context",
    )
    dead = ctx_of(r, "p1").parent
    assert dead is not None and dead.mm is None and not dead.freed
    assert dead.refcount == 1 + 8  # the child context and the 8 folios it still maps
    walk = r.result().to_json()["walks"]["folio_referenced"]
    assert (walk["anchors"], walk["hits"]) == (2, 1)  # dead parent skipped, child found
    r.machine.exit(r.procs["p1"])
    assert r.machine.ledger.objects["cow_context"].live == 0


def test_reuse_moves_the_folio_down_to_the_reusing_context() -> None:
    r = run(
        [
            *TOUCH,
            {"op": "fork", "child": "p1"},
            {"op": "exit"},
            {"op": "write", "proc": "p1", "page": 0},
        ],
        design="cow_context",
    )
    folio = folio_at(r, "p1", 0)
    assert folio.mapping is ctx_of(r, "p1") and folio.anon_exclusive
    parent = ctx_of(r, "p1").parent
    assert parent is not None and parent.refcount == 1 + 7


def test_remap_tracking_follows_moves_partial_unmaps_and_the_way_home() -> None:
    r = run([*TOUCH, MOVE], design="cow_context")
    remaps = ctx_of(r, "p0").remaps
    base = page(0) >> 12
    assert [(a - base, b - base, set(s)) for a, b, s in remaps.segments()] == [(0, 8, {100})]
    r.machine.munmap(r.procs["p0"], page(102), 2 * 4096)
    assert [(a - base, b - base, set(s)) for a, b, s in remaps.segments()] == [
        (0, 2, {100}),
        (4, 8, {100}),
    ]
    r.machine.mremap(r.procs["p0"], page(100), 2 * 4096, 2 * 4096, 3, page(0))
    assert [(a - base, b - base, set(s)) for a, b, s in remaps.segments()] == [(4, 8, {100})]
    assert r.machine.rmap.check_invariants() == []


def test_private_file_cow_is_untracked_with_vm_anon_pgoff_and_tracked_without() -> None:
    steps = [
        {"op": "mmap", "page": 0, "pages": 4, "file": "f0", "file_page": 2},
        {"op": "write", "page": 0, "pages": 4},
    ]
    files = {"f0": {"pages": 8}}
    fixed = run(steps, design="cow_context", files=files)
    poc = run(steps, design="cow_context[file_remap_entries]", files=files)
    assert fixed.machine.ledger.objects["remap_entry"].live == 0
    assert folio_at(fixed, "p0", 1).index == page(1) >> 12  # a virtual index
    assert poc.machine.ledger.objects["remap_entry"].live == 1
    assert folio_at(poc, "p0", 1).index == 3  # the file offset


def test_sentinel_merge_keeps_faulted_and_unfaulted_neighbours_apart() -> None:
    steps = [
        {"op": "mmap", "page": 0, "pages": 4},
        {"op": "write", "page": 0},
        {"op": "mmap", "page": 4, "pages": 4},
    ]
    fixed = run(steps, design="cow_context")
    poc = run(steps, design="cow_context[sentinel_merge]")
    assert fixed.result().to_json()["final"]["maps"]["p0"] == [[0, 8, "rw-p"]]
    assert poc.result().to_json()["final"]["maps"]["p0"] == [[0, 4, "rw-p"], [4, 8, "rw-p"]]


def test_no_fork_child_rule_lets_a_forked_split_remerge() -> None:
    """anon_vma refuses to merge a fork child's pieces (distinct anon_vmas); CoW
    context has nothing to protect and merges them back."""
    steps: list[dict[str, Any]] = [
        *TOUCH,
        {"op": "mprotect", "page": 2, "pages": 4, "prot": "r"},
        {"op": "fork", "child": "p1"},
        {"op": "mprotect", "proc": "p1", "page": 2, "pages": 4, "prot": "rw"},
    ]
    assert len(run(steps).result().to_json()["final"]["maps"]["p1"]) == 3
    assert run(steps, design="cow_context").result().to_json()["final"]["maps"]["p1"] == [
        [0, 8, "rw-p"]
    ]


def test_ksm_page_still_mapped_by_the_parent_is_found() -> None:
    """anon_vma's KSM walk cannot see a parent that shares a page its child's scan
    merged (a kernel limit); CoW context's rmap_item anchors the folio's own
    context, whose subtree holds both."""
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "page": 0, "pages": 4},
        {"op": "write", "page": 0, "pages": 4, "value": 0},
        {"op": "fork", "child": "p1"},
        {"op": "madvise", "proc": "p1", "page": 0, "pages": 4, "advice": "mergeable"},
        {"op": "ksm", "proc": "p1"},
        {"op": "migrate", "proc": "p1", "page": 1},
    ]
    anon = run(steps)
    cow = run(steps, design="cow_context")
    assert {v.kind for v in anon.limits} == {"ksm_unlisted"}
    assert cow.limits == []
    assert folio_at(cow, "p0", 0) is folio_at(cow, "p1", 1)  # migrated everywhere


def test_walk_locks_nothing_but_rcu_and_fork_a_spinlock() -> None:
    r = run(
        [*TOUCH, MOVE, {"op": "fork", "child": "p1"}, {"op": "referenced", "page": 100}],
        design="cow_context",
    )
    modes = {(x["lock"], x["mode"]) for x in r.result().to_json()["locks"]}
    assert modes == {
        ("cow_context.list_write_lock", "spin"),
        ("cow_context.remap_lock", "spin"),
        ("rcu", "read"),
    }
