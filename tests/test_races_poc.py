"""The CoW context PoC's races (issue 11 item 3, docs/stabilisation.md): each file of
scenarios/races/poc/ fails on the PoC at a preemption bound of at most 2, its
committed schedule replays the violation, and the stabilisation schemes
(cow_context_poc[stab_rwsem], [stab_seqcount], [stab_refcount], [stab_ranged],
[stab_tolerant]) make it clean, or are shown not to."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.concurrency.explorer import explore
from cowctx.concurrency.program import ScenarioProgram
from cowctx.designs import get_design
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

POC = Path(__file__).parent.parent / "scenarios" / "races" / "poc"
CLEAN_BOUND = int(os.environ.get("COWCTX_POC_RACE_BOUND", "1"))
"""The preemption bound of the schemes' clean checks: 1 covers every race here (each
is found at bound 1 or 0) and keeps `make test` short; docs/stabilisation.md's
verdicts were run with ``COWCTX_POC_RACE_BOUND=2``."""
SCHEDULES = POC / "schedules"

# file -> (design it fails on, kind, detail fragment, the smallest bound that finds it,
#          naive?).  naive: found by naive enumeration (no dependence assumed) rather
#          than DPOR; DPOR finds every one now that the steps that change a folio's
#          mapcount declare it (test_concurrency_explorer: DPOR == naive on these files).
FOUND = {
    "poc-fork-unmap-exclusive.yaml": (
        "cow_context_poc",
        "stale",
        "migration entry of pfn 1 left at mm#2",
        1,
        False,
    ),
    "poc-unstable-vma.yaml": ("cow_context_poc", "missed", "walker: rmap walk", 1, False),
    "poc-sleep-under-rcu.yaml": (
        "cow_context_poc",
        "sleep_in_atomic",
        "try_to_unmap_one (mmu notifiers) may sleep in an RCU read-side section",
        0,
        False,
    ),
    "poc-dynarray-shift.yaml": (
        "cow_context_poc[no_exclusive_abort,dynarray_insert]",
        "missed",
        "walker: rmap walk of folio#3 missed mm#1 at 0x200000190000",
        1,
        False,
    ),
    "poc-dynarray-krealloc.yaml": (
        "cow_context_poc[no_exclusive_abort]",
        "uaf",
        "walker: load dynarray#1.nr after kmem_cache_free(kmalloc)",
        1,
        False,
    ),
    "poc-mm-teardown.yaml": (
        "cow_context_poc",
        "uaf",
        "mm_users after kmem_cache_free(mm_struct)",
        1,
        False,
    ),
}

# file -> the sequential PoC fixes a scheme is run with (the race file's own
# design, without its race), and per scheme the violation kinds it leaves.
FIXES = {
    "poc-fork-unmap-exclusive.yaml": "no_exclusive_abort",
    "poc-unstable-vma.yaml": "",
    "poc-sleep-under-rcu.yaml": "",
    "poc-dynarray-shift.yaml": "no_exclusive_abort,dynarray_insert",
    "poc-dynarray-krealloc.yaml": "no_exclusive_abort",
    "poc-mm-teardown.yaml": "",
}
LEFT: dict[tuple[str, str], set[str]] = {
    # the seqcount walk keeps RCU over the rmap_one callbacks (race c) ...
    ("poc-fork-unmap-exclusive.yaml", "stab_seqcount"): {"sleep_in_atomic"},
    # ... and the end state of a reclaim that raced a fork is the PoC's sequential
    # exclusive shortcut (scenarios/poc/poc-exclusive-abort.yaml), the oracle's "missed"
    ("poc-sleep-under-rcu.yaml", "stab_seqcount"): {"sleep_in_atomic", "missed"},
    # the tolerant walk stays under RCU over the callbacks too (tests/test_stab_tolerant.py)
    ("poc-fork-unmap-exclusive.yaml", "stab_tolerant"): {"sleep_in_atomic"},
    ("poc-sleep-under-rcu.yaml", "stab_tolerant"): {"sleep_in_atomic", "missed"},
}
SCHEMES = ["stab_rwsem", "stab_seqcount", "stab_refcount", "stab_ranged", "stab_tolerant"]


@cache
def _violations(path: Path, design: str, naive: bool, bound: int = 2) -> frozenset[tuple[str, str]]:
    program = ScenarioProgram(load_scenario(path), design)
    return frozenset(explore(program, program.names, bound=bound, naive=naive).violations)


def test_every_race_file_is_in_the_table() -> None:
    assert sorted(p.name for p in POC.glob("*.yaml")) == sorted(FOUND) == sorted(FIXES)
    stems = sorted(p.stem for p in POC.glob("*.yaml"))
    # FILE.json: the race on its design; FILE.SCHEME.json: what a scheme leaves
    assert sorted(p.stem for p in SCHEDULES.glob("*.json") if "." not in p.stem) == stems
    for p in SCHEDULES.glob("*.*.json"):
        race, scheme = p.stem.split(".")
        assert race in stems and scheme in SCHEMES, p.name


@pytest.mark.parametrize("name", sorted(FOUND))
def test_race_found_on_the_poc(name: str) -> None:
    design, kind, fragment, bound, naive = FOUND[name]
    assert bound <= 2
    found = _violations(POC / name, design, naive, bound)
    assert any(k == kind and fragment in d for k, d in found), sorted(found)
    if bound:  # and not with one preemption fewer: the bound is the smallest
        fewer = _violations(POC / name, design, naive, bound - 1)
        assert not any(k == kind and fragment in d for k, d in fewer), sorted(fewer)


@pytest.mark.parametrize("name", sorted(FOUND))
def test_committed_schedule_replays(name: str) -> None:
    """`cowctx explore FILE --replay SCHEDULE` shows the violation again."""
    path = SCHEDULES / f"{Path(name).stem}.json"
    doc = json.loads(path.read_text())
    design, kind, fragment, _, _ = FOUND[name]
    assert (doc["design"], doc["kind"]) == (design, kind) and fragment in doc["detail"]
    res = CliRunner().invoke(main, ["explore", str(POC / name), "--replay", str(path), "--json"])
    assert res.exit_code == 1, res.output
    out: dict[str, Any] = json.loads(res.output.strip().splitlines()[-1])
    assert out["explore"]["executions"] == 1
    assert (kind, doc["detail"]) in {(v["kind"], v["detail"]) for v in out["explore"]["violations"]}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", sorted(FOUND))
def test_scheme_makes_the_race_file_clean(name: str, scheme: str) -> None:
    """Every schedule within :data:`CLEAN_BOUND` preemptions (naive: no dependence
    assumed): the scheme leaves only what anon_vma itself shows on the file (a model
    limit both designs share) and what :data:`LEFT` says it does not fix."""
    fixes = ",".join(f for f in (FIXES[name], scheme) if f)
    found = _violations(POC / name, f"cow_context_poc[{fixes}]", True, CLEAN_BOUND)
    baseline = _violations(POC / name, "anon_vma", True, CLEAN_BOUND)
    left = {k for k, d in found - baseline}
    assert left == LEFT.get((name, scheme), set()), sorted(found - baseline)
    race_kind, fragment = FOUND[name][1], FOUND[name][2]
    if race_kind not in LEFT.get((name, scheme), set()):
        assert not any(k == race_kind and fragment in d for k, d in found)


def test_the_schemes_leave_the_sequential_model_alone() -> None:
    """A scheme only adds locking: sequentially its walks find what the PoC's find."""
    path = POC / "poc-dynarray-shift.yaml"
    runs = {
        d: run_scenario(load_scenario(path), d, check=False)
        for d in (
            "cow_context_poc[no_exclusive_abort,dynarray_insert]",
            "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_rwsem]",
            "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_seqcount]",
            "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_refcount]",
            "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_ranged]",
            "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_tolerant]",
        )
    }
    graphs = {d: r.machine.rmap.graph() for d, r in runs.items()}
    assert len({repr(g) for g in graphs.values()}) == 1


def test_scheme_names() -> None:
    assert get_design("cow_context_poc[stab_seqcount,no_exclusive_abort]").name == (
        "cow_context_poc[no_exclusive_abort,stab_seqcount]"
    )
    with pytest.raises(KeyError, match="exclusive"):
        get_design("cow_context_poc[stab_rwsem,stab_seqcount]")
    with pytest.raises(KeyError, match="exclusive"):
        get_design("cow_context_poc[stab_refcount,stab_rwsem]")
    with pytest.raises(KeyError, match="exclusive"):
        get_design("cow_context_poc[stab_ranged,stab_tolerant]")
    assert get_design("cow_context_poc[stab_tolerant,no_exclusive_abort]").name == (
        "cow_context_poc[no_exclusive_abort,stab_tolerant]"
    )
    with pytest.raises(KeyError, match="stab_rwsem"):
        get_design("cow_context_poc[stab_nothing]")


def test_seqcount_retries_are_in_the_ledger() -> None:
    """A walk that saw a context's count move runs again; each retry is a
    ``cow_context.seqcount`` hold in mode ``retry`` (the scheme's cost)."""
    path = POC / "poc-dynarray-shift.yaml"
    design = "cow_context_poc[no_exclusive_abort,dynarray_insert,stab_seqcount]"
    program = ScenarioProgram(load_scenario(path), design)
    retried = []

    def choose(ex: Any, enabled: list[int]) -> int:
        # the walker first, then the mover while the walker is mid-walk
        names = [ex.threads[i].name for i in enabled]
        steps = len(ex.trace)
        want = "mover" if 12 <= steps < 400 else "walker"
        return enabled[names.index(want)] if want in names else enabled[0]

    ex = program.start()
    ex.run(choose)
    assert program.run is not None
    for key, stats in program.run.machine.ledger.locks.items():
        if key[0] == "cow_context.seqcount" and key[1] == "retry":
            retried.append(stats.acquisitions)
    assert retried == [1], program.run.machine.ledger.locks.keys()
    assert not ex.violations
