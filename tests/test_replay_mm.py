"""The machine-model pieces the replay added for real programs: exec of an ELF image,
stack growth, tasks sharing an mm, brk's first growth, MAP_STACK, read-only shared
files, the extra madvises.  Each against the kernel behaviour it stands for."""

from __future__ import annotations

import pytest

from cowctx.designs import make_machine
from cowctx.mm.clone import clone_vm
from cowctx.mm.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_STACK,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    VM_DONTDUMP,
    VM_GROWSDOWN,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_SHARED,
)
from cowctx.mm.errors import SyscallError
from cowctx.mm.exec_elf import (
    ELF_ET_DYN_BASE,
    MMAP_BASE,
    STACK_TOP,
    ElfImage,
    ElfLoad,
    load_elf_binary,
)
from cowctx.mm.file import File
from cowctx.mm.machine import Machine
from cowctx.mm.madvise_more import MADV_DONTDUMP, MADV_POPULATE_WRITE, do_madvise_more
from cowctx.mm.mlock import MLOCK_ONFAULT, do_mlock, do_munlock
from cowctx.mm.mm_types import MmStruct, TaskStruct
from cowctx.mm.stack import RLIMIT_STACK, expand_stack

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
BASE = 0x10_0000_0000

# /usr/bin/ls and ld.so of the reference machine (Debian trixie), as `cowctx record` reads them
LS = [
    [0, 14016, 0, 14016, 4, 4096],
    [16384, 87897, 16384, 87897, 5, 4096],
    [106496, 36560, 106496, 36560, 4, 4096],
    [144048, 9720, 144048, 4880, 6, 4096],
]
LD = [
    [0, 3416, 0, 3416, 4, 4096],
    [4096, 151825, 4096, 151825, 5, 4096],
    [159744, 40060, 159744, 40060, 4, 4096],
    [203008, 10712, 203008, 10256, 6, 4096],
]
SPECIAL = [("[vvar]", 4), ("[vvar_vclock]", 2), ("[vdso]", 2)]


def image(loads: list[list[int]], e_type: str = "ET_DYN") -> ElfImage:
    return ElfImage(e_type, tuple(ElfLoad(*p) for p in loads), False, File("f", 1 << 20, int))


def counts(m: Machine) -> tuple[int, int]:
    o = m.ledger.objects
    return o["anon_vma"].allocated, o["anon_vma_chain"].allocated


def exec_ls(m: Machine, task: TaskStruct, interp: bool = True) -> tuple[ElfImage, ElfImage]:
    exe, ld = image(LS), image(LD)
    special = [(n, p, File(n, p, int)) for n, p in SPECIAL]
    load_elf_binary(m, task, exe, ld if interp else None, special, lambda length: None)
    return exe, ld


def ranges(mm: MmStruct, file: File | None) -> list[tuple[int, int]]:
    return [(v.vm_start, v.vm_end) for v in mm.vmas() if v.vm_file is file]


def test_exec_lays_out_a_pie_as_the_kernel_does() -> None:
    """Addresses as `setarch -R /usr/bin/ls` shows them in /proc/PID/maps."""
    m = make_machine("anon_vma")
    task = m.spawn("ls")
    exe, ld = exec_ls(m, task)
    mm = task.mm
    assert mm is not None
    base = ELF_ET_DYN_BASE & ~0xFFF
    assert base == 0x555555554000
    # the whole image was reserved by the first segment, then the tail given back
    assert ranges(mm, exe.file) == [
        (base, base + 0x4000),
        (base + 0x4000, base + 0x1A000),
        (base + 0x1A000, base + 0x23000),
        (base + 0x23000, base + 0x25000),
    ]
    bss = [v for v in mm.vmas() if v.vm_file is None and v.vm_start == base + 0x25000]
    assert [(v.vm_end, bool(v.vm_flags & VM_GROWSDOWN)) for v in bss] == [(base + 0x26000, False)]
    assert mm.start_brk == mm.brk == base + 0x26000
    assert ranges(mm, ld.file)[0][0] == MMAP_BASE - 0x35000 == 0x7FFFF7FCA000
    vdso = [v for v in mm.vmas() if v.vm_file is not None and v.vm_file.name == "[vvar]"]
    assert vdso[0].vm_start == 0x7FFFF7FC2000
    stack = mm.vmas()[-1]
    assert (stack.vm_start, stack.vm_end) == (0x7FFFFFFDE000, STACK_TOP)
    assert stack.vm_flags & VM_GROWSDOWN
    # the argument page was written through GUP: the stack's anon_vma, nothing else yet
    assert counts(m) == (1, 1)


def test_exec_of_a_loader_moves_its_brk() -> None:
    """A static PIE (ET_DYN, no PT_INTERP) goes to the mmap area and its brk to
    ELF_ET_DYN_BASE even without randomisation (v6.15)."""
    m = make_machine("anon_vma")
    task = m.spawn("ld")
    ld = image(LD)
    load_elf_binary(m, task, ld, None, [], lambda length: None)
    assert task.mm is not None
    assert ranges(task.mm, ld.file)[0][0] == MMAP_BASE - 0x35000
    assert task.mm.start_brk == 0x555555555000


def test_exec_replaces_the_old_mm_and_frees_its_objects() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    m.mmap(task, BASE, 4 * PAGE_SIZE, RW, ANON)
    m.access(task, BASE, True)
    exec_ls(m, task)
    o = m.ledger.objects
    assert o["anon_vma"].freed == 1 and o["anon_vma"].live == 1  # old one gone, stack's live


def test_stack_grows_down_within_the_rlimit_and_guard_gap() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    exec_ls(m, task)
    mm = task.mm
    assert mm is not None
    stack = mm.vmas()[-1]
    low = stack.vm_start - 10 * PAGE_SIZE
    grown = expand_stack(m, mm, low + 8)
    assert grown is not None and grown is stack
    assert stack.vm_start == low
    assert stack.vm_pgoff == low >> 12
    assert expand_stack(m, mm, STACK_TOP - RLIMIT_STACK - PAGE_SIZE) is None
    # a mapping within the guard gap below the stack stops growth
    m.mmap(task, low - 64 * PAGE_SIZE, PAGE_SIZE, RW, ANON)
    assert expand_stack(m, mm, low - 32 * PAGE_SIZE) is None
    assert counts(m) == (1, 1)  # growth reuses the stack's anon_vma


def test_clone_vm_shares_the_mm_until_the_last_user_goes() -> None:
    m = make_machine("anon_vma")
    parent = m.spawn("p")
    m.mmap(parent, BASE, 4 * PAGE_SIZE, RW, ANON)
    m.access(parent, BASE, True)
    child = clone_vm(m, parent, "t")
    assert child.mm is parent.mm and parent.mm is not None and parent.mm.mm_users == 2
    m.access(child, BASE + PAGE_SIZE, True)  # the same VMA: no new anon_vma
    assert counts(m) == (1, 1)
    m.exit(parent)
    assert m.ledger.objects["anon_vma"].freed == 0
    m.exit(child)
    assert m.ledger.objects["anon_vma"].freed == 1


def test_first_brk_growth_does_not_join_the_bss() -> None:
    """brk(): vma_prev_limit(&vmi, mm->start_brk) finds no VMA ending at start_brk."""
    m = make_machine("anon_vma")
    task = m.spawn("p")
    mm = task.mm
    assert mm is not None
    mm.start_brk = mm.brk = BASE + 4 * PAGE_SIZE
    m.mmap(task, BASE, 4 * PAGE_SIZE, RW, ANON)  # a bss just below
    m.brk(task, BASE + 8 * PAGE_SIZE)
    assert len(mm.vmas()) == 2
    m.brk(task, BASE + 12 * PAGE_SIZE)  # later growth expands the heap VMA
    assert [(v.vm_start, v.vm_end) for v in mm.vmas()] == [
        (BASE, BASE + 4 * PAGE_SIZE),
        (BASE + 4 * PAGE_SIZE, BASE + 12 * PAGE_SIZE),
    ]


def test_map_stack_is_nohugepage_and_does_not_merge_with_plain_memory() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    m.mmap(task, BASE, 4 * PAGE_SIZE, RW, ANON)
    m.mmap(task, BASE + 4 * PAGE_SIZE, 4 * PAGE_SIZE, RW, ANON | MAP_STACK)
    assert task.mm is not None
    vmas = task.mm.vmas()
    assert len(vmas) == 2 and vmas[1].vm_flags & VM_NOHUGEPAGE


def test_shared_mapping_of_a_read_only_file_is_not_shared_writable() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    f = File("ro", 16, int)
    f.f_mode_write = False
    m.mmap(task, BASE, 4 * PAGE_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    assert task.mm is not None
    vma = task.mm.vmas()[0]
    assert not vma.vm_flags & (VM_MAYWRITE | VM_SHARED)


def test_dontdump_splits_and_populate_write_faults() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    mm = task.mm
    assert mm is not None
    m.mmap(task, BASE, 8 * PAGE_SIZE, RW, ANON)
    do_madvise_more(m, mm, BASE + 2 * PAGE_SIZE, 2 * PAGE_SIZE, MADV_DONTDUMP)
    assert [bool(v.vm_flags & VM_DONTDUMP) for v in mm.vmas()] == [False, True, False]
    do_madvise_more(m, mm, BASE, PAGE_SIZE, MADV_POPULATE_WRITE)
    assert counts(m) == (1, 1)
    assert m.folio_at(task, BASE) is not None
    with pytest.raises(SyscallError) as err:
        do_madvise_more(m, mm, BASE + 16 * PAGE_SIZE, PAGE_SIZE, MADV_DONTDUMP)
    assert err.value.errno == "ENOMEM"


def test_mlock_splits_populates_and_munlock_merges_back() -> None:
    m = make_machine("anon_vma")
    task = m.spawn("p")
    mm = task.mm
    assert mm is not None
    m.mmap(task, BASE, 16 * PAGE_SIZE, RW, ANON)
    m.access(task, BASE, True)
    do_mlock(m, mm, BASE + 4 * PAGE_SIZE, 4 * PAGE_SIZE, 0)
    assert [(v.vm_start - BASE) // PAGE_SIZE for v in mm.vmas()] == [0, 4, 8]
    assert all(m.folio_at(task, BASE + i * PAGE_SIZE) for i in range(4, 8))  # populated
    assert counts(m) == (1, 3)  # the split clones the chain twice
    do_munlock(m, mm, BASE + 4 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert len(mm.vmas()) == 1
    m.mmap(task, BASE + 32 * PAGE_SIZE, 4 * PAGE_SIZE, RW, ANON)
    do_mlock(m, mm, BASE + 32 * PAGE_SIZE, 4 * PAGE_SIZE, MLOCK_ONFAULT)
    assert m.folio_at(task, BASE + 32 * PAGE_SIZE) is None  # on fault: nothing populated
    with pytest.raises(SyscallError):
        do_mlock(m, mm, BASE + 20 * PAGE_SIZE, PAGE_SIZE, 0)
