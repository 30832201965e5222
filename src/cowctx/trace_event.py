"""Chrome/Perfetto trace-event records (the JSON Object Format's events), for the
explorer's swimlanes and the contention simulation's timelines: one spelling of
the format's fields, so both files open the same way in ui.perfetto.dev."""

from __future__ import annotations

from typing import Any


def complete(
    name: str, cat: str, ts: float, dur: float, pid: int, tid: int, args: dict[str, Any]
) -> dict[str, Any]:
    """A complete event (``ph: X``): a slice of ``dur`` from ``ts`` (microseconds)."""
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": ts,
        "dur": dur,
        "pid": pid,
        "tid": tid,
        "args": args,
    }


def process_name(pid: int, name: str) -> dict[str, Any]:
    """The metadata event that names a process (a group of tracks)."""
    return {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}


def thread_name(pid: int, tid: int, name: str) -> dict[str, Any]:
    """The metadata event that names a thread (one track)."""
    return {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
