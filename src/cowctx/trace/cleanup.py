"""Leaving nothing behind: the recorder's descendants and a watchdog that cleans up
after a recorder killed outright (SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from cowctx.linux.tracefs import TraceError
from cowctx.trace.instance import Instance

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that end a recording cleanly."""


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/*/stat), parents first."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_descendants() -> None:
    """SIGKILL and reap every process this recorder started (directly or not: as a
    subreaper it inherits every orphan of the tree), until none is left."""
    me = os.getpid()
    for _ in range(100):
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
    raise TraceError("descendants of the recorder survive SIGKILL")


def start_watchdog(root: Path, names: list[str], events: dict[str, str | None]) -> int:
    """A detached process that cleans up if this recorder dies without doing so
    (SIGKILL): it kills the target's process group and removes the instances.
    Returns the pipe to it: ``T <pid>`` names the target, ``done`` dismisses it."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - child
        try:
            os.close(w)
            if os.fork() == 0:
                _watchdog(r, root, names, events)
        finally:
            os._exit(0)
    os.close(r)
    os.waitpid(first, 0)
    return w


def _watchdog(
    fd: int, root: Path, names: list[str], events: dict[str, str | None]
) -> None:  # pragma: no cover - child
    """The watchdog's body (never returns): wait for EOF on ``fd``."""
    try:
        os.setsid()
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        os.closerange(0, fd)
        os.closerange(fd + 1, 1 << 16)
        buf = b""
        while True:
            data = os.read(fd, 256)
            if not data:
                break
            buf += data
        if b"done" in buf:
            return
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith("T "):
                pgid = int(line[2:])
                for _ in range(200):
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
        for name in names:
            inst = Instance(root, name, events, 0)
            inst.created = inst.path.exists()
            with contextlib.suppress(Exception):
                inst.remove()
    finally:
        os._exit(0)
