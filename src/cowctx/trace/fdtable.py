"""File descriptors during a replay: which open file description an fd names.

The identity of a mapped file decides VMA merges (``vma->vm_file`` is compared by
pointer in ``is_mergeable_vma()``): every open() is a new description, dup()s and
fork()ed tables share it, exec closes the close-on-exec fds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cowctx.mm.file import File
from cowctx.trace import syscalls as sc
from cowctx.trace.events import signed_arg

NewFile = Callable[[str, bool], File]
"""Makes the model's file for a new open file description: (name, writable)."""
OPENERS = frozenset(
    {"open", "openat", "creat", "openat2", "memfd_create", "pidfd_getfd", "memfd_secret"}
)
CHANGERS = frozenset({"dup", "dup2", "dup3", "fcntl", "close", "close_range"})
EBADF = -9


@dataclass
class FdEntry:
    file: File
    cloexec: bool


@dataclass
class FdTable:
    """``struct files_struct``: fd -> open file description."""

    fds: dict[int, FdEntry] = field(default_factory=dict)

    def copy(self) -> FdTable:
        """``dup_fd()``: fork without CLONE_FILES, and exec's ``unshare_files()``."""
        return FdTable({fd: FdEntry(e.file, e.cloexec) for fd, e in self.fds.items()})

    def after_exec(self) -> FdTable:
        """``do_close_on_exec()`` on an unshared copy."""
        return FdTable({fd: e for fd, e in self.copy().fds.items() if not e.cloexec})

    def file(self, fd: int, new_file: NewFile) -> tuple[File, bool]:
        """The file ``fd`` names, and whether the recording saw it opened (an fd
        inherited from outside the tree or received over a socket was not)."""
        entry = self.fds.get(fd)
        if entry is not None:
            return entry.file, True
        entry = self.fds[fd] = FdEntry(new_file(f"fd{fd}", True), False)
        return entry.file, False


def open_flags(name: str, a: list[int]) -> int:
    """The O_* flags an fd-creating syscall used (openat2's are in a struct: rw)."""
    if name == "open":
        return a[1]
    if name == "openat":
        return a[2]
    if name == "creat":
        return 0o1101  # O_WRONLY | O_CREAT | O_TRUNC
    if name == "memfd_create":
        return 2 | (sc.O_CLOEXEC if a[1] & sc.MFD_CLOEXEC else 0)
    return 2


def apply(table: FdTable, name: str, a: list[int], ret: int, new_file: NewFile) -> None:
    """Apply one fd syscall (:data:`OPENERS` or :data:`CHANGERS`) with its result."""
    fds = table.fds
    if name in OPENERS:
        if ret >= 0:
            flags = open_flags(name, a)
            writable = (flags & sc.O_ACCMODE) != sc.O_RDONLY
            fds[ret] = FdEntry(new_file(f"fd{ret}", writable), bool(flags & sc.O_CLOEXEC))
        return
    if name == "close":
        if ret != EBADF:  # the fd is gone even when close() reports an error
            fds.pop(signed_arg(a[0]), None)
        return
    if name == "close_range":
        if ret >= 0:
            first, last, flags = a[0], a[1], a[2]
            for fd in [f for f in fds if first <= f <= last]:
                if flags & sc.CLOSE_RANGE_CLOEXEC:
                    fds[fd].cloexec = True
                else:
                    del fds[fd]
        return
    if ret < 0:
        return
    old = signed_arg(a[0])
    if name == "fcntl":
        cmd = a[1]
        if cmd == sc.F_SETFD and old in fds:
            fds[old].cloexec = bool(a[2] & sc.FD_CLOEXEC)
        elif cmd in (sc.F_DUPFD, sc.F_DUPFD_CLOEXEC) and old in fds:
            fds[ret] = FdEntry(fds[old].file, cmd == sc.F_DUPFD_CLOEXEC)
        return
    source, _ = table.file(old, new_file)
    if name == "dup" or old != ret:  # dup2(fd, fd) changes nothing
        fds[ret] = FdEntry(source, name == "dup3" and bool(a[2] & sc.O_CLOEXEC))
