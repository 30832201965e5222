"""The ELF facts exec needs, read at record time so that a trace file is self-contained.

Per executed path: its type, PT_INTERP and PT_LOAD program headers, and whether
PT_GNU_STACK asks for an executable stack; a ``#!`` script names its interpreter
instead (``load_script()``, up to the kernel's nesting limit).
"""

from __future__ import annotations

import re
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

PF_X = 0x1
BINPRM_MAX_RECURSION = 4


def read_elf(path: str) -> dict[str, Any]:
    """``load_elf_binary()``'s view of ``path``: type, interpreter, load segments."""
    with open(path, "rb") as f:
        head = f.read(2)
        if head == b"#!":
            line = (head + f.readline(254)).split(b"\n", 1)[0][2:].strip()
            if not line:
                raise ValueError(f"{path}: empty #! line")
            return {"script": line.split()[0].decode()}
        f.seek(0)
        elf = ELFFile(f)
        if elf["e_machine"] != "EM_X86_64":
            raise ValueError(f"{path}: not an x86-64 ELF ({elf['e_machine']})")
        loads: list[list[int]] = []
        interp = None
        exec_stack = False
        for seg in elf.iter_segments():
            kind = seg["p_type"]
            if kind == "PT_LOAD":
                loads.append(
                    [
                        seg["p_vaddr"],
                        seg["p_memsz"],
                        seg["p_offset"],
                        seg["p_filesz"],
                        seg["p_flags"],
                        seg["p_align"],
                    ]
                )
            elif kind == "PT_INTERP" and isinstance(seg, InterpSegment):
                interp = seg.get_interp_name()
            elif kind == "PT_GNU_STACK":
                exec_stack = bool(seg["p_flags"] & PF_X)
        return {
            "type": elf["e_type"],
            "interp": interp,
            "loads": loads,
            "exec_stack": exec_stack,
        }


def load_images(paths: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every image reachable from ``paths`` (scripts' and ELF interpreters), plus the
    flags for those that could not be read."""
    images: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    todo = [p for p in paths if not is_self_exe(p)]
    while todo:
        path = todo.pop()
        if path in images:
            continue
        try:
            image = read_elf(path)
        except (OSError, ELFError, ValueError) as exc:
            flags.append(f"image-unreadable: {path}: {exc}")
            images[path] = {"unreadable": str(exc)}
            continue
        images[path] = image
        nxt = image.get("script") or image.get("interp")
        if nxt:
            todo.append(str(nxt))
    return dict(sorted(images.items())), flags


def resolve(images: dict[str, dict[str, Any]], path: str) -> tuple[str, dict[str, Any]]:
    """The ELF image exec really loads for ``path`` (following ``#!`` lines)."""
    for _ in range(BINPRM_MAX_RECURSION + 1):
        image = images.get(path)
        if image is None:
            raise KeyError(f"no image recorded for {path}")
        if "script" not in image:
            return path, image
        path = image["script"]
    raise KeyError(f"{path}: too many levels of #! interpreters")


_PROC_EXE = re.compile(r"^/proc/(self|\d+)/exe$")


def is_self_exe(path: str) -> bool:
    """``/proc/self/exe`` (or /proc/PID/exe): the exec'ing task's own program, which
    the replay knows from that task's previous exec; reading it here would read the
    recorder's."""
    return _PROC_EXE.match(path) is not None
