"""Chromium headless, the real program `make demo` and `make bench` record: 28
processes, about 90 threads, some 100k records (docs/record-replay.md).

One place for its command line, for why this machine cannot record it, and for
recording it quietly (its output is not the demo's).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cowctx.trace import traceformat
from cowctx.trace.events import Recording
from cowctx.trace.recorder import record, recording_unavailable_reason

CHROMIUM = "chromium"


def chromium_argv(user_data_dir: Path) -> list[str]:
    """Chromium headless dumping an empty page; a fresh profile directory each time
    (the user's own profile would change what it does)."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={user_data_dir}",
        "--dump-dom",
        "about:blank",
    ]


def chromium_unavailable_reason() -> str | None:
    """Why chromium headless cannot be recorded here, or None."""
    reason = recording_unavailable_reason()
    if reason is not None:
        return reason
    if shutil.which(CHROMIUM) is None:
        return "chromium is not installed (make setup installs Debian's where it can)"
    return None


@contextmanager
def _quiet() -> Iterator[None]:
    """stdout and stderr to /dev/null for what runs inside (the recorded program
    inherits them): chromium prints the page and D-Bus complaints."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def record_chromium(out: Path) -> Recording:
    """Record chromium headless into ``out`` (see :func:`chromium_unavailable_reason`
    first); raises what :func:`cowctx.trace.recorder.record` raises."""
    with tempfile.TemporaryDirectory(prefix="cowctx-chromium-") as profile, _quiet():
        rec = record(chromium_argv(Path(profile)))
    traceformat.write(out, rec)
    return rec
