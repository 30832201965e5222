"""Trace records: parsing tracefs text lines into the records a trace file holds.

Every record is a JSON array ``[kind, ts_ns, pid, ...fields]`` (docs/trace-format.md).
``pid`` is the task the event ran in (``common_pid``), except for ``free_task``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cowctx.linux.tracefs import KINDS, parse_line

Record = list[Any]


@dataclass
class Recording:
    """A trace file's content: the header and the records."""

    header: dict[str, Any]
    records: list[Record] = field(default_factory=list)


FIELDS: dict[str, tuple[type, ...]] = {
    "enter": (int, list),  # nr, args[6]
    "exit": (int, int),  # nr, ret
    "fault": (int, int, int),  # address, error_code, user (1) / kernel (0)
    "newtask": (int, int, str),  # child pid, clone_flags, comm
    "fork": (int,),  # child pid (sched_process_fork)
    "exec": (int, str),  # old_pid, filename
    "exit_task": (str,),  # comm (sched_process_exit)
    "free_task": (),  # the freed task's pid is the record's pid (sched_process_free)
    "unmapped": (int, int),  # addr, length (mmap/vm_unmapped_area)
    "kmem": (int, str, str, int),  # alloc (1) / free (0), cache name, call-site function, ptr
}
"""Per record kind, the types of the fields after ``[kind, ts_ns, pid]``."""

FAULT_WRITE = 0x2
"""x86 page-fault error code: X86_PF_WRITE."""

_HEAD = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<sec>\d+)\.(?P<usec>\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$"
)
_ENTER = re.compile(r"NR (-?\d+) \(([0-9a-f, ]*)\)")
_EXIT = re.compile(r"NR (-?\d+) = (-?\d+)")
_FAULT = re.compile(r"address=(?:0x)?([0-9a-f]+)\S* ip=\S+ error_code=0x([0-9a-f]+)")
_NEWTASK = re.compile(r"pid=(\d+) comm=(.*) clone_flags=([0-9a-f]+) oom_score_adj")
_FORK = re.compile(r"comm=.* pid=(\d+) child_comm=.* child_pid=(\d+)")
_EXEC = re.compile(r"filename=(.*) pid=(\d+) old_pid=(\d+)$")
_PID_FIELD = re.compile(r"comm=(.*) pid=(\d+) prio=")
_UNMAPPED = re.compile(
    r"addr=0x([0-9a-f]+) err=(-?\d+) total_vm=0x[0-9a-f]+ flags=0x[0-9a-f]+ len=0x([0-9a-f]+)"
)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse(line: str) -> Record | None:
    """One trace_pipe line as a record; None for lines of no interest (headers,
    kmem events of other caches, failed placements)."""
    m = _HEAD.match(line)
    if m is None:
        return None
    ts = int(m["sec"]) * 1_000_000_000 + int(m["usec"].ljust(6, "0")[:6]) * 1000
    pid = int(m["pid"])
    event, body = m["event"], m["body"]
    if event == "sys_enter":
        e = _ENTER.match(body)
        if e is None:
            return None
        args = [int(a, 16) for a in e[2].split(", ")] if e[2] else []
        return ["enter", ts, pid, int(e[1]), args]
    if event == "sys_exit":
        e = _EXIT.match(body)
        return None if e is None else ["exit", ts, pid, int(e[1]), int(e[2])]
    if event in ("page_fault_user", "page_fault_kernel"):
        e = _FAULT.match(body)
        if e is None:
            return None
        return ["fault", ts, pid, int(e[1], 16), int(e[2], 16), int(event == "page_fault_user")]
    if event == "task_newtask":
        e = _NEWTASK.match(body)
        return None if e is None else ["newtask", ts, pid, int(e[1]), int(e[3], 16), e[2]]
    if event == "sched_process_fork":
        e = _FORK.match(body)
        return None if e is None else ["fork", ts, pid, int(e[2])]
    if event == "sched_process_exec":
        e = _EXEC.match(body)
        return None if e is None else ["exec", ts, int(e[2]), int(e[3]), e[1]]
    if event in ("sched_process_exit", "sched_process_free"):
        e = _PID_FIELD.match(body)
        if e is None:
            return None
        if event == "sched_process_exit":
            return ["exit_task", ts, int(e[2]), e[1]]
        return ["free_task", ts, int(e[2])]
    if event == "vm_unmapped_area":
        e = _UNMAPPED.match(body)
        if e is None or int(e[2]) != 0:
            return None
        return ["unmapped", ts, pid, int(e[1], 16), int(e[3], 16)]
    if event in ("kmem_cache_alloc", "kmem_cache_free"):
        k = parse_line(line)
        if k is None or k.kind not in KINDS:
            return None
        return ["kmem", ts, pid, int(k.alloc), k.kind, k.func, k.ptr]
    return None


def validate(rec: Any, where: str) -> str | None:
    """Why ``rec`` is not a well-formed record (naming the field), or None."""
    if not isinstance(rec, list) or len(rec) < 3:
        return f"{where}: a record is [kind, ts_ns, pid, ...]"
    kind = rec[0]
    if kind not in FIELDS:
        return f"{where}: unknown record kind {kind!r}"
    if not isinstance(rec[1], int) or not isinstance(rec[2], int):
        return f"{where}: ts_ns and pid must be integers"
    types = FIELDS[kind]
    if len(rec) != 3 + len(types):
        return f"{where}: {kind} has {len(types)} fields after pid, got {len(rec) - 3}"
    for i, t in enumerate(types):
        value = rec[3 + i]
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            return f"{where}: {kind} field {i + 1} must be {t.__name__}, got {value!r}"
    if kind == "enter" and (len(rec[4]) != 6 or not all(isinstance(a, int) for a in rec[4])):
        return f"{where}: enter args must be 6 integers"
    if kind == "kmem" and rec[4] not in KINDS:
        return f"{where}: kmem cache must be one of {KINDS}, got {rec[4]!r}"
    return None


def signed_arg(value: int) -> int:
    """A raw syscall argument read as a signed long (fds such as AT_FDCWD, -1)."""
    return _signed(value)
