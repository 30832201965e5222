"""The command line: exit codes, error messages naming file/step/field, JSON Lines
that are byte-identical run to run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cowctx.cli import main

from .helpers import ROOT


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_malformed_file_names_file_step_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "format: cowctx-scenario/1\nname: bad\nsteps:\n"
        "  - {op: mmap, page: 0, pages: 4}\n  - {op: mprotect, page: 0, pages: 4}\n"
    )
    code, _, err = invoke("run", str(bad))
    assert code == 2
    assert f"{bad}: step 1 (mprotect): field 'prot': Field required" in err


def test_unknown_process_and_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "proc.yaml"
    bad.write_text("format: cowctx-scenario/1\nname: x\nsteps:\n  - {op: exit, proc: p9}\n")
    code, _, err = invoke("run", str(bad))
    assert code == 2 and "step 0 (exit): field 'proc': process 'p9' does not exist yet" in err
    bad.write_text("format: [\n")
    code, _, err = invoke("run", str(bad))
    assert code == 2 and "not valid YAML" in err


def test_expectation_failure_exits_1_and_names_the_field(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "format: cowctx-scenario/1\nname: s\nsteps:\n  - {op: mmap, page: 0, pages: 4}\n"
        "  - {op: write, page: 0}\nexpect:\n  anon_vma: {live: 2}\n"
    )
    code, out, _ = invoke("run", str(f))
    assert code == 1
    assert "expect.anon_vma.live: expected 2, got 1" in out


def test_json_lines_are_deterministic_and_complete() -> None:
    path = str(ROOT / "scenarios" / "worked" / "worked-a-touch-then-fork.yaml")
    code1, out1, _ = invoke("run", "--json", "--design", "all", path)
    code2, out2, _ = invoke("run", "--json", "--design", "all", path)
    assert code1 == code2 == 0 and out1 == out2
    for line in out1.splitlines():
        result = json.loads(line)
        assert {"scenario", "design", "steps", "final", "oracle"} <= set(result)
        assert result["oracle"]["violations"] == []
        assert all("time_ns" not in s for s in result["steps"])


def test_demo_stories_run_every_builtin_scenario() -> None:
    code, out, _ = invoke("demo", "--stories")
    assert code == 0
    for design in ("anon_vma", "cow_context"):
        assert out.count(f"PASS demo-fork-then-cow on {design}") == 1
        assert f"FAIL demo-fork-chain on {design}" not in out
    assert out.count("PASS") >= 12
