"""Replays of committed recordings (no kernel needed) and the checks on a replay.

The fixtures in tests/fixtures/traces/ were recorded on the reference machine with
``cowctx record``; each must replay with the anon_vma design's counts equal to the
kernel's, and every way a recording can be wrong must be caught.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cowctx.cli import main
from cowctx.designs.anon_vma.rmap import AnonVmaRmap
from cowctx.linux.tracefs import RMAP_ALLOC_SITES
from cowctx.trace import traceformat
from cowctx.trace.events import Recording
from cowctx.trace.replay import replay

TRACES = Path(__file__).parent / "fixtures" / "traces"
FIXTURES = sorted(TRACES.glob("*.trace"))


PRE_EXEC = "fault of the recorder's child before its exec (not the program's)"


def fixture(name: str) -> Path:
    return TRACES / f"{name}.trace"


def test_fixtures_cover_the_program_kinds() -> None:
    names = {p.stem for p in FIXTURES}
    assert {
        "sh-pipeline",
        "shell-script",
        "gcc",
        "make",
        "tar",
        "git",
        "python-fork",
        "python-threads",
        "python-mmap",
        "python-mlock",
        "python-thread-exec",
        "static-pie",
    } <= names


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_replays_exactly(path: Path) -> None:
    rec = traceformat.read(path)
    assert rec.header["flags"] == []
    r = replay(rec, "anon_vma", str(path))
    kernel, model = r["kernel"], r["final"]["objects"]
    for kind in ("anon_vma", "anon_vma_chain"):
        assert kernel[kind]["allocated"] > 0, "a recording without rmap objects proves nothing"
        assert model[kind] == kernel[kind], (kind, r["first_difference"])
    assert r["agree"] is True
    assert r["replay"]["tasks_alive_at_end"] == []
    assert r["replay"]["ops"]["exec"] >= 1
    # every record was applied: the only ones left are the recorder's own child's
    assert set(r["replay"]["notes"]) <= {PRE_EXEC}


def test_fixtures_exercise_fork_vfork_and_threads() -> None:
    ops = {p.stem: replay(traceformat.read(p), "anon_vma")["replay"]["ops"] for p in FIXTURES}
    assert ops["python-fork"]["fork"] == 3
    assert ops["gcc"]["clone_vm"] >= 2  # posix_spawn: CLONE_VM | CLONE_VFORK
    assert ops["python-threads"]["clone_vm"] == 3
    assert ops["python-mmap"]["mremap"] >= 1 and ops["python-mmap"]["madvise"] >= 1
    assert ops["python-mlock"]["mlock"] == 3 and ops["python-mlock"]["mlockall"] == 1
    assert ops["python-thread-exec"]["exec"] == 2  # the second by a thread: de_thread()


def test_cli_replay_all_designs_json() -> None:
    res = CliRunner().invoke(main, ["replay", str(fixture("sh-pipeline")), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["design"] for r in rows) == ["anon_vma", "cow_context", "cow_context_poc"]
    av = next(r for r in rows if r["design"] == "anon_vma")
    assert av["agree"] is True
    assert av["kernel"]["anon_vma"] == av["final"]["objects"]["anon_vma"]
    for r in rows:
        assert {"final", "locks", "walks", "kernel", "agree"} <= set(r)
        assert r["final"]["objects"]["vm_area_struct"]["live"] == 0


def test_replay_is_deterministic() -> None:
    rec = traceformat.read(fixture("python-fork"))
    for design in ("anon_vma", "cow_context"):
        a = json.dumps(replay(rec, design), sort_keys=True)
        b = json.dumps(replay(rec, design), sort_keys=True)
        assert a == b


def test_write_read_roundtrip_is_byte_identical(tmp_path: Path) -> None:
    rec = traceformat.read(fixture("make"))
    traceformat.write(tmp_path / "a.trace", rec)
    again = traceformat.read(tmp_path / "a.trace")
    traceformat.write(tmp_path / "b.trace", again)
    assert again.records == rec.records and again.header == rec.header
    assert (tmp_path / "a.trace").read_bytes() == (tmp_path / "b.trace").read_bytes()


# --- a replay that is wrong must be caught ------------------------------------------


def _without(rec: Recording, index: int) -> Recording:
    records = rec.records[:index] + rec.records[index + 1 :]
    return Recording({**rec.header, "events": len(records)}, records)


def _write(tmp_path: Path, rec: Recording, name: str = "t.trace") -> Path:
    path = tmp_path / name
    traceformat.write(path, rec)
    return path


def test_removed_anon_vma_event_exits_1_naming_where(tmp_path: Path) -> None:
    rec = traceformat.read(fixture("sh-pipeline"))
    allocs = [
        i
        for i, r in enumerate(rec.records)
        if r[0] == "kmem" and r[3] == 1 and r[4] == "anon_vma" and r[5] in RMAP_ALLOC_SITES
    ]
    victim = allocs[len(allocs) // 2]
    pid = rec.records[victim][2]
    broken = _without(rec, victim)
    r = replay(broken, "anon_vma")
    assert r["agree"] is False
    first = r["first_difference"]
    assert first["pid"] == pid
    assert first["record"] <= victim + 2  # the segment opened at or before the event
    assert (
        first["model"].get("anon_vma.allocated", 0) - first["kernel"].get("anon_vma.allocated", 0)
        == 1
    )
    res = _replay_cli(_write(tmp_path, broken))
    assert res.exit_code == 1, res.output
    assert f"'pid': {pid}" in res.stderr


def test_perturbed_fork_in_the_model_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose fork forgets the child's own anon_vma (anon_vma_clone only)."""

    def broken_fork(self: AnonVmaRmap, vma: Any, pvma: Any) -> None:
        self.anon_vma_clone(vma, pvma)

    monkeypatch.setattr(AnonVmaRmap, "anon_vma_fork", broken_fork)
    r = replay(traceformat.read(fixture("python-fork")), "anon_vma")
    assert r["agree"] is False
    assert r["first_difference"]["event"] in ("clone()", "clone3()", "fork()")


def test_perturbed_exec_layout_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exec that forgets the bss (no vm_brk_flags): the stores into it land nowhere."""
    from cowctx.mm import exec_elf

    monkeypatch.setattr(exec_elf, "vm_brk_flags", lambda *a: None)
    r = replay(traceformat.read(fixture("sh-pipeline")), "anon_vma")
    assert r["agree"] is False


# --- malformed and flagged files ----------------------------------------------------


def _header_and_records(path: Path) -> tuple[dict[str, Any], list[str]]:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return json.loads(lines[0]), lines[1:]


def _raw(tmp_path: Path, header: dict[str, Any], lines: list[str]) -> Path:
    path = tmp_path / "raw.trace"
    text = "\n".join([json.dumps(header), *lines]) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _replay_cli(path: Path) -> Any:
    return CliRunner().invoke(main, ["replay", str(path), "--design", "anon_vma"])


def test_not_gzip_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "x.trace"
    path.write_text("hello")
    res = _replay_cli(path)
    assert res.exit_code == 2 and "not a gzip'd trace file" in res.stderr


def test_wrong_version_exits_2(tmp_path: Path) -> None:
    header, lines = _header_and_records(fixture("git"))
    res = _replay_cli(_raw(tmp_path, {**header, "version": 99}, lines))
    assert res.exit_code == 2 and "'version'" in res.stderr


def test_bad_record_field_exits_2_naming_line_and_field(tmp_path: Path) -> None:
    header, lines = _header_and_records(fixture("git"))
    rec = json.loads(lines[10])
    rec[1] = "soon"
    lines[10] = json.dumps(rec)
    res = _replay_cli(_raw(tmp_path, header, lines))
    assert res.exit_code == 2
    assert "raw.trace:12" in res.stderr and "ts_ns" in res.stderr


def test_unknown_record_kind_and_event_count_exit_2(tmp_path: Path) -> None:
    header, lines = _header_and_records(fixture("git"))
    res = _replay_cli(_raw(tmp_path, header, [*lines, '["teleport", 1, 2]']))
    assert res.exit_code == 2 and "unknown record kind 'teleport'" in res.stderr
    res = _replay_cli(_raw(tmp_path, header, lines[:-1]))
    assert res.exit_code == 2 and "'events'" in res.stderr


def test_exec_of_an_unrecorded_image_exits_2(tmp_path: Path) -> None:
    header, lines = _header_and_records(fixture("git"))
    res = _replay_cli(_raw(tmp_path, {**header, "images": {}}, lines))
    assert res.exit_code == 2 and "no image recorded" in res.stderr


def test_flagged_recording_exits_3_saying_why(tmp_path: Path) -> None:
    header, lines = _header_and_records(fixture("git"))
    why = "lost-events: the rec instance's ring buffer dropped 7 events"
    res = _replay_cli(_raw(tmp_path, {**header, "flags": [why]}, lines))
    assert res.exit_code == 3
    assert why in res.stderr
