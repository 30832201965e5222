"""Recordings as a workload kind: ``cowctx compare FILE.trace`` and the HTML report.

The committed fixtures (tests/fixtures/traces/) go through the same comparison as the
workloads; the kernel column must be the recording's own counts, the designs must be
measured where the replay is in step with the kernel, and a bad file exits 2.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.linux.tracefs import KINDS, RMAP_ALLOC_SITES
from cowctx.report.compare import compare
from cowctx.report.html import render_report
from cowctx.report.recording import compare_recording
from cowctx.trace import traceformat
from cowctx.trace.events import Recording
from cowctx.trace.kernel_counts import KernelCounts, joins_tree, live_peak
from cowctx.trace.replay import Replay, replay
from cowctx.workloads import build_workload

TRACES = Path(__file__).parent / "fixtures" / "traces"
DESIGNS = ["anon_vma", "cow_context", "cow_context_poc"]


def fixture(name: str) -> Path:
    return TRACES / f"{name}.trace"


def _compare_json(*targets: str) -> tuple[Any, list[dict[str, Any]]]:
    res = CliRunner().invoke(main, ["compare", *targets, "--json"])
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    return res, lines


def test_compare_trace_json_kernel_column_is_the_recordings_counts() -> None:
    path = fixture("sh-pipeline")
    res, out = _compare_json(str(path))
    assert res.exit_code == 0, res.output
    (c,) = out
    recorded = replay(traceformat.read(path), "anon_vma")["kernel"]
    assert c["recording"]["kernel_totals"] == {k: recorded[k] for k in KINDS}
    assert c["recording"]["agree"] is True
    assert set(c["designs"]) == set(DESIGNS)
    model = c["designs"]["anon_vma"]["objects"]
    for kind in KINDS:
        kernel = c["kernel"]["objects"][kind]
        assert kernel["allocated"] == recorded[kind]["allocated"] > 0
        assert kernel["freed"] == recorded[kind]["freed"]
        # live at the peak: the kernel's from the kmem records, the model's from its
        # machine; equal only if the measurement point is in step
        assert 0 < kernel["live"] == model[kind]["live"]
        assert model[kind]["allocated"] == kernel["allocated"]
    # measured at the peak, not at the end (where everything has exited)
    for design in DESIGNS:
        walks = c["designs"][design]["walks"]["folio_referenced"]
        assert sum(s["walks"] for s in walks.values()) > 0
        assert c["designs"][design]["bytes"]["vm_area_struct"] > 0
    assert c["designs"]["anon_vma"]["client_misses"] == 0


def test_kernel_column_follows_the_recording_not_the_model(tmp_path: Path) -> None:
    """One anon_vma allocation removed from the recording: the kernel column loses
    exactly it, the model's does not, and the comparison says they differ."""
    rec = traceformat.read(fixture("sh-pipeline"))
    allocs = [
        i
        for i, r in enumerate(rec.records)
        if r[0] == "kmem" and r[3] == 1 and r[4] == "anon_vma" and r[5] in RMAP_ALLOC_SITES
    ]
    victim = allocs[len(allocs) // 2]
    records = rec.records[:victim] + rec.records[victim + 1 :]
    broken = tmp_path / "broken.trace"
    traceformat.write(broken, Recording({**rec.header, "events": len(records)}, records))
    _, (good,) = _compare_json(str(fixture("sh-pipeline")))
    res, (bad,) = _compare_json(str(broken))
    assert res.exit_code == 0, res.output
    k_good, k_bad = good["kernel"]["objects"], bad["kernel"]["objects"]
    assert k_bad["anon_vma"]["allocated"] == k_good["anon_vma"]["allocated"] - 1
    assert bad["designs"]["anon_vma"]["objects"] == good["designs"]["anon_vma"]["objects"]
    assert bad["recording"]["agree"] is False
    assert bad["recording"]["first_difference"]["pid"] == rec.records[victim][2]
    text = CliRunner().invoke(main, ["compare", str(broken), "--designs", "anon_vma"])
    assert "≠" in text.stdout and "differ from the recording's" in text.stdout


@pytest.mark.parametrize("name", sorted(p.stem for p in TRACES.glob("*.trace")))
def test_every_fixture_is_measured_in_step_with_the_kernel(name: str) -> None:
    c = compare_recording(traceformat.read(fixture(name)), name, ["anon_vma"])
    assert c.kernel is not None
    model = c.designs[0].result.final.objects
    for kind in KINDS:
        assert c.kernel.final.objects[kind] == model[kind], kind


def _raw_peak(rec: Recording) -> int:
    """The naive point: right after the kernel's live count is greatest, whatever is
    half done (what :func:`live_peak` must not do)."""
    root = rec.header["root_pid"]
    counts, tree, best, at = KernelCounts(), set(), 0, 0
    for idx, r in enumerate(rec.records):
        joined = joins_tree(r, root)
        if joined is not None:
            tree.add(joined)
        if r[0] == "kmem":
            counts.account(bool(r[3]), r[4], r[5], r[6], r[2] in tree)
            if len(counts.live) > best:
                best, at = len(counts.live), idx + 1
    return at


def _live_at(rec: Recording, at: int) -> tuple[dict[str, int], dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}

    def pause(r: Replay) -> None:
        seen["model"] = {k: r.m.ledger.objects[k].live for k in KINDS}
        live = list(r.kernel.live.values())
        seen["kernel"] = {k: live.count(k) for k in KINDS}

    Replay(rec, "anon_vma").run(at, pause)
    return seen["model"], seen["kernel"]


def test_the_naive_peak_is_out_of_step_and_live_peak_is_not() -> None:
    """sh-pipeline's kernel maximum is inside an execve (the new stack's anon_vma is
    allocated before the old mm is freed): measuring there compares a half-done exec."""
    rec = traceformat.read(fixture("sh-pipeline"))
    model, kernel = _live_at(rec, _raw_peak(rec))
    assert model != kernel
    model, kernel = _live_at(rec, live_peak(rec))
    assert model == kernel


def test_chromium_fixture_in_step_and_agreeing() -> None:
    """The committed chromium headless recording (`make bench` replays it too; it is
    kept out of test_replay's fixtures, which demand a replay without notes: this one
    notes mmaps of fds the recording never saw opened and a write fault the model
    refused, and still agrees)."""
    rec = traceformat.read(TRACES / "large" / "chromium.trace")
    c = compare_recording(rec, "chromium", ["anon_vma"])
    assert c.recording is not None and c.recording["agree"] is True
    assert c.recording["tasks_at_peak"] > 20
    assert c.kernel is not None
    model = c.designs[0].result.final.objects
    for kind in KINDS:
        assert c.kernel.final.objects[kind] == model[kind], kind
    assert c.kernel.final.objects["anon_vma"].allocated > 1000


def test_mixed_targets_keep_their_order_and_kind(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "format: cowctx-scenario/1\nname: tiny\nsteps:\n"
        "  - {op: mmap, page: 0, pages: 4}\n  - {op: write, page: 0, pages: 4}\n"
        "  - {op: fork, child: p1}\n"
    )
    res, out = _compare_json(
        "fork-chain", str(fixture("git")), str(scenario), "--param", "depth=2", "--scale", "0.1"
    )
    assert res.exit_code == 0, res.output
    assert [c["scenario"] for c in out][0::2] == ["fork-chain", "tiny"]
    assert out[1]["recording"]["trace"] == str(fixture("git"))
    assert "recording" not in out[0] and "recording" not in out[2]


def test_a_gzip_trace_without_the_suffix_is_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "git.recorded"
    path.write_bytes(fixture("git").read_bytes())
    res, out = _compare_json(str(path))
    assert res.exit_code == 0, res.output
    assert out[0]["recording"]["trace"] == str(path)


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "bad-record"])
def test_corrupted_trace_exits_2_naming_the_file(tmp_path: Path, damage: str) -> None:
    data = fixture("make").read_bytes()
    path = tmp_path / "damaged.trace"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not-gzip":
        path.write_text("format: cowctx-scenario/1\n")
    else:
        lines = gzip.decompress(data).decode().splitlines()
        lines[5] = '["fault", 1, 2, "x", 7, 1]'
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    res = CliRunner().invoke(main, ["compare", "fork-chain", str(path), "--json"])
    assert res.exit_code == 2, res.output
    assert str(path) in res.stderr
    assert res.stdout == ""  # refused before anything ran
    if damage == "bad-record":
        assert f"{path}:6" in res.stderr  # lines[5] is line 6


def test_unreplayable_trace_exits_2_naming_the_file(tmp_path: Path) -> None:
    lines = gzip.decompress(fixture("git").read_bytes()).decode().splitlines()
    header = json.loads(lines[0])
    header["images"] = {}
    path = tmp_path / "noimages.trace"
    text = "\n".join([json.dumps(header), *lines[1:]]) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    res = CliRunner().invoke(main, ["compare", str(path)])
    assert res.exit_code == 2, res.output
    assert str(path) in res.stderr


def _section_rows(page: str, title: str) -> dict[str, list[str]]:
    """Row label -> cells of the table under the <h2> ``title``."""
    start = page.index(f"<h2>{html.escape(title)}</h2>")
    table = page[page.index("<table>", start) : page.index("</table>", start)]
    rows: dict[str, list[str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = [html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)]
        if cells:
            rows.setdefault(cells[0].strip(), cells[1:])
    return rows


def test_html_report_shows_the_recording_with_its_kernel_column(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(
        main,
        ["compare", "fork-chain", str(fixture("tar")), "--scale", "0.1", "--html", str(out)],
    )
    assert res.exit_code == 0, res.output
    page = out.read_text()
    c = compare_recording(traceformat.read(fixture("tar")), str(fixture("tar")), DESIGNS)
    rows = _section_rows(page, c.scenario)
    assert rows[""] == [*DESIGNS, "linux (kernel)"]
    assert c.kernel is not None
    for kind in KINDS:
        k = c.kernel.final.objects[kind]
        assert rows[kind][-1] == f"{k.live:,} ({k.allocated:,})"
        assert rows[kind][0] == rows[kind][-1]  # the anon_vma design, in step
    assert "measured at its peak" in page  # the glossary says what the row is
    assert "fork-chain" in page


def test_a_kernel_run_that_cannot_be_counted_leaves_the_column_out() -> None:
    from cowctx.linux.executor import KernelRunError

    class DroppingSession:
        def run(self, scenario: Any) -> Any:
            raise KernelRunError("the trace buffer dropped 12 events: counts not exact")

    c = compare(
        build_workload("fork-chain", scale=0.1), ["anon_vma"], kernel_session=DroppingSession()
    )
    assert c.kernel is None
    assert c.kernel_reason is not None and "dropped 12 events" in c.kernel_reason
    assert "dropped 12 events" in render_report([c])
