"""``cowctx contend``: the table, JSON, the HTML section, the Perfetto file, and
malformed input (exit 2, naming the option)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cowctx.cli import main

ARGS = [
    "contend",
    "fork-exit-storm",
    "--param",
    "vmas=2",
    "--param",
    "pages=8",
    "--cpus",
    "1,2",
    "--duration",
    "0.001",
]


def test_json_html_and_perfetto(tmp_path: Path) -> None:
    html, trace = tmp_path / "c.html", tmp_path / "t.json"
    r = CliRunner().invoke(main, [*ARGS, "--json", "--html", str(html), "--perfetto", str(trace)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    runs = out["runs"]
    assert [(x["design"], x["cpus"]) for x in runs] == [
        ("anon_vma", 1),
        ("anon_vma", 2),
        ("cow_context", 1),
        ("cow_context", 2),
    ]
    assert all(
        x["units"] > 0 and "anon_vma:write" in x["locks"] for x in runs if x["design"] == "anon_vma"
    )
    page = html.read_text()
    assert "Contention: fork-exit-storm" in page and page.count("<svg") >= 3
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"CPU 0", "CPU 1"} <= names
    assert any(e["ph"] == "X" and e["name"] == "fork" for e in events)


def test_the_table() -> None:
    r = CliRunner().invoke(main, ARGS)
    assert r.exit_code == 0, r.output
    assert "units/s" in r.stdout and "anon_vma" in r.stdout and "cow_context" in r.stdout


def test_malformed_input_exits_2() -> None:
    for bad, hint in (
        (["contend", "no-such-workload"], "WORKLOAD"),
        ([*ARGS, "--cpus", "0,2"], "--cpus"),
        ([*ARGS, "--walkers", "kswapd"], "--walkers"),
        (["contend", "fork-exit-storm", "--param", "nope=1"], "--param"),
        ([*ARGS, "--designs", "bogus"], "bogus"),
    ):
        r = CliRunner().invoke(main, bad)
        assert r.exit_code == 2, (bad, r.output)
        assert hint in r.output, (bad, r.output)
