"""Faults (mm/memory.c): zero page, anon write faults, CoW copy against reuse,
MAP_PRIVATE file CoW, signals.  Each test is one access story with the exact
page state it must leave."""

from __future__ import annotations

from cowctx.mm.folio import ZERO_PFN

from .helpers import errnos, objects, page, run


def folio_at(result, proc: str, n: int):
    pte = result.procs[proc].mm.pgd.get(page(n) >> 12)
    return None if pte is None else result.machine.mem_map[pte >> 8]


def test_read_fault_on_anon_maps_the_zero_page_and_prepares_nothing() -> None:
    r = run([{"op": "mmap", "page": 0, "pages": 4}, {"op": "read", "page": 0, "pages": 4}])
    assert all(folio_at(r, "p0", n).pfn == ZERO_PFN for n in range(4))
    assert r.procs["p0"].mm.vma_lookup(page(0)).anon_vma is None
    assert objects(r, "anon_vma") == (0, 0, 0)


def test_write_after_read_replaces_the_zero_page_with_an_exclusive_folio() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 2},
            {"op": "read", "page": 0},
            {"op": "write", "page": 0, "value": 7},
        ]
    )
    folio = folio_at(r, "p0", 0)
    assert folio.pfn != ZERO_PFN and folio.anon and folio.anon_exclusive
    assert (folio.mapcount, folio.content, folio.index) == (1, 7, page(0) >> 12)
    assert objects(r, "anon_vma") == (1, 0, 1)


def test_fork_shares_folios_and_clears_anon_exclusive() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 2},
            {"op": "write", "page": 0, "pages": 2},
            {"op": "fork", "child": "p1"},
        ]
    )
    for n in range(2):
        folio = folio_at(r, "p0", n)
        assert folio is folio_at(r, "p1", n)
        assert folio.mapcount == 2 and not folio.anon_exclusive
        for proc in ("p0", "p1"):
            assert not r.procs[proc].mm.pgd[page(n) >> 12] & 0x2  # write-protected


def test_cow_copy_in_child_then_reuse_in_parent_moves_the_folio() -> None:
    """The child copies; the parent's old folio drops to mapcount 1 and the
    parent's write reuses it (wp_can_reuse_anon_folio), moving folio->mapping to
    the parent VMA's anon_vma (here the root, where it already was)."""
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 1},
            {"op": "write", "page": 0, "value": 1},
            {"op": "fork", "child": "p1"},
            {"op": "write", "proc": "p1", "page": 0, "value": 2},
            {"op": "write", "page": 0, "value": 3},
        ]
    )
    parent, child = folio_at(r, "p0", 0), folio_at(r, "p1", 0)
    assert parent is not child
    assert (parent.content, child.content) == (3, 2)
    assert parent.anon_exclusive and child.anon_exclusive
    assert parent.mapping is r.procs["p0"].mm.vma_lookup(page(0)).anon_vma
    assert child.mapping is r.procs["p1"].mm.vma_lookup(page(0)).anon_vma
    assert parent.mapping is not child.mapping
    assert r.machine.ledger.objects["anon_vma"].live == 2


def test_reuse_after_the_sharer_exits_moves_the_folio_to_the_childs_anon_vma() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 1},
            {"op": "write", "page": 0},
            {"op": "fork", "child": "p1"},
            {"op": "exit"},
            {"op": "write", "proc": "p1", "page": 0},
        ]
    )
    folio = folio_at(r, "p1", 0)
    assert folio.mapcount == 1 and folio.anon_exclusive
    child_av = r.procs["p1"].mm.vma_lookup(page(0)).anon_vma
    assert folio.mapping is child_av and child_av.root is not child_av
    assert len(r.machine.mem_map) == 2  # the zero page and this folio: no copy was made


def test_private_file_read_maps_the_page_cache_write_copies_with_file_index() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 4, "file": "f0", "file_page": 2},
            {"op": "read", "page": 1},
            {"op": "write", "page": 1, "value": 9},
        ],
        files={"f0": {"pages": 8}},
    )
    folio = folio_at(r, "p0", 1)
    cached = r.machine.files["f0"].i_pages[3]
    assert folio.anon and folio.index == 3 and folio.content == 9
    assert cached.content != 9 and cached.mapcount == 0  # unmapped by the CoW
    assert folio_at(r, "p0", 0) is r.machine.files["f0"].i_pages[2]  # fault-around
    assert objects(r, "anon_vma") == (1, 0, 1)


def test_shared_file_write_is_seen_through_an_uncopied_private_mapping() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 1, "file": "f0", "shared": True},
            {"op": "mmap", "page": 10, "pages": 1, "file": "f0"},
            {"op": "read", "page": 10},
            {"op": "write", "page": 0, "value": 42},
        ],
        files={"f0": {"pages": 1}},
    )
    assert folio_at(r, "p0", 10) is folio_at(r, "p0", 0)
    assert folio_at(r, "p0", 10).content == 42 and not folio_at(r, "p0", 10).anon


def test_signals_leave_the_process_alive_and_earlier_pages_touched() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 2},
            {"op": "mmap", "page": 2, "pages": 1, "prot": "r"},
            {"op": "write", "page": 0, "pages": 3, "errno": "SIGSEGV"},
            {"op": "mmap", "page": 10, "pages": 4, "file": "f0"},
            {"op": "read", "page": 12, "errno": "SIGBUS"},
            {"op": "mmap", "page": 20, "pages": 1, "prot": "none"},
            {"op": "read", "page": 20, "errno": "SIGSEGV"},
            {"op": "read", "page": 30, "errno": "SIGSEGV"},
        ],
        files={"f0": {"pages": 2}},
    )
    assert errnos(r) == [None, None, "SIGSEGV", None, "SIGBUS", None, "SIGSEGV", "SIGSEGV"]
    assert folio_at(r, "p0", 0).anon and folio_at(r, "p0", 1).anon
    assert folio_at(r, "p0", 2) is None


def test_populate_write_faults_private_writable_and_read_faults_the_rest() -> None:
    r = run(
        [
            {"op": "mmap", "page": 0, "pages": 2, "flags": ["populate"]},
            {"op": "mmap", "page": 4, "pages": 2, "prot": "r", "flags": ["populate"]},
            {"op": "mmap", "page": 8, "pages": 2, "prot": "none", "flags": ["populate"]},
        ]
    )
    assert folio_at(r, "p0", 0).anon and folio_at(r, "p0", 1).anon
    assert folio_at(r, "p0", 4).pfn == ZERO_PFN
    assert folio_at(r, "p0", 8) is None
    assert objects(r, "anon_vma") == (1, 0, 1)
