"""The explorer: source-DPOR reaches exactly what naive enumeration reaches."""

from __future__ import annotations

import functools
import random
import re
import types
from pathlib import Path

import pytest

from cowctx.concurrency import explorer
from cowctx.concurrency.explorer import explore, random_walks, run_schedule
from cowctx.concurrency.program import ScenarioProgram, final_state
from cowctx.concurrency.scheduler import Execution
from cowctx.oracle.oracle import check_machine
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario
from tests.concurrency_programs import PROGRAMS, ToyProgram
from tests.test_races import TABLE as RACE_TABLE


@functools.cache
def _both(name: str, bound: int | None):
    spec, init = PROGRAMS[name]
    d = explore(ToyProgram(spec, init), list(spec), bound=bound)
    n = explore(ToyProgram(spec, init), list(spec), bound=bound, naive=True)
    return d, n


def test_there_are_twenty_programs() -> None:
    assert len(PROGRAMS) >= 20


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dpor_matches_naive_unbounded(name: str) -> None:
    d, n = _both(name, None)
    assert d.final_states == n.final_states
    assert set(d.violations) == set(n.violations)
    assert d.executions <= n.executions


@pytest.mark.parametrize("name", ["inc-two-vars", "sb", "locked-inc3", "rwsem", "rcu-two-readers"])
@pytest.mark.parametrize("bound", [0, 1, 2])
def test_dpor_matches_naive_within_a_bound(name: str, bound: int) -> None:
    """The bound limits which schedules are started, never their continuation:
    nothing naive finds within the bound is lost."""
    d, n = _both(name, bound)
    assert n.final_states <= d.final_states
    assert set(n.violations) <= set(d.violations)


def test_dpor_reduces() -> None:
    d, n = _both("inc-two-vars", None)
    assert len(d.final_states) == 6
    assert n.executions > 100 * d.executions


def test_lost_update_is_found() -> None:
    d, _ = _both("inc2", None)
    finals = {s.split("]")[0] for s in d.final_states}
    assert finals == {"[('x', 1)", "[('x', 2)"}


def test_a_dpor_that_ignores_dependence_misses_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: with every pair of steps taken as independent the
    sleep sets prune real orders away."""
    spec, init = PROGRAMS["sb"]
    good = explore(ToyProgram(spec, init), list(spec), bound=None)
    monkeypatch.setattr(explorer, "dependent", lambda a, b: False)
    real_races = explorer._races
    monkeypatch.setattr(explorer, "_races", lambda trace, stack, bound, blocked: None)
    broken = explore(ToyProgram(spec, init), list(spec), bound=None)
    monkeypatch.setattr(explorer, "_races", real_races)
    assert broken.final_states < good.final_states


def test_seqcount_reader_is_reordered_before_the_writer() -> None:
    """A seqcount reader's wait (``read_seqcount_begin()`` on an odd count) is
    enabled only by the writer's end store: DPOR must still reach the orders
    where the reader reads before the write section, or inside it (a retry),
    as naive enumeration does; a write outside the section tears the read."""
    d, n = _both("seqcount", None)
    reads = {r for s in n.final_states for r in re.findall(r"'r\.0', \((\d, \d, \d)\)", s)}
    assert reads == {"0, 0, 1", "1, 1, 1", "1, 1, 2"}  # before, after, retried
    assert d.final_states == n.final_states and not d.violations
    d2, n2 = _both("seqcount-torn", None)  # y written after the section
    assert d2.final_states == n2.final_states
    assert {k for k, _ in n2.violations} == {"torn"} and set(d2.violations) == set(n2.violations)


def test_dpor_without_the_blocked_steps_misses_the_seqcount_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The comparison above can fail: without the pending step of a thread that
    is blocked when an execution ends, DPOR never puts the reader before the
    writer's section (the bug that made it explore one execution of
    ``cow_context_poc[stab_seqcount]``)."""
    spec, init = PROGRAMS["seqcount"]
    good = explore(ToyProgram(spec, init), list(spec), bound=None)
    real_races = explorer._races
    monkeypatch.setattr(
        explorer, "_races", lambda trace, stack, bound, blocked: real_races(trace, stack, bound)
    )
    broken = explore(ToyProgram(spec, init), list(spec), bound=None)
    assert broken.final_states < good.final_states


def test_deadlock_has_its_cycle_and_schedule_replays() -> None:
    spec, init = PROGRAMS["abba"]
    prog = ToyProgram(spec, init)
    d = explore(prog, list(spec), bound=2)
    (found,) = [f for f in d.violations.values() if f.kind == "deadlock"]
    assert found.detail == "a waits for spinlock of m -> b waits for spinlock of l -> a"
    again = run_schedule(ToyProgram(spec, init), list(spec), found.schedule)
    assert set(again.violations) == {("deadlock", found.detail)}


def test_replay_refuses_an_impossible_schedule() -> None:
    spec, init = PROGRAMS["locked-inc"]
    with pytest.raises(ValueError, match="cannot run here"):
        run_schedule(ToyProgram(spec, init), list(spec), ["a", "a", "b", "b", "a"])


def test_random_and_pct_are_deterministic_and_find_states() -> None:
    spec, init = PROGRAMS["inc3"]
    r1 = random_walks(ToyProgram(spec, init), list(spec), 200, seed=5)
    r2 = random_walks(ToyProgram(spec, init), list(spec), 200, seed=5)
    assert r1.final_states == r2.final_states and len(r1.final_states) >= 2
    p = random_walks(ToyProgram(spec, init), list(spec), 200, seed=5, pct_depth=2)
    assert len(p.final_states) >= 2
    assert [f.schedule for f in r1.violations.values()] == [
        f.schedule for f in r2.violations.values()
    ]


def test_deterministic_counts() -> None:
    a, _ = _both("inc-two-vars", 2)
    b, _ = _both("inc-two-vars", 2)
    assert (a.executions, a.pruned) == (b.executions, b.pruned)


SCENARIOS = Path(__file__).parent.parent / "scenarios"
RACE_SWITCH = {name: switch for name, (switch, _, _) in RACE_TABLE.items()}
# every program of scenarios/races (with its fix reverted) and scenarios/concurrent
SCENARIO_PROGRAMS = [
    (p, f"anon_vma[{RACE_SWITCH[p.name]}]" if p.name in RACE_SWITCH else "anon_vma")
    for p in sorted((SCENARIOS / "races").glob("*.yaml"))
    + sorted((SCENARIOS / "concurrent").glob("*.yaml"))
]


@pytest.mark.parametrize(("path", "design"), SCENARIO_PROGRAMS, ids=lambda x: getattr(x, "stem", x))
def test_dpor_matches_naive_on_the_scenarios(path: Path, design: str) -> None:
    """On the model's own programs too: at bound 1 DPOR reaches every final state
    and violation that naive enumeration reaches, and nothing else."""
    scenario = load_scenario(path)
    p = ScenarioProgram(scenario, design)
    d = explore(p, p.names, bound=1)
    n = explore(ScenarioProgram(scenario, design), p.names, bound=1, naive=True)
    assert d.final_states == n.final_states
    assert set(d.violations) == set(n.violations)
    assert d.executions < n.executions


POC_FIXES = {
    "poc-fork-unmap-exclusive.yaml": "no_exclusive_abort",
    "poc-unstable-vma.yaml": "",
    "poc-sleep-under-rcu.yaml": "",
    "poc-dynarray-shift.yaml": "no_exclusive_abort,dynarray_insert",
    "poc-dynarray-krealloc.yaml": "no_exclusive_abort",
    "poc-mm-teardown.yaml": "",
}
"""The PoC race files and the sequential fixes each scheme is run with
(tests/test_races_poc.py's ``FIXES``)."""
POC_SCHEMES = ["", "stab_rwsem", "stab_seqcount", "stab_refcount"]


def _poc_design(name: str, scheme: str) -> str:
    fixes = ",".join(f for f in (POC_FIXES[name], scheme) if f) if scheme else ""
    return f"cow_context_poc[{fixes}]" if fixes else "cow_context_poc"


POC_PROGRAMS = [
    (SCENARIOS / "races" / "poc" / name, _poc_design(name, scheme))
    for name in sorted(POC_FIXES)
    for scheme in POC_SCHEMES
]


def test_the_poc_table_is_every_poc_race_file() -> None:
    assert sorted(POC_FIXES) == sorted(p.name for p in (SCENARIOS / "races" / "poc").glob("*.yaml"))


@pytest.mark.parametrize(
    ("path", "design"), POC_PROGRAMS, ids=lambda x: x if isinstance(x, str) else x.stem
)
def test_dpor_matches_naive_on_the_poc_races(path: Path, design: str) -> None:
    """The PoC's race files on the PoC (its races) and on each stabilisation
    scheme, at bound 1: DPOR reaches what naive enumeration reaches.  Found the
    steps that changed a folio's mapcount without declaring it (the PoC's
    lockless ``folio_maybe_mapped_shared()`` was never reordered against them),
    ``mmput()``'s undeclared ``mm_users``, and the seqcount reader that DPOR
    never put before a writer's section (one execution where naive made 82)."""
    scenario = load_scenario(path)
    p = ScenarioProgram(scenario, design)
    d = explore(p, p.names, bound=1)
    n = explore(ScenarioProgram(scenario, design), p.names, bound=1, naive=True)
    assert d.final_states == n.final_states
    assert set(d.violations) == set(n.violations)
    assert d.executions < n.executions


def test_there_are_twenty_programs_with_the_scenarios() -> None:
    assert len(PROGRAMS) + len(SCENARIO_PROGRAMS) >= 20
    assert len(SCENARIO_PROGRAMS) >= 9


@pytest.mark.parametrize(("path", "design"), SCENARIO_PROGRAMS, ids=lambda x: getattr(x, "stem", x))
def test_program_setup_is_run_scenario(path: Path, design: str) -> None:
    """The explorer's lean set-up builds the machine run_scenario builds."""
    scenario = load_scenario(path)
    p = ScenarioProgram(scenario, design)
    lean = p.setup()
    full = run_scenario(scenario, design, check=False)
    assert final_state(lean, {}) == final_state(full, {})
    assert [str(v) for v in check_machine(lean.machine)] == [
        str(v) for v in check_machine(full.machine)
    ]


def test_the_walk_probe_is_a_full_scan() -> None:
    """Walk tracking asks the page tables one mapping at a time (program._Probe);
    it must keep exactly what a full scan (mappings_of) keeps, and a broken probe
    must change what the walk finds."""
    scenario = load_scenario(SCENARIOS / "races" / "mremap-rmap-locks.yaml")
    p = ScenarioProgram(scenario, "anon_vma[revert_mremap_rmap_locks]")
    with_probe = explore(p, p.names, bound=2)
    real_start = ScenarioProgram.start

    def scan_only(self: ScenarioProgram) -> Execution:
        ex = real_start(self)
        ex.probe = None
        return ex

    q = ScenarioProgram(scenario, "anon_vma[revert_mremap_rmap_locks]")
    q.start = types.MethodType(scan_only, q)  # type: ignore[method-assign]
    scanned = explore(q, q.names, bound=2)
    assert set(with_probe.violations) == set(scanned.violations) != set()
    assert with_probe.final_states == scanned.final_states

    class Blind:
        def maps(self, pfn: int, mm_id: int, address: int) -> bool:
            return True

        def mm_maps(self, pfn: int, mm_id: int) -> bool:
            return True

    def blind(self: ScenarioProgram) -> Execution:
        ex = real_start(self)
        ex.probe = Blind()
        return ex

    b = ScenarioProgram(scenario, "anon_vma[revert_mremap_rmap_locks]")
    b.start = types.MethodType(blind, b)  # type: ignore[method-assign]
    assert set(explore(b, b.names, bound=2).violations) != set(scanned.violations)


def test_the_uniform_chooser_draws_as_randrange() -> None:
    """explorer._Uniform makes randrange()'s draws in place (seeded random runs
    must stay what they were); a chooser that skips the draw when one thread is
    enabled, or draws differently, must disagree."""
    rng, ref = random.Random(7), random.Random(7)
    choose = explorer._Uniform(rng)
    sizes = [1, 2, 3, 2, 1, 5, 2, 4, 3, 1] * 50
    got = [choose(None, list(range(n))) for n in sizes]  # type: ignore[arg-type]
    assert got == [ref.randrange(n) for n in sizes]
    assert rng.random() == ref.random()  # the same number of draws

    skip, ref2 = random.Random(7), random.Random(7)
    lazy = [0 if n == 1 else skip.randrange(n) for n in sizes]
    assert lazy != [ref2.randrange(n) for n in sizes]
