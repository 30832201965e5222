"""A private tracefs instance with a set of events, read through its trace_pipe
(reference/kernel-oracle.md: its own buffer, overwrite off so that the lost-event
counters mean something, global clock, unhashed pointers)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cowctx.linux.tracefs import TraceError, lost_events, read_pipe_lines, tear_down_instance
from cowctx.linux.tracefs import write_file as _write


class Instance:
    """One private tracefs instance with a set of events; removed by :meth:`remove`."""

    def __init__(
        self, root: Path, name: str, events: dict[str, str | None], buffer_kb: int
    ) -> None:
        self.path = root / "instances" / name
        self.events = events
        self.buffer_kb = buffer_kb
        self.pipe: int | None = None
        self._partial = b""
        self.created = False

    def create(self) -> None:
        # marked first: a signal between mkdir and the mark must not leak the instance
        # (the name holds this process's pid, so nothing else owns it)
        self.created = True
        self.path.mkdir()
        p = self.path
        _write(p / "tracing_on", "0")  # a new instance starts with tracing on
        _write(p / "buffer_size_kb", str(self.buffer_kb))
        _write(p / "options" / "overwrite", "0")
        _write(p / "options" / "hash-ptr", "0")
        _write(p / "trace_clock", "global")
        for event, filt in self.events.items():
            d = p / "events" / event
            if not d.is_dir():
                raise TraceError(f"tracepoint {event} is missing")
            if filt is not None:
                _write(d / "filter", filt)
        self.pipe = os.open(p / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def follow(self, pid: int) -> None:
        """Record ``pid`` and, through event-fork, every task it creates."""
        _write(self.path / "options" / "event-fork", "1")
        _write(self.path / "set_event_pid", str(pid))

    def enable(self) -> None:
        for event in self.events:
            _write(self.path / "events" / event / "enable", "1")
        _write(self.path / "tracing_on", "1")

    def stop_tracing(self) -> None:
        """``tracing_on`` 0: nothing more is written, what is buffered stays readable."""
        _write(self.path / "tracing_on", "0")

    def read(self) -> list[str]:
        """Complete lines available now."""
        if self.pipe is None:
            return []
        lines, self._partial = read_pipe_lines(self.pipe, self._partial, 1 << 20)
        return lines

    def lost(self) -> int:
        return lost_events(self.path)

    def remove(self) -> None:
        """Tracing off, events off, pid filter cleared, instance removed; idempotent."""
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self.pipe)
            self.pipe = None
        if not self.created:
            return
        tear_down_instance(self.path, self.events)
        self.created = False
