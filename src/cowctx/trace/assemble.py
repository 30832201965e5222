"""A recording's records and header, from the text lines of both instances: parsed,
merged in order, filtered to the tree, flagged where not exactly replayable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cowctx.trace import syscalls
from cowctx.trace.events import Record, Recording, parse


def assemble(
    argv: list[str],
    path: str,
    root_pid: int,
    status: int | None,
    lost: dict[str, int],
    lines_rec: list[str],
    lines_kmem: list[str],
) -> Recording:
    """Parse both instances' lines into one ordered record list plus the header."""
    records: list[Record] = []
    for line in lines_rec:
        r = parse(line)
        if r is not None and r[0] != "free_task":
            records.append(r)
    traced = {r[2] for r in records} | {root_pid}
    traced |= {r[3] for r in records if r[0] in ("newtask", "fork")}
    allocated = {r[6] for r in records if r[0] == "kmem" and r[3]}
    extra: list[Record] = []
    for line in lines_kmem:
        r = parse(line)
        if r is None:
            continue
        if r[0] == "free_task" and r[2] in traced:
            extra.append(r)
        elif r[0] == "kmem" and not r[3] and r[2] not in traced and r[6] in allocated:
            extra.append(r)  # a free of the tree's object that ran in another task
    merged = sorted(
        [(r[1], 0, i, r) for i, r in enumerate(records)]
        + [(r[1], 1, i, r) for i, r in enumerate(extra)]
    )
    out = [r for *_, r in merged]
    flags: list[str] = []
    for name, n in lost.items():
        if n:
            flags.append(f"lost-events: the {name} instance's ring buffer dropped {n} events")
    unreplayable: dict[str, list[int]] = {}
    entered: dict[int, Record] = {}
    for r in out:
        if r[0] == "enter":
            entered[r[2]] = r
        elif r[0] == "exit" and r[4] >= 0:
            e = entered.pop(r[2], None)
            what = syscalls.UNREPLAYABLE.get(r[3])
            is_prctl = e is not None and r[3] == syscalls.BY_NAME["prctl"]
            if is_prctl and e is not None and e[4][0] == syscalls.PR_SET_VMA:
                what = "prctl(PR_SET_VMA)"
            if what is not None:
                unreplayable.setdefault(what, []).append(r[2])
    for what, pids in unreplayable.items():
        flags.append(
            f"unreplayable: {what} succeeded {len(pids)} times "
            f"(pids {', '.join(str(p) for p in sorted(set(pids))[:5])}"
            f"{', ...' if len(set(pids)) > 5 else ''}): its effect on memory is not recorded"
        )
    from cowctx.trace.images import load_images  # pyelftools: only once recorded

    execs = sorted({r[4] for r in out if r[0] == "exec"})
    images, image_flags = load_images(execs)
    flags.extend(image_flags)
    header: dict[str, Any] = {
        "format": "cowctx-trace",
        "version": 1,
        "command": argv,
        "path": path,
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "aslr": False,
        "root_pid": root_pid,
        "exit_status": status,
        "events": len(out),
        "lost_events": lost,
        "flags": sorted(set(flags)),
        "special_mappings": special_mappings(),
        "images": images,
    }
    return Recording(header, out)


def special_mappings() -> list[list[Any]]:
    """[name, pages] of exec's special mappings in address order (``[vvar]``,
    ``[vvar_vclock]``, ``[vdso]`` on this kernel), read from the recorder's own maps."""
    out: list[list[Any]] = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] in ("[vvar]", "[vvar_vclock]", "[vdso]"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append([parts[5], (hi - lo) >> 12])
    return out
