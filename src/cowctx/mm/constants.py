"""Kernel constants the model uses (x86-64, Linux 6.18 values)."""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

TASK_SIZE = 0x7FFF_FFFF_F000
"""x86-64 4-level TASK_SIZE_MAX."""
MMAP_MIN_ADDR = 0x10000
DEFAULT_MMAP_BASE = 0x7F00_0000_0000
"""Top of the top-down mmap area (below the stack gap); layout randomisation off."""
DEFAULT_BRK_BASE = 0x5555_5600_0000
SYSCTL_MAX_MAP_COUNT = 65530

# vm_flags (include/linux/mm.h).  VM_SOFTDIRTY is 0: CONFIG_MEM_SOFT_DIRTY is off.
VM_NONE = 0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_PFNMAP = 0x400
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_WIPEONFORK = 0x2000000
VM_DONTDUMP = 0x4000000
VM_SOFTDIRTY = 0
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_IGNORE_MERGE = VM_SOFTDIRTY

# mmap(2), mprotect(2)
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_STACK = 0x20000
MAP_FIXED_NOREPLACE = 0x100000

# mremap(2)
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

# madvise(2)
MADV_NORMAL = 0
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19

PROT_BY_NAME = {
    "none": PROT_NONE,
    "r": PROT_READ,
    "rw": PROT_READ | PROT_WRITE,
    "rx": PROT_READ | PROT_EXEC,
    "rwx": PROT_READ | PROT_WRITE | PROT_EXEC,
}
MADV_BY_NAME = {
    "dontneed": MADV_DONTNEED,
    "free": MADV_FREE,
    "dontfork": MADV_DONTFORK,
    "dofork": MADV_DOFORK,
    "wipeonfork": MADV_WIPEONFORK,
    "keeponfork": MADV_KEEPONFORK,
    "mergeable": MADV_MERGEABLE,
    "unmergeable": MADV_UNMERGEABLE,
    "hugepage": MADV_HUGEPAGE,
    "nohugepage": MADV_NOHUGEPAGE,
    "cold": MADV_COLD,
    "pageout": MADV_PAGEOUT,
}


def calc_vm_prot_bits(prot: int) -> int:
    """``calc_vm_prot_bits()``: PROT_* to VM_READ/WRITE/EXEC."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)  # the bits coincide on x86-64


def vm_flags_perms(vm_flags: int) -> str:
    """The permission column of /proc/PID/maps (``show_map_vma``)."""
    return (
        ("r" if vm_flags & VM_READ else "-")
        + ("w" if vm_flags & VM_WRITE else "-")
        + ("x" if vm_flags & VM_EXEC else "-")
        + ("s" if vm_flags & VM_MAYSHARE else "p")
    )


# x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) of the calls a
# scenario makes: the kernel referee's worker issues them raw, the model's
# Machine.syscall() dispatches on them.
SYS_MMAP = 9
SYS_MPROTECT = 10
SYS_MUNMAP = 11
SYS_MREMAP = 25
SYS_MADVISE = 28
SYSCALL_NAMES = {
    SYS_MMAP: "mmap",
    SYS_MPROTECT: "mprotect",
    SYS_MUNMAP: "munmap",
    SYS_MREMAP: "mremap",
    SYS_MADVISE: "madvise",
}
MMAP_FLAGS_BY_NAME = {"noreserve": MAP_NORESERVE, "populate": MAP_POPULATE}
MREMAP_FLAGS_BY_NAME = {
    "maymove": MREMAP_MAYMOVE,
    "fixed": MREMAP_FIXED,
    "dontunmap": MREMAP_DONTUNMAP,
}
