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


def _scenario_with_expect(tmp_path: Path, expect: str) -> Path:
    f = tmp_path / "typo.yaml"
    f.write_text(
        "format: cowctx-scenario/1\nname: typo\nsteps:\n  - {op: mmap, page: 0, pages: 4}\n"
        "  - {op: write, page: 0}\nexpect:\n" + expect
    )
    return f


def test_misspelt_object_kind_in_expect_is_a_malformed_file(tmp_path: Path) -> None:
    # A misspelt kind used to be skipped on every design: PASS, exit 0.
    f = _scenario_with_expect(tmp_path, "  anon_vma_chian: {live: 999}\n")
    for design in ("anon_vma", "cow_context", "all"):
        code, _, err = invoke("run", "--design", design, str(f))
        assert code == 2, design
        assert f"{f}: field 'expect.anon_vma_chian': unknown object kind" in err


def test_unknown_design_or_violation_kind_in_expect_is_malformed(tmp_path: Path) -> None:
    f = _scenario_with_expect(tmp_path, "  violations: {cow_contxt: [missed]}\n")
    code, _, err = invoke("run", str(f))
    assert code == 2 and "field 'expect.violations.cow_contxt': unknown design" in err
    f = _scenario_with_expect(tmp_path, "  violations: {cow_context_poc: [mised]}\n")
    code, _, err = invoke("run", str(f))
    assert code == 2 and "field 'expect.violations.cow_context_poc': unknown violation kind" in err
    f = _scenario_with_expect(tmp_path, "  design_maps: {anonvma: {p0: [[0, 4, rw-p]]}}\n")
    code, _, err = invoke("run", str(f))
    assert code == 2 and "field 'expect.design_maps.anonvma': unknown design" in err


def test_scenario_file_that_is_not_utf8_is_malformed(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"format: cowctx-scenario/1\nname: x\ndescription: caf\xe9\nsteps: []\n")
    for command in ("run", "kernel-diff"):
        code, _, err = invoke(command, str(f))
        assert code == 2, command
        assert f"{f}: not UTF-8" in err and "byte 50 is 0xe9" in err


def test_workload_parameter_out_of_range_is_rejected() -> None:
    code, _, err = invoke("compare", "zygote", "--param", "heap_pages=-5")
    assert code == 2
    assert "heap_pages=-5" in err and "zygote" in err and "1 to " in err
    code, _, err = invoke("compare", "zygote", "--param", "dirty=1.5")
    assert code == 2 and "dirty=1.5" in err and "0 to 1" in err
    code, _, err = invoke("compare", "zygote", "--param", "apps=2.5")
    assert code == 2 and "apps=2.5" in err and "whole number" in err
