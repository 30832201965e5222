"""File identity during a replay: open file descriptions through open, dup, fork and
exec (src/cowctx/trace/fdtable.py), and why they matter: VMA merges compare files."""

from __future__ import annotations

from cowctx.designs import make_machine
from cowctx.mm.constants import MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ
from cowctx.mm.file import File
from cowctx.trace import fdtable
from cowctx.trace.fdtable import FdTable

O_RDONLY, O_RDWR, O_CLOEXEC = 0, 2, 0o2000000
AT_FDCWD = (1 << 64) - 100


def new_file(name: str, writable: bool) -> File:
    f = File(name, 1 << 20, int)
    f.f_mode_write = writable
    return f


def opened(table: FdTable, fd: int, flags: int = O_RDONLY) -> None:
    fdtable.apply(table, "openat", [AT_FDCWD, 0x1000, flags, 0, 0, 0], fd, new_file)


def test_open_dup_close_and_exec() -> None:
    t = FdTable()
    opened(t, 3)
    opened(t, 4, O_RDWR | O_CLOEXEC)
    assert t.fds[3].file is not t.fds[4].file  # every open is a new description
    assert not t.fds[3].file.f_mode_write and t.fds[4].file.f_mode_write
    fdtable.apply(t, "dup", [3, 0, 0, 0, 0, 0], 5, new_file)
    assert t.fds[5].file is t.fds[3].file and not t.fds[5].cloexec
    fdtable.apply(t, "dup3", [3, 9, O_CLOEXEC, 0, 0, 0], 9, new_file)
    assert t.fds[9].file is t.fds[3].file and t.fds[9].cloexec
    fdtable.apply(t, "fcntl", [3, 1030, 10, 0, 0, 0], 10, new_file)  # F_DUPFD_CLOEXEC
    assert t.fds[10].cloexec
    fdtable.apply(t, "fcntl", [5, 2, 1, 0, 0, 0], 0, new_file)  # F_SETFD FD_CLOEXEC
    fdtable.apply(t, "close", [3, 0, 0, 0, 0, 0], 0, new_file)
    fdtable.apply(t, "close", [77, 0, 0, 0, 0, 0], -9, new_file)  # EBADF: nothing
    forked = t.copy()
    assert forked.fds[4].file is t.fds[4].file and forked.fds is not t.fds
    after = t.after_exec()
    assert sorted(after.fds) == []  # 4, 5, 9, 10 were close-on-exec, 3 closed
    fdtable.apply(t, "close_range", [0, (1 << 32) - 1, 0, 0, 0, 0], 0, new_file)
    assert t.fds == {}
    file, seen = t.file(42, new_file)
    assert not seen and t.file(42, new_file) == (file, True)


def test_file_identity_decides_merges() -> None:
    """Adjacent mappings of one description merge; of two opens of a file they don't."""
    m = make_machine("anon_vma")
    task = m.spawn("p")
    t = FdTable()
    opened(t, 3)
    fdtable.apply(t, "dup", [3, 0, 0, 0, 0, 0], 4, new_file)
    opened(t, 5)
    base = 0x10_0000_0000
    flags = MAP_PRIVATE | MAP_FIXED
    m.mmap(task, base, PAGE_SIZE, PROT_READ, flags, t.fds[3].file, 0)
    m.mmap(task, base + PAGE_SIZE, PAGE_SIZE, PROT_READ, flags, t.fds[4].file, 1)
    m.mmap(task, base + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ, flags, t.fds[5].file, 2)
    assert task.mm is not None
    assert [(v.vm_end - v.vm_start) // PAGE_SIZE for v in task.mm.vmas()] == [2, 1]
