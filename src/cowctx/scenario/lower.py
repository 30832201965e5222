"""One lowering of scenario steps to what a process does.

A step becomes a syscall (x86-64 number and arguments, exactly as the kernel gets
them), a run of touches, fork, exit, exec, a KSM scan or an rmap client call.  The
model runner and the kernel referee both run these actions, so a step means the same
thing on both sides by construction: there is one table of flags, one address
computation, one place where a scenario file becomes a file descriptor argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowctx.mm.constants import (
    MADV_BY_NAME,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MMAP_FLAGS_BY_NAME,
    MREMAP_FLAGS_BY_NAME,
    PAGE_SHIFT,
    PROT_BY_NAME,
    SYS_MADVISE,
    SYS_MMAP,
    SYS_MPROTECT,
    SYS_MREMAP,
    SYS_MUNMAP,
)
from cowctx.scenario import schema as S

ANON_FD = -1
"""The fd argument of an anonymous mmap."""


def page_addr(page: int) -> int:
    """Virtual address of window page ``page``."""
    return S.WINDOW_BASE + (page << PAGE_SHIFT)


@dataclass(frozen=True)
class Syscall:
    """A syscall as the kernel receives it.  For mmap of a scenario file, ``file``
    names it and the fd argument is :data:`ANON_FD` until the caller puts its own."""

    nr: int
    args: tuple[int, ...]
    file: str | None = None


@dataclass(frozen=True)
class Touch:
    """Touch ``pages`` pages from ``addr`` in order, reading or writing; a write
    stores ``value`` in every byte, or (None) content unique to this write."""

    addr: int
    pages: int
    write: bool
    value: int | None = None


@dataclass(frozen=True)
class Fork:
    child: str


@dataclass(frozen=True)
class Exit:
    pass


@dataclass(frozen=True)
class Exec:
    pass


@dataclass(frozen=True)
class KsmScan:
    """Model only: one full scan of ksmd."""


@dataclass(frozen=True)
class ClientCall:
    """Model only: an rmap walk client (``migrate``, ``reclaim``, ``referenced``) on
    the folio mapped at ``addr``."""

    client: str
    addr: int


Action = Syscall | Touch | Fork | Exit | Exec | KsmScan | ClientCall


def lower(step: S.Step) -> Action:
    """The action a scenario step stands for."""
    if isinstance(step, S.ReadStep | S.WriteStep):
        write = isinstance(step, S.WriteStep)
        value = step.value if isinstance(step, S.WriteStep) else None
        return Touch(page_addr(step.page), step.pages, write, value)
    if isinstance(step, S.ForkStep):
        return Fork(step.child)
    if isinstance(step, S.ExitStep):
        return Exit()
    if isinstance(step, S.ExecStep):
        return Exec()
    if isinstance(step, S.KsmStep):
        return KsmScan()
    if isinstance(step, S.ClientStep):
        return ClientCall(step.op, page_addr(step.page))
    return _syscall(step)


def _syscall(step: S.Step) -> Syscall:
    assert isinstance(step, S._Range)
    addr, length = page_addr(step.page), step.pages << PAGE_SHIFT
    if isinstance(step, S.MmapStep):
        flags = MAP_FIXED_NOREPLACE | (MAP_SHARED if step.shared else MAP_PRIVATE)
        for name in step.flags:
            flags |= MMAP_FLAGS_BY_NAME[name]
        if step.file is None:
            flags |= MAP_ANONYMOUS
            return Syscall(SYS_MMAP, (addr, length, PROT_BY_NAME[step.prot], flags, ANON_FD, 0))
        offset = step.file_page << PAGE_SHIFT
        return Syscall(
            SYS_MMAP, (addr, length, PROT_BY_NAME[step.prot], flags, ANON_FD, offset), step.file
        )
    if isinstance(step, S.MunmapStep):
        return Syscall(SYS_MUNMAP, (addr, length))
    if isinstance(step, S.MprotectStep):
        return Syscall(SYS_MPROTECT, (addr, length, PROT_BY_NAME[step.prot]))
    if isinstance(step, S.MremapStep):
        flags = 0
        for flag in step.flags:
            flags |= MREMAP_FLAGS_BY_NAME[flag]
        new_addr = page_addr(step.new_page) if step.new_page is not None else 0
        return Syscall(SYS_MREMAP, (addr, length, step.new_pages << PAGE_SHIFT, flags, new_addr))
    if isinstance(step, S.MadviseStep):
        return Syscall(SYS_MADVISE, (addr, length, MADV_BY_NAME[step.advice]))
    raise ValueError(f"op {step.op!r} is not a syscall")  # pragma: no cover - schema
