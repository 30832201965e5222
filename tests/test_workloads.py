"""Every workload runs on every sound design with the oracle after every step (at
a CI size), is deterministic, and agrees with the kernel where it can run."""

from __future__ import annotations

import json

import pytest

from cowctx.designs import sound_design_names
from cowctx.linux import KernelSession
from cowctx.linux.diff import kernel_diff
from cowctx.report.compare import compare, comparison_json
from cowctx.scenario.runner import run_scenario
from cowctx.workloads import WORKLOADS, build_workload

CI_SCALE = 0.05
"""Small enough to check every step with the oracle in CI."""


@pytest.mark.parametrize("name", sorted(WORKLOADS))
@pytest.mark.parametrize("design", sound_design_names())
def test_workload_runs_clean_under_the_oracle(name: str, design: str) -> None:
    run = run_scenario(build_workload(name, scale=CI_SCALE), design, check=True)
    assert [s.errno for s in run.steps if s.errno] == []
    assert [str(v) for v in run.violations] == []


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_is_deterministic_and_sized_from_its_defaults(name: str) -> None:
    a, b = build_workload(name), build_workload(name)
    assert a == b
    small = build_workload(name, scale=0.1)
    assert len(small.steps) <= len(a.steps)
    one = json.dumps(comparison_json(compare(small, ["anon_vma", "cow_context"])), sort_keys=True)
    two = json.dumps(comparison_json(compare(small, ["anon_vma", "cow_context"])), sort_keys=True)
    assert one == two
    for design, data in json.loads(one)["designs"].items():
        assert data["client_misses"] == 0, design


def test_fork_chain_costs_what_the_reference_says() -> None:
    """n live generations: n anon_vmas and n(n+1)/2 AVCs; one context each."""
    c = compare(build_workload("fork-chain", {"depth": 9, "pages": 8}), ["anon_vma", "cow_context"])
    objs = {d.design: d.result.to_json()["final"]["objects"] for d in c.designs}
    assert objs["anon_vma"]["anon_vma"]["live"] == 10
    assert objs["anon_vma"]["anon_vma_chain"]["live"] == 55
    assert objs["cow_context"]["cow_context"]["live"] == 10


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(KeyError, match="has no parameter"):
        build_workload("prefork", {"apps": 3})


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_agrees_with_the_kernel(name: str, kernel_session: KernelSession) -> None:
    _, _, diffs = kernel_diff(build_workload(name, scale=0.1), kernel_session)
    assert diffs == []
