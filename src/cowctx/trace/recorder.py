"""``cowctx record``: run a command tree under a private tracefs recording.

Two private instances (reference/kernel-oracle.md, src/cowctx/linux/tracefs.py):

- ``cowctx-<pid>-rec`` follows the target tree (``set_event_pid`` + ``options/event-fork``):
  raw syscalls of the address-space, lifecycle and fd families, ``task_newtask``,
  ``sched_process_fork/exec/exit``, user faults and kernel faults on user addresses,
  ``mmap/vm_unmapped_area`` and the anon_vma / anon_vma_chain kmem events;
- ``cowctx-<pid>-kmem`` has no pid filter: the anon_vma / anon_vma_chain frees that run in
  another task (kcompactd, a task dropping the last reference) and ``sched_process_free``
  (an RCU callback, in whatever task runs it).

The target is started gated: a child waits on a pipe until the instance is armed with its
pid, then execs, so its first instruction is recorded.  It runs with ADDR_NO_RANDOMIZE
(``setarch -R``) so that exec's own placements (load bias, stack top) are the kernel's
fixed ones, which the replay recomputes from the ELF headers.  The recorder is a child
subreaper: it waits for every descendant, and on SIGINT/SIGTERM/SIGHUP (or any error)
kills the ones still running, then removes both instances.  Instances left by a recorder
that was killed outright are removed by the next run (``remove_stale_instances``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import time
from collections.abc import Callable

from cowctx.linux.tracefs import (
    EVENT_FILTER,
    INSTANCE_PREFIX,
    TraceError,
    remove_stale_instances,
    tracefs_root,
)
from cowctx.trace import syscalls
from cowctx.trace.assemble import assemble
from cowctx.trace.cleanup import SIGNALS, kill_descendants, start_watchdog
from cowctx.trace.events import Recording
from cowctx.trace.instance import Instance

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
ADDR_NO_RANDOMIZE = 0x0040000
TASK_SIZE_FILTER = "address < 0x800000000000"

REC_EVENTS: dict[str, str | None] = {
    "raw_syscalls/sys_enter": syscalls.syscall_filter(),
    "raw_syscalls/sys_exit": syscalls.syscall_filter(),
    "task/task_newtask": None,
    "sched/sched_process_fork": None,
    "sched/sched_process_exec": None,
    "sched/sched_process_exit": None,
    "exceptions/page_fault_user": None,
    "exceptions/page_fault_kernel": TASK_SIZE_FILTER,
    "mmap/vm_unmapped_area": None,
    "kmem/kmem_cache_alloc": EVENT_FILTER,
    "kmem/kmem_cache_free": EVENT_FILTER,
}
"""The target tree's instance: event -> filter."""
KMEM_EVENTS: dict[str, str | None] = {
    "kmem/kmem_cache_free": EVENT_FILTER,
    "sched/sched_process_free": None,
}
"""The unfiltered instance: frees that may run in another task."""


class Interrupted(Exception):
    """The recorder got SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _gated_child(path: str, argv: list[str], gate: int) -> None:  # pragma: no cover - child
    """In the forked child: wait for the gate, then exec the target (never returns)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.personality(libc.personality(0xFFFFFFFF) | ADDR_NO_RANDOMIZE)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        if os.read(gate, 1) == b"g":
            os.execv(path, argv)
    finally:
        os._exit(127)


def record(
    argv: list[str],
    buffer_kb: int = 4096,
    progress: Callable[[str], None] | None = None,
) -> Recording:
    """Run ``argv`` and its descendants under recording; returns the recording.

    Raises :class:`Interrupted` on SIGINT/SIGTERM/SIGHUP after cleaning up,
    :class:`~cowctx.linux.tracefs.TraceError` when tracefs cannot be used.
    """
    path = shutil.which(argv[0])
    if path is None:
        raise FileNotFoundError(f"command not found: {argv[0]}")
    root = tracefs_root()
    remove_stale_instances(root)
    me = os.getpid()
    rec = Instance(root, f"{INSTANCE_PREFIX}{me}-rec", REC_EVENTS, buffer_kb)
    kmem = Instance(root, f"{INSTANCE_PREFIX}{me}-kmem", KMEM_EVENTS, max(1024, buffer_kb // 4))

    def on_signal(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    watchdog = start_watchdog(root, [rec.path.name, kmem.path.name], {**REC_EVENTS, **KMEM_EVENTS})
    old = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    lines_rec: list[str] = []
    lines_kmem: list[str] = []
    child = -1
    status = None
    try:
        rec.create()
        kmem.create()
        gate_r, gate_w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - child
            os.close(gate_w)
            os.close(watchdog)
            _gated_child(path, argv, gate_r)
        os.close(gate_r)
        os.write(watchdog, f"T {child}\n".encode())
        try:
            rec.follow(child)
            kmem.enable()
            rec.enable()
            os.write(gate_w, b"g")
        finally:
            os.close(gate_w)
        started = time.monotonic()
        last_note = started
        busy = True
        while busy:
            pipes = [i.pipe for i in (rec, kmem) if i.pipe is not None]
            select.select(pipes, [], [], 0.05)
            lines_rec.extend(rec.read())
            lines_kmem.extend(kmem.read())
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    busy = False
                    break
                if pid == 0:
                    break
                if pid == child:
                    status = os.waitstatus_to_exitcode(st)
            now = time.monotonic()
            if progress is not None and now - last_note >= 1.0:
                last_note = now
                progress(f"recording: {now - started:.0f}s, {len(lines_rec)} events")
        time.sleep(0.02)  # the last frees (RCU callbacks) of the tree
        rec.stop_tracing()
        kmem.stop_tracing()
        lines_rec.extend(rec.read())
        lines_kmem.extend(kmem.read())
        lost = {"rec": rec.lost(), "kmem": kmem.lost()}
    finally:
        with contextlib.suppress(Exception):
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            if child > 0:
                kill_descendants()
        finally:
            try:
                rec.remove()
            finally:
                kmem.remove()
                with contextlib.suppress(OSError):
                    os.write(watchdog, b"done\n")
                os.close(watchdog)
                libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
                for sig, handler in old.items():
                    signal.signal(sig, handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return assemble(argv, path, child, status, lost, lines_rec, lines_kmem)


def recording_unavailable_reason() -> str | None:
    """Why this machine cannot record (no root, no tracefs, a missing tracepoint), or None."""
    if os.geteuid() != 0:
        return "recording needs root (tracefs instances, set_event_pid)"
    try:
        root = tracefs_root()
    except TraceError as exc:
        return f"recording needs tracefs: {exc}"
    for event in {**REC_EVENTS, **KMEM_EVENTS}:
        if not (root / "events" / event).is_dir():
            return f"recording needs the tracepoint {event}, which this kernel lacks"
    return None
