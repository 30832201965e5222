"""Differential fuzzing against the running kernel: the model agrees on random
scenarios, and a disagreement is shrunk into a scenario file that holds the
kernel's numbers (so it passes on a right model and fails on the wrong one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowctx.linux import KernelSession
from cowctx.linux.fuzz import diff_class, kernel_fuzz
from cowctx.scenario.expect import check_expect
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.results import Counts, ScenarioResult
from cowctx.scenario.runner import run_scenario
from cowctx.scenario.schema import Scenario

from .test_kernel_diff import NeverReuseAnonVma

pytestmark = pytest.mark.kernel


@pytest.fixture
def session(kernel_session: KernelSession) -> KernelSession:
    return kernel_session


def test_two_hundred_random_scenarios_agree_with_the_kernel(session: KernelSession) -> None:
    result = kernel_fuzz(session, seed=1, scenarios=200, steps=60)
    assert result.scenarios == 200
    assert [f.diffs for f in result.findings] == []


def test_a_wrong_model_is_shrunk_to_a_file_with_the_kernels_numbers(
    session: KernelSession, tmp_path: Path
) -> None:
    result = kernel_fuzz(
        session, seed=3, scenarios=40, steps=60, design=NeverReuseAnonVma, out_dir=tmp_path
    )
    assert result.findings, "a model that never reuses anon_vmas must disagree somewhere"
    finding = result.findings[0]
    assert any("anon_vma" in d for d in finding.diffs)
    assert finding.path is not None
    scenario = load_scenario(finding.path)
    assert len(scenario.steps) <= 8
    assert [s.op for s in scenario.steps].count("fork") >= 2
    right = run_scenario(scenario, "anon_vma").result()
    wrong = run_scenario(scenario, NeverReuseAnonVma).result()
    assert check_expect(scenario, right) == []
    assert check_expect(scenario, wrong) != []


def test_diff_class_ignores_indices() -> None:
    assert diff_class("final.pages.p2[page 131]: model present, kernel absent") == (
        "final.pages.p?[page ?] presence"
    )
    assert diff_class("steps.5 (fork).objects.anon_vma.allocated: model 1, kernel 0") == (
        "steps.?.objects.anon_vma.allocated"
    )


class FlakyOnce:
    """The kernel session, but its third run reports one anon_vma too many: a
    disagreement that a re-run of the same scenario does not show."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session
        self.runs = 0

    def run(self, scenario: Scenario) -> ScenarioResult:
        result = self.session.run(scenario)
        self.runs += 1
        if self.runs == 3:
            c = result.final.objects["anon_vma"]
            result.final.objects["anon_vma"] = Counts(c.allocated + 1, c.freed, (c.live or 0) + 1)
        return result


def test_a_disagreement_that_does_not_reproduce_is_not_a_finding(
    session: KernelSession, tmp_path: Path
) -> None:
    flaky = FlakyOnce(session)
    result = kernel_fuzz(flaky, seed=1, scenarios=5, steps=20, out_dir=tmp_path)
    assert result.findings == [] and list(tmp_path.iterdir()) == []
    assert len(result.unreproduced) == 1
    assert any(d.startswith("final.objects.anon_vma.live:") for d in result.unreproduced[0][1])
    assert flaky.runs == 5 + 1  # every scenario once; the first re-run already differs


def test_swap_variants_are_on_by_default() -> None:
    """The CLI's --swap-every default is the library's, and it is on."""
    from cowctx.cli.kernel import kernel_fuzz_command
    from cowctx.linux.fuzz import SWAP_EVERY

    (option,) = [p for p in kernel_fuzz_command.params if p.name == "swap_every"]
    assert option.default == SWAP_EVERY > 0
