"""compare, sweep (local processes and a local Dask cluster) and graph, from the
command line and the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.report.sweep import sweep

from .helpers import ROOT


def _metrics(result):
    return [
        {d: {k: v for k, v in m.items() if k != "model_seconds"} for d, m in p.items()}
        for p in result.points
    ]


def test_sweep_on_a_local_dask_cluster_matches_local_processes() -> None:
    from distributed import LocalCluster

    args: tuple[str, str, list[float], list[str]] = (
        "prefork",
        "workers",
        [2, 6],
        ["anon_vma", "cow_context"],
    )
    local = sweep(*args, fixed={"heap_pages": 64}, workers=2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = sweep(*args, fixed={"heap_pages": 64}, dask_address=cluster.scheduler_address)
    assert _metrics(local) == _metrics(remote)
    objects = local.series("rmap_objects")
    assert objects["anon_vma"] == [12.0, 32.0]  # anon_vmas 1 + 2w, AVCs 1 + 3w
    assert objects["cow_context"] == [3.0, 7.0]  # one context per process


def test_compare_cli_json_and_kernel_column(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        main,
        [
            "compare",
            "fork-chain",
            "--param",
            "depth=3",
            "--param",
            "pages=4",
            "--json",
            "--html",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.splitlines()[0])
    assert set(data["designs"]) == {"anon_vma", "cow_context", "cow_context_poc"}
    assert data["designs"]["anon_vma"]["objects"]["anon_vma_chain"]["live"] == 10
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_compare_refuses_an_unknown_target_and_parameter() -> None:
    result = CliRunner().invoke(main, ["compare", "no-such-workload"])
    assert result.exit_code == 2 and "neither a workload" in result.output
    result = CliRunner().invoke(main, ["compare", "fork-chain", "--param", "apps=3"])
    assert result.exit_code == 2 and "apps" in result.output


def test_sweep_cli_prints_each_metric_per_design() -> None:
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "fork-chain",
            "--param",
            "depth=2,4",
            "--param",
            "pages=4",
            "--designs",
            "anon_vma,cow_context",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rmap_objects" in result.stdout and "walk_exclusive" in result.stdout


def test_graph_writes_dot_and_svg(tmp_path: Path) -> None:
    base = tmp_path / "g"
    path = ROOT / "scenarios" / "worked" / "worked-a-touch-then-fork.yaml"
    result = CliRunner().invoke(
        main, ["graph", str(path), "--design", "anon_vma", "--step", "2", "--out", str(base)]
    )
    assert result.exit_code == 0, result.output
    dot = base.with_suffix(".dot").read_text()
    assert "av0 [label=" in dot and "av1 -> av0" in dot and dot.count("-> av") >= 4
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed: no SVG to check")
    assert base.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
