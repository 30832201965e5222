"""execve() of an ELF program: the address space ``load_elf_binary()`` builds
(fs/binfmt_elf.c and fs/exec.c / mm/vma_exec.c in 6.18), with layout randomisation
off (``ADDR_NO_RANDOMIZE``, as ``cowctx record`` runs its targets).

Built in the kernel's order: the new mm's stack VMA and the argument pages written
into it (GUP write faults: the stack's anon_vma), ``exec_mmap()`` (the old mm is
put), the program's PT_LOAD segments (``elf_load()``: ``elf_map()`` with the whole
image reserved by the first segment, then the bss via ``vm_brk_flags()``), the
interpreter's, then the special mappings (vvar, vdso), then ``mm->brk``.  The
``padzero()`` stores into the last file page of a segment are kernel faults the
caller replays from the recording; so are create_elf_tables()'s stores.

Deliberate differences: the stack VMA's ``vm_pgoff`` is ``vm_start >> PAGE_SHIFT``
(the kernel leaves it 0 and lets expand_downwards wrap it; only rmap offsets inside
the stack change, and nothing merges with a stack); the argument area is taken to
be ``arg_pages`` pages, as the recording does not hold the strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowctx.mm import fork as _fork
from cowctx.mm.constants import (
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    VM_ACCOUNT,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_IO,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_WRITE,
)
from cowctx.mm.file import File
from cowctx.mm.memory import handle_mm_fault
from cowctx.mm.mm_types import MmStruct, TaskStruct
from cowctx.mm.mmap import do_mmap, do_vmi_munmap
from cowctx.mm.stack import expand_downwards
from cowctx.mm.vma import VmaMergeStruct, vma_merge_new_range

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine

STACK_TOP = 0x7FFF_FFFF_F000
"""``STACK_TOP`` = ``TASK_SIZE_LOW`` (``randomize_stack_top()`` adds nothing)."""
MMAP_BASE = STACK_TOP - (128 << 20)
"""``mmap_base()`` without randomisation: the 8 MiB stack rlimit plus the guard gap
is below the 128 MiB minimum gap."""
ELF_ET_DYN_BASE = ((1 << 47) - PAGE_SIZE) // 3 * 2
"""``ELF_ET_DYN_BASE`` = ``DEFAULT_MAP_WINDOW / 3 * 2``."""
STACK_EXPAND = 131072
"""``setup_arg_pages()``: 128 KiB of stack beyond the arguments."""
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_STACK_FLAGS = VM_GROWSDOWN | VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
PF_X, PF_W, PF_R = 1, 2, 4
SPECIAL_FLAGS = {
    "[vvar]": VM_READ | VM_MAYREAD | VM_IO | VM_DONTDUMP | VM_PFNMAP | VM_DONTEXPAND,
    "[vvar_vclock]": VM_READ | VM_MAYREAD | VM_IO | VM_DONTDUMP | VM_PFNMAP | VM_DONTEXPAND,
    "[vdso]": VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_DONTEXPAND,
}
"""``_install_special_mapping()`` flags (it adds VM_DONTEXPAND) of arch/x86/entry/vdso."""


@dataclass(frozen=True, slots=True)
class ElfLoad:
    """One PT_LOAD program header."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int
    align: int


@dataclass(frozen=True, slots=True)
class ElfImage:
    """What ``load_elf_binary()`` reads of an ELF file, and the file it maps."""

    e_type: str
    loads: tuple[ElfLoad, ...]
    exec_stack: bool
    file: File


Placer = Callable[[int], int | None]
"""Where the kernel put a non-fixed mapping of the given length (recorded), or None
to let the model's ``get_unmapped_area()`` choose."""


def _pagestart(x: int) -> int:
    return x & PAGE_MASK


def _pagealign(x: int) -> int:
    return (x + PAGE_SIZE - 1) & PAGE_MASK


def make_prot(p_flags: int) -> int:
    """``make_prot()``: PF_R/W/X to PROT_READ/WRITE/EXEC."""
    return (
        (PROT_READ if p_flags & PF_R else 0)
        | (PROT_WRITE if p_flags & PF_W else 0)
        | (PROT_EXEC if p_flags & PF_X else 0)
    )


def total_mapping_size(loads: tuple[ElfLoad, ...]) -> int:
    """``total_mapping_size()``: from the first load's page to the last load's end."""
    return max(p.vaddr + p.memsz for p in loads) - min(_pagestart(p.vaddr) for p in loads)


def maximum_alignment(loads: tuple[ElfLoad, ...]) -> int:
    """``maximum_alignment()``: the largest power-of-two p_align, at least a page."""
    best = 0
    for p in loads:
        if p.align and p.align & (p.align - 1) == 0:
            best = max(best, p.align)
    return _pagealign(best)


def _vm_mmap(
    m: Machine,
    mm: MmStruct,
    file: File | None,
    addr: int,
    length: int,
    prot: int,
    flags: int,
    pgoff: int,
    place: Placer,
) -> int:
    """``vm_mmap()``; a non-fixed request lands where the kernel put it."""
    if not flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        where = place(_pagealign(length))
        if where is not None:
            addr, flags = where, flags | MAP_FIXED
    return do_mmap(m, mm, addr, length, prot, flags, file, pgoff)


def vm_brk_flags(m: Machine, mm: MmStruct, addr: int, length: int, vm_flags: int) -> None:
    """``vm_brk_flags()`` → ``do_brk_flags()``: anonymous memory at ``addr``, joining
    the VMA just below if it may (``just_expand``), else a new VMA."""
    length = _pagealign(length)
    if not length:
        return
    if mm.vmas_in_range(addr, addr + length):
        do_vmi_munmap(m, mm, addr, length)
    flags = vm_flags | VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
    prev = mm.vma_before(addr)
    if prev is not None and prev.vm_end == addr:
        vmg = VmaMergeStruct(
            mm=mm,
            start=addr,
            end=addr + length,
            pgoff=addr >> PAGE_SHIFT,
            vm_flags=flags,
            file=None,
            prev=prev,
            next=None,
            just_expand=True,
        )
        if vma_merge_new_range(m, vmg) is not None:
            return
    vma = m.vm_area_alloc(mm)
    vma.vm_start, vma.vm_end, vma.vm_pgoff, vma.vm_flags = addr, addr + length, addr >> 12, flags
    mm.vma_store(vma)
    mm.map_count += 1


def elf_map(
    m: Machine,
    mm: MmStruct,
    image: ElfImage,
    addr: int,
    p: ElfLoad,
    prot: int,
    flags: int,
    total_size: int,
    place: Placer,
) -> int:
    """``elf_map()``: map the file part; the first segment reserves the whole image
    (``total_size``) and gives back the tail at once."""
    size = _pagealign(p.filesz + (p.vaddr & ~PAGE_MASK))
    off = p.offset - (p.vaddr & ~PAGE_MASK)
    addr = _pagestart(addr)
    if not size:
        return addr
    if total_size:
        total_size = _pagealign(total_size)
        map_addr = _vm_mmap(
            m, mm, image.file, addr, total_size, prot, flags, off >> PAGE_SHIFT, place
        )
        if total_size > size:
            do_vmi_munmap(m, mm, map_addr + size, total_size - size)
        return map_addr
    return _vm_mmap(m, mm, image.file, addr, size, prot, flags, off >> PAGE_SHIFT, place)


def elf_load(
    m: Machine,
    mm: MmStruct,
    image: ElfImage,
    addr: int,
    p: ElfLoad,
    prot: int,
    flags: int,
    total_size: int,
    place: Placer,
) -> int:
    """``elf_load()`` (since commit 585a018627b4 ("binfmt_elf: Support segments with
    0 filesz and misaligned starts") (v6.7)): the file part, then the bss pages
    beyond it as anonymous memory."""
    if p.filesz:
        map_addr = elf_map(m, mm, image, addr, p, prot, flags, total_size, place)
        zero_start = map_addr + (p.vaddr & ~PAGE_MASK) + p.filesz
        zero_end = map_addr + (p.vaddr & ~PAGE_MASK) + p.memsz
    else:
        map_addr = zero_start = _pagestart(addr)
        zero_end = zero_start + (p.vaddr & ~PAGE_MASK) + p.memsz
    if p.memsz > p.filesz:
        zero_start, zero_end = _pagealign(zero_start), _pagealign(zero_end)
        if zero_end > zero_start:
            vm_brk_flags(
                m, mm, zero_start, zero_end - zero_start, VM_EXEC if prot & PROT_EXEC else 0
            )
    return map_addr


def load_elf_interp(m: Machine, mm: MmStruct, interp: ElfImage, place: Placer) -> None:
    """``load_elf_interp()``: the interpreter goes where get_unmapped_area puts it."""
    total_size = total_mapping_size(interp.loads)
    load_addr = 0
    load_addr_set = False
    for p in interp.loads:
        flags = MAP_PRIVATE
        if interp.e_type == "ET_EXEC" or load_addr_set:
            flags |= MAP_FIXED
        elif interp.e_type == "ET_DYN":
            load_addr = -p.vaddr
        map_addr = elf_load(
            m, mm, interp, load_addr + p.vaddr, p, make_prot(p.flags), flags, total_size, place
        )
        total_size = 0
        if not load_addr_set and interp.e_type == "ET_DYN":
            load_addr = map_addr - _pagestart(p.vaddr)
            load_addr_set = True


def setup_stack(m: Machine, mm: MmStruct, exec_stack: bool, arg_pages: int) -> None:
    """``create_init_stack_vma()`` + ``copy_strings()`` + ``setup_arg_pages()``: the
    argument pages are written through GUP (the stack's anon_vma), then the VMA gets
    its final flags and 128 KiB more below."""
    vma = m.vm_area_alloc(mm)
    vma.vm_start, vma.vm_end = STACK_TOP - PAGE_SIZE, STACK_TOP
    vma.vm_pgoff = vma.vm_start >> PAGE_SHIFT
    vma.vm_flags = VM_STACK_FLAGS | (VM_EXEC if exec_stack else 0)
    mm.vma_store(vma)
    mm.map_count += 1
    for i in range(arg_pages):
        addr = STACK_TOP - (i + 1) * PAGE_SIZE
        if addr < vma.vm_start:
            expand_downwards(m, vma, addr)
        handle_mm_fault(m, mm, addr, True)
    expand_downwards(m, vma, vma.vm_start - STACK_EXPAND)


def install_special_mapping(
    m: Machine, mm: MmStruct, addr: int, pages: int, vm_flags: int, file: File
) -> None:
    """``_install_special_mapping()``: a VMA that never merges (VM_DONTEXPAND)."""
    vma = m.vm_area_alloc(mm)
    vma.vm_start, vma.vm_end, vma.vm_pgoff = addr, addr + (pages << PAGE_SHIFT), 0
    vma.vm_flags, vma.vm_file = vm_flags, file
    mm.vma_store(vma)
    mm.map_count += 1


def load_elf_binary(
    m: Machine,
    task: TaskStruct,
    exe: ElfImage,
    interp: ElfImage | None,
    special: list[tuple[str, int, File]],
    place: Placer,
    arg_pages: int = 1,
) -> None:
    """``load_elf_binary()`` for ``task``: a new mm replaces its old one."""
    mm = m.mm_alloc()
    mm.owner = task
    mm.mmap_base = MMAP_BASE
    setup_stack(m, mm, exe.exec_stack, arg_pages)
    old, task.mm = task.mm, mm  # exec_mmap()
    if old is not None:
        _fork.mmput(m, old)
    load_bias = 0
    elf_brk = 0
    first = True
    for p in exe.loads:
        flags = MAP_PRIVATE
        total_size = 0
        if not first:
            flags |= MAP_FIXED
        elif exe.e_type == "ET_EXEC":
            flags |= MAP_FIXED_NOREPLACE
        elif exe.e_type == "ET_DYN":
            # commit 3545deff0ec7 ("binfmt_elf: Honor PT_LOAD alignment for static
            # PIE") (v6.11): a loader with large alignment also goes to ELF_ET_DYN_BASE
            alignment = maximum_alignment(exe.loads)
            if interp is not None or alignment > PAGE_SIZE:
                load_bias = ELF_ET_DYN_BASE
                if alignment:
                    load_bias &= ~(alignment - 1)
                flags |= MAP_FIXED_NOREPLACE
            else:
                load_bias = 0
            load_bias = _pagestart(load_bias - p.vaddr)
            total_size = total_mapping_size(exe.loads)
        map_addr = elf_load(
            m, mm, exe, load_bias + p.vaddr, p, make_prot(p.flags), flags, total_size, place
        )
        if first:
            first = False
            if exe.e_type == "ET_DYN":
                load_bias += map_addr - _pagestart(load_bias + p.vaddr)
        elf_brk = max(elf_brk, p.vaddr + p.memsz)
    elf_brk += load_bias
    if interp is not None:
        load_elf_interp(m, mm, interp, place)
    if special:  # arch_setup_additional_pages() → map_vdso()
        total = sum(pages for _, pages, _ in special)
        addr = place(total << PAGE_SHIFT)
        if addr is None:
            from cowctx.mm.mmap import get_unmapped_area

            addr = get_unmapped_area(mm, None, 0, total << PAGE_SHIFT, 0)
        for name, pages, file in special:
            install_special_mapping(m, mm, addr, pages, SPECIAL_FLAGS.get(name, VM_READ), file)
            addr += pages << PAGE_SHIFT
    if exe.e_type == "ET_DYN" and interp is None:
        # commit 11854fe263eb ("binfmt_elf: Move brk for static PIE even if ASLR
        # disabled") (v6.15): a loader's brk is moved out of the mmap area
        elf_brk = ELF_ET_DYN_BASE
    mm.start_brk = mm.brk = _pagealign(elf_brk)
