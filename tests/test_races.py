"""The races anon rmap really had (reference/concurrency.md section 3): each is
found by `cowctx explore` with its kernel fix reverted, and absent with the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.concurrency.explorer import explore
from cowctx.concurrency.program import ScenarioProgram
from cowctx.concurrency.swimlane import svg_swimlane, trace_events
from cowctx.designs import get_design
from cowctx.scenario.loader import load_scenario

RACES = Path(__file__).parent.parent / "scenarios" / "races"

# file -> (switch, the violation kinds it must produce, preemption bound)
TABLE = {
    "anon-vma-prepare-lock.yaml": ("revert_prepare_lock", {"unlocked_write"}, 2),
    "anon-vma-root-recheck.yaml": ("revert_root_recheck", {"uaf", "bad_unlock"}, 2),
    "fork-vma-lock.yaml": ("revert_fork_vma_lock", {"lost_write"}, 2),
    "mremap-rmap-locks.yaml": ("revert_mremap_rmap_locks", {"missed"}, 2),
    "vma-adjust-lock.yaml": ("revert_vma_adjust_lock", {"missed", "stale"}, 2),
}


def test_every_race_file_is_in_the_table() -> None:
    assert sorted(p.name for p in RACES.glob("*.yaml")) == sorted(TABLE)


def _explore(path: Path, design: str, *extra: str) -> tuple[int, dict[str, Any]]:
    args = ["explore", str(path), "--design", design, "--json", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.output.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_race_found_with_the_fix_reverted(name: str, tmp_path: Path) -> None:
    switch, want, bound = TABLE[name]
    code, out = _explore(
        RACES / name, f"anon_vma[{switch}]", "--bound", str(bound), "--schedules", str(tmp_path)
    )
    block = out["explore"]
    assert code == 1
    assert want <= {v["kind"] for v in block["violations"]}
    assert set(block) >= {"executions", "pruned", "final_states", "seconds", "violations"}
    # the shortest schedule of each violation replays exactly
    for path in block["schedule_files"]:
        again = CliRunner().invoke(main, ["explore", str(RACES / name), "--replay", path, "--json"])
        doc = json.loads(Path(path).read_text())
        replayed = json.loads(again.output.strip().splitlines()[-1])["explore"]["violations"]
        assert (doc["kind"], doc["detail"]) in {(v["kind"], v["detail"]) for v in replayed}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_race_absent_with_the_fix(name: str) -> None:
    code, out = _explore(RACES / name, "anon_vma", "--bound", str(TABLE[name][2]))
    assert code == 0
    assert out["explore"]["violations"] == []
    assert out["explore"]["executions"] > 1


def test_dpor_finds_what_naive_finds_on_a_race() -> None:
    scenario = load_scenario(RACES / "mremap-rmap-locks.yaml")
    design = "anon_vma[revert_mremap_rmap_locks]"
    p = ScenarioProgram(scenario, design)
    d = explore(p, p.names, bound=2)
    n = explore(ScenarioProgram(scenario, design), p.names, bound=2, naive=True)
    assert n.final_states <= d.final_states
    assert set(n.violations) <= set(d.violations)
    assert n.executions > 5 * d.executions


def test_unknown_switch_is_refused() -> None:
    with pytest.raises(KeyError, match="revert_prepare_lock"):
        get_design("anon_vma[revert_nothing]")
    res = CliRunner().invoke(
        main, ["explore", str(RACES / "vma-adjust-lock.yaml"), "--design", "anon_vma[x]"]
    )
    assert res.exit_code == 2


def test_trace_event_json_and_svg() -> None:
    """The Perfetto file follows the trace-event format (JSON Object Format)."""
    scenario = load_scenario(RACES / "mremap-rmap-locks.yaml")
    p = ScenarioProgram(scenario, "anon_vma[revert_mremap_rmap_locks]")
    (found,) = explore(p, p.names, bound=2).violations.values()
    doc = json.loads(trace_events(p, found.schedule, found.detail))
    events = doc["traceEvents"]
    assert isinstance(events, list)
    lanes = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(lanes.values()) == ["mover", "walker"]
    steps = [e for e in events if e["ph"] == "X"]
    assert len(steps) == len(found.schedule)
    for e in steps:
        assert isinstance(e["name"], str) and e["tid"] in lanes and e["pid"] == 1
        assert isinstance(e["ts"], int) and isinstance(e["dur"], int) and e["dur"] > 0
    assert [e["ts"] for e in steps] == sorted(e["ts"] for e in steps)
    for e in events:
        assert e["ph"] in {"X", "M", "i"}
    (instant,) = [e for e in events if e["ph"] == "i"]
    assert instant["name"] == found.detail and instant["s"] in {"g", "p", "t"}
    svg = svg_swimlane(p, found.schedule, found.detail)
    assert svg.startswith("<svg") and svg.count("<rect") == len(found.schedule)


def test_explore_refuses_a_file_without_threads(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("format: cowctx-scenario/1\nname: s\nsteps:\n  - {op: mmap, page: 0, pages: 1}\n")
    res = CliRunner().invoke(main, ["explore", str(f)])
    assert res.exit_code == 2 and "no 'threads'" in res.output


def test_thread_steps_are_validated(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "format: cowctx-scenario/1\nname: s\nsteps:\n  - {op: mmap, page: 0, pages: 1}\n"
        "threads:\n  t1:\n    - {op: write, page: 0, proc: ghost}\n"
    )
    res = CliRunner().invoke(main, ["explore", str(f)])
    assert res.exit_code == 2
    assert "thread 't1' step 0 (write): field 'proc'" in res.output


def test_trace_files_are_written(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "explore",
            str(RACES / "mremap-rmap-locks.yaml"),
            "--design",
            "anon_vma[revert_mremap_rmap_locks]",
            "--trace",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 1
    (trace,) = tmp_path.glob("*.trace.json")
    (svg,) = tmp_path.glob("*.svg")
    assert json.loads(trace.read_text())["traceEvents"]
    assert svg.read_text().startswith("<svg")
    assert "mover" in res.output and "!! walker: rmap walk" in res.output


def test_random_and_pct_modes_are_deterministic() -> None:
    path = RACES / "anon-vma-root-recheck.yaml"
    design = "anon_vma[revert_root_recheck]"
    for mode in (["--random", "60"], ["--pct", "60", "--depth", "2"]):
        a = _explore(path, design, *mode, "--seed", "4")[1]["explore"]
        b = _explore(path, design, *mode, "--seed", "4")[1]["explore"]
        for block in (a, b):
            block.pop("seconds")
            block.pop("executions_per_second")
        assert a == b and a["executions"] == 60


CONCURRENT = Path(__file__).parent.parent / "scenarios" / "concurrent"


@pytest.mark.parametrize("path", sorted(CONCURRENT.glob("*.yaml")), ids=lambda p: p.stem)
def test_concurrent_programs_are_clean_on_anon_vma(path: Path) -> None:
    code, out = _explore(path, "anon_vma")
    assert out["explore"]["violations"] == [] and code == 0
    assert out["explore"]["final_states"] >= 1


def test_html_report_shows_each_violation_as_a_swimlane(tmp_path: Path) -> None:
    """`cowctx explore --html`: one SVG swimlane per violation with its kind, and the
    fixed design explored clean."""
    page = tmp_path / "races.html"
    result = CliRunner().invoke(
        main,
        [
            "explore",
            str(RACES / "anon-vma-root-recheck.yaml"),
            "--design",
            "anon_vma[revert_root_recheck],anon_vma",
            "--html",
            str(page),
        ],
    )
    assert result.exit_code == 1, result.output
    text = page.read_text()
    assert text.count("<svg") == 2
    assert "<b>uaf</b>" in text and "<b>bad_unlock</b>" in text
    assert "on anon_vma[revert_root_recheck]</h3>" in text and "on anon_vma</h3>" in text
    assert text.count("No violation in any explored execution.") == 1
