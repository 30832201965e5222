"""Who tears an mm down: the replay follows the kernel's frees (docs/record-replay.md).

The fixture is a chromium headless recording that failed the live test: the
crashpad launcher (pid 8062) vforks 8063, which execs; 8062 is released by the
child's exec_mmap() (mm_release()), munmaps the child's stack and exits before
8063's sched_process_exec is recorded, and 8063's mmput() of the old mm came first:
the old mm's 244 anon_vmas and 487 chains are freed by 8062's exit, after the exec
record.  It also has one __anon_vma_prepare() race lost by a thread (8076).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cowctx.trace import traceformat
from cowctx.trace.events import Record, Recording
from cowctx.trace.kernel_counts import LOST_RACE, KernelCounts
from cowctx.trace.mm_keys import MmKeys, teardowns
from cowctx.trace.replay import Replay, replay

TRACES = Path(__file__).parent / "fixtures" / "traces"
KEPT = TRACES / "large" / "chromium-deferred-mmput.trace"
PARENT, CHILD = 8062, 8063
RMAP = ("unlink_anon_vmas", "__put_anon_vma")


@pytest.fixture(scope="module")
def kept() -> Recording:
    return traceformat.read(KEPT)


@pytest.fixture(scope="module")
def launch(kept: Recording) -> Recording:
    """The recording up to the first moment after the first crashpad launch (and
    the browser's next syscall) where no task is inside a syscall: a replay of it is
    exact and takes a second."""
    after = _reader_exit(kept)
    pending: set[int] = set()
    for i, r in enumerate(kept.records):
        if r[0] == "enter":
            pending.add(r[2])
        elif r[0] in ("exit", "exit_task"):
            pending.discard(r[2])
        elif r[0] == "exec":
            pending -= {r[2], r[3]}
        if i > after and not pending and kept.records[i + 1][0] != "kmem":
            return _variant(kept, kept.records[: i + 1])
    raise AssertionError("no quiet moment")


def _index(rec: Recording, kind: str, pid: int) -> int:
    return next(i for i, r in enumerate(rec.records) if r[0] == kind and r[2] == pid)


def _teardown_frees(rec: Recording) -> list[int]:
    """Indices of the parent's rmap frees after its sched_process_exit (its
    exit_mmap())."""
    start = _index(rec, "exit_task", PARENT)
    return [
        i
        for i, r in enumerate(rec.records)
        if i > start and r[0] == "kmem" and r[2] == PARENT and r[3] == 0 and r[5] in RMAP
    ]


def _reader_exit(rec: Recording) -> int:
    """The browser's first syscall exit after the parent's teardown."""
    root, last = rec.header["root_pid"], _teardown_frees(rec)[-1]
    return next(
        i for i, r in enumerate(rec.records) if i > last and r[0] == "exit" and r[2] == root
    )


def _variant(rec: Recording, records: list[Record]) -> Recording:
    header = {**rec.header, "events": len(records)}
    return Recording(header, records)


def _moved(rec: Recording, before: int, pid: int | None = None) -> Recording:
    """The parent's teardown frees moved to just before record index ``before``
    (under ``pid`` if given)."""
    frees = set(_teardown_frees(rec))
    moved = [list(rec.records[i]) for i in sorted(frees)]
    if pid is not None:
        for r in moved:
            r[2] = pid
    out: list[Record] = []
    for i, r in enumerate(rec.records):
        if i == before:
            out.extend(moved)
        if i not in frees:
            out.append(r)
    return _variant(rec, out)


def _deferred(r: dict[str, Any]) -> list[tuple[int, int]]:
    return [(d["mm_of"], d["torn_down_by"]) for d in r["replay"]["deferred_teardowns"]]


def test_the_kept_recording_replays_exactly(kept: Recording) -> None:
    r = replay(kept, "anon_vma", str(KEPT))
    assert r["agree"] is True, r["first_difference"]
    assert r["first_difference"] is None
    for kind in ("anon_vma", "anon_vma_chain"):
        assert r["final"]["objects"][kind] == r["kernel"][kind]
    # both crashpad launches: the second is the handler's own vfork + exec
    assert _deferred(r) == [(CHILD, PARENT), (8067, 8064)]
    first = r["replay"]["deferred_teardowns"][0]
    assert first["event"] == "execve" and first["how"] == "its exit"
    assert first["record"] == _index(kept, "exec", CHILD) + 2
    assert first["torn_down_at_record"] == _teardown_frees(kept)[0] + 2
    assert (
        r["replay"]["notes"][
            f"old mm of pid {CHILD} (execve) torn down later by pid {PARENT} (its exit)"
        ]
        == 1
    )
    assert r["kernel"]["other"][LOST_RACE] == 1


def test_the_kernel_names_the_parent_as_the_teardown(launch: Recording) -> None:
    """mm_keys reads it from the recording alone: the chains the child allocated in the
    shared mm before its exec, the parent's own, all freed by the parent at last."""
    keys = MmKeys()
    key = None
    for idx, r in enumerate(launch.records):
        if r[0] == "exec" and r[2] == CHILD:
            key = keys.key_of(CHILD)
            assert key == keys.key_of(PARENT)  # CLONE_VM: one mm
        keys.feed(idx, r)
    assert key is not None
    t = teardowns(launch)[key]
    assert t.pid == PARENT and t.index == _teardown_frees(launch)[-1]


def test_frees_removed_are_a_disagreement(launch: Recording) -> None:
    """Without the parent's frees the kernel shows no teardown of the old mm at all:
    the model tears it down at the exec, and the diff names that execve."""
    frees = set(_teardown_frees(launch))
    broken = _variant(launch, [r for i, r in enumerate(launch.records) if i not in frees])
    r = replay(broken, "anon_vma")
    assert r["agree"] is False
    first = r["first_difference"]
    assert (first["pid"], first["event"]) == (CHILD, "execve()")
    assert first["kernel"].get("anon_vma.freed", 0) == 0
    assert first["model"]["anon_vma.freed"] == 244
    assert _deferred(r) == []


def test_a_model_that_does_not_defer_is_caught(
    launch: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The totals agree either way (the same objects are freed); the per-segment diff
    is what catches the teardown in the wrong task."""
    monkeypatch.setattr(Replay, "_hold_if_torn_down_later", lambda *a: None)
    r = replay(launch, "anon_vma")
    assert r["final"]["objects"]["anon_vma"] == r["kernel"]["anon_vma"]
    assert r["agree"] is False
    first = r["first_difference"]
    assert (first["pid"], first["event"]) == (CHILD, "execve()")
    assert first["model"]["anon_vma_chain.freed"] == 487


def test_teardown_before_the_exec_record_puts_the_exec_early(launch: Recording) -> None:
    """The parent's exit_mmap() recorded before the child's sched_process_exec: the
    child's exec_mmap() put is done there, and the teardown counts in the parent."""
    exec_at = _index(launch, "exec", CHILD)
    r = replay(_moved(launch, exec_at), "anon_vma")
    assert r["agree"] is True, r["first_difference"]
    assert _deferred(r)[0] == (CHILD, PARENT)


def test_teardown_in_the_exec_is_not_deferred(launch: Recording) -> None:
    """The same frees inside the child's execve (its mmput() was the last one): the
    model's own order, nothing deferred."""
    exec_at = _index(launch, "exec", CHILD)
    r = replay(_moved(launch, exec_at, pid=CHILD), "anon_vma")
    assert r["agree"] is True, r["first_difference"]
    assert (CHILD, PARENT) not in _deferred(r)


def test_a_reference_held_by_another_task(launch: Recording) -> None:
    """The frees run later by a task that does not share the mm (a /proc reader's
    get_task_mm(), ptrace): held until then, counted in that task."""
    reader = launch.header["root_pid"]
    r = replay(_moved(launch, _reader_exit(launch) + 1, pid=reader), "anon_vma")
    assert r["agree"] is True, r["first_difference"]
    d = r["replay"]["deferred_teardowns"][0]
    assert (d["mm_of"], d["torn_down_by"]) == (CHILD, reader)
    assert d["how"] == "the mmput() of a reference it held"


def test_a_lost_prepare_race_is_withdrawn() -> None:
    """__anon_vma_prepare()'s loser frees its chain at its own call site; the pair is
    withdrawn.  The same objects freed by unlink_anon_vmas stay counted."""
    for site, expect in (("__anon_vma_prepare", 0), ("unlink_anon_vmas", 1)):
        k = KernelCounts()
        k.account(True, "anon_vma_chain", "__anon_vma_prepare", 0xA0, True, 7)
        k.account(True, "anon_vma", "__anon_vma_prepare", 0xB0, True, 7)
        k.account(False, "anon_vma", "__put_anon_vma", 0xB0, True, 7)
        k.account(False, "anon_vma_chain", site, 0xA0, True, 7)
        t = k.totals()
        assert t["anon_vma"] == {"allocated": expect, "freed": expect, "live": 0}
        assert t["anon_vma_chain"] == {"allocated": expect, "freed": expect, "live": 0}
        assert k.other[LOST_RACE] == 1 - expect


def test_the_lost_race_counted_is_a_disagreement(kept: Recording) -> None:
    records = list(kept.records)
    (i,) = [
        i
        for i, r in enumerate(records)
        if r[0] == "kmem" and r[3] == 0 and r[5] == "__anon_vma_prepare"
    ]
    records[i] = [*records[i][:5], "unlink_anon_vmas", records[i][6]]
    r = replay(_variant(kept, records), "anon_vma")
    assert r["agree"] is False
    assert r["first_difference"]["pid"] == records[i][2]
    assert r["first_difference"]["kernel"]["anon_vma_chain.allocated"] == 1


def test_a_hold_never_dropped_is_put_at_the_end_and_differs(
    launch: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay that never sees the holder's frees (here: it ignores them) still
    frees the held mm at the end, in a segment of its own, and disagrees."""
    monkeypatch.setattr(Replay, "_chain_freed", lambda *a: None)
    run = Replay(launch, "anon_vma")
    run.run()
    r = run.result()
    assert r["final"]["objects"]["anon_vma"]["live"] == r["kernel"]["anon_vma"]["live"]
    assert r["agree"] is False
    assert r["replay"]["notes"][f"old mm of pid {CHILD} (execve) held, never torn down"] == 1
    end = run.segments[-1]
    assert end.what == "mm held after execve, never torn down"
    assert end.model["anon_vma.freed"] == 244 and not end.kernel
