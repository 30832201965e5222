"""The running kernel as an oracle: scenario runs on Linux 6.18 give the numbers measured in
reference/kernel-oracle.md ("Behaviour seen") and linux-anon-rmap.md section 13.

These tests need root, tracefs, pagemap and gcc; elsewhere they skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cowctx.linux import executor
from cowctx.linux.executor import (
    KernelSession,
    ModelOnlyStep,
    kernel_unavailable_reason,
    run_on_kernel,
)
from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import Scenario

TRACEFS = Path("/sys/kernel/tracing")


pytestmark = pytest.mark.kernel


class JsonSession:
    """The shared kernel session, its results read as SCENARIO.md's JSON objects."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session

    def run(self, s: Scenario) -> dict[str, Any]:
        return self.session.run(s).to_json()


@pytest.fixture
def session(kernel_session: KernelSession) -> JsonSession:
    return JsonSession(kernel_session)


def scenario(
    name: str, steps: list[dict[str, Any]], files: dict[str, dict[str, int]] | None = None
) -> Scenario:
    data: dict[str, Any] = {"format": "cowctx-scenario/1", "name": name, "steps": steps}
    if files:
        data["files"] = files
    return parse_scenario(data)


def mmap(page: int = 0, pages: int = 16, proc: str = "p0", **kw: Any) -> dict[str, Any]:
    return {"op": "mmap", "proc": proc, "page": page, "pages": pages, **kw}


def write(page: int = 0, pages: int = 16, proc: str = "p0", **kw: Any) -> dict[str, Any]:
    return {"op": "write", "proc": proc, "page": page, "pages": pages, **kw}


def read(page: int = 0, pages: int = 16, proc: str = "p0") -> dict[str, Any]:
    return {"op": "read", "proc": proc, "page": page, "pages": pages}


def fork(proc: str, child: str) -> dict[str, Any]:
    return {"op": "fork", "proc": proc, "child": child}


def exit_(proc: str) -> dict[str, Any]:
    return {"op": "exit", "proc": proc}


def objects(result: dict[str, Any]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(allocated, freed, live) of anon_vma and of anon_vma_chain."""
    o = result["final"]["objects"]
    av, avc = o["anon_vma"], o["anon_vma_chain"]
    return (
        (av["allocated"], av["freed"], av["live"]),
        (avc["allocated"], avc["freed"], avc["live"]),
    )


def step_objects(step: dict[str, Any]) -> tuple[int, int, int, int]:
    """(anon_vma allocated, freed, anon_vma_chain allocated, freed) of one step."""
    o = step["objects"]
    return (
        o["anon_vma"]["allocated"],
        o["anon_vma"]["freed"],
        o["anon_vma_chain"]["allocated"],
        o["anon_vma_chain"]["freed"],
    )


# --- "Behaviour seen" (kernel-oracle.md) -------------------------------------------------


def test_fork_of_faulted_vma_clones_chain_and_adds_child_anon_vma(session: JsonSession) -> None:
    r = session.run(scenario("fork-faulted", [mmap(), write(), fork("p0", "p1")]))
    assert r["design"] == "linux" and r["scenario"] == "fork-faulted"
    assert objects(r) == ((2, 0, 2), (3, 0, 3))
    # __anon_vma_prepare on the first write fault; anon_vma_clone + anon_vma_fork on fork
    assert [step_objects(s) for s in r["steps"]] == [(0, 0, 0, 0), (1, 0, 1, 0), (1, 0, 2, 0)]
    assert [s["errno"] for s in r["steps"]] == [None, None, None]
    assert all(s["time_ns"] > 0 for s in r["steps"])
    assert r["final"]["maps"] == {"p0": [[0, 16, "rw-p"]], "p1": [[0, 16, "rw-p"]]}


def test_fork_shares_every_page_with_mapcount_2(session: JsonSession) -> None:
    r = session.run(scenario("fork-pfn-sharing", [mmap(), write(), fork("p0", "p1")]))
    p0, p1 = r["final"]["pages"]["p0"], r["final"]["pages"]["p1"]
    assert [p["page"] for p in p0] == list(range(16))
    assert [p["folio"] for p in p0] == list(range(16))
    assert [p["folio"] for p in p1] == list(range(16))  # same physical pages
    assert all(p["mapcount"] == 2 and p["anon"] and not p["zero_page"] for p in p0 + p1)


def test_cow_after_fork_gives_child_its_own_folios(session: JsonSession) -> None:
    r = session.run(
        scenario("fork-cow-half", [mmap(), write(), fork("p0", "p1"), write(0, 8, proc="p1")])
    )
    p0 = {p["page"]: p for p in r["final"]["pages"]["p0"]}
    p1 = {p["page"]: p for p in r["final"]["pages"]["p1"]}
    for page in range(8):  # copied: distinct folios, each mapped once
        assert p0[page]["folio"] != p1[page]["folio"]
        assert p0[page]["mapcount"] == p1[page]["mapcount"] == 1
    for page in range(8, 16):
        assert p0[page]["folio"] == p1[page]["folio"] and p0[page]["mapcount"] == 2
    assert objects(r) == ((2, 0, 2), (3, 0, 3))  # CoW allocates no rmap objects


def test_fork_chain_of_five(session: JsonSession) -> None:
    steps = [mmap(), write()]
    for k in range(5):
        steps += [fork(f"p{k}", f"p{k + 1}"), write(proc=f"p{k + 1}")]
    r = session.run(scenario("fork-chain-5", steps))
    assert objects(r) == ((6, 0, 6), (21, 0, 21))
    # the k-th fork clones a chain of length k and adds the child's own AVC
    assert [step_objects(s)[2] for s in r["steps"] if s["op"] == "fork"] == [2, 3, 4, 5, 6]
    # every process wrote every page after inheriting it: 96 folios, all mapped once
    pages = [p for ps in r["final"]["pages"].values() for p in ps]
    assert len({p["folio"] for p in pages}) == 96
    assert all(p["mapcount"] == 1 for p in pages)


def test_ten_children_of_one_faulted_vma(session: JsonSession) -> None:
    steps = [mmap(), write()] + [fork("p0", f"c{i}") for i in range(10)]
    r = session.run(scenario("ten-children", steps))
    assert objects(r) == ((11, 0, 11), (21, 0, 21))
    assert all(p["mapcount"] == 11 for p in r["final"]["pages"]["c9"])


def test_hundred_children(session: JsonSession) -> None:
    steps = [mmap(), write()] + [fork("p0", f"c{i}") for i in range(100)]
    r = session.run(scenario("hundred-children", steps))
    assert objects(r) == ((101, 0, 101), (201, 0, 201))


def test_mprotect_middle_splits_then_remerges(session: JsonSession) -> None:
    split = [mmap(), write(), {"op": "mprotect", "page": 4, "pages": 8, "prot": "r"}]
    r = session.run(scenario("mprotect-split", split))
    assert r["final"]["maps"]["p0"] == [[0, 4, "rw-p"], [4, 12, "r--p"], [12, 16, "rw-p"]]
    assert objects(r) == ((1, 0, 1), (3, 0, 3))
    back = [*split, {"op": "mprotect", "page": 4, "pages": 8, "prot": "rw"}]
    r = session.run(scenario("mprotect-split-merge", back))
    assert r["final"]["maps"]["p0"] == [[0, 16, "rw-p"]]
    assert objects(r) == ((1, 0, 1), (3, 2, 1))
    assert step_objects(r["steps"][3]) == (0, 0, 0, 2)  # unlink_anon_vmas of middle and next


def test_fork_parent_exits_child_forks(session: JsonSession) -> None:
    steps = [mmap(), write(), fork("p0", "p1"), exit_("p0"), fork("p1", "p2")]
    r = session.run(scenario("parent-exits", steps))
    assert objects(r) == ((3, 0, 3), (6, 1, 5))
    assert step_objects(r["steps"][3]) == (0, 0, 0, 1)  # the exit's frees are in its step
    assert set(r["final"]["maps"]) == {"p1", "p2"}


def test_orphaned_non_root_anon_vma_is_reused(session: JsonSession) -> None:
    steps = [mmap(), write(), fork("p0", "p1"), fork("p1", "p2"), exit_("p1"), fork("p2", "p3")]
    r = session.run(scenario("orphan-reuse", steps))
    assert objects(r) == ((3, 0, 3), (9, 2, 7))
    assert step_objects(r["steps"][5]) == (0, 0, 3, 0)  # p3 reuses p1's anon_vma


def test_fork_of_unfaulted_vma_then_both_write(session: JsonSession) -> None:
    steps = [mmap(), fork("p0", "p1"), write(), write(proc="p1")]
    r = session.run(scenario("unfaulted-fork", steps))
    assert objects(r) == ((2, 0, 2), (2, 0, 2))
    assert step_objects(r["steps"][1]) == (0, 0, 0, 0)


def test_null_scenario_causes_no_rmap_events(session: JsonSession) -> None:
    r = session.run(scenario("null", [fork("p0", "p1"), fork("p0", "p2"), exit_("p1")]))
    assert objects(r) == ((0, 0, 0), (0, 0, 0))
    assert all(step_objects(s) == (0, 0, 0, 0) for s in r["steps"])
    # the workers own no anonymous memory: nothing rmap-related even among foreign events
    assert r["other_events"]["by_kind"]["anon_vma"] == {"allocated": 0, "freed": 0}
    assert r["final"]["maps"] == {"p0": [], "p2": []}


def test_child_exit_frees_its_anon_vma_and_chain(session: JsonSession) -> None:
    r = session.run(scenario("child-exit", [mmap(), write(), fork("p0", "p1"), exit_("p1")]))
    assert step_objects(r["steps"][3]) == (0, 1, 0, 2)
    assert objects(r) == ((2, 1, 1), (3, 2, 1))
    assert all(p["mapcount"] == 1 for p in r["final"]["pages"]["p0"])


# --- faults, pages and errors -------------------------------------------------------------


def test_read_fault_maps_the_zero_page(session: JsonSession) -> None:
    r = session.run(scenario("zero-page", [mmap(pages=4), read(pages=4)]))
    assert objects(r) == ((0, 0, 0), (0, 0, 0))
    assert r["final"]["pages"]["p0"] == [
        {"page": i, "folio": None, "mapcount": 0, "anon": False, "zero_page": True}
        for i in range(4)
    ]


def test_write_after_read_replaces_zero_page(session: JsonSession) -> None:
    r = session.run(
        scenario("zero-then-write", [mmap(pages=4), read(pages=4), write(page=1, pages=1)])
    )
    assert objects(r) == ((1, 0, 1), (1, 0, 1))
    pages = r["final"]["pages"]["p0"]
    assert [p["zero_page"] for p in pages] == [True, False, True, True]
    assert pages[1]["anon"] and pages[1]["folio"] == 0 and pages[1]["mapcount"] == 1


def test_unfaulted_pages_are_omitted(session: JsonSession) -> None:
    r = session.run(scenario("sparse", [mmap(), write(page=3, pages=2)]))
    assert [p["page"] for p in r["final"]["pages"]["p0"]] == [3, 4]


def test_write_to_prot_none_is_sigsegv_and_process_survives(session: JsonSession) -> None:
    steps = [
        mmap(pages=4, prot="none"),
        write(pages=1),
        {"op": "mprotect", "page": 0, "pages": 4, "prot": "rw"},
        write(pages=1),
    ]
    r = session.run(scenario("prot-none", steps))
    assert [s["errno"] for s in r["steps"]] == [None, "SIGSEGV", None, None]
    assert objects(r) == ((1, 0, 1), (1, 0, 1))
    assert r["final"]["maps"]["p0"] == [[0, 4, "rw-p"]]


def test_sigsegv_leaves_earlier_pages_touched(session: JsonSession) -> None:
    r = session.run(scenario("write-past-end", [mmap(pages=4), write(pages=8)]))
    assert r["steps"][1]["errno"] == "SIGSEGV"
    assert [p["page"] for p in r["final"]["pages"]["p0"]] == [0, 1, 2, 3]
    assert objects(r) == ((1, 0, 1), (1, 0, 1))


def test_read_of_file_page_beyond_eof_is_sigbus(session: JsonSession) -> None:
    steps = [mmap(pages=8, file="f0"), read(pages=8)]
    r = session.run(scenario("beyond-eof", steps, files={"f0": {"pages": 4}}))
    assert r["steps"][1]["errno"] == "SIGBUS"
    pages = r["final"]["pages"]["p0"]
    assert [p["page"] for p in pages] == [0, 1, 2, 3]
    assert all(not p["anon"] and p["mapcount"] == 1 for p in pages)


def test_overlapping_mmap_is_eexist(session: JsonSession) -> None:
    r = session.run(scenario("overlap", [mmap(), mmap(page=8)]))
    assert [s["errno"] for s in r["steps"]] == [None, "EEXIST"]
    assert r["final"]["maps"]["p0"] == [[0, 16, "rw-p"]]


def test_syscall_errors_are_errno_names(session: JsonSession) -> None:
    steps = [mmap(pages=0), {"op": "mremap", "page": 0, "pages": 4, "new_pages": 8}]
    r = session.run(scenario("errnos", steps))
    assert [s["errno"] for s in r["steps"]] == ["EINVAL", "EFAULT"]


# --- mremap, madvise, files, exec -----------------------------------------------------------


MOVE = {
    "op": "mremap",
    "page": 0,
    "pages": 8,
    "new_pages": 8,
    "new_page": 100,
    "flags": ["maymove", "fixed"],
}


def test_mremap_moves_faulted_vma_which_then_merges_with_nothing(session: JsonSession) -> None:
    steps = [mmap(pages=8), write(pages=8), MOVE, mmap(page=108, pages=8), write(page=108, pages=8)]
    r = session.run(scenario("mremap-faulted", steps))
    assert r["steps"][2]["errno"] is None
    assert step_objects(r["steps"][2]) == (0, 0, 1, 1)  # copy_vma clones, old VMA unlinked
    assert r["final"]["maps"]["p0"] == [[100, 108, "rw-p"], [108, 116, "rw-p"]]
    assert objects(r) == ((2, 0, 2), (3, 1, 2))
    assert [p["page"] for p in r["final"]["pages"]["p0"]] == list(range(100, 116))


def test_mremap_of_unfaulted_vma_resets_pgoff_and_merges(session: JsonSession) -> None:
    steps = [mmap(pages=8), MOVE, mmap(page=108, pages=8), write(page=100, pages=16)]
    r = session.run(scenario("mremap-unfaulted", steps))
    assert r["final"]["maps"]["p0"] == [[100, 116, "rw-p"]]
    assert objects(r) == ((1, 0, 1), (1, 0, 1))


def test_mremap_dontunmap_unlinks_the_source_chain(session: JsonSession) -> None:
    move = {**MOVE, "flags": ["maymove", "fixed", "dontunmap"]}
    r = session.run(scenario("mremap-dontunmap", [mmap(pages=8), write(pages=8), move]))
    assert r["final"]["maps"]["p0"] == [[0, 8, "rw-p"], [100, 108, "rw-p"]]
    assert step_objects(r["steps"][2]) == (0, 0, 1, 1)
    assert [p["page"] for p in r["final"]["pages"]["p0"]] == list(range(100, 108))


def test_adjacent_unfaulted_mmap_merges_with_faulted_neighbour(session: JsonSession) -> None:
    r = session.run(scenario("adjacent", [mmap(pages=8), write(pages=8), mmap(page=8, pages=8)]))
    assert r["final"]["maps"]["p0"] == [[0, 16, "rw-p"]]


def test_dontfork_and_wipeonfork(session: JsonSession) -> None:
    dontfork = {"op": "madvise", "page": 0, "pages": 16, "advice": "dontfork"}
    r = session.run(scenario("dontfork", [mmap(), write(), dontfork, fork("p0", "p1")]))
    assert objects(r) == ((1, 0, 1), (1, 0, 1))
    assert r["final"]["maps"]["p1"] == []
    wipe = {"op": "madvise", "page": 0, "pages": 16, "advice": "wipeonfork"}
    r = session.run(
        scenario("wipeonfork", [mmap(), write(), wipe, fork("p0", "p1"), write(pages=1, proc="p1")])
    )
    assert objects(r) == ((2, 0, 2), (2, 0, 2))
    assert [p["page"] for p in r["final"]["pages"]["p1"]] == [0]


def test_private_file_mapping(session: JsonSession) -> None:
    files = {"f0": {"pages": 16}}
    r = session.run(scenario("file-read-fork", [mmap(file="f0"), read(), fork("p0", "p1")], files))
    assert objects(r) == ((0, 0, 0), (0, 0, 0))
    assert all(not p["anon"] and p["mapcount"] == 2 for p in r["final"]["pages"]["p1"])
    r = session.run(
        scenario("file-write-fork", [mmap(file="f0"), write(pages=1), fork("p0", "p1")], files)
    )
    assert objects(r) == ((2, 0, 2), (3, 0, 3))
    assert r["final"]["pages"]["p0"][0]["anon"]  # the CoW copy of the file page


def test_shared_file_mapping_has_no_anon_vma(session: JsonSession) -> None:
    steps = [mmap(file="f0", shared=True), write(), fork("p0", "p1")]
    r = session.run(scenario("file-shared", steps, files={"f0": {"pages": 16}}))
    assert objects(r) == ((0, 0, 0), (0, 0, 0))
    assert r["final"]["maps"]["p0"] == [[0, 16, "rw-s"]]


def test_exec_gives_a_fresh_mm(session: JsonSession) -> None:
    steps = [
        mmap(),
        write(),
        fork("p0", "p1"),
        {"op": "exec", "proc": "p1"},
        mmap(proc="p1"),
        write(pages=1, proc="p1"),
    ]
    r = session.run(scenario("exec", steps))
    assert r["steps"][3]["errno"] is None
    # the old mm's objects are freed; the new image's own exec-time [stack] is not counted
    assert step_objects(r["steps"][3]) == (0, 1, 0, 2)
    assert r["final"]["maps"]["p1"] == [[0, 16, "rw-p"]]
    assert objects(r) == ((3, 1, 2), (4, 2, 2))


def test_exec_of_empty_process_counts_nothing(session: JsonSession) -> None:
    r = session.run(scenario("exec-empty", [{"op": "exec", "proc": "p0"}]))
    assert objects(r) == ((0, 0, 0), (0, 0, 0))
    assert r["other_events"]["own_live"] == 0


def test_model_only_steps_are_refused(session: JsonSession) -> None:
    s = scenario("ksm", [mmap(), write(), {"op": "ksm"}])
    with pytest.raises(ModelOnlyStep, match=r"step 2 \(ksm\)"):
        run_on_kernel(s, session.session)
    s = scenario("migrate", [mmap(), write(), {"op": "migrate", "page": 0}])
    with pytest.raises(ModelOnlyStep, match=r"step 2 \(migrate\)"):
        session.run(s)


def test_worker_writes_distinct_content(session: JsonSession) -> None:
    """Default writes stamp (step, page); files have a non-uniform pattern per page."""
    from cowctx.linux.build import ensure_worker
    from cowctx.linux.worker import OP_SYSCALL, OP_TOUCH, WorkerProcess, kill_and_reap

    base = 0x2000_0000_0000
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.write(fd, executor.file_page_pattern(0, 0) + executor.file_page_pattern(0, 1))
    p = WorkerProcess.spawn(ensure_worker(), "p0", [fd])
    os.close(fd)
    try:
        prot, anon = 3, 0x100000 | 0x02 | 0x20
        assert p.call("mmap", OP_SYSCALL, 0, 9, (base, 4 * 4096, prot, anon, -1, 0)).ret == base
        p.call("w1", OP_TOUCH, 1, args=(base, 2, 2, 0, (2 << 32) | 1))
        p.call("w2", OP_TOUCH, 2, args=(base + 2 * 4096, 2, 1, 0x77, 0))
        fbase = base + 16 * 4096
        r = p.call("mmap", OP_SYSCALL, 3, 9, (fbase, 2 * 4096, 1, 0x100000 | 0x02, 10, 0))
        assert r.ret == fbase
        with open(f"/proc/{p.pid}/mem", "rb") as mem:
            mem.seek(base)
            pages = [mem.read(4096) for _ in range(4)]
            mem.seek(fbase)
            fpages = [mem.read(4096) for _ in range(2)]
    finally:
        kill_and_reap([p])
    assert pages[0][:8] == ((2 << 32) | 1).to_bytes(8, "little")
    assert pages[1][:8] == ((2 << 32) | 2).to_bytes(8, "little")
    assert pages[0][8:] == b"\x5a" * 4088 and pages[0] != pages[1]
    assert pages[2] == pages[3] == b"\x77" * 4096
    assert fpages[0] != fpages[1] and len(set(fpages[0])) > 1


# --- availability and cleanliness ---------------------------------------------------------


def test_unavailable_reason_names_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor.os, "geteuid", lambda: 1000)
    reason = kernel_unavailable_reason()
    assert reason is not None and "not root" in reason
