"""The fuzzer: generated scenarios are valid and reproducible, the shrinker finds the
minimal cause, and a deliberately broken anon_vma (fork forgets the grandparent's
anon_vma) is caught and reduced to the four steps that show it."""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx import designs
from cowctx.cli.fuzz import fuzz_command
from cowctx.designs.anon_vma import AnonVmaRmap
from cowctx.designs.anon_vma.structs import AnonVmaVma
from cowctx.fuzz.generate import ADVICES, FILES, REGION, generate_scenario, generate_steps
from cowctx.fuzz.runner import fuzz, scenario_of
from cowctx.fuzz.shrink import rename_process, repair, scenario_yaml, shrink_steps
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

Steps = list[dict[str, Any]]


class ForkClonesParentOnly(AnonVmaRmap):
    """Broken on purpose: ``anon_vma_clone()`` at fork links the child only to the
    parent VMA's own anon_vma, not to every anon_vma of its chain, so a folio a
    grandparent faulted (mapping = the grandparent's anon_vma) is not found in a
    grandchild by the rmap walk."""

    name = "fork_clones_parent_only"

    def _anon_vma_clone(self, dst: AnonVmaVma, src: AnonVmaVma) -> None:
        if dst.vm_mm is src.vm_mm or not src.anon_vma_chain:
            super()._anon_vma_clone(dst, src)
            return
        chain = src.anon_vma_chain
        src.anon_vma_chain = [avc for avc in chain if avc.anon_vma is src.anon_vma]
        try:
            super()._anon_vma_clone(dst, src)
        finally:
            src.anon_vma_chain = chain


class CrashesOnReuse(AnonVmaRmap):
    """Broken on purpose: the model raises when a CoW fault reuses a folio."""

    name = "crashes_on_reuse"

    def folio_move_anon_rmap(self, folio, vma):
        raise RuntimeError("folio_move_anon_rmap exploded")


# --- the generator ----------------------------------------------------------------------


@pytest.mark.parametrize("kernel_only", [False, True])
def test_generated_scenarios_validate(kernel_only: bool) -> None:
    for seed in range(20):
        scenario = generate_scenario(seed, 300, kernel_only=kernel_only)
        assert len(scenario.steps) == 300
        assert all(s.errno is None for s in scenario.steps)
        if kernel_only:
            assert scenario.model_only_steps == []


def test_generator_is_deterministic_per_seed() -> None:
    a = generate_steps(random.Random(7), 500)
    b = generate_steps(random.Random(7), 500)
    c = generate_steps(random.Random(8), 500)
    assert a == b
    assert a != c
    assert generate_scenario(3, 100) == generate_scenario(3, 100)


def test_generator_reaches_every_op_advice_and_mremap_kind() -> None:
    steps = generate_steps(random.Random(1), 4000)
    ops = collections.Counter(s["op"] for s in steps)
    assert set(ops) == {
        "mmap",
        "munmap",
        "mprotect",
        "mremap",
        "madvise",
        "read",
        "write",
        "fork",
        "exit",
        "exec",
        "ksm",
        "migrate",
        "reclaim",
        "referenced",
    }
    assert {s["advice"] for s in steps if s["op"] == "madvise"} == set(ADVICES)
    mremap_flags = {tuple(s.get("flags", [])) for s in steps if s["op"] == "mremap"}
    assert {
        (),
        ("maymove",),
        ("maymove", "fixed"),
        ("maymove", "fixed", "dontunmap"),
        ("maymove", "dontunmap"),
        ("fixed",),
    } <= mremap_flags
    mmaps = [s for s in steps if s["op"] == "mmap"]
    assert any(s.get("file") and s.get("shared") for s in mmaps)
    assert any(s.get("file") and not s.get("shared") for s in mmaps)
    assert any(s.get("shared") and not s.get("file") for s in mmaps)
    assert any(s["pages"] == 0 for s in mmaps)  # an invalid step
    assert {p for s in mmaps for p in s.get("flags", [])} == {"noreserve", "populate"}
    assert len({s["child"] for s in steps if s["op"] == "fork"}) > 10


def test_generated_steps_stay_in_the_region_and_the_files() -> None:
    for s in generate_steps(random.Random(2), 3000):
        for field in ("page", "new_page"):
            if field in s:
                assert 0 <= s[field] < REGION
        if "file" in s:
            assert s["file"] in FILES


def test_most_generated_steps_succeed_on_the_model() -> None:
    """The shadow of mapped pages steers the generator: most steps do something."""
    steps = generate_steps(random.Random(4), 600, kernel_only=True)
    run = run_scenario(scenario_of(steps), "anon_vma")
    assert run.violations == []
    ok = sum(rec.errno is None for rec in run.steps)
    assert ok > 0.6 * len(steps)


def test_no_invalid_steps_when_asked() -> None:
    steps = generate_steps(random.Random(5), 2000, invalid=False)
    assert not any(s["op"] == "mmap" and s["pages"] == 0 for s in steps)
    assert not any(s.get("flags") == ["fixed"] for s in steps)


# --- the shrinker -------------------------------------------------------------------------


def _forked_child_writes_page_7(steps: Steps) -> bool:
    """Synthetic failure: a process created by a fork writes page 7."""
    scenario_of(steps)  # every candidate must stay a valid scenario
    forked = {s["child"] for s in steps if s["op"] == "fork"}
    return any(
        s["op"] == "write"
        and s["proc"] in forked
        and s["page"] <= 7 < s["page"] + s.get("pages", 1)
        for s in steps
    )


NOISY: Steps = [
    {"op": "mmap", "proc": "p0", "page": 0, "pages": 16},
    {"op": "write", "proc": "p0", "page": 0, "pages": 16},
    {"op": "fork", "proc": "p0", "child": "p3"},
    {"op": "mprotect", "proc": "p3", "page": 0, "pages": 4, "prot": "r"},
    {"op": "fork", "proc": "p3", "child": "p5"},
    {"op": "read", "proc": "p0", "page": 3},
    {"op": "exit", "proc": "p3"},
    {"op": "mremap", "proc": "p5", "page": 0, "pages": 4, "new_pages": 8, "flags": ["maymove"]},
    {"op": "write", "proc": "p5", "page": 4, "pages": 6, "value": 9},
    {"op": "munmap", "proc": "p0", "page": 0, "pages": 16},
    {"op": "exit", "proc": "p5"},
]


def test_shrink_finds_the_minimal_cause() -> None:
    assert _forked_child_writes_page_7(NOISY)
    assert shrink_steps(NOISY, _forked_child_writes_page_7) == [
        {"op": "fork", "proc": "p0", "child": "p1"},
        {"op": "write", "proc": "p1", "page": 7},
    ]


def test_shrink_is_deterministic_and_calls_each_candidate_once() -> None:
    calls: list[str] = []

    def still_fails(steps: Steps) -> bool:
        calls.append(repr(steps))
        return _forked_child_writes_page_7(steps)

    first = shrink_steps(NOISY, still_fails)
    n = len(calls)
    assert len(set(calls)) == n
    assert shrink_steps(NOISY, still_fails) == first
    assert calls[n:] == calls[:n]


def test_shrink_keeps_a_list_that_does_not_fail() -> None:
    assert shrink_steps(NOISY[:2], lambda steps: False) == NOISY[:2]


def test_repair_drops_the_steps_of_a_removed_fork() -> None:
    without_fork = [s for s in NOISY if s["op"] != "fork" or s["child"] != "p3"]
    assert repair(without_fork) == [NOISY[0], NOISY[1], NOISY[5], NOISY[9]]


def test_rename_process_gives_the_child_steps_to_the_parent() -> None:
    renamed = rename_process(NOISY, 4)  # p3 forks p5: p5's steps become p3's
    assert {"op": "exit", "proc": "p5"} not in renamed
    assert renamed[6]["proc"] == "p3" and renamed[6]["op"] == "mremap"
    assert repair(renamed)[-1]["op"] == "munmap"  # p3 exited: its later steps go


def test_scenario_yaml_loads_back(tmp_path: Path) -> None:
    steps = generate_steps(random.Random(9), 200)
    path = tmp_path / "s.yaml"
    path.write_text(scenario_yaml("round-trip", steps, FILES, "a: tricky\ndescription"))
    loaded = load_scenario(path)
    assert loaded.name == "round-trip"
    assert loaded.description == "a: tricky\ndescription"
    assert loaded.steps == scenario_of(steps).steps
    assert {k: v.pages for k, v in loaded.files.items()} == FILES
    with pytest.raises(ValueError):
        scenario_yaml("Bad Name", steps)


# --- the fuzzer -----------------------------------------------------------------------


def test_fuzz_catches_a_broken_fork_and_shrinks_it(tmp_path: Path) -> None:
    result = fuzz("broken", 4000, 1, design_factory=ForkClonesParentOnly)
    assert not result.ok
    assert result.failure is not None and result.failure.kind == "missed"
    assert result.shrunk_failure is not None and result.shrunk_failure.kind == "missed"
    assert [s["op"] for s in result.shrunk_steps] == ["mmap", "write", "fork", "fork"]
    assert result.shrunk_steps[3]["proc"] == result.shrunk_steps[2]["child"]  # a grandchild

    path = tmp_path / "found.yaml"
    path.write_text(result.scenario_yaml())
    scenario = load_scenario(path)
    broken = run_scenario(scenario, ForkClonesParentOnly)
    assert "missed" in {v.kind for v in broken.violations}
    assert run_scenario(scenario, "anon_vma").violations == []

    again = fuzz("broken", 4000, 1, design_factory=ForkClonesParentOnly)
    assert again.shrunk_steps == result.shrunk_steps
    assert again.steps_run == result.steps_run


def test_fuzz_reports_an_exception_in_the_model_with_its_traceback() -> None:
    result = fuzz("crashy", 2000, 3, design_factory=CrashesOnReuse, kernel_only=True)
    assert result.failure is not None and result.failure.kind == "exception"
    assert result.failure.exception_type == "RuntimeError"
    assert "folio_move_anon_rmap" in (result.failure.traceback or "")
    assert result.shrunk_failure is not None
    assert result.shrunk_failure.signature == "exception:RuntimeError"
    ops = [s["op"] for s in result.shrunk_steps]
    assert ops[:3] == ["mmap", "write", "fork"] and ops[4:] == ["write"]
    assert ops[3] in {"exit", "exec"}  # the parent's mm goes away, the child reuses
    assert result.shrunk_steps[-1].get("pages", 1) == 1


def test_fuzz_progress_counts_every_step() -> None:
    seen: list[tuple[int, int]] = []
    result = fuzz(
        "anon_vma", 450, 11, chunk=200, kernel_only=True, progress=lambda d, t: seen.append((d, t))
    )
    assert result.ok, result.scenario_yaml()
    assert result.steps_run == 450
    assert seen == [(200, 450), (400, 450), (450, 450)]


def test_cli_fuzz_clean_run() -> None:
    result = CliRunner().invoke(
        fuzz_command, ["--design", "anon_vma", "--steps", "2000", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "no violation in 2000 steps (seed 1)" in result.stdout


def test_cli_fuzz_prints_the_shrunk_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = {**designs._registry(), ForkClonesParentOnly.name: ForkClonesParentOnly}
    monkeypatch.setattr(designs, "_registry", lambda: registry)
    out = tmp_path / "shrunk.yaml"
    result = CliRunner().invoke(
        fuzz_command,
        [
            "--design",
            ForkClonesParentOnly.name,
            "--steps",
            "4000",
            "--seed",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "missed" in result.stderr
    assert out.read_text() == result.stdout
    scenario = load_scenario(out)
    assert [s.op for s in scenario.steps] == ["mmap", "write", "fork", "fork"]


def test_cli_fuzz_refuses_an_unknown_design() -> None:
    result = CliRunner().invoke(fuzz_command, ["--design", "nope", "--steps", "10"])
    assert result.exit_code == 2
    assert "unknown design 'nope'" in result.stderr
