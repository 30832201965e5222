"""The running kernel as referee: every kernel-capable scenario file agrees with
it, a wrong model is caught with the field named, and where the kernel cannot
be observed the command says why and exits 3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowctx.designs.anon_vma import AnonVmaRmap
from cowctx.designs.anon_vma.structs import AnonVmaVma
from cowctx.linux import KernelSession
from cowctx.linux.diff import kernel_diff
from cowctx.scenario.loader import load_scenario

from .helpers import ROOT, kernel_capable_files, scenario

needs_kernel = pytest.mark.kernel
COWCTX = str(Path(sys.executable).parent / "cowctx")


@pytest.fixture
def session(kernel_session: KernelSession) -> KernelSession:
    return kernel_session


@needs_kernel
@pytest.mark.parametrize("path", kernel_capable_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_scenario_file_agrees_with_kernel(path: Path, session: KernelSession) -> None:
    _, _, diffs = kernel_diff(load_scenario(path), session)
    assert diffs == []


class NeverReuseAnonVma(AnonVmaRmap):
    """A wrong anon_vma model: fork never reuses an existing anon_vma."""

    name = "anon_vma_never_reuse"

    def _anon_vma_clone(self, dst: AnonVmaVma, src: AnonVmaVma) -> None:
        if dst.anon_vma is None:  # fork: hide the reuse candidates
            saved = [(avc.anon_vma, avc.anon_vma.num_children) for avc in src.anon_vma_chain]
            for av, _ in saved:
                av.num_children += 2
            try:
                super()._anon_vma_clone(dst, src)
            finally:
                for av, n in saved:
                    av.num_children = n
        else:
            super()._anon_vma_clone(dst, src)


DAEMONISING = scenario(
    "daemonising-chain",
    [
        {"op": "mmap", "page": 0, "pages": 4},
        {"op": "write", "page": 0, "pages": 4},
        {"op": "fork", "child": "p1"},
        {"op": "fork", "proc": "p1", "child": "p2"},
        {"op": "exit", "proc": "p1"},
        {"op": "fork", "proc": "p2", "child": "p3"},
    ],
)


@needs_kernel
def test_a_model_that_never_reuses_anon_vmas_is_caught(session: KernelSession) -> None:
    _, _, good = kernel_diff(DAEMONISING, session)
    assert good == []
    _, _, diffs = kernel_diff(DAEMONISING, session, design=NeverReuseAnonVma)
    assert "steps.5 (fork).objects.anon_vma.allocated: model 1, kernel 0" in diffs
    assert "final.objects.anon_vma.live: model 4, kernel 3" in diffs


@needs_kernel
def test_kernel_diff_cli_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(DAEMONISING.model_dump(exclude_none=True)))
    proc = subprocess.run(
        [COWCTX, "kernel-diff", "--json", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["design"] for x in lines] == ["anon_vma", "linux"]
    for line in lines:
        assert line["available"] is True and line["agree"] is True and line["diffs"] == []
        assert all(isinstance(s["time_ns"], int) for s in line["steps"])


def test_kernel_diff_refuses_model_only_steps(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "format: cowctx-scenario/1\nname: m\nsteps:\n"
        "  - {op: mmap, page: 0, pages: 1}\n  - {op: ksm}\n"
    )
    proc = subprocess.run(
        [COWCTX, "kernel-diff", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "step 1 (ksm) is model-only" in proc.stderr


@pytest.fixture
def public_file() -> Iterator[Path]:
    """A scenario file any user can read (pytest's tmp_path is private to root);
    removed afterwards: tests leave nothing in /tmp."""
    public = Path(tempfile.mkdtemp(prefix="cowctx-test-"))
    try:
        public.chmod(0o755)
        path = public / "s.yaml"
        path.write_text(
            "format: cowctx-scenario/1\nname: s\nsteps:\n  - {op: mmap, page: 0, pages: 1}\n"
        )
        path.chmod(0o644)
        yield path
    finally:
        shutil.rmtree(public)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the command as another user",
)
def test_as_non_root_exit_code_3_with_reason(public_file: Path) -> None:
    path = public_file
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            COWCTX,
            "kernel-diff",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": "/nonexistent"},
    )
    assert proc.returncode == 3, proc.stderr
    assert "not root" in proc.stderr
    line = json.loads(proc.stdout)
    assert line["available"] is False and "not root" in line["reason"]


def test_without_tracefs_exit_code_3_with_reason(public_file: Path, tmp_path: Path) -> None:
    path = public_file
    env = {**os.environ, "COWCTX_TRACEFS": str(tmp_path / "no-tracefs-here")}
    proc = subprocess.run(
        [COWCTX, "kernel-diff", str(path)], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 3, proc.stderr
    assert "kernel not observable" in proc.stderr
    if os.geteuid() == 0:
        assert "tracefs" in proc.stderr
