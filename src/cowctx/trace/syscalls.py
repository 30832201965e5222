"""The x86-64 syscalls a recording keeps, by family (arch/x86/entry/syscalls/syscall_64.tbl)."""

from __future__ import annotations

ADDRESS_SPACE = {
    9: "mmap",
    10: "mprotect",
    11: "munmap",
    12: "brk",
    25: "mremap",
    26: "msync",
    28: "madvise",
    29: "shmget",
    30: "shmat",
    31: "shmctl",
    67: "shmdt",
    149: "mlock",
    150: "munlock",
    151: "mlockall",
    152: "munlockall",
    157: "prctl",
    216: "remap_file_pages",
    237: "mbind",
    256: "migrate_pages",
    279: "move_pages",
    325: "mlock2",
    329: "pkey_mprotect",
    440: "process_madvise",
    453: "map_shadow_stack",
    462: "mseal",
}
LIFECYCLE = {
    56: "clone",
    57: "fork",
    58: "vfork",
    59: "execve",
    60: "exit",
    231: "exit_group",
    272: "unshare",
    322: "execveat",
    435: "clone3",
}
FD = {
    2: "open",
    3: "close",
    32: "dup",
    33: "dup2",
    72: "fcntl",
    85: "creat",
    257: "openat",
    292: "dup3",
    319: "memfd_create",
    436: "close_range",
    437: "openat2",
    438: "pidfd_getfd",
    447: "memfd_secret",
}
UNREPLAYABLE = {
    101: "ptrace",
    311: "process_vm_writev",
    323: "userfaultfd",
    425: "io_uring_setup",
    426: "io_uring_enter",
    427: "io_uring_register",
}
"""Syscalls through which memory changes in ways a recording cannot see (another
process's address space written through GUP, faults resolved by user space, pages
pinned for io_uring): any successful one flags the recording."""

NAMES: dict[int, str] = {**ADDRESS_SPACE, **LIFECYCLE, **FD, **UNREPLAYABLE}
BY_NAME = {v: k for k, v in NAMES.items()}


def syscall_filter() -> str:
    """The raw_syscalls filter keeping exactly the recorded families."""
    return " || ".join(f"id == {nr}" for nr in sorted(NAMES))


# flags and commands the replay interprets
CLONE_VM = 0x100
CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
O_ACCMODE = 0o3
O_RDONLY = 0
O_CLOEXEC = 0o2000000
F_DUPFD = 0
F_SETFD = 2
F_DUPFD_CLOEXEC = 1030
FD_CLOEXEC = 1
MFD_CLOEXEC = 1
CLOSE_RANGE_UNSHARE = 2
CLOSE_RANGE_CLOEXEC = 4
AT_FDCWD = -100
PR_SET_VMA = 0x53564D41
