"""The controller's side of the worker protocol (see worker.c): spawn, command, fork, reap.

Every scenario process is a worker blocked in recvmsg() on its own SOCK_SEQPACKET socket
between steps, so it is quiescent whenever /proc or the trace buffer is read.  Processes
are tracked by pidfd, so a kill can never hit a recycled pid.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

CTL_FD = 3
"""The worker's control socket; fixed so that exec keeps it where the new image looks."""
FILE_FD_BASE = 10
"""Scenario file i is fd FILE_FD_BASE + i in every worker."""

OP_READY, OP_SYSCALL, OP_TOUCH, OP_FORK, OP_EXIT, OP_EXEC = range(6)
TOUCH_READ, TOUCH_FILL, TOUCH_STAMP = 0, 1, 2

CMD = struct.Struct("<IIQ6Q16s4Q")
REPLY = struct.Struct("<qQqQ")

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

REPLY_TIMEOUT_S = 20.0


class WorkerError(RuntimeError):
    """A worker died or broke the protocol."""


@dataclass(frozen=True, slots=True)
class Reply:
    ret: int
    time_ns: int
    sig: int
    done: int


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def get_child_subreaper() -> bool:
    val = ctypes.c_int(0)
    if _libc().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(val), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(val.value)


def set_child_subreaper(on: bool) -> None:
    """Orphaned scenario processes are reparented to us (not init), so we can reap them."""
    if _libc().prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _high_dup(fd: int) -> int:
    """A CLOEXEC copy above the fds posix_spawn dup2()s onto (so dup2 clears CLOEXEC)."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)


def pack_cmd(
    op: int, step: int = 0, nr: int = 0, args: tuple[int, ...] = (), name: str = ""
) -> bytes:
    a = [x & 0xFFFF_FFFF_FFFF_FFFF for x in args] + [0] * (6 - len(args))
    return CMD.pack(op, step, nr, *a, name.encode()[:15], 0, 0, 0, 0)


class WorkerProcess:
    """One scenario process: its name, pid, pidfd and control socket."""

    def __init__(self, name: str, pid: int, sock: socket.socket) -> None:
        self.name = name
        self.pid = pid
        self.sock = sock
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.pidfd = os.pidfd_open(pid)
        self.alive = True

    @classmethod
    def spawn(cls, binary: Path, name: str, file_fds: list[int]) -> WorkerProcess:
        """Start the first process (p0) and wait until it says ready (exec stack gone)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        highs: list[int] = []
        try:
            highs = [_high_dup(theirs.fileno())] + [_high_dup(fd) for fd in file_fds]
            actions: list[tuple[object, ...]] = [
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, highs[0], CTL_FD),
            ]
            for i, h in enumerate(highs[1:]):
                actions.append((os.POSIX_SPAWN_DUP2, h, FILE_FD_BASE + i))
            # own process group: a terminal's Ctrl-C reaches the controller only, which then
            # cleans up in order; empty signal mask: a blocked SIGSEGV would kill on a fault
            pid = os.posix_spawn(
                str(binary),
                ["cowctx-worker", "0", name],
                {},
                file_actions=actions,
                setpgroup=0,
                setsigmask=(),
            )
        finally:
            theirs.close()
            for h in highs:
                os.close(h)
        proc = cls(name, pid, ours)
        try:
            r = proc.recv_reply("start")
        except BaseException:
            proc.kill()
            raise
        if r.ret != 0:
            proc.kill()
            raise WorkerError(f"worker {name} failed to start: {r}")
        return proc

    def send(self, what: str, data: bytes, fds: list[int] | None = None) -> None:
        try:
            if fds:
                self.sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
            else:
                self.sock.send(data)
        except OSError as exc:
            status = self.exit_description()
            raise WorkerError(
                f"{what}: process {self.name} (pid {self.pid}) died: {status} ({exc.strerror})"
            ) from None

    def recv_reply(self, what: str) -> Reply:
        try:
            data = self.sock.recv(REPLY.size)
        except TimeoutError:
            raise WorkerError(
                f"{what}: process {self.name} (pid {self.pid}) did not answer "
                f"within {REPLY_TIMEOUT_S:.0f} s"
            ) from None
        if len(data) != REPLY.size:
            status = self.exit_description()
            raise WorkerError(f"{what}: process {self.name} (pid {self.pid}) died: {status}")
        return Reply(*REPLY.unpack(data))

    def exit_description(self) -> str:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "gone"
        if state != "Z":
            return f"state {state}"
        try:
            wpid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return "zombie"
        if wpid == 0:
            return "zombie"
        self.alive = False
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.WEXITSTATUS(status)} (worker codes: 100+sig = unexpected fault)"

    def call(
        self,
        what: str,
        op: int,
        step: int,
        nr: int = 0,
        args: tuple[int, ...] = (),
        name: str = "",
        fds: list[int] | None = None,
    ) -> Reply:
        self.send(what, pack_cmd(op, step, nr, args, name), fds)
        return self.recv_reply(what)

    def fork(self, what: str, step: int, child: str) -> tuple[Reply, WorkerProcess | None]:
        """Fork: the child gets a fresh socket pair end, passed as SCM_RIGHTS."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            r = self.call(what, OP_FORK, step, name=child, fds=[theirs.fileno()])
        finally:
            theirs.close()
        if r.ret <= 0:
            ours.close()
            return r, None
        return r, WorkerProcess(child, r.ret, ours)

    def exit(self, what: str, step: int) -> int:
        """exit_group(); returns once the process is a zombie (its mm teardown is done)."""
        t0 = time.monotonic_ns()
        self.send(what, pack_cmd(OP_EXIT, step))
        self.wait_dead(what)
        return time.monotonic_ns() - t0

    def wait_dead(self, what: str, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        """Block until the task has exited (pidfd readable: exit_notify ran, exit_mm done)."""
        r, _, _ = select.select([self.pidfd], [], [], timeout_s)
        if not r:
            raise WorkerError(f"{what}: process {self.name} (pid {self.pid}) did not exit")
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def kill(self) -> None:
        """SIGKILL through the pidfd (never a recycled pid); no-op if already dead."""
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.sock.close()

    def reap(self) -> bool:
        """waitpid() this process if it is our (possibly adopted) child; True once reaped."""
        try:
            wpid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # not our child (yet): still parented by a live worker, or already reaped
            return not Path(f"/proc/{self.pid}").exists() or not self._is_ours()
        return wpid == self.pid

    def _is_ours(self) -> bool:
        """Whether /proc/pid still is this process (pidfd still alive or zombie)."""
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except ProcessLookupError:
            return False
        except OSError as exc:
            return exc.errno != errno.ESRCH
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


def kill_and_reap(procs: list[WorkerProcess], timeout_s: float = 5.0) -> list[str]:
    """Kill every process, wait until all have exited, then reap them all.

    Returns the names of processes that could not be reaped in time (empty when clean).
    Zombies whose parent was a worker are reparented to us (child subreaper) when that parent
    dies, so reaping works once every process is dead.
    """
    for p in procs:
        p.kill()
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    for p in procs:
        left = max(0.0, deadline - time.monotonic())
        select.select([p.pidfd], [], [], left)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not p.reap()]
        if pending:
            time.sleep(0.001)
    for p in procs:
        p.close()
    return [p.name for p in pending]
