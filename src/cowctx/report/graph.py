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


def _graph_cluster(side: str, graph: dict[str, Any], other: dict[str, Any] | None) -> list[str]:
    """One side of `graph_pair_dot`: anon_vmas with parent edges, window VMAs with their
    chains, folios grouped per anon_vma; what the other side lacks or has otherwise is red."""
    bad = 'color="#d62728", penwidth=2, fontcolor="#d62728"'
    o_av = other["anon_vmas"] if other else None
    lines = [f"  subgraph cluster_{side} {{", f"    label={_q(side)};"]

    def nid(kind: str, key: str) -> str:
        return _q(f"{side}:{kind}:{key}")

    for name, f in graph["anon_vmas"].items():
        label = f"{name}\\nc={f['num_children']} a={f['num_active_vmas']} r={f['refcount']}"
        style = STYLE["root"] if f["root"] == name else STYLE["anon_vma"]
        if o_av is not None and o_av.get(name) != f:
            style += ", " + bad
        lines.append(f"    {nid('av', name)} [label={_q(label)}, {style}];")
        if f["parent"] != name:
            lines.append(f"    {nid('av', name)} -> {nid('av', f['parent'])} [label=parent];")
    for proc, rows in graph["vmas"].items():
        o_rows = {(v["start"], v["end"]): v for v in other["vmas"].get(proc, [])} if other else None
        for v in rows:
            key = f"{proc}[{v['start']},{v['end']})"
            style = STYLE["vma"]
            if o_rows is not None and o_rows.get((v["start"], v["end"])) != v:
                style += ", " + bad
            lines.append(f"    {nid('vma', key)} [label={_q(key)}, {style}];")
            for av in v["chain"]:
                kind = "anon_vma" if av == v["anon_vma"] else "avc"
                dash = "solid" if kind == "anon_vma" else "dashed"
                lines.append(
                    f"    {nid('vma', key)} -> {nid('av', av)} [label={kind}, style={dash}];"
                )
    for proc, folios in graph["folios"].items():
        o_f = {f["page"]: f for f in other["folios"].get(proc, [])} if other else None
        by_av: dict[str, list[int]] = {}
        wrong: set[str] = set()
        for f in folios:
            by_av.setdefault(f["anon_vma"], []).append(f["page"])
            if o_f is not None and o_f.get(f["page"]) != f:
                wrong.add(f["anon_vma"])
        for av, pages in by_av.items():
            key = f"{proc}:{av}"
            label = f"{proc} pages {_ranges(pages)}"
            style = "shape=note, fontsize=9" + (", " + bad if av in wrong else "")
            lines.append(f"    {nid('folios', key)} [label={_q(label)}, {style}];")
            lines.append(f"    {nid('folios', key)} -> {nid('av', av)} [label=mapping];")
    lines.append("  }")
    return lines


def _ranges(pages: list[int]) -> str:
    out: list[str] = []
    for p in sorted(pages):
        if out and out[-1].endswith(f"-{p - 1}"):
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{p}"
        elif out and out[-1] == str(p - 1):
            out[-1] = f"{p - 1}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)


def graph_pair_dot(model: dict[str, Any], kernel: dict[str, Any] | None, title: str) -> str:
    """DOT of the model's anon_vma graph beside the kernel's (linux/graph.py's form);
    differences are drawn in red on both sides."""
    lines = [
        "digraph cowctx {",
        f"  label={_q(title)}; labelloc=t; rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10]; edge [fontsize=8];',
    ]
    lines += _graph_cluster("model", model, kernel)
    if kernel is not None:
        lines += _graph_cluster("kernel", kernel, model)
    lines.append("}")
    return "\n".join(lines) + "\n"
