"""The fork hierarchy and the rmap objects as Graphviz DOT (and SVG where the
``dot`` program is installed): processes, their VMAs, and whatever the design
has (the anon_vma graph, or the context tree)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from cowctx.mm.constants import PAGE_SHIFT, vm_flags_perms
from cowctx.scenario.schema import WINDOW_BASE

STYLE = {
    "task": 'shape=box, style="rounded,filled", fillcolor="#dde8f7"',
    "vma": 'shape=box, fontsize=9, fillcolor="#f3f3f3", style=filled',
    "anon_vma": 'shape=ellipse, style=filled, fillcolor="#fde2b8"',
    "root": 'shape=doubleoctagon, style=filled, fillcolor="#f9c784"',
    "context": 'shape=ellipse, style=filled, fillcolor="#c9ecd0"',
    "dead": 'shape=ellipse, style="dashed,filled", fillcolor="#eeeeee"',
}


def _q(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def machine_dot(machine: Any, procs: dict[str, Any], title: str) -> str:
    """DOT for the machine's live processes and the design's objects."""
    lines = [
        "digraph cowctx {",
        f"  label={_q(title)}; labelloc=t; rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10]; edge [fontsize=8];',
    ]
    for name, task in procs.items():
        if task.exit_state or task.mm is None:
            continue
        mm = task.mm
        lines.append(f"  mm{mm.mm_id} [label={_q(f'{name} (mm#{mm.mm_id})')}, {STYLE['task']}];")
        parent = task.parent
        if parent is not None and not parent.exit_state and parent.mm is not None:
            lines.append(f"  mm{parent.mm.mm_id} -> mm{mm.mm_id} [label=fork, style=bold];")
        for vma in mm.vmas():
            start = (vma.vm_start - WINDOW_BASE) >> PAGE_SHIFT
            end = (vma.vm_end - WINDOW_BASE) >> PAGE_SHIFT
            label = f"[{start},{end}) {vm_flags_perms(vma.vm_flags)}"
            lines.append(f"  vma{vma.vm_id} [label={_q(label)}, {STYLE['vma']}];")
            lines.append(f"  mm{mm.mm_id} -> vma{vma.vm_id} [arrowhead=none, color=gray];")
    nodes, edges = machine.rmap.graph()
    for node_id, label, kind in nodes:
        lines.append(f"  {node_id} [label={_q(label)}, {STYLE.get(kind, '')}];")
    for src, dst, label in edges:
        style = "dashed" if label in ("avc",) else "solid"
        lines.append(f"  {src} -> {dst} [label={_q(label)}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot: str) -> str | None:
    """SVG from DOT with Graphviz, or None where ``dot`` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "-Tsvg"], input=dot, capture_output=True, text=True, check=False, timeout=120
    )
    return proc.stdout if proc.returncode == 0 else None
