"""``cow_context_poc`` as the PoC's C has it (mm/cow_context.c @ a4ac1966):
the dynarray and its insertion fault, walk order, exclusivity, entries never
removed, the walk's GFP_ATOMIC scratch, the fork-time dynarray, the stale
context pointer of a failed migration; every counterexample in scenarios/poc/
fails on the PoC for the reason it gives and passes with the fix it names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cowctx.designs import get_design, sound_design_names
from cowctx.designs.cow_context import CowContextPoc, PocFixes
from cowctx.designs.cow_context.poc_remap import (
    POISON,
    Dynarrays,
    Kmalloc,
    Multi,
    RemapMt,
    Simple,
    kmalloc_size,
)
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.rmap.walk import rmap_walk
from cowctx.scenario.expect import check_expect
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .helpers import ROOT, page, run, scenario

POC_FILES = sorted((ROOT / "scenarios" / "poc").glob("*.yaml"))
G = "GFP_KERNEL"


def _mm(run: Any, proc: str) -> Any:
    """A process's mm with its CoW context fields (``CowContextMm``)."""
    return run.procs[proc].mm


def go(steps: list[Any], design: str):
    """Run without the oracle (the PoC misses mappings on the way)."""
    return run_scenario(scenario("t", steps), design, check=False)


def dyn(fixed: bool = False) -> tuple[Dynarrays, list[tuple[str, int, int]]]:
    log: list[tuple[str, int, int]] = []
    return Dynarrays(Kmalloc(lambda *a: log.append(a)), fixed), log


def entry_of(d: Dynarrays, *offsets: int) -> Multi | Simple | None:
    e: Multi | Simple | None = None
    for off in offsets:
        e = d.append_remap_offset(e, off, G)
    return e


# --- the dynarray -----------------------------------------------------------------------


def test_inserting_below_the_largest_loses_an_offset_and_the_fix_keeps_it() -> None:
    d, _ = dyn()
    e = entry_of(d, 5, 9, 7)
    assert isinstance(e, Multi)
    assert e.arr.values() == [5, 7, POISON]  # 9 lost, the new top slot uninitialised
    fixed, _ = dyn(fixed=True)
    e = entry_of(fixed, 5, 9, 7)
    assert isinstance(e, Multi) and e.arr.values() == [5, 7, 9]


def test_offsets_sort_as_unsigned_words() -> None:
    """A negative offset is a huge unsigned word: appended last, nothing lost."""
    d, _ = dyn()
    e = entry_of(d, 5, -3)
    assert isinstance(e, Multi) and e.arr.values() == [5, -3]


def test_capacity_doubles_through_kmalloc_size_classes() -> None:
    d, log = dyn(fixed=True)
    e = entry_of(d, *range(1, 18))
    assert isinstance(e, Multi) and (e.arr.nr, e.arr.cap) == (17, 32)
    # simple -> stack[1] -> heap cap 2, then krealloc 4, 8, 16, 32 (each frees the old)
    assert [(c, b) for _, c, b in log if c > 0] == [
        (1, kmalloc_size(cap)) for cap in (2, 4, 8, 16, 32)
    ]
    assert [kmalloc_size(c) for c in (2, 4, 8, 16, 32)] == [32, 64, 96, 192, 512]
    assert sum(c for _, c, _ in log) == 1 and sum(b for _, _, b in log) == 512


def test_re_adding_an_inline_offset_allocates_a_one_entry_dynarray() -> None:
    d, log = dyn()
    e = entry_of(d, 7, 7)
    assert isinstance(e, Multi) and e.arr.values() == [7] and e.arr.cap == 2
    assert log == [("remap", 1, 32)]


def test_maple_store_keeps_the_remainders_of_a_partly_covered_range() -> None:
    t = RemapMt(dyn()[0])
    t.mas_store(0, 9, Simple(1))
    t.mas_store(3, 5, Simple(2))
    assert [(a, b, e) for a, b, e in t.entries()] == [
        (0, 2, Simple(1)),
        (3, 5, Simple(2)),
        (6, 9, Simple(1)),
    ]
    assert t.mas_walk(12) == (None, 10, (1 << 64) - 1)


# --- the design -------------------------------------------------------------------------

CYCLE = [
    {"op": "mmap", "page": 0, "pages": 1},
    {"op": "write", "page": 0},
]


def cycles(n: int) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    for i in range(n):
        away = 10 + i
        steps += [
            *CYCLE,
            {"op": "fork", "child": f"c{i}"},  # keep the folio shared: no exclusive abort
            {"op": "exit", "proc": f"c{i}"},
            {
                "op": "mremap",
                "page": 0,
                "pages": 1,
                "new_pages": 1,
                "new_page": away,
                "flags": ["maymove", "fixed"],
            },
            {"op": "munmap", "page": away, "pages": 1},
        ]
    return steps


def test_entries_are_never_removed_and_a_walk_over_17_offsets_allocates_atomically() -> None:
    steps = [*cycles(17), *CYCLE, {"op": "fork", "child": "last"}]
    poc = go(steps, "cow_context_poc")
    ctx = _mm(poc, "p0").cow_context
    assert len(ctx.remaps.lookup(page(0) >> 12)[1]) == 17
    before = poc.machine.ledger.objects["walk_scratch_atomic"].allocated
    folio = poc.machine.folio_at(poc.procs["p0"], page(0))
    rmap_walk(poc.machine, folio, poc.machine.ledger.walk("t", True), lambda f, v, a: True)
    objs = poc.machine.ledger.objects
    assert objs["walk_scratch_atomic"].allocated - before == 1  # 16 on the stack, then 32
    assert objs["walk_scratch_atomic"].live == 0
    fixed = go(steps, "cow_context_poc[remove_entries]")
    assert _mm(fixed, "p0").cow_context.remaps.lookup(page(0) >> 12)[1] == set()


def test_fork_re_adds_the_parents_file_entry_as_a_dynarray() -> None:
    steps = [
        {"op": "mmap", "page": 0, "pages": 2, "file": "f0", "file_page": 4},
        {"op": "write", "page": 0},
        {"op": "fork", "child": "p1"},
    ]
    files = {"f0": {"pages": 8}}
    poc = run_scenario(scenario("t", steps, files=files), "cow_context_poc", check=False)
    fixed = run_scenario(
        scenario("t", steps, files=files), "cow_context_poc[no_fork_readd]", check=False
    )
    assert poc.machine.ledger.objects["remap_dynarray"].live == 1
    assert fixed.machine.ledger.objects["remap_dynarray"].live == 0
    parent = _mm(poc, "p0").cow_context.remaps
    assert [len(parent.offsets(e)) for _, _, e in parent.entries()] == [1]  # one offset


def test_walk_visits_the_root_then_descendants_post_order_newest_child_first() -> None:
    steps = [
        *CYCLE,
        {"op": "fork", "child": "a"},
        {"op": "fork", "child": "b"},
        {"op": "fork", "proc": "a", "child": "a1"},
    ]
    r = run(steps, design="cow_context_poc[no_exclusive_abort]")
    folio = r.machine.folio_at(r.procs["p0"], page(0))
    order: list[int] = []

    def rmap_one(f: Folio, v: VmAreaStruct, a: int) -> bool:
        order.append(v.vm_mm.mm_id)
        return True

    assert folio is not None
    rmap_walk(r.machine, folio, r.machine.ledger.walk("t", True), rmap_one)
    mm = {name: r.procs[name].mm.mm_id for name in ("p0", "a", "b", "a1")}
    assert order == [mm["p0"], mm["b"], mm["a1"], mm["a"]]


def test_exclusivity_is_decided_again_in_every_live_context() -> None:
    """try_to_unmap in the root leaves the folio mapped once: the next live
    context aborts after its offset-0 probe (a moved mapping there is missed)."""
    steps = [
        *CYCLE,
        {"op": "fork", "child": "p1"},
        {
            "op": "mremap",
            "proc": "p1",
            "page": 0,
            "pages": 1,
            "new_pages": 1,
            "new_page": 50,
            "flags": ["maymove", "fixed"],
        },
        {"op": "fork", "child": "p2"},
    ]
    r = go(steps, "cow_context_poc")
    folio = r.machine.folio_at(r.procs["p0"], page(0))
    seen: list[int] = []

    def unmap_one(f, vma, address):
        seen.append(vma.vm_mm.mm_id)
        f.mapcount -= 1  # as try_to_unmap_one() would
        return True

    rmap_walk(r.machine, folio, r.machine.ledger.walk("t", True), unmap_one)
    # root (p0) found, then p2 (newest), now "exclusive": p1's moved mapping never probed
    assert seen == [r.procs["p0"].mm.mm_id, r.procs["p2"].mm.mm_id]


def test_failed_migration_leaves_a_context_pointer_without_a_reference() -> None:
    for fixes, broken in (("", True), ("[migrate_ref]", False)):
        r = run(CYCLE, design=f"cow_context_poc{fixes}")
        m = r.machine
        src = m.folio_at(r.procs["p0"], page(0))
        ctx = src.mapping
        dst = m.alloc_folio(src.content)
        m.rmap.folio_migrate_mapping_eagain(dst, src)
        if dst.mapping is not None:  # freeing dst puts the context it points to
            m.rmap.folio_free(dst)
        assert (ctx.refcount == 1) is broken  # mm + src folio hold 2 references
        assert bool(m.rmap.check_invariants()) is broken


def test_design_names_and_errors() -> None:
    poc = get_design("cow_context_poc")
    assert issubclass(poc, CowContextPoc) and poc.fixes == PocFixes()
    both = get_design("cow_context_poc[remap_adds, no_exclusive_abort]")
    assert both.name == "cow_context_poc[no_exclusive_abort,remap_adds]"
    assert not any(n.startswith("cow_context_poc") for n in sound_design_names())
    with pytest.raises(KeyError, match=r"unknown cow_context_poc fix.*known: no_exclusive_abort"):
        get_design("cow_context_poc[exclusive_abort]")
    with pytest.raises(KeyError, match="its fixes: cow_context_poc"):
        get_design("cow_context[no_exclusive_abort]")
    assert get_design("cow_context[exclusive_abort]").name == "cow_context[exclusive_abort]"


# --- the counterexamples ------------------------------------------------------------------


def _fixes(design: str) -> frozenset[str]:
    m = re.fullmatch(r"cow_context_poc(?:\[(.*)\])?", design)
    assert m, design
    return frozenset(s for s in (m.group(1) or "").split(",") if s)


@pytest.mark.parametrize("path", POC_FILES, ids=lambda p: p.stem)
def test_counterexample_fails_on_the_poc_and_passes_with_its_fix(path: Path) -> None:
    """Each file names designs that fail (with the violation kinds its
    description explains) and one that differs from a failing one by exactly
    one fix and passes; that fix and a C function are named in the
    description; the corrected design passes."""
    scenario = load_scenario(path)
    assert scenario.expect is not None and scenario.description
    want = scenario.expect.violations
    failing = {d for d, kinds in want.items() if kinds}
    passing = {d for d, kinds in want.items() if not kinds}
    assert failing and passing
    pairs = [
        (f, p)
        for f in failing
        for p in passing
        if _fixes(f) < _fixes(p) and len(_fixes(p) - _fixes(f)) == 1
    ]
    assert pairs, "no passing design is a failing one plus one fix"
    for f, p in pairs:
        (fix,) = _fixes(p) - _fixes(f)
        assert fix in scenario.description
    assert "cow_context_poc" in want
    if not want["cow_context_poc"]:
        assert "cow_context_poc passes" in scenario.description
    assert re.search(r"@ [0-9a-f]{8}", scenario.description)  # the C it quotes, by commit
    for design in [*want, "cow_context"]:
        result = run_scenario(scenario, design).result()
        assert check_expect(scenario, result) == [], design
        kinds = sorted({v.kind for v in result.violations})
        assert kinds == sorted(set(want.get(design, []))), design


def test_the_three_step_counterexample_is_there() -> None:
    three = load_scenario(ROOT / "scenarios/poc/poc-exclusive-abort-after-mremap.yaml")
    assert [s.op for s in three.steps] == ["mmap", "write", "mremap"]
    assert not any(s.op == "fork" for s in three.steps)


def test_moving_home_keeps_the_old_entries_the_dead_branch_would_remove() -> None:
    """``should_track_remap()`` is false for a VMA at offset 0, so
    ``__cow_context_do_remap()``'s ``!new_offset`` branch never runs: after a move
    away and back the away offset stays; ``remove_entries`` removes it when the
    away copy is unmapped."""
    move = {"op": "mremap", "page": 0, "pages": 1, "new_pages": 1, "flags": ["maymove", "fixed"]}
    steps = [
        *CYCLE,
        {"op": "fork", "child": "p1"},
        {**move, "new_page": 30},
        {**move, "page": 30, "new_page": 0},
    ]
    index = page(0) >> 12
    poc = go(steps, "cow_context_poc")
    assert poc.procs["p0"].mm.cow_context.remaps.lookup(index)[1] == {30}
    assert poc.violations == []
    fixed = go(steps, "cow_context_poc[remove_entries]")
    assert fixed.procs["p0"].mm.cow_context.remaps.lookup(index)[1] == set()
