"""Recording real programs on this machine and replaying them (root + tracefs).

Elsewhere these tests skip, printing why.  A recorder interrupted or killed at any
point must leave no tracefs instance, no enabled event and no process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowctx.linux.tracefs import INSTANCE_PREFIX
from cowctx.mm.exec_elf import ElfImage, ElfLoad, load_elf_binary
from cowctx.trace import traceformat
from cowctx.trace.assemble import assemble
from cowctx.trace.images import read_elf
from cowctx.trace.recorder import record, recording_unavailable_reason
from cowctx.trace.replay import replay

from .helpers import sigint_as_from_a_terminal

TRACEFS = Path("/sys/kernel/tracing")
COWCTX = [sys.executable, "-m", "cowctx"]


@pytest.fixture(autouse=True)
def _kernel() -> None:
    reason = recording_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


PROGRAMS = {
    "sh-pipeline": ["sh", "-c", "ls / | wc -l > /dev/null"],
    "make": ["make", "-s", "-f", "{dir}/Makefile", "-C", "{dir}"],
    "gcc": ["gcc", "-O2", "-c", "{dir}/x.c", "-o", "{dir}/x.o"],
    "tar": ["tar", "czf", "{dir}/t.tgz", "-C", "{dir}", "src"],
    "git": ["git", "init", "-q", "{dir}/repo"],
    "static-pie": ["/sbin/ldconfig", "-p"],
    "shell-script": ["{dir}/script.sh"],
    "python-mmap": ["/usr/bin/python3", "-S", "{dir}/mm.py"],
    "python-mlock": ["/usr/bin/python3", "-S", "{dir}/ml.py"],
    "python-thread-exec": [
        "/usr/bin/python3",
        "-S",
        "-c",
        "import os, threading, time\nx = bytearray(1 << 20)\n"
        "threading.Thread(target=lambda: os.execv('/bin/true', ['true'])).start()\n"
        "time.sleep(5)",
    ],
    "python-fork": [
        "/usr/bin/python3",
        "-S",
        "-c",
        "import os\nfor i in range(3):\n    p = os.fork()\n    if p == 0:\n"
        "        b = bytearray(1 << 16); os._exit(0)\n    os.waitpid(p, 0)",
    ],
}


MM_PY = """\
import mmap, os, tempfile
a = mmap.mmap(-1, 1 << 20)  # MAP_SHARED | MAP_ANONYMOUS
a[0:4096] = b"x" * 4096
b = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
b[:8] = b"12345678"; b[500000:500008] = b"abcdefgh"
b.madvise(mmap.MADV_DONTNEED, 0, 1 << 16)
b.resize(2 << 20)  # mremap
b[(2 << 20) - 8:] = b"zzzzzzzz"
fd, path = tempfile.mkstemp(); os.write(fd, bytes(1 << 16))
c = mmap.mmap(fd, 1 << 16, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
c[100:104] = b"abcd"
d = mmap.mmap(fd, 1 << 16, flags=mmap.MAP_SHARED)
d[0:4] = b"wxyz"
pid = os.fork()
if pid == 0:
    b[8:16] = b"child..."; c[200:204] = b"efgh"; a[4096:4100] = b"kkkk"
    os._exit(0)
os.waitpid(pid, 0)
os.unlink(path)
"""


MLOCK_PY = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
for f in (libc.mlock, libc.munlock):
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
P = 4096
a = libc.mmap(None, 16 * P, 3, 0x22, -1, 0)
ctypes.memset(a, 1, 1)                      # faulted: anon_vma
assert libc.mlock(a + 4 * P, 4 * P) == 0    # split in three, populate the middle
b = libc.mmap(None, 8 * P, 3, 0x22, -1, 0)  # unfaulted
assert libc.mlock(b, 8 * P) == 0            # populate: its own anon_vma
assert libc.munlock(a + 4 * P, 4 * P) == 0  # merge back
assert libc.mlock(a + 8 * P, 2 * P) == 0
pid = os.fork()                             # the child does not inherit VM_LOCKED
if pid == 0:
    ctypes.memset(a + 9 * P, 2, 1)
    os._exit(0)
os.waitpid(pid, 0)
assert libc.mlockall(1) == 0                # MCL_CURRENT: everything populated
assert libc.munlockall() == 0
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "Makefile").write_text("all: a b\na:\n\t@echo a > /dev/null\nb:\n\t@true\n")
    (tmp_path / "x.c").write_text("int f(int x) { return x * 2; }\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("hello\n")
    (tmp_path / "script.sh").write_text("#!/bin/sh\nls / | head -2 > /dev/null\n")
    (tmp_path / "script.sh").chmod(0o755)
    (tmp_path / "mm.py").write_text(MM_PY)
    (tmp_path / "ml.py").write_text(MLOCK_PY)
    return tmp_path


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_record_then_replay_agrees(name: str, workdir: Path) -> None:
    argv = [a.replace("{dir}", str(workdir)) for a in PROGRAMS[name]]
    rec = record(argv)
    assert rec.header["exit_status"] == 0
    assert rec.header["flags"] == []
    assert rec.header["lost_events"] == {"rec": 0, "kmem": 0}
    r = replay(rec, "anon_vma")
    for kind in ("anon_vma", "anon_vma_chain"):
        assert r["kernel"][kind]["allocated"] > 0
        assert r["final"]["objects"][kind] == r["kernel"][kind], r["first_difference"]
    assert r["agree"] is True
    assert set(r["replay"]["notes"]) <= {
        "fault of the recorder's child before its exec (not the program's)"
    }, r["replay"]["notes"]


def test_chromium_headless_replays_exactly(tmp_path: Path) -> None:
    """28 processes, about 90 threads, 100k records; its counts vary run to run, so the
    replay is judged against its own recording."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (make setup installs it where it can)")
    rec = record(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            "about:blank",
        ]
    )
    assert rec.header["flags"] == []
    r = replay(rec, "anon_vma")
    if not r["agree"]:  # keep the evidence: the recording differs run to run
        kept = tmp_path / "chromium.trace"
        traceformat.write(kept, rec)
        pytest.fail(f"replay disagrees ({r['first_difference']}); the recording is in {kept}")
    assert r["kernel"]["anon_vma"]["allocated"] > 1000
    assert r["replay"]["ops"]["clone_vm"] > 50  # threads


def test_cli_record_writes_a_replayable_file(tmp_path: Path) -> None:
    out = tmp_path / "t.trace"
    done = subprocess.run(
        [*COWCTX, "record", "--out", str(out), "--", "sh", "-c", "true | cat"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert traceformat.read(out).header["command"] == ["sh", "-c", "true | cat"]
    again = subprocess.run(
        [*COWCTX, "replay", str(out), "--design", "anon_vma"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_exec_layout_matches_the_kernel() -> None:
    """The model's exec of /usr/bin/cat covers what the kernel's does (setarch -R)."""
    maps = subprocess.run(
        ["setarch", "-R", "/usr/bin/cat", "/proc/self/maps"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kernel: dict[str, set[int]] = {}
    for line in maps.splitlines():
        parts = line.split()
        name = parts[5] if len(parts) > 5 else ""
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        key = {"/usr/bin/cat": "exe", "[stack]": "stack", "[heap]": "heap"}.get(name, name)
        if "ld-linux" in name:
            key = "interp"
        kernel.setdefault(key, set()).update(range(lo, hi, 4096))
    from cowctx.designs import make_machine
    from cowctx.mm.file import File

    m = make_machine("anon_vma")
    task = m.spawn("cat")

    def image(path: str) -> ElfImage:
        e = read_elf(path)
        return ElfImage(
            e["type"],
            tuple(ElfLoad(*p) for p in e["loads"]),
            e["exec_stack"],
            File(path, 1 << 20, lambda i: i),
        )

    exe = image("/usr/bin/cat")
    interp_path = read_elf("/usr/bin/cat")["interp"]
    interp = image(os.path.realpath(interp_path))
    specials = [
        (n, len(kernel[n]), File(n, 8, lambda i: i)) for n in ("[vvar]", "[vvar_vclock]", "[vdso]")
    ]
    load_elf_binary(m, task, exe, interp, specials, lambda length: None)
    model: dict[str, set[int]] = {}
    assert task.mm is not None
    for vma in task.mm.vmas():
        f = vma.vm_file
        key = (
            "exe"
            if f is exe.file
            else "interp"
            if f is interp.file
            else f.name
            if f is not None
            else "stack"
        )
        model.setdefault(key, set()).update(range(vma.vm_start, vma.vm_end, 4096))
    for key in ("exe", "interp", "[vvar]", "[vvar_vclock]", "[vdso]", "stack"):
        assert model[key] == kernel[key], key
    assert task.mm.start_brk == min(kernel["heap"])


def test_process_vm_writev_flags_the_recording(tmp_path: Path) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "src = ctypes.create_string_buffer(b'x' * 64); dst = ctypes.create_string_buffer(64)\n"
        "class iov(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "l = iov(ctypes.addressof(src), 64); r = iov(ctypes.addressof(dst), 64)\n"
        "n = libc.syscall(311, os.getpid(), ctypes.byref(l), 1, ctypes.byref(r), 1, 0)\n"
        "assert n == 64, n\n"
    )
    rec = record(["/usr/bin/python3", "-S", "-c", code])
    assert rec.header["exit_status"] == 0
    assert any("process_vm_writev" in f for f in rec.header["flags"])
    out = tmp_path / "p.trace"
    traceformat.write(out, rec)
    res = subprocess.run([*COWCTX, "replay", str(out)], capture_output=True, text=True)
    assert res.returncode == 3 and "process_vm_writev" in res.stderr


def test_dropped_events_flag_the_recording() -> None:
    """A 1 KiB ring buffer per CPU cannot hold six Python start-ups between drains."""
    cmd = 'for i in 1 2 3 4 5 6; do /usr/bin/python3 -c "import asyncio, email.parser"; done'
    rec = record(["sh", "-c", cmd], buffer_kb=1)
    assert rec.header["lost_events"]["rec"] > 0
    assert any(f.startswith("lost-events:") for f in rec.header["flags"])


def test_only_a_successful_unreplayable_call_flags() -> None:
    """prctl(PR_SET_VMA) fails with EINVAL on a kernel without CONFIG_ANON_VMA_NAME
    (this one; chromium calls it) and then changes nothing."""
    set_vma = [0x53564D41, 0, 0x10000, 0x1000, 0x5000, 0]

    def run(ret: int) -> list[str]:
        lines = [
            f"p-7 [000] ..... 1.000001: sys_enter: NR 157 ({', '.join(f'{a:x}' for a in set_vma)})",
            f"p-7 [000] ..... 1.000002: sys_exit: NR 157 = {ret}",
        ]
        flags: list[str] = assemble(["p"], "/p", 7, 0, {"rec": 0, "kmem": 0}, lines, []).header[
            "flags"
        ]
        return flags

    assert run(-22) == []
    assert run(0) and "prctl(PR_SET_VMA)" in run(0)[0]


def test_lost_event_counts_become_flags() -> None:
    rec = assemble(["true"], "/usr/bin/true", 1, 0, {"rec": 0, "kmem": 3}, [], [])
    assert rec.header["flags"] == ["lost-events: the kmem instance's ring buffer dropped 3 events"]


# --- cleanup on every exit path -------------------------------------------------------


def _instances(pid: int) -> list[str]:
    return sorted(p.name for p in (TRACEFS / "instances").glob(f"{INSTANCE_PREFIX}{pid}-*"))


def _marked(marker: str, prefix: bool = False) -> list[int]:
    """Processes whose command line contains ``marker`` (or, with ``prefix``, starts
    with it: the recorder's own argv contains the target's)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(marker) if prefix else marker in cmdline:
                out.append(int(d.name))
    return out


def _settled(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the recorder never got there"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
@pytest.mark.parametrize("point", ["starting", "armed", "running"])
def test_killed_recorder_leaves_nothing(sig: int, point: str, tmp_path: Path) -> None:
    """Killed while Python starts, once its instances exist, or while the target runs."""
    marker = f"7.{os.getpid()}{len(point)}{int(sig)}"
    top_events = (TRACEFS / "set_event").read_text()
    out = tmp_path / "k.trace"
    proc = subprocess.Popen(
        [*COWCTX, "record", "--out", str(out), "--", "sh", "-c", f"sleep {marker} | cat"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_as_from_a_terminal,
    )
    if point == "armed":
        _wait_for(lambda: _instances(proc.pid))
    elif point == "running":
        _wait_for(lambda: _marked(f"sleep\0{marker}", prefix=True))
    proc.send_signal(sig)
    rc = proc.wait(timeout=30)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert rc != 0, err
    if point != "starting":  # the recorder's own handler ran (or SIGKILL)
        assert rc in (128 + sig, -sig), err
    assert _settled(lambda: _instances(proc.pid)), _instances(proc.pid)
    assert _settled(lambda: _marked(marker)), _marked(marker)
    assert _settled(lambda: _marked(f"--out {out}")), "the recorder's watchdog is still running"
    assert not out.exists()
    assert (TRACEFS / "set_event").read_text() == top_events


def test_stale_instances_of_a_dead_recorder_are_removed(tmp_path: Path) -> None:
    probe = subprocess.Popen(["true"])
    probe.wait()
    stale = TRACEFS / "instances" / f"{INSTANCE_PREFIX}{probe.pid}-rec"
    stale.mkdir()
    try:
        (stale / "events" / "raw_syscalls" / "sys_enter" / "enable").write_text("1")
        rec = record(["true"])
        assert rec.header["exit_status"] == 0
        assert not stale.exists()
    finally:
        if stale.exists():
            stale.rmdir()
