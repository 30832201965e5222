"""A kernel run leaves nothing behind: no tracefs instance, no enabled event, no process.

Separate from test_linux_executor.py, whose module-wide session keeps its own instance open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cowctx.linux import executor
from cowctx.linux.executor import KernelSession, run_on_kernel
from cowctx.linux.tracefs import INSTANCE_PREFIX, TraceInstance, tracefs_root
from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import Scenario

from .helpers import sigint_as_from_a_terminal

pytestmark = pytest.mark.kernel


def scenario(name: str, steps: list[dict[str, Any]]) -> Scenario:
    return parse_scenario({"format": "cowctx-scenario/1", "name": name, "steps": steps})


STEPS: list[dict[str, Any]] = [
    {"op": "mmap", "page": 0, "pages": 16},
    {"op": "write", "page": 0, "pages": 16},
    {"op": "fork", "proc": "p0", "child": "p1"},
    {"op": "fork", "proc": "p1", "child": "p2"},
    {"op": "exit", "proc": "p1"},
]


@pytest.fixture
def instances(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tracefs instances this test's runs create."""
    names: list[str] = []
    real_start = TraceInstance.start

    def start(self: TraceInstance, tracing: bool = True) -> None:
        try:
            real_start(self, tracing)
        finally:
            names.append(self.name)

    monkeypatch.setattr(TraceInstance, "start", start)
    return names


def assert_clean(instances: list[str], pids: list[int]) -> None:
    """Our instances are gone (so are their events) and no scenario process is left.
    Only what this test created is looked at: the host's own tracing is not ours."""
    assert instances, "the run created no tracefs instance"
    root = tracefs_root()
    left = [name for name in instances if (root / "instances" / name).exists()]
    assert left == [], f"tracefs instances left behind: {left}"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"scenario process {pid} still exists"


def test_one_shot_run_cleans_up_everything(instances: list[str]) -> None:
    r = run_on_kernel(scenario("cleanup", STEPS)).to_json()
    assert r["final"]["objects"]["anon_vma"] == {"live": 3, "allocated": 3, "freed": 0}
    assert r["kernel"]["trace_instance"].startswith(f"{INSTANCE_PREFIX}{os.getpid()}.")
    assert instances == [r["kernel"]["trace_instance"]]
    assert set(r["pids"]) == {"p0", "p1", "p2"}
    assert_clean(instances, list(r["pids"].values()))


def test_session_reaps_each_run_and_removes_instance_on_close(instances: list[str]) -> None:
    pids: list[int] = []
    with KernelSession() as s:
        for _ in range(2):
            r = s.run(scenario("session", STEPS)).to_json()
            pids += r["pids"].values()
            for pid in r["pids"].values():
                assert not Path(f"/proc/{pid}").exists()
    assert_clean(instances, pids)


def test_cleanup_after_interrupt(monkeypatch: pytest.MonkeyPatch, instances: list[str]) -> None:
    seen: list[int] = []
    real_add = executor._Run.add

    def add(self: executor._Run, proc: Any) -> None:
        seen.append(proc.pid)
        real_add(self, proc)

    def interrupted(self: executor._Run) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(executor._Run, "add", add)
    monkeypatch.setattr(executor._Run, "final_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_on_kernel(scenario("interrupted", STEPS))
    assert len(seen) == 3
    assert_clean(instances, seen)


def test_worker_death_names_the_step_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, instances: list[str]
) -> None:
    """A worker killed behind our back: the error names the step; the rest is cleaned up."""
    seen: list[Any] = []
    real_add = executor._Run.add

    def add(self: executor._Run, proc: Any) -> None:
        seen.append(proc)
        real_add(self, proc)
        if proc.name == "p1":
            os.kill(proc.pid, 9)

    monkeypatch.setattr(executor._Run, "add", add)
    with pytest.raises(executor.WorkerError, match=r"step 3 \(fork, p1\).*died"):
        run_on_kernel(scenario("worker-dies", STEPS))
    assert_clean(instances, [p.pid for p in seen])


# --- signals: every exit but SIGKILL cleans up; a later run removes what SIGKILL left ------

COWCTX = str(Path(sys.executable).parent / "cowctx")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _fuzzing_cowctx(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, list[int]]:
    """A long ``cowctx kernel-fuzz`` caught while it runs scenarios: (process, its
    tracefs instance, the worker processes it had then)."""
    proc = subprocess.Popen(
        [COWCTX, "kernel-fuzz", "--seed", "5", "--scenarios", "100000", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "stderr", "wb"),  # noqa: SIM115 - the child owns it
        preexec_fn=sigint_as_from_a_terminal,
    )
    root = tracefs_root()
    deadline = time.monotonic() + 60
    name, workers = None, []
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted((root / "instances").glob(f"{INSTANCE_PREFIX}{proc.pid}.*"))
        workers = _children(proc.pid) if found else []
        if found and workers:
            name = found[0].name
            break
        time.sleep(0.01)
    if name is None:
        proc.kill()
        proc.wait()
        pytest.fail("kernel-fuzz never got as far as running a scenario")
    return proc, name, workers


def _gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not left:
            return []
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_removes_the_instance_and_the_workers(sig: int, tmp_path: Path) -> None:
    proc, name, workers = _fuzzing_cowctx(tmp_path)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    # click turns Ctrl-C into "Aborted!" and exit 1; SIGTERM/SIGHUP exit 128 + signal
    assert code == (1 if sig == signal.SIGINT else 128 + sig), (tmp_path / "stderr").read_text()
    assert not (tracefs_root() / "instances" / name).exists(), f"{name} left behind"
    assert _gone(workers) == []


def test_a_later_run_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    proc, name, workers = _fuzzing_cowctx(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    instance = tracefs_root() / "instances" / name
    assert instance.exists(), "SIGKILL cannot clean up: the instance must still be there"
    assert _gone(workers) == [], "workers end when their controller's socket closes"
    with KernelSession():
        pass
    assert not instance.exists(), f"{name} of a dead cowctx was not removed"
