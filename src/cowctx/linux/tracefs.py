"""Count anon_vma / anon_vma_chain objects with the kmem tracepoints in a private tracefs instance.

Why this way (reference/kernel-oracle.md): the slab counters are blurred by per-CPU caching and
the anon_vma_chain cache is merged with fs_cache and eventpoll_pwq, so only the
kmem_cache_alloc / kmem_cache_free tracepoints, filtered by cache name and classified by the
rmap function that called the allocator, count exactly.  A private instance with its own buffer
leaves the global tracing state alone; set_event_pid is avoided (each write waits for an RCU
grace period); pids are filtered here instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS = Path(os.environ.get("COWCTX_TRACEFS", "/sys/kernel/tracing"))
"""Where tracefs is (or gets) mounted; COWCTX_TRACEFS overrides it, which tests use
to show what happens on a machine without tracefs."""
INSTANCE_PREFIX = "cowctx-"
KINDS = ("anon_vma", "anon_vma_chain")
EVENTS = ("kmem_cache_alloc", "kmem_cache_free")
EVENT_FILTER = 'name=="anon_vma" || name=="anon_vma_chain"'

RMAP_ALLOC_SITES = frozenset({"__anon_vma_prepare", "anon_vma_clone", "anon_vma_fork"})
"""Functions that allocate rmap objects (anon_vma_alloc / anon_vma_chain_alloc are inlined)."""
RMAP_FREE_SITES = frozenset({"unlink_anon_vmas", "__put_anon_vma"})
"""Functions that free them (anon_vma_free / anon_vma_chain_free are inlined)."""
RMAP_SITES = RMAP_ALLOC_SITES | RMAP_FREE_SITES
"""Error paths of the allocating functions free what they just allocated: also rmap sites."""

_LINE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>kmem_cache_alloc|kmem_cache_free):\s+"
    r"call_site=(?P<site>\S+)\s+ptr=(?:0x)?(?P<ptr>[0-9a-f]+)\s+name=(?P<name>\S+)"
)


VMSCAN_EVENT = ("vmscan", "mm_vmscan_reclaim_pages")
"""``reclaim_pages()`` (MADV_PAGEOUT's reclaim) reports its verdicts here; optional."""
VMSCAN_FIELDS = (
    "nr_scanned",
    "nr_reclaimed",
    "nr_dirty",
    "nr_writeback",
    "nr_congested",
    "nr_immediate",
    "nr_activate_anon",
    "nr_activate_file",
    "nr_ref_keep",
    "nr_unmap_fail",
)
_VMSCAN_LINE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+mm_vmscan_reclaim_pages:\s+(?P<fields>.*)$"
)


def parse_vmscan_line(line: str) -> tuple[int, dict[str, int]] | None:
    """(pid, counters) of one mm_vmscan_reclaim_pages line; None for other lines."""
    m = _VMSCAN_LINE.match(line)
    if m is None:
        return None
    fields = dict(kv.split("=", 1) for kv in m["fields"].split() if "=" in kv)
    return int(m["pid"]), {k: int(fields[k]) for k in VMSCAN_FIELDS if k in fields}


class TraceError(RuntimeError):
    """tracefs could not be set up or its data cannot be trusted (lost events)."""


@dataclass(frozen=True, slots=True)
class KmemEvent:
    """One kmem_cache_alloc / kmem_cache_free event of the anon_vma or anon_vma_chain cache."""

    pid: int
    ts: float
    alloc: bool
    func: str
    """The call_site's function name, e.g. ``anon_vma_clone``."""
    ptr: int
    kind: str
    """Cache name as recorded: ``anon_vma`` or ``anon_vma_chain`` (merged cache's name)."""

    @property
    def is_rmap(self) -> bool:
        return self.func in RMAP_SITES


def parse_line(line: str) -> KmemEvent | None:
    """Parse one trace_pipe text line; None for lines that are not our kmem events."""
    m = _LINE.match(line)
    if m is None:
        return None
    site = m["site"]
    func = site.split("+", 1)[0]
    return KmemEvent(
        pid=int(m["pid"]),
        ts=float(m["ts"]),
        alloc=m["event"] == "kmem_cache_alloc",
        func=func,
        ptr=int(m["ptr"], 16),
        kind=m["name"],
    )


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def tracefs_root() -> Path:
    """The tracefs mount, mounting it at /sys/kernel/tracing if nothing is mounted there."""
    if (TRACEFS / "instances").is_dir():
        return TRACEFS
    if not TRACEFS.is_dir():
        raise TraceError(f"{TRACEFS} does not exist: kernel built without tracefs?")
    libc = _libc()
    rc = libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None)
    if rc != 0:
        e = ctypes.get_errno()
        raise TraceError(f"tracefs is not mounted and mount failed: {os.strerror(e)}")
    if not (TRACEFS / "instances").is_dir():
        raise TraceError(f"mounted tracefs at {TRACEFS} but it has no instances directory")
    return TRACEFS


TERMINATING = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end a cowctx process whose default action skips every ``finally``."""
DEFERRED = (signal.SIGINT, *TERMINATING)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_terminate_handlers() -> dict[int, object]:
    """SIGTERM and SIGHUP unwind the stack like Ctrl-C does (``SystemExit(128 + sig)``),
    so the ``finally`` that disables and removes a tracefs instance runs; returns the
    handlers to restore.  Outside the main thread signals cannot be handled: nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _terminate) for sig in TERMINATING}


def restore_handlers(old: dict[int, object]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while cleaning up, so that a second signal cannot
    leave tracing or processes behind; they are delivered when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(DEFERRED))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _starttime(pid: int | str) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): with the pid, a name
    no later process can reuse.  None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def instance_owner_alive(name: str) -> bool:
    """Whether the cowctx process that created instance ``name`` still runs:
    ``cowctx-<pid>.<starttime>[-k]`` (older names lack ``.<starttime>``)."""
    owner = name[len(INSTANCE_PREFIX) :].split("-", 1)[0]
    pid, _, start = owner.partition(".")
    if not pid.isdigit():
        return True  # not a name we make: leave it alone
    now = _starttime(pid)
    return now is not None and (not start or now == start)


def remove_stale_instances(root: Path) -> list[str]:
    """Remove the instances left by cowctx processes that no longer exist (killed with
    SIGKILL): every event in them disabled, then the directory removed."""
    removed = []
    for d in (root / "instances").glob(INSTANCE_PREFIX + "*"):
        if instance_owner_alive(d.name):
            continue
        with contextlib.suppress(TraceError):
            tear_down_instance(d, [])
            removed.append(d.name)
    return removed


def own_instance_name() -> str:
    """``cowctx-<pid>.<starttime>``: this process's instance name."""
    return f"{INSTANCE_PREFIX}{os.getpid()}.{_starttime('self')}"


def write_file(path: Path, text: str) -> None:
    """One write of ``text`` to a tracefs control file (truncating it first)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


_write = write_file


def read_pipe_lines(pipe: int, partial: bytes, chunk: int) -> tuple[list[str], bytes]:
    """The complete lines a non-blocking ``trace_pipe`` holds now, after ``partial``
    (the unfinished line of the last read); returns them and the new unfinished line."""
    chunks = [partial]
    while True:
        try:
            data = os.read(pipe, chunk)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    raw = b"".join(chunks)
    cut = raw.rfind(b"\n") + 1
    return raw[:cut].decode(errors="replace").splitlines(), raw[cut:]


def lost_events(instance: Path) -> int:
    """Events an instance's ring buffers dropped, over every CPU (with overwrite=0
    the writer loses them, so the counters are meaningful)."""
    lost = 0
    for stats in sorted((instance / "per_cpu").glob("cpu*/stats")):
        with contextlib.suppress(OSError):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("overrun", "commit overrun", "dropped events"):
                    lost += int(value.split()[0])
    return lost


REMOVE_TIMEOUT = 5.0
"""Seconds to keep retrying the rmdir of an instance whose readers are still leaving."""


def tear_down_instance(path: Path, events: Iterable[str]) -> None:
    """Tracing off, every event of the instance disabled (``set_event`` emptied, and
    each of ``events``, ``"system/name"``, by its own switch), the pid filter cleared,
    then the directory removed (:func:`remove_instance_dir`).  Errors on the way are
    ignored: what matters is that nothing stays enabled or behind."""
    writes = [("tracing_on", "0"), ("set_event", "")]
    writes += [(f"events/{event}/enable", "0") for event in events]
    writes.append(("set_event_pid", ""))
    for name, text in writes:
        with contextlib.suppress(OSError):
            write_file(path / name, text)
    remove_instance_dir(path)


def remove_instance_dir(path: Path) -> None:
    """rmdir a tracefs instance; EBUSY while a reader of its buffers is still leaving
    (more so on a loaded machine) is retried with a growing pause, up to
    :data:`REMOVE_TIMEOUT` seconds.  A missing directory is fine."""
    deadline = time.monotonic() + REMOVE_TIMEOUT
    pause = 0.0
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY
            if time.monotonic() >= deadline:
                raise TraceError(f"cannot remove tracefs instance {path}: {exc}") from None
            if pause:
                time.sleep(pause)
            else:
                os.sched_yield()
            pause = min(0.05, pause * 2 or 0.001)


class TraceInstance:
    """A private tracefs instance recording the anon_vma / anon_vma_chain kmem events."""

    def __init__(
        self, root: Path | None = None, name: str | None = None, buffer_kb: int | None = None
    ) -> None:
        self.root = root or tracefs_root()
        self.name = name or own_instance_name()
        self.path = self.root / "instances" / self.name
        self.buffer_kb = buffer_kb
        """Per-CPU buffer; None keeps the default (about 1.4 MiB), as resizing costs an RCU
        grace period and a drain after every step never needs more."""
        self._pipe: int | None = None
        self._partial = b""
        self.created = False
        self._handlers: dict[int, object] = {}
        self.vmscan: list[tuple[int, dict[str, int]]] = []
        """mm_vmscan_reclaim_pages events drained and not yet taken (``take_vmscan``)."""

    def start(self, tracing: bool = True) -> None:
        """Create, configure and enable the events; tracing_on is `tracing` afterwards.

        Costs two RCU grace periods (trace_clock, and rmdir in stop()), tens of ms: a
        session keeps one instance for many scenarios and only toggles tracing_on.
        """
        self._handlers = install_terminate_handlers()
        base = self.name
        for k in range(1, 100):
            try:
                self.path.mkdir()
                break
            except FileExistsError:  # another session of this process holds that name
                self.name = f"{base}-{k}"
                self.path = self.root / "instances" / self.name
        else:
            raise TraceError(f"tracefs instances {base}-* all exist")
        self.created = True
        p = self.path
        _write(p / "tracing_on", "0")
        if self.buffer_kb is not None:
            _write(p / "buffer_size_kb", str(self.buffer_kb))
        _write(p / "options" / "overwrite", "0")
        _write(p / "options" / "hash-ptr", "0")
        _write(p / "trace_clock", "global")
        if (p / "options" / "hash-ptr").read_text().strip() != "0":
            raise TraceError("cannot turn off hashed pointers (options/hash-ptr)")
        for ev in EVENTS:
            d = p / "events" / "kmem" / ev
            if not d.is_dir():
                raise TraceError(f"tracepoint kmem/{ev} is missing")
            _write(d / "filter", EVENT_FILTER)
            _write(d / "enable", "1")
        vm = p / "events" / VMSCAN_EVENT[0] / VMSCAN_EVENT[1] / "enable"
        if vm.exists():
            _write(vm, "1")
        self._pipe = os.open(p / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        self.set_tracing(tracing)

    def set_tracing(self, on: bool) -> None:
        """Turn recording on or off (cheap: no grace period)."""
        _write(self.path / "tracing_on", "1" if on else "0")

    def drain(self) -> list[KmemEvent]:
        """Every event recorded since the last drain, in timestamp order."""
        if self._pipe is None:
            return []
        lines, self._partial = read_pipe_lines(self._pipe, self._partial, 1 << 16)
        events = []
        for line in lines:
            ev = parse_line(line)
            if ev is not None:
                events.append(ev)
            elif "mm_vmscan_reclaim_pages" in line:
                vm = parse_vmscan_line(line)
                if vm is not None:
                    self.vmscan.append(vm)
        events.sort(key=lambda e: e.ts)
        return events

    def take_vmscan(self, pids: set[int]) -> dict[str, int] | None:
        """Sum of the drained mm_vmscan_reclaim_pages counters of ``pids`` (None: no such
        event), and forget every drained one."""
        mine = [c for pid, c in self.vmscan if pid in pids]
        self.vmscan = []
        if not mine:
            return None
        return {k: sum(c.get(k, 0) for c in mine) for k in VMSCAN_FIELDS}

    def lost_events(self) -> int:
        return lost_events(self.path)

    def stop(self) -> None:
        """Tracing off, events disabled, instance removed; safe to call more than once."""
        try:
            self._remove()
        finally:
            restore_handlers(self._handlers)
            self._handlers = {}

    def _remove(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self._pipe)
            self._pipe = None
        if not self.created:
            return
        events = [f"kmem/{ev}" for ev in EVENTS] + ["/".join(VMSCAN_EVENT)]
        tear_down_instance(self.path, events)
        self.created = False

    def __enter__(self) -> TraceInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class StepCounts:
    """Scenario objects allocated and freed during one step, per kind."""

    allocated: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: {"allocated": self.allocated[k], "freed": self.freed[k]} for k in KINDS}


class ObjectLedger:
    """Attributes kmem events to the scenario: pointer-matched, pid-filtered, call-site classified.

    - An rmap allocation by a scenario pid is a scenario object.
    - A free (from any pid: kcompactd or ksmd can drop the last anon_vma reference) counts
      only if its pointer is a live scenario object; a free of an object allocated before
      the scenario is foreign.
    - Allocations while a process runs ``exec`` are the new image's exec-time [stack] (the
      worker unmaps it before replying), not scenario objects.
    - Everything else (fs_struct and eventpoll objects in the merged 64-byte cache, frees of
      pre-existing objects) is counted under ``other``.
    """

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.live: dict[int, str] = {}
        """Scenario objects alive now: ptr -> kind."""
        self.own: set[int] = set()
        """Live objects of the workers themselves (exec-time stacks)."""
        self.allocated: Counter[str] = Counter()
        self.freed: Counter[str] = Counter()
        self.other: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        self.other_sites: Counter[str] = Counter()
        self.anomalies: list[str] = []
        self.births: dict[int, tuple[int, int]] = {}
        """Live scenario anon_vmas: ptr -> (step, ordinal among the step's anon_vma
        allocations), for canonical names (linux/graph.py)."""

    def _other(self, ev: KmemEvent, why: str) -> None:
        kind = ev.kind if ev.kind in KINDS else "anon_vma_chain"
        self.other[kind]["allocated" if ev.alloc else "freed"] += 1
        self.other_sites[f"{'alloc' if ev.alloc else 'free'}:{ev.func}:{why}"] += 1

    def account(
        self, events: Iterable[KmemEvent], exec_pid: int | None = None, step_index: int = -1
    ) -> StepCounts:
        """Fold one step's events into the totals; returns the step's own counts.

        ``step_index`` is recorded as the birth step of the anon_vmas allocated."""
        step = StepCounts()
        for ev in events:
            if ev.alloc:
                if ev.pid not in self.pids:
                    continue
                if not ev.is_rmap:
                    self._other(ev, "foreign-site")
                    continue
                if ev.pid == exec_pid:
                    self.own.add(ev.ptr)
                    self._other(ev, "exec-stack")
                    continue
                if ev.ptr in self.live:
                    self.anomalies.append(f"alloc of live object {ev.ptr:#x} ({ev.func})")
                self.live[ev.ptr] = ev.kind
                if ev.kind == "anon_vma":
                    self.births[ev.ptr] = (step_index, step.allocated["anon_vma"])
                self.allocated[ev.kind] += 1
                step.allocated[ev.kind] += 1
            else:
                if ev.ptr in self.live:
                    kind = self.live.pop(ev.ptr)
                    self.births.pop(ev.ptr, None)
                    if not ev.is_rmap:
                        self.anomalies.append(f"scenario object {ev.ptr:#x} freed by {ev.func}")
                    self.freed[kind] += 1
                    step.freed[kind] += 1
                elif ev.ptr in self.own:
                    self.own.discard(ev.ptr)
                    self._other(ev, "exec-stack")
                elif ev.pid in self.pids:
                    self._other(ev, "foreign-object" if ev.is_rmap else "foreign-site")
        return step

    def totals(self) -> dict[str, dict[str, int]]:
        live = Counter(self.live.values())
        return {
            k: {"live": live[k], "allocated": self.allocated[k], "freed": self.freed[k]}
            for k in KINDS
        }

    def other_events(self) -> dict[str, object]:
        return {
            "by_kind": {
                k: {"allocated": c["allocated"], "freed": c["freed"]} for k, c in self.other.items()
            },
            "by_call_site": dict(sorted(self.other_sites.items())),
            "own_live": len(self.own),
            "anomalies": list(self.anomalies),
        }
