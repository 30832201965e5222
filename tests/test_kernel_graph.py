"""The kernel referee's anon_vma graph: BTF parsing, the BPF reader, canonical names, the
model's graph, and the graph diff catching a model that gets the structure wrong while every
count agrees."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, cast

import pytest

from cowctx.designs.anon_vma import AnonVmaRmap
from cowctx.designs.anon_vma.graph import anon_vma_graph, anon_vma_name
from cowctx.designs.anon_vma.structs import AnonVma
from cowctx.linux import KernelSession
from cowctx.linux import graph as kgraph
from cowctx.linux.btf import KIND_INT, KIND_STRUCT, KIND_UNION, Btf, BtfError
from cowctx.linux.diff import kernel_diff
from cowctx.linux.graph import GraphError, graph_unavailable_reason
from cowctx.linux.graph_diff import diff_graphs
from cowctx.mm.folio import Folio
from cowctx.mm.mm_types import VmAreaStruct
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .conftest import skip_or_fail
from .helpers import ROOT, kernel_capable_files, scenario

_GRAPH_PROBE: list[str | None] = []


@pytest.fixture
def graph_readable() -> None:
    """Skip (or fail under COWCTX_REQUIRE_KERNEL=1) where the graph cannot be read; probed
    once, at the first test that needs it."""
    if not _GRAPH_PROBE:
        _GRAPH_PROBE.append(graph_unavailable_reason())
    if _GRAPH_PROBE[0] is not None:
        skip_or_fail(f"the anon_vma graph cannot be read: {_GRAPH_PROBE[0]}")


def needs_graph(test: Any) -> Any:
    """A kernel test that reads the anon_vma graph."""
    return pytest.mark.kernel(pytest.mark.usefixtures("graph_readable")(test))


REUSE = ROOT / "scenarios" / "kernel-oracle" / "oracle-06-reuse-orphaned-nonroot.yaml"

# --- BTF --------------------------------------------------------------------------------


def _btf_blob() -> bytes:
    """struct s { long a; union { long b; struct { int c; int d; }; }; } by hand."""
    strings = b"\0long\0int\0s\0a\0b\0c\0d\0"

    def off(name: str) -> int:
        return strings.index(b"\0" + name.encode() + b"\0") + 1

    types = b""
    types += struct.pack("<IIII", off("long"), KIND_INT << 24, 8, 64)  # 1: long
    types += struct.pack("<IIII", off("int"), KIND_INT << 24, 4, 32)  # 2: int
    inner = struct.pack("<III", 0, KIND_STRUCT << 24 | 2, 8)  # 3: anonymous struct
    inner += struct.pack("<III", off("c"), 2, 0) + struct.pack("<III", off("d"), 2, 32)
    types += inner
    union = struct.pack("<III", 0, KIND_UNION << 24 | 2, 8)  # 4: anonymous union
    union += struct.pack("<III", off("b"), 1, 0) + struct.pack("<III", 0, 3, 0)
    types += union
    outer = struct.pack("<III", off("s"), KIND_STRUCT << 24 | 2, 16)  # 5: struct s
    outer += struct.pack("<III", off("a"), 1, 0) + struct.pack("<III", 0, 4, 64)
    types += outer
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_btf_offsets_through_anonymous_members() -> None:
    btf = Btf(_btf_blob(), "test blob")
    assert btf.sizeof("s") == 16
    assert btf.offsetof("s", "a") == 0
    assert btf.offsetof("s", "b") == 8
    assert btf.offsetof("s", "c") == 8
    assert btf.offsetof("s", "d") == 12
    with pytest.raises(BtfError, match="no member 'e'"):
        btf.offsetof("s", "e")


def test_btf_rejects_garbage() -> None:
    with pytest.raises(BtfError, match="bad magic"):
        Btf(b"\0" * 64, "zeros")


# --- names and the model's graph ------------------------------------------------------


def test_canonical_names() -> None:
    assert anon_vma_name("p1", "write", 4, 0) == "AV(p1 fault step 4)"
    assert anon_vma_name("p0", "fork", 2, 1) == "AV(p0 fork step 2 #1)"


def test_model_graph_of_reuse_scenario() -> None:
    """kernel-oracle.md: p3's fork reuses the orphaned non-root anon_vma of the exited p1."""
    g = anon_vma_graph(run_scenario(load_scenario(REUSE), check=False))
    root, mid, leaf = "AV(p0 fault step 1)", "AV(p0 fork step 2)", "AV(p1 fork step 3)"
    assert sorted(g["anon_vmas"]) == sorted([root, mid, leaf])
    assert g["anon_vmas"][leaf]["parent"] == mid
    assert g["anon_vmas"][root]["refcount"] == 3
    assert [v["anon_vma"] for v in g["vmas"]["p3"]] == [mid]
    assert g["vmas"]["p3"][0]["chain"] == [root, mid, leaf]
    assert {f["anon_vma"] for f in g["folios"]["p0"]} == {root}


# --- the graph diff -----------------------------------------------------------------


def _graph() -> dict[str, Any]:
    return anon_vma_graph(run_scenario(load_scenario(REUSE), check=False))


def test_diff_graphs_equal_is_empty() -> None:
    assert diff_graphs(_graph(), _graph(), "g") == []


def test_diff_graphs_structure_before_counters() -> None:
    model, kernel = _graph(), _graph()
    kernel["anon_vmas"]["AV(p0 fault step 1)"]["num_children"] = 7
    kernel["folios"]["p0"][3]["anon_vma"] = "AV(p1 fork step 3)"
    diffs = diff_graphs(model, kernel, "g")
    assert diffs == [
        "g.folios.p0[page 103]: folio in AV(p1 fork step 3) on the kernel, "
        "AV(p0 fault step 1) in the model",
        "g.anon_vmas.AV(p0 fault step 1).num_children: 7 on the kernel, 2 in the model",
    ]


def test_diff_graphs_chain_order_and_missing_anon_vma() -> None:
    model, kernel = _graph(), _graph()
    kernel["vmas"]["p2"][0]["chain"].reverse()
    del model["anon_vmas"]["AV(p1 fork step 3)"]
    diffs = diff_graphs(model, kernel, "g")
    assert diffs[0] == "g.anon_vmas: AV(p1 fork step 3) on the kernel, not in the model"
    assert any(d.startswith("g.vmas.p2[100,116).chain:") for d in diffs)


# --- on the kernel ----------------------------------------------------------------


@pytest.fixture
def session(kernel_session: KernelSession) -> KernelSession:
    return kernel_session


def _chain_total(g: dict[str, Any]) -> int:
    return sum(len(v["chain"]) for rows in g["vmas"].values() for v in rows)


@needs_graph
def test_kernel_graph_matches_tracepoint_counts(session: KernelSession) -> None:
    """Independent of the model: the graph holds exactly the live objects the kmem
    tracepoints counted, and names every one from its birth step."""
    result = session.run(load_scenario(REUSE))
    g = result.final.graph
    assert g is not None
    live = result.final.objects
    assert len(g["anon_vmas"]) == live["anon_vma"].live == 3
    assert _chain_total(g) == live["anon_vma_chain"].live == 7
    assert not any("untraced" in n for n in g["anon_vmas"])
    assert g["vmas"]["p3"][0]["anon_vma"] == "AV(p0 fork step 2)"
    assert "p1" not in g["vmas"]  # exited


@needs_graph
@pytest.mark.parametrize("path", kernel_capable_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_scenario_file_agrees_on_the_graph(path: Path, session: KernelSession) -> None:
    model, kernel, diffs = kernel_diff(load_scenario(path), session)
    assert kernel.final.graph is not None, kernel.kernel["kernel"].get("graph_unavailable")
    assert model.final.graph is not None
    assert diffs == []


class RootForCowAnonVma(AnonVmaRmap):
    """Deliberately broken: a folio the CoW fault copies goes to the root anon_vma instead
    of the faulting VMA's own.  Counts, maps, sharing and the rmap oracle stay right (the
    root's tree reaches every descendant VMA); only the graph shows it."""

    def folio_set_anon(
        self, folio: Folio, vma: VmAreaStruct, address: int, exclusive: bool = True
    ) -> None:
        super().folio_set_anon(folio, vma, address, exclusive)
        folio.mapping = cast(AnonVma, folio.mapping).root


COW = scenario(
    "cow-after-fork",
    [
        {"op": "mmap", "proc": "p0", "page": 100, "pages": 4},
        {"op": "write", "proc": "p0", "page": 100, "pages": 4},
        {"op": "fork", "proc": "p0", "child": "p1"},
        {"op": "write", "proc": "p1", "page": 102},
    ],
)


def test_broken_model_passes_its_own_oracle() -> None:
    run = run_scenario(COW, RootForCowAnonVma)
    assert run.violations == []


@needs_graph
def test_graph_diff_catches_cow_folio_in_wrong_anon_vma(session: KernelSession) -> None:
    _, _, good = kernel_diff(COW, session)
    assert good == []
    _, _, diffs = kernel_diff(COW, session, RootForCowAnonVma)
    assert diffs == [
        "final.graph.folios.p1[page 102]: folio in AV(p0 fork step 2) on the kernel, "
        "AV(p0 fault step 1) in the model"
    ]


@needs_graph
def test_graph_every_step() -> None:
    with KernelSession(graph_every_step=True) as s:
        model, kernel, diffs = kernel_diff(COW, s, RootForCowAnonVma)
    assert all(st.graph is not None for st in kernel.steps)
    assert all(st.graph is not None for st in model.steps)
    assert kernel.steps[0].graph is not None and kernel.steps[1].graph is not None
    assert kernel.steps[0].graph["anon_vmas"] == {}
    assert kernel.steps[1].graph["anon_vmas"].keys() == {"AV(p0 fault step 1)"}
    assert diffs[0] == (
        "steps.3 (write).graph.folios.p1[page 102]: folio in AV(p0 fork step 2) on the "
        "kernel, AV(p0 fault step 1) in the model"
    )


@needs_graph
def test_wrong_vmemmap_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the struct pages elsewhere, the mapping check refuses the read."""
    monkeypatch.setattr(kgraph, "VMEMMAP_START", kgraph.VMEMMAP_START + 0x40 * 12345 + 8)
    with KernelSession() as s, pytest.raises(GraphError, match="vmemmap"):
        s.run(COW)


@needs_graph
def test_session_leaves_no_bpf_objects() -> None:
    def bpf_fds() -> list[str]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if "bpf" in target:
                out.append(target)
        return out

    before = bpf_fds()
    with KernelSession(graph_every_step=True) as s:
        s.run(COW)
        during = bpf_fds()
        assert len(during) > len(before)
        for _ in range(5):  # links of finished scenarios are closed, not piled up
            s.run(COW)
        assert len(bpf_fds()) == len(during)
    assert bpf_fds() == before


def test_run_json_has_the_graph_for_anon_vma_only() -> None:
    import json

    from click.testing import CliRunner

    from cowctx.cli import main

    out = CliRunner().invoke(
        main, ["run", "--json", "--design", "anon_vma,cow_context", str(REUSE)]
    )
    assert out.exit_code == 0, out.output
    by_design = {r["design"]: r for r in map(json.loads, out.output.splitlines())}
    assert by_design["anon_vma"]["final"]["graph"] == _graph()
    assert "graph" not in by_design["cow_context"]["final"]


@needs_graph
def test_graph_command_draws_kernel_beside_model(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cowctx.cli import main

    base = tmp_path / "g"
    out = CliRunner().invoke(main, ["graph", "--kernel", str(REUSE), "--out", str(base)])
    assert out.exit_code == 0, out.output
    dot = base.with_suffix(".dot").read_text()
    assert "cluster_model" in dot and "cluster_kernel" in dot
    assert "agree" in dot.splitlines()[1]
    assert '"kernel:av:AV(p1 fork step 3)"' in dot
    assert "#d62728" not in dot  # nothing drawn as different


def test_graph_pair_dot_marks_differences() -> None:
    from cowctx.report.graph import graph_pair_dot

    model, kernel = _graph(), _graph()
    kernel["folios"]["p2"][0]["anon_vma"] = "AV(p1 fork step 3)"
    dot = graph_pair_dot(model, kernel, "t")
    red = [line for line in dot.splitlines() if "#d62728" in line]
    # the page group holding the differing page, on each side
    assert [line.split('"')[1] for line in red] == [
        "model:folios:p2:AV(p0 fault step 1)",
        "kernel:folios:p2:AV(p1 fork step 3)",
    ]
    assert "#d62728" not in graph_pair_dot(model, _graph(), "t")


@needs_graph
def test_a_process_with_many_vmas_is_read_whole_and_once(session: KernelSession) -> None:
    """600 VMAs: more than one seq_file buffer of VMA records would need several
    reads, where the task_vma iterator restarts for ever; the reader must get every
    VMA exactly once (and agree with the model)."""
    from cowctx.workloads import build_workload

    scenario = build_workload("many-vmas-fanout", {"vmas": 600, "children": 2})
    _, kernel, diffs = kernel_diff(scenario, session)
    assert diffs == []
    assert kernel.final.graph is not None
    assert len(kernel.final.graph["vmas"]["p0"]) == len(kernel.final.maps["p0"]) >= 600
