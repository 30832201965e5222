"""A Chrome/Perfetto trace-event file of one simulated run: one track per CPU
(operations as slices, spin waits nested in them), one track per thread for the
time it sleeps on a lock (the waits as slices).  JSON Object Format, timestamps
in microseconds (the format's unit), ``displayTimeUnit`` ns."""

from __future__ import annotations

import json
from typing import Any

from cowctx.trace_event import complete, process_name, thread_name

CPU_PID = 1
SLEEP_PID = 2


class TraceLog:
    """Collects slices; at most ``limit`` events (the rest are counted, not kept)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.events: list[dict[str, Any]] = []
        self.limit = limit
        self.dropped = 0
        self.cpus: set[int] = set()
        self.threads: dict[str, int] = {}

    def _add(self, ev: dict[str, Any]) -> None:
        if len(self.events) >= self.limit:
            self.dropped += 1
            return
        self.events.append(ev)

    def slice(self, cpu: int, thread: str, label: str, start: int, end: int) -> None:
        self.cpus.add(cpu)
        self._add(_span(label, "op", start, end, CPU_PID, cpu, thread))

    def wait(self, cpu: int, thread: str, label: str, start: int, end: int) -> None:
        self.cpus.add(cpu)
        self._add(_span(label, "lock wait (spin)", start, end, CPU_PID, cpu, thread))

    def sleep(self, thread: str, label: str, start: int, end: int) -> None:
        tid = self.threads.setdefault(thread, len(self.threads))
        self._add(_span(label, "lock wait (sleep)", start, end, SLEEP_PID, tid, thread))

    def to_json(self, title: str) -> str:
        meta: list[dict[str, Any]] = [
            process_name(CPU_PID, f"{title}: CPUs"),
            process_name(SLEEP_PID, "threads asleep on a lock"),
        ]
        meta += [thread_name(CPU_PID, cpu, f"CPU {cpu}") for cpu in sorted(self.cpus)]
        meta += [
            thread_name(SLEEP_PID, tid, name)
            for name, tid in sorted(self.threads.items(), key=lambda kv: kv[1])
        ]
        # a spin wait starts inside its op's slice and must sort after it
        body = sorted(self.events, key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
        return json.dumps(
            {
                "traceEvents": meta + body,
                "displayTimeUnit": "ns",
                "otherData": {"dropped_events": self.dropped},
            },
            separators=(",", ":"),
        )


def _span(
    label: str, cat: str, start: int, end: int, pid: int, tid: int, thread: str
) -> dict[str, Any]:
    """A slice from ``start`` to ``end`` (simulated ns; the format counts us)."""
    return complete(label, cat, start / 1000, (end - start) / 1000, pid, tid, {"thread": thread})
