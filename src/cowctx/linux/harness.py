"""The contention harness (harness.c): wake-up latency across CPUs and MADV_PAGEOUT
timed while another CPU forks in the same anon_vma hierarchy.

Built on first use with the machine's gcc into the worker's cache directory,
keyed by a hash of the source and flags (as :mod:`cowctx.linux.build` does for
the worker).  MADV_PAGEOUT needs swap: :class:`cowctx.linux.swap.SwapFile` (the
referee's) is on for the experiment and removed on every exit path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cowctx.linux.build import cache_dir

SOURCE = Path(__file__).with_name("harness.c")
CFLAGS = ("-O2", "-Wall", "-Wextra")


class HarnessError(RuntimeError):
    """The harness could not be built or failed."""


def ensure_harness() -> Path:
    h = hashlib.sha256(SOURCE.read_bytes() + "\0".join(CFLAGS).encode()).hexdigest()[:20]
    out = cache_dir() / f"harness-{h}"
    if out.exists():
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise HarnessError("gcc not found: the contention harness cannot be built")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([gcc, *CFLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError(f"{SOURCE}: gcc failed: {r.stderr.strip()}")
    tmp.replace(out)
    return out


def _run(args: list[str], timeout: float = 300.0) -> list[str]:
    r = subprocess.run(
        [str(ensure_harness()), *args], capture_output=True, text=True, timeout=timeout
    )
    if r.returncode != 0:
        raise HarnessError(f"harness {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout.split("\n")


def summary(xs: list[int]) -> dict[str, Any]:
    s = sorted(xs)
    if not s:
        return {"n": 0}

    def q(f: float) -> int:
        return s[min(len(s) - 1, max(0, -(-int(f * 1000) * len(s) // 1000) - 1))]

    med = statistics.median(s)
    return {
        "n": len(s),
        "median_ns": med,
        "p50_ns": q(0.5),
        "p99_ns": q(0.99),
        "max_ns": s[-1],
        "iqr_over_median": round((q(0.75) - q(0.25)) / med, 4) if med else 0.0,
    }


def wakeup_latency_ns(rounds: int = 2000, batches: int = 3) -> dict[str, Any]:
    """One-way latency of a pipe ping-pong between CPU 0 and CPU 1 (median of
    batch medians; every batch's summary kept as the noise record)."""
    meds = []
    out: dict[str, Any] = {"batches": []}
    for _ in range(batches):
        xs = [int(x) for x in _run(["wake", str(rounds)]) if x.strip()]
        s = summary(xs)
        out["batches"].append(s)
        meds.append(s["median_ns"])
    out["median_ns"] = statistics.median(meds)
    return out


def pageout_run(
    pages: int, sleepers: int, iters: int, forker: bool, cpu_pager: int, cpu_forker: int
) -> dict[str, Any]:
    """One harness pageout run (swap must be on): latencies and the forker's rate."""
    lines = [
        x
        for x in _run(
            [
                "pageout",
                str(pages),
                str(sleepers),
                str(iters),
                str(int(forker)),
                str(cpu_pager),
                str(cpu_forker),
            ]
        )
        if x.strip()
    ]
    tail = lines[-1].split()
    if tail[0] != "forks":
        raise HarnessError(f"harness pageout: unexpected output {lines[-1]!r}")
    lat = [int(x) for x in lines[:-1]]
    forks, elapsed = int(tail[1]), int(tail[2])
    return {
        "latency": summary(lat),
        "samples_ns": lat,
        "forks": forks,
        "elapsed_ns": elapsed,
        "forks_per_s": round(forks / (elapsed / 1e9), 1) if elapsed else 0.0,
    }


def pageout_experiment(
    pages: int = 64,
    sleepers: int = 16,
    iters: int = 300,
    repeats: int = 3,
    lock_events: bool = True,
) -> dict[str, Any]:
    """MADV_PAGEOUT latency alone, with a forker on the same CPU (1 CPU) and on the
    other CPU (2 CPUs); each ``repeats`` times, samples pooled.  With
    ``lock_events`` also each run's sleeping rwsem waits (:func:`lock_waits`):
    ``try_to_unmap()`` takes the anon_vma lock for reading *blocking*, so each
    READ wait of the pager is a walk that found the root write-held (or a writer
    queued) and slept: the event a reclaim try-lock would have failed on."""
    from cowctx.linux.swap import SwapFile

    configs = {"alone": (False, 0, 0), "1cpu": (True, 0, 0), "2cpu": (True, 1, 0)}
    out: dict[str, Any] = {"pages": pages, "sleepers": sleepers, "iters": iters}
    with SwapFile(4 * pages + 1024), _lock_tracing(lock_events) as traced:
        for name, (forker, cpu_pager, cpu_forker) in configs.items():
            runs = []
            waits = []
            for _ in range(repeats):
                runs.append(pageout_run(pages, sleepers, iters, forker, cpu_pager, cpu_forker))
                if traced is not None:
                    waits.append(traced())
            pooled = [x for r in runs for x in r["samples_ns"]]
            out[name] = {
                "latency": summary(pooled),
                "forks_per_s": [r["forks_per_s"] for r in runs],
                "runs": [r["latency"] for r in runs],
            }
            if traced is not None:
                out[name]["lock_waits"] = waits
    return out


@contextlib.contextmanager
def _lock_tracing(on: bool) -> Iterator[Callable[[], dict[str, Any]] | None]:
    """With ``on``: a private tracefs instance recording :data:`LOCK_EVENTS` of
    this process and its descendants; yields a function returning the waits
    recorded since its last call (:func:`lock_waits`, with the instance's lost
    events).  Removed on every exit path."""
    if not on:
        yield None
        return
    from cowctx.linux.tracefs import (
        install_terminate_handlers,
        lost_events,
        own_instance_name,
        read_pipe_lines,
        restore_handlers,
        tear_down_instance,
        tracefs_root,
        write_file,
    )

    inst = tracefs_root() / "instances" / f"{own_instance_name()}-locks"
    handlers = install_terminate_handlers()
    pipe = None
    try:
        inst.mkdir()
        write_file(inst / "tracing_on", "0")
        write_file(inst / "options" / "overwrite", "0")
        write_file(inst / "buffer_size_kb", "8192")
        write_file(inst / "options" / "event-fork", "1")
        write_file(inst / "set_event_pid", str(os.getpid()))
        for ev in LOCK_EVENTS:
            write_file(inst / "events" / ev / "enable", "1")
        pipe = os.open(inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        write_file(inst / "tracing_on", "1")
        state = {"partial": b""}

        def collect() -> dict[str, Any]:
            assert pipe is not None
            lines, state["partial"] = read_pipe_lines(pipe, state["partial"], 1 << 16)
            return {**lock_waits(lines), "lost_events": lost_events(inst)}

        yield collect
    finally:
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.close(pipe)
        if inst.exists():
            tear_down_instance(inst, list(LOCK_EVENTS))
        restore_handlers(handlers)


SHRINK_EVENT = "vmscan/mm_vmscan_lru_shrink_inactive"
"""``shrink_inactive_list()``'s verdicts: ``nr_ref_keep`` counts the folios
``folio_check_references()`` kept (FOLIOREF_KEEP), which for an anon folio is
``folio_referenced()`` returning -1: its rmap try-lock failed."""
MEMCG_V1 = Path("/sys/fs/cgroup/memory")


def reclaim_unavailable_reason() -> str | None:
    from cowctx.linux.swap import swap_unavailable_reason
    from cowctx.linux.tracefs import tracefs_root

    reason = swap_unavailable_reason()
    if reason is not None:
        return reason
    if not (MEMCG_V1 / "cgroup.procs").exists():
        return f"no cgroup v1 memory controller at {MEMCG_V1}"
    try:
        root = tracefs_root()
    except Exception as exc:
        return f"tracefs: {exc}"
    if not (root / "events" / SHRINK_EVENT).is_dir():
        return f"tracepoint {SHRINK_EVENT} is missing"
    return None


def _shrink_counts(lines: list[str]) -> dict[str, int]:
    """Summed counters of the harness's mm_vmscan_lru_shrink_inactive lines of the
    anon LRU (``RECLAIM_WB_ANON``)."""
    out: dict[str, int] = {"events": 0}
    for line in lines:
        if "mm_vmscan_lru_shrink_inactive:" not in line or "harness" not in line.split("-")[0]:
            continue
        if "RECLAIM_WB_ANON" not in line:
            continue
        out["events"] += 1
        for kv in line.split("mm_vmscan_lru_shrink_inactive:", 1)[1].split():
            key, _, value = kv.partition("=")
            if key.startswith("nr_") and value.isdigit():
                out[key] = out.get(key, 0) + int(value)
    return out


LOCK_EVENTS = ("lock/contention_begin", "lock/contention_end")
"""A sleeping rwsem waiter's wait: ``rwsem_down_write_slowpath()`` fires
``contention_begin`` (flags WRITE) once it is on the wait list, with
``RWSEM_FLAG_WAITERS`` set (optimistic spinning is over), and ``contention_end``
when it has the lock; ``rwsem_down_read_slowpath()`` the same with READ.  While a
writer waits so, every ``down_read_trylock()`` fails (the flag is in
``RWSEM_READ_FAILED_MASK``)."""

_LOCK_LINE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<ev>contention_begin|contention_end):\s+(?P<addr>\S+)\s+"
    r"\((?P<rest>[^)]*)\)"
)


def lock_waits(lines: list[str], comm: str = "harness") -> dict[str, Any]:
    """Sleeping rwsem waits of the processes whose name starts with ``comm`` (the
    harness runs as ``harness-<hash>``) from contention_begin/end
    lines: per mode (``flags=READ`` or ``WRITE``, spinning waits left out), the
    number of waits, their durations (us resolution of the trace clock) and
    the waits per lock (hashed ``%p`` address, stable within a boot); and how
    many other contended waits (spinlocks, mutexes) the same processes had,
    which shows the events were recorded at all."""
    open_: dict[int, tuple[float, str, str]] = {}
    spins = 0
    waits: dict[str, list[int]] = {"READ": [], "WRITE": []}
    by_lock: dict[str, dict[str, int]] = {"READ": {}, "WRITE": {}}
    for line in lines:
        m = _LOCK_LINE.match(line)
        if m is None or not m["comm"].strip().startswith(comm):
            continue
        pid, ts = int(m["pid"]), float(m["ts"])
        if m["ev"] == "contention_begin":
            flags = m["rest"].removeprefix("flags=")
            if flags in waits:
                open_[pid] = (ts, flags, m["addr"])
            else:
                spins += 1
            continue
        begun = open_.pop(pid, None)
        if begun is None:
            continue
        t0, mode, addr = begun
        waits[mode].append(round((ts - t0) * 1e9))
        by_lock[mode][addr] = by_lock[mode].get(addr, 0) + 1
    out: dict[str, Any] = {"other_waits": spins}
    for mode, xs in waits.items():
        out[mode] = {
            **summary(xs),
            "total_ns": sum(xs),
            "per_lock": dict(sorted(by_lock[mode].items(), key=lambda kv: -kv[1])[:8]),
        }
    return out


def shrink_by_pid(lines: list[str]) -> dict[str, Any]:
    """The harness's anon-LRU shrink verdicts per reclaiming process: how many
    processes reclaimed, and for the five that scanned most their scanned and
    kept folios (a process that reclaimed once and is gone is a forker's child)."""
    per: dict[int, list[int]] = {}
    for line in lines:
        head = line.split("mm_vmscan_lru_shrink_inactive:", 1)
        if len(head) < 2 or "RECLAIM_WB_ANON" not in line:
            continue
        comm_pid = head[0].split("[", 1)[0].strip()
        comm, _, pid = comm_pid.rpartition("-")
        if not comm.strip().startswith("harness") or not pid.isdigit():
            continue
        f = dict(kv.split("=", 1) for kv in head[1].split() if "=" in kv)
        row = per.setdefault(int(pid), [0, 0, 0])
        row[0] += 1
        row[1] += int(f.get("nr_scanned", 0))
        row[2] += int(f.get("nr_ref_keep", 0))
    top = sorted(per.items(), key=lambda kv: -kv[1][1])[:5]
    return {
        "processes": len(per),
        "top": [
            {"pid": p, "events": r[0], "nr_scanned": r[1], "nr_ref_keep": r[2]} for p, r in top
        ],
    }


def reclaim_experiment(
    pages: int = 1024,
    sleepers: int = 16,
    ms: int = 1500,
    limit_pages: int = 4096,
    repeats: int = 2,
    lock_events: bool = True,
    outside: bool = True,
) -> dict[str, Any]:
    """Memory-cgroup reclaim of the pager's folios (``folio_referenced()`` with
    try-lock) alone, beside a forker on the same CPU and on the other CPU; per
    configuration the summed ``mm_vmscan_lru_shrink_inactive`` counters of the
    harness's processes (``nr_ref_keep``: folios kept on a failed try-lock).
    With ``lock_events`` also the harness's sleeping rwsem waits
    (:data:`LOCK_EVENTS`, :func:`lock_waits`), traced for this process and its
    descendants only (``set_event_pid`` with ``event-fork``).  With ``outside``
    also ``2cpu-outside``: the forker forked before the pager maps its pages, so
    that its forks and exits never lock the pager's anon_vma (what it still makes
    reclaim keep is not a failed try-lock on that anon_vma).
    A private memory cgroup and a private tracefs instance, removed on every exit."""
    import time as _time

    from cowctx.linux.swap import SwapFile
    from cowctx.linux.tracefs import (
        install_terminate_handlers,
        lost_events,
        own_instance_name,
        read_pipe_lines,
        restore_handlers,
        tear_down_instance,
        tracefs_root,
        write_file,
    )

    name = own_instance_name()
    inst = tracefs_root() / "instances" / f"{name}-reclaim"
    cg = MEMCG_V1 / f"{name}-reclaim"
    handlers = install_terminate_handlers()
    pipe = None
    out: dict[str, Any] = {
        "pages": pages,
        "sleepers": sleepers,
        "ms": ms,
        "limit_pages": limit_pages,
    }
    try:
        cg.mkdir()
        write_file(cg / "memory.limit_in_bytes", str(limit_pages * 4096))
        write_file(cg / "memory.swappiness", "100")
        inst.mkdir()
        write_file(inst / "tracing_on", "0")
        write_file(inst / "options" / "overwrite", "0")
        write_file(inst / "events" / SHRINK_EVENT / "enable", "1")
        if lock_events:
            write_file(inst / "buffer_size_kb", "8192")
            write_file(inst / "options" / "event-fork", "1")
            write_file(inst / "set_event_pid", str(os.getpid()))
            for ev in LOCK_EVENTS:
                write_file(inst / "events" / ev / "enable", "1")
        pipe = os.open(inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        partial = b""
        configs = {"alone": (0, 0, 0), "1cpu": (1, 0, 0), "2cpu": (1, 1, 0)}
        if outside:
            configs["2cpu-outside"] = (2, 1, 0)
        data = cg.parent / "unused"
        import tempfile

        with SwapFile(8 * pages + 1024), tempfile.NamedTemporaryFile(dir="/var/tmp") as tmp:
            tmp.write(b"\1" * (4 * limit_pages * 4096))
            tmp.flush()
            data = Path(tmp.name)
            for cname, (forker, cpu_pusher, cpu_forker) in configs.items():
                runs = []
                for _ in range(repeats):
                    _, partial = read_pipe_lines(pipe, partial, 1 << 16)  # drop older lines
                    write_file(inst / "tracing_on", "1")
                    line = [
                        x
                        for x in _run(
                            [
                                "reclaim",
                                str(pages),
                                str(sleepers),
                                str(ms),
                                str(forker),
                                str(cpu_pusher),
                                str(cpu_forker),
                                str(cg / "cgroup.procs"),
                                str(data),
                            ],
                            timeout=ms / 1000 + 120,
                        )
                        if x.strip()
                    ][-1].split()
                    write_file(inst / "tracing_on", "0")
                    _time.sleep(0.05)
                    lines, partial = read_pipe_lines(pipe, partial, 1 << 16)
                    counts = _shrink_counts(lines)
                    run: dict[str, Any] = {
                        "reads": int(line[1]),
                        "elapsed_ns": int(line[2]),
                        "forks": int(line[4]),
                        **counts,
                    }
                    if lock_events:
                        run["lock_waits"] = lock_waits(lines)
                        run["shrink_by_pid"] = shrink_by_pid(lines)
                        run["lost_events"] = lost_events(inst)
                    runs.append(run)
                scanned = sum(r.get("nr_scanned", 0) for r in runs)
                kept = sum(r.get("nr_ref_keep", 0) for r in runs)
                out[cname] = {
                    "runs": runs,
                    "nr_scanned": scanned,
                    "nr_ref_keep": kept,
                    "ref_keep_rate": round(kept / scanned, 4) if scanned else 0.0,
                }
    finally:
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.close(pipe)
        if inst.exists():
            tear_down_instance(inst, [SHRINK_EVENT, *LOCK_EVENTS])
        for _ in range(50):
            try:
                if cg.exists():
                    cg.rmdir()
                break
            except OSError:
                _time.sleep(0.1)
        restore_handlers(handlers)
    return out
