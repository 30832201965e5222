"""A kernel run leaves nothing behind: no tracefs instance, no enabled event, no process.

Separate from test_linux_executor.py, whose module-wide session keeps its own instance open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cowctx.linux import executor
from cowctx.linux.executor import KernelSession, kernel_unavailable_reason, run_on_kernel
from cowctx.linux.tracefs import INSTANCE_PREFIX
from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import Scenario

TRACEFS = Path("/sys/kernel/tracing")


@pytest.fixture(autouse=True)
def _kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def scenario(name: str, steps: list[dict[str, Any]]) -> Scenario:
    return parse_scenario({"format": "cowctx-scenario/1", "name": name, "steps": steps})


STEPS: list[dict[str, Any]] = [
    {"op": "mmap", "page": 0, "pages": 16},
    {"op": "write", "page": 0, "pages": 16},
    {"op": "fork", "proc": "p0", "child": "p1"},
    {"op": "fork", "proc": "p1", "child": "p2"},
    {"op": "exit", "proc": "p1"},
]


def assert_clean(pids: list[int]) -> None:
    """No instance of this process, no event enabled at top level, no scenario process."""
    ours = [
        d.name
        for d in (TRACEFS / "instances").iterdir()
        if d.name.startswith(f"{INSTANCE_PREFIX}{os.getpid()}")
    ]
    assert ours == [], f"tracefs instances left behind: {ours}"
    assert (TRACEFS / "set_event").read_text().strip() == ""
    for ev in ("kmem_cache_alloc", "kmem_cache_free"):
        assert (TRACEFS / "events" / "kmem" / ev / "enable").read_text().strip() == "0"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"scenario process {pid} still exists"


def test_one_shot_run_cleans_up_everything() -> None:
    r = run_on_kernel(scenario("cleanup", STEPS))
    assert r["final"]["objects"]["anon_vma"] == {"live": 3, "allocated": 3, "freed": 0}
    assert r["kernel"]["trace_instance"].startswith(f"{INSTANCE_PREFIX}{os.getpid()}")
    assert set(r["pids"]) == {"p0", "p1", "p2"}
    assert_clean(list(r["pids"].values()))


def test_session_reaps_each_run_and_removes_instance_on_close() -> None:
    pids: list[int] = []
    with KernelSession() as s:
        for _ in range(2):
            r = s.run(scenario("session", STEPS))
            pids += r["pids"].values()
            for pid in r["pids"].values():
                assert not Path(f"/proc/{pid}").exists()
    assert_clean(pids)


def test_cleanup_after_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert_clean(seen)


def test_worker_death_names_the_step_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert_clean([p.pid for p in seen])
