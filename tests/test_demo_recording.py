"""`cowctx demo` records chromium headless where it can and shows its row; where it
cannot, it says why and goes on."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.trace import chromium, traceformat
from cowctx.workloads import WORKLOADS

demo_module = importlib.import_module("cowctx.cli.demo")  # cowctx.cli.demo is the command
TRACE = Path(__file__).parent / "fixtures" / "traces" / "sh-pipeline.trace"


def _capture_targets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []

    @click.command()
    @click.pass_context
    def fake_compare(ctx: click.Context, **kwargs: Any) -> None:
        seen.append(kwargs["targets"])

    def record(out: Path) -> Path:
        return TRACE

    monkeypatch.setattr(demo_module, "compare_command", fake_compare)
    monkeypatch.setattr(demo_module, "_record_chromium", record)
    return seen


def test_demo_adds_the_recording_after_the_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture_targets(monkeypatch)
    res = CliRunner().invoke(main, ["demo", "--html", "/dev/null"])
    assert res.exit_code == 0, res.output
    assert seen == [(*WORKLOADS, str(TRACE))]
    res = CliRunner().invoke(main, ["demo", "--no-record", "--html", "/dev/null"])
    assert seen[-1] == tuple(WORKLOADS)


def test_without_chromium_the_demo_says_why_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chromium.shutil, "which", lambda name: None)
    out = tmp_path / "chromium.trace"
    assert demo_module._record_chromium(out) is None
    err = capsys.readouterr().err
    assert "chromium headless not recorded" in err and "not installed" in err
    assert not out.exists()


def test_without_root_the_reason_is_the_recorders(monkeypatch: pytest.MonkeyPatch) -> None:
    from cowctx.trace import recorder

    monkeypatch.setattr(recorder.os, "geteuid", lambda: 1000)
    reason = chromium.chromium_unavailable_reason()
    assert reason is not None and "root" in reason


def test_demo_records_chromium_quietly_here(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    reason = chromium.chromium_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "chromium.trace"
    assert demo_module._record_chromium(out) == out
    captured = capfd.readouterr()
    assert "<html>" not in captured.out  # chromium's --dump-dom went to /dev/null
    assert "recorded" in captured.err
    rec = traceformat.read(out)
    assert rec.header["exit_status"] == 0 and rec.header["flags"] == []
    assert rec.header["command"][0] == "chromium"
    assert len(rec.records) > 10_000
