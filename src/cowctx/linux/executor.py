"""Run a scenario on the running Linux kernel and report what it did (design ``linux``).

The method is reference/kernel-oracle.md's: libc-free workers with no anonymous memory of
their own, one command per step over a socket, a private tracefs instance drained after every
step, pointer-matched kmem events classified by rmap call site, and /proc for the final
layout and page sharing.  Everything the run sets up is torn down in ``finally``.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import platform
import signal
import time
from pathlib import Path
from typing import Any

from cowctx.designs.anon_vma.graph import anon_vma_name
from cowctx.linux import pagemap
from cowctx.linux.bpf import BpfError
from cowctx.linux.btf import BtfError
from cowctx.linux.build import BuildError, ensure_worker
from cowctx.linux.graph import GraphError, KernelGraphReader
from cowctx.linux.swap import (
    SwapError,
    SwapFile,
    damon_state,
    drain_lru_batches,
    pages_for,
    remove_stale_swapfiles,
    swap_unavailable_reason,
    wants_swap,
)
from cowctx.linux.tracefs import (
    EVENTS,
    KINDS,
    ObjectLedger,
    StepCounts,
    TraceError,
    TraceInstance,
    remove_stale_instances,
    signals_deferred,
    tracefs_root,
)
from cowctx.linux.worker import (
    FILE_FD_BASE,
    OP_EXEC,
    OP_SYSCALL,
    OP_TOUCH,
    TOUCH_FILL,
    TOUCH_READ,
    TOUCH_STAMP,
    WorkerError,
    WorkerProcess,
    get_child_subreaper,
    kill_and_reap,
    set_child_subreaper,
)
from cowctx.mm.constants import PAGE_SIZE, SYS_MMAP
from cowctx.scenario.lower import Exec, Exit, Fork, Syscall, Touch, lower
from cowctx.scenario.results import (
    Counts,
    FinalState,
    MapLine,
    RawPage,
    ScenarioResult,
    StepResult,
    number_folios,
)
from cowctx.scenario.schema import WINDOW_BASE, Scenario


class KernelUnavailable(RuntimeError):
    """The kernel cannot be observed here; the message says why."""


class ModelOnlyStep(ValueError):
    """The scenario has a step only the model can run (ksm, migrate, reclaim, referenced)."""


class KernelRunError(RuntimeError):
    """The run failed; the message names the step."""


class TraceLost(KernelRunError):
    """The trace buffer dropped events (anon_vma traffic of other processes on the machine
    can fill it): the counts are not exact, the run may be repeated."""


def kernel_unavailable_reason() -> str | None:
    """None when scenarios can run on this kernel, else a precise reason why not."""
    if platform.system() != "Linux":
        return f"not Linux ({platform.system()})"
    if platform.machine() != "x86_64":
        return f"the worker uses x86-64 syscalls; this machine is {platform.machine()}"
    if os.geteuid() != 0:
        return "not root: tracefs, /proc/kpagecount and /proc/kpageflags need root"
    try:
        root = tracefs_root()
    except TraceError as exc:
        return f"no tracefs: {exc}"
    for ev in EVENTS:
        if not (root / "events" / "kmem" / ev / "enable").exists():
            return f"tracepoint kmem/{ev} is not available in {root}"
    for path in ("/proc/self/pagemap", "/proc/kpagecount", "/proc/kpageflags"):
        try:
            with open(path, "rb") as f:
                f.read(8)
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
    if not hasattr(os, "pidfd_open") or not hasattr(os, "memfd_create"):
        return "Python lacks os.pidfd_open / os.memfd_create"
    try:
        ensure_worker()
    except BuildError as exc:
        return f"cannot build the worker: {exc}"
    except OSError as exc:
        return f"cannot build the worker: {exc}"
    return None


def file_page_pattern(file_index: int, page: int) -> bytes:
    """Distinct, never-uniform content for page `page` of scenario file `file_index`."""
    head = f"cowctx file {file_index} page {page}\n".encode()
    return (head * (PAGE_SIZE // len(head) + 1))[:PAGE_SIZE]


def _make_files(scenario: Scenario) -> tuple[dict[str, int], list[int]]:
    """memfd (shmem) files, one per scenario file; returns name -> worker fd, controller fds."""
    names: dict[str, int] = {}
    fds: list[int] = []
    try:
        for i, (name, spec) in enumerate(scenario.files.items()):
            fd = os.memfd_create(f"cowctx-{name}", os.MFD_CLOEXEC)
            fds.append(fd)
            data = b"".join(file_page_pattern(i, p) for p in range(spec.pages))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            names[name] = FILE_FD_BASE + i
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return names, fds


def _errno_name(ret: int) -> str:
    return errno_mod.errorcode.get(-ret, f"E{-ret}")


def _kernel_info() -> dict[str, Any]:
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    aliases = read("/sys/kernel/slab/anon_vma_chain/aliases")
    return {
        "release": platform.release(),
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "ksm_run": read("/sys/kernel/mm/ksm/run"),
        "anon_vma_chain_cache_aliases": int(aliases) if aliases and aliases.isdigit() else None,
    }


def _touch_args(i: int, touch: Touch) -> tuple[int, ...]:
    """The worker's touch command.  A write with no value stores an 8-byte stamp
    (step, page) unique to this write, then fills: content no other page has."""
    if not touch.write:
        return (touch.addr, touch.pages, TOUCH_READ, 0, 0)
    if touch.value is not None:
        return (touch.addr, touch.pages, TOUCH_FILL, touch.value, 0)
    page = (touch.addr - WINDOW_BASE) // PAGE_SIZE
    return (touch.addr, touch.pages, TOUCH_STAMP, 0, ((i + 1) << 32) | (page + 1))


class _Run:
    """State of one run: processes by name in creation order, trace, ledger."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.procs: dict[str, WorkerProcess] = {}
        self.all_procs: list[WorkerProcess] = []
        self.ledger = ObjectLedger()
        self.trace: TraceInstance | None = None
        self.file_fd: dict[str, int] = {}
        self.graph_reader: KernelGraphReader | None = None
        self.graph_every_step = False
        self.swap_on = False
        self.home_cpu: set[int] = set()
        self.all_cpus: list[int] = []
        """The CPU the run is pinned to, and every CPU (drained after a swap pageout)."""
        self.writeback_polls = 0
        """kpageflags polls spent waiting for swap writes (see run_step)."""

    def read_graph(self) -> dict[str, Any]:
        """The live anon_vma graph now (linux/graph.py), objects named by birth step."""
        assert self.graph_reader is not None
        steps = self.scenario.steps

        def name_of(ptr: int) -> str | None:
            born = self.ledger.births.get(ptr)
            if born is None or not 0 <= born[0] < len(steps):
                return None
            return anon_vma_name(steps[born[0]].proc, steps[born[0]].op, *born)

        live = [(p.name, p.pid) for p in self.all_procs if p.alive]
        return self.graph_reader.read(live, name_of)

    def add(self, proc: WorkerProcess) -> None:
        self.procs[proc.name] = proc
        self.all_procs.append(proc)
        self.ledger.pids.add(proc.pid)

    def run_step(self, i: int, step: Any) -> StepResult:
        what = f"step {i} ({step.op}, {step.proc})"
        proc = self.procs[step.proc]
        action = lower(step)
        err: str | None = None
        exec_pid: int | None = None
        if isinstance(action, Fork):
            r, child = proc.fork(what, i, action.child)
            time_ns = r.time_ns
            if child is None:
                err = _errno_name(r.ret)
            else:
                self.add(child)
        elif isinstance(action, Exit):
            time_ns = proc.exit(what, i)
            del self.procs[step.proc]
        elif isinstance(action, Exec):
            exec_pid = proc.pid
            r = proc.call(what, OP_EXEC, i, name=step.proc)
            time_ns = r.time_ns
            if r.ret < 0:
                err = _errno_name(r.ret)
        elif isinstance(action, Touch):
            r = proc.call(what, OP_TOUCH, i, args=_touch_args(i, action))
            time_ns = r.time_ns
            if r.sig:
                err = signal.Signals(r.sig).name
        elif isinstance(action, Syscall):
            args = action.args
            if action.file is not None:  # the worker's descriptor of that file
                args = (*args[:4], self.file_fd[action.file], *args[5:])
            # With swap, MADV_PAGEOUT returns with its swap writes in flight; the step
            # ends when they have completed (PG_writeback clear on every page it may have
            # written) and every CPU's LRU batches are drained (swap.drain_lru_batches),
            # so the next step finds each folio written out and clean in the swap cache,
            # with no reference left in a batch: nothing a scenario cannot fix.  The
            # model's MADV_PAGEOUT ends the same way (mm/madvise.py do_madvise).
            pageout = self.swap_on and step.op == "madvise" and step.advice == "pageout"
            pfns = pagemap.read_range_pfns(proc.pid, step.page, step.pages) if pageout else []
            r = proc.call(what, OP_SYSCALL, i, nr=action.nr, args=args)
            time_ns = r.time_ns
            if pageout:
                try:
                    self.writeback_polls += pagemap.wait_writeback(pfns)
                except pagemap.WritebackTimeout as exc:
                    raise KernelRunError(f"{what}: {exc}") from exc
                drain_lru_batches([*self.all_cpus, *sorted(self.home_cpu)], self.home_cpu)
            if -4095 <= r.ret < 0:
                err = _errno_name(r.ret)
            elif action.nr == SYS_MMAP and r.ret != args[0]:
                raise KernelRunError(
                    f"{what}: mmap placed the mapping at {r.ret:#x}, not {args[0]:#x}"
                )
        else:  # pragma: no cover - _refuse_model_only keeps these out
            raise ModelOnlyStep(f"{what} is model-only")
        assert self.trace is not None
        counts: StepCounts = self.ledger.account(
            self.trace.drain(), exec_pid=exec_pid, step_index=i
        )
        out = StepResult(step.op, err, _counts(counts.as_dict()), time_ns, step.proc)
        out.vmscan = self.trace.take_vmscan(self.ledger.pids)
        if self.graph_every_step and self.graph_reader is not None:
            out.graph = self.read_graph()
        return out

    def final_state(self) -> FinalState:
        live = [p for p in self.all_procs if p.alive]
        maps: dict[str, list[MapLine]] = {}
        raw: list[tuple[str, list[RawPage]]] = []
        swapped: list[tuple[str, list[tuple[int, int]]]] = []
        with pagemap.PhysReader() as phys:
            for p in live:
                maps[p.name] = lines = pagemap.read_window_maps(p.pid)
                raw.append(
                    (
                        p.name,
                        [
                            RawPage(
                                info.page,
                                None if info.zero_page else info.head_pfn,
                                info.mapcount,
                                info.anon,
                            )
                            for info in pagemap.read_window_pages(p.pid, lines, phys)
                        ],
                    )
                )
                swapped.append((p.name, pagemap.read_window_swap(p.pid, lines)))
        final = FinalState(_counts(self.ledger.totals()), maps, number_folios(raw))
        final.swap = pagemap.number_swap_entries(swapped)
        if self.graph_reader is not None:
            final.graph = self.read_graph()
        return final


def _counts(objects: dict[str, dict[str, int]]) -> dict[str, Counts]:
    return {kind: Counts(c["allocated"], c["freed"], c.get("live")) for kind, c in objects.items()}


class KernelSession:
    """One tracefs instance for many scenarios: the setup and teardown of an instance wait for
    RCU grace periods (tens of ms), a run inside a session only toggles tracing_on.

    Use as a context manager; leaving it disables the events and removes the instance.
    """

    def __init__(
        self, graph: bool = True, graph_every_step: bool = False, swap: bool = True
    ) -> None:
        self.want_swap = swap
        self.swap_unavailable: str | None = None
        """Why scenarios with MADV_PAGEOUT run without swap (None: they get a swap file)."""
        self.trace: TraceInstance | None = None
        self.binary: Path | None = None
        self.want_graph = graph or graph_every_step
        self.graph_every_step = graph_every_step
        self.graph_reader: KernelGraphReader | None = None
        self.graph_unavailable: str | None = None
        """Why the anon_vma graph is not read (None when it is, or was not asked for)."""

    def __enter__(self) -> KernelSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        reason = kernel_unavailable_reason()
        if reason is not None:
            raise KernelUnavailable(reason)
        self.binary = ensure_worker()
        root = tracefs_root()
        remove_stale_instances(root)
        if self.want_swap:
            remove_stale_swapfiles()
            self.swap_unavailable = swap_unavailable_reason()
        trace = TraceInstance(root)
        try:
            trace.start(tracing=False)
        except BaseException:
            with signals_deferred():
                trace.stop()
            raise
        self.trace = trace
        if self.want_graph:
            try:
                self.graph_reader = KernelGraphReader()
            except (BtfError, BpfError, GraphError, OSError) as exc:
                self.graph_unavailable = f"the anon_vma graph cannot be read: {exc}"

    def close(self) -> None:
        if self.graph_reader is not None:
            self.graph_reader.close()
            self.graph_reader = None
        if self.trace is not None:
            with signals_deferred():
                self.trace.stop()
            self.trace = None

    def run(self, scenario: Scenario) -> ScenarioResult:
        """Run one scenario; see run_on_kernel."""
        _refuse_model_only(scenario)
        if self.trace is None or self.binary is None:
            raise KernelRunError("the kernel session is not open")
        trace = self.trace
        t_start = time.monotonic_ns()
        run = _Run(scenario)
        run.trace = trace
        run.graph_reader = self.graph_reader
        run.graph_every_step = self.graph_every_step
        file_fds: list[int] = []
        was_subreaper = get_child_subreaper()
        affinity = os.sched_getaffinity(0)
        result: ScenarioResult
        swap = (
            SwapFile(pages_for(scenario))
            if self.want_swap and self.swap_unavailable is None and wants_swap(scenario)
            else None
        )
        problems: list[str] = []
        try:
            if swap is not None:
                run.swap_on = True
                try:
                    swap.enable()
                except (SwapError, OSError) as exc:
                    # no swap here after all (e.g. SWAP_DIR on tmpfs): say so and run
                    # without, as the model then does too
                    with signals_deferred():
                        swap.remove()
                    self.swap_unavailable = f"cannot switch a swap file on: {exc}"
                    swap = None
                    run.swap_on = False
            # One CPU for the controller and every worker (they inherit it): the
            # per-CPU LRU batches then hold no folio another CPU added, so
            # lru_add_drain() in MADV_PAGEOUT and in CoW reuse sees them all, as
            # the model does; on several CPUs the outcome depends on scheduling.
            os.sched_setaffinity(0, {min(affinity)})
            run.home_cpu = {min(affinity)}
            run.all_cpus = sorted(set(range(os.cpu_count() or 1)) - run.home_cpu)
            set_child_subreaper(True)
            run.file_fd, file_fds = _make_files(scenario)
            run.add(WorkerProcess.spawn(self.binary, "p0", file_fds))
            for fd in file_fds:
                os.close(fd)  # the workers hold them now
            file_fds = []
            lost_before = trace.lost_events()
            trace.set_tracing(True)
            trace.drain()
            t_kernel = time.monotonic_ns()
            steps = []
            for i, step in enumerate(scenario.steps):
                try:
                    steps.append(run.run_step(i, step))
                except (WorkerError, KernelRunError):
                    raise
                except OSError as exc:
                    raise KernelRunError(f"step {i} ({step.op}, {step.proc}): {exc}") from exc
            final = run.final_state()
            run.ledger.account(trace.drain())
            t_end = time.monotonic_ns()
            trace.set_tracing(False)
            lost = trace.lost_events() - lost_before
            if lost:
                raise TraceLost(f"the trace buffer dropped {lost} events: counts not exact")
            kernel_info: dict[str, Any] = {
                **_kernel_info(),
                "trace_instance": trace.name,
                "swap": {
                    "pages": swap.pages,
                    "damon": damon_state(),
                    "writeback_polls": run.writeback_polls,
                }
                if swap
                else None,
            }
            if self.want_swap and self.swap_unavailable:
                kernel_info["swap_unavailable"] = self.swap_unavailable
            if self.want_graph and self.graph_unavailable:
                kernel_info["graph_unavailable"] = self.graph_unavailable
            result = ScenarioResult(
                scenario.name,
                "linux",
                steps,
                final,
                kernel={
                    "other_events": run.ledger.other_events(),
                    "pids": {p.name: p.pid for p in run.all_procs},
                    "kernel": kernel_info,
                    "wall_ns": {"steps": t_end - t_kernel, "run": t_end - t_start},
                },
            )
        finally:
            with signals_deferred():
                problems = _cleanup(run, file_fds, was_subreaper)
                os.sched_setaffinity(0, affinity)
                if swap is not None:
                    try:
                        swap.remove()
                    except SwapError as exc:
                        problems.append(str(exc))
        if problems:
            raise KernelRunError("cleanup incomplete: " + "; ".join(problems))
        return result


def _refuse_model_only(scenario: Scenario) -> None:
    for i in scenario.model_only_steps:
        op = scenario.steps[i].op
        raise ModelOnlyStep(
            f"scenario {scenario.name}: step {i} ({op}) is model-only; the kernel cannot run it"
        )


def run_on_kernel(scenario: Scenario, session: KernelSession | None = None) -> ScenarioResult:
    """Run `scenario` on this machine's kernel; the SCENARIO.md result with design ``linux``.

    Steps name their process and carry ``time_ns``; object kinds are ``anon_vma`` and
    ``anon_vma_chain``; ``kernel`` holds ``other_events`` (``by_kind``, ``by_call_site``,
    ``own_live``, ``anomalies``), ``pids`` (proc -> pid), ``kernel`` (release, THP, KSM,
    the trace instance) and ``wall_ns`` (``steps``, ``run``).  ``time_ns`` is measured in the worker
    around the syscall, the touches, the clone or the whole exec; for ``exit`` (no reply) the
    controller measures from the command to the task becoming a zombie.

    Without `session`, a tracefs instance is set up and removed around this one run
    (two RCU grace periods, some 50-80 ms); inside a KernelSession a small run costs ~2 ms.
    Raises ModelOnlyStep for ksm / migrate / reclaim / referenced steps, KernelUnavailable when
    the kernel cannot be observed, KernelRunError / WorkerError when a step goes wrong.
    """
    _refuse_model_only(scenario)
    if session is not None:
        return session.run(scenario)
    with KernelSession() as own:
        return own.run(scenario)


def _cleanup(run: _Run, file_fds: list[int], was_subreaper: bool) -> list[str]:
    """Tracing off, every scenario process killed and reaped, fds closed."""
    problems = []
    if run.trace is not None:
        try:
            run.trace.set_tracing(False)
        except OSError as exc:
            problems.append(f"cannot turn tracing off: {exc}")
    left = kill_and_reap(run.all_procs)
    if left:
        problems.append(f"processes not reaped: {', '.join(left)}")
    for fd in file_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        set_child_subreaper(was_subreaper)
    return problems


__all__ = [
    "KINDS",
    "KernelRunError",
    "KernelSession",
    "KernelUnavailable",
    "ModelOnlyStep",
    "TraceLost",
    "kernel_unavailable_reason",
    "run_on_kernel",
]
