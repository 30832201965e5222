"""Kernel tests skip with the reason where the kernel cannot be observed, and fail
instead under ``COWCTX_REQUIRE_KERNEL=1`` (what .ci/run sets), so CI cannot go green
with the kernel tests quietly skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT

TEST = "tests/test_linux_executor.py::test_null_scenario_causes_no_rmap_events"


def _pytest(tmp_path: Path, require: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COWCTX_TRACEFS": str(tmp_path / "no-tracefs-here"),
        "COWCTX_REQUIRE_KERNEL": require,
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_unobservable_kernel_skips_with_the_reason(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "0")
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout and "kernel not observable" in proc.stdout
    assert "tracefs" in proc.stdout


def test_required_kernel_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "1")
    assert proc.returncode == 1, proc.stdout
    assert "1 error" in proc.stdout  # pytest counts a failure in set-up as an error
    assert "COWCTX_REQUIRE_KERNEL=1 but kernel not observable" in proc.stdout
