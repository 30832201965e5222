"""A Chrome/Perfetto trace-event file of one simulated run: one track per CPU
(operations as slices, spin waits nested in them), one track per thread for the
time it sleeps on a lock (the waits as slices).  JSON Object Format, timestamps
in microseconds (the format's unit), ``displayTimeUnit`` ns."""

from __future__ import annotations

import json
from typing import Any

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
        self._add(
            {
                "name": label,
                "cat": "op",
                "ph": "X",
                "ts": start / 1000,
                "dur": (end - start) / 1000,
                "pid": CPU_PID,
                "tid": cpu,
                "args": {"thread": thread},
            }
        )

    def wait(self, cpu: int, thread: str, label: str, start: int, end: int) -> None:
        self.cpus.add(cpu)
        self._add(
            {
                "name": label,
                "cat": "lock wait (spin)",
                "ph": "X",
                "ts": start / 1000,
                "dur": (end - start) / 1000,
                "pid": CPU_PID,
                "tid": cpu,
                "args": {"thread": thread},
            }
        )

    def sleep(self, thread: str, label: str, start: int, end: int) -> None:
        tid = self.threads.setdefault(thread, len(self.threads))
        self._add(
            {
                "name": label,
                "cat": "lock wait (sleep)",
                "ph": "X",
                "ts": start / 1000,
                "dur": (end - start) / 1000,
                "pid": SLEEP_PID,
                "tid": tid,
                "args": {"thread": thread},
            }
        )

    def to_json(self, title: str) -> str:
        meta: list[dict[str, Any]] = [
            {
                "name": "process_name",
                "ph": "M",
                "pid": CPU_PID,
                "tid": 0,
                "args": {"name": f"{title}: CPUs"},
            },
            {
                "name": "process_name",
                "ph": "M",
                "pid": SLEEP_PID,
                "tid": 0,
                "args": {"name": "threads asleep on a lock"},
            },
        ]
        for cpu in sorted(self.cpus):
            meta.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": CPU_PID,
                    "tid": cpu,
                    "args": {"name": f"CPU {cpu}"},
                }
            )
        for name, tid in sorted(self.threads.items(), key=lambda kv: kv[1]):
            meta.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": SLEEP_PID,
                    "tid": tid,
                    "args": {"name": name},
                }
            )
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
