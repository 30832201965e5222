"""The comparison as terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cowctx.report.compare import CLIENTS, Comparison, lock_totals
from cowctx.scenario.results import ScenarioResult

KERNEL_KINDS = ("anon_vma", "anon_vma_chain")


def object_rows(
    results: list[ScenarioResult], kernel: ScenarioResult | None = None
) -> list[tuple[str, list[str]]]:
    """Objects live (allocated) and bytes live per kind, one cell per result
    (then the kernel's counts, marked ≠ where they differ from anon_vma's)."""
    rows: list[tuple[str, list[str]]] = [("objects live (allocated)", [])]
    kinds = sorted(
        {k for r in results for k in r.final.objects},
        key=lambda k: (k != "vm_area_struct", k),
    )
    model = next((r for r in results if r.design == "anon_vma"), None)
    for kind in kinds:
        cells = []
        for r in results:
            n = r.final.objects.get(kind)
            star = "*" if kind in (r.final.estimated or []) else ""
            cells.append(f"{n.live or 0:,} ({n.allocated:,}){star}" if n else "")
        if kernel is not None:
            k = kernel.final.objects.get(kind)
            mark = ""
            if k and model is not None:
                ms = model.final.objects[kind]
                if (ms.live, ms.allocated) != (k.live, k.allocated):
                    mark = " ≠"
            cells.append(f"{k.live or 0:,} ({k.allocated:,}){mark}" if k else "")
        rows.append((f"  {kind}", cells))
    extra = [""] if kernel is not None else []
    rows.append(
        ("bytes live", [f"{sum((r.final.bytes or {}).values()):,}" for r in results] + extra)
    )
    for kind in kinds:
        cells = []
        for r in results:
            size = (r.final.bytes or {}).get(kind)
            star = "*" if kind in (r.final.estimated or []) else ""
            cells.append(f"{size:,}{star}" if size is not None else "")
        rows.append((f"  {kind}", cells + extra))
    return rows


def comparison_rows(c: Comparison) -> list[tuple[str, list[str]]]:
    """(label, one cell per column) rows; columns are the designs, then linux.
    Section rows have an empty cell list.  Shared by the terminal and HTML."""
    designs = c.designs
    extra = [""] if c.kernel is not None else []
    rows = object_rows([d.result for d in designs], c.kernel)
    rows.append(("VMA size (bytes each)", [_vma_size(d.result) for d in designs] + extra))
    rows.append(("locks: taken (VMAs, objects held; most in one hold)", []))
    totals = [lock_totals(d.workload_locks) for d in designs]
    for key in sorted({k for t in totals for k in t}):
        cells = []
        for t in totals:
            v = t.get(key)
            cells.append(
                f"{v['acquisitions']:,} ({v['vmas']:,}, {v['objects']:,}; {v['max_held']:,})"
                if v
                else ""
            )
        rows.append((f"  {key[0]} {key[1]}", cells + extra))
    rows.append(("walk cost: page-table probes, mean / p99 / max", []))
    for client in CLIENTS:
        for kind in ("exclusive", "shared"):
            cells = []
            for d in designs:
                s = d.walks.get(client, {}).get(kind)
                cells.append(
                    f"{s['mean']:.1f} / {s['p99']:.0f} / {s['max']:.0f}  (n={int(s['walks']):,})"
                    if s
                    else ""
                )
            if any(cells):
                rows.append((f"  {client}, {kind}", cells + extra))
    rows.append(("walk breadth (folio_referenced), mean", []))
    for kind in ("exclusive", "shared"):
        cells = []
        for d in designs:
            s = d.walks.get("folio_referenced", {}).get(kind)
            cells.append(
                f"{s['mean_anchors']:.1f} anchors, {s['mean_vma_lookups']:.1f} VMAs" if s else ""
            )
        if any(cells):
            rows.append((f"  {kind}", cells + extra))
    rows.append(
        ("mappings the measurement walks missed", [f"{d.client_misses:,}" for d in designs] + extra)
    )
    rows.append(
        (
            "oracle violations (with --check)",
            [str(len(d.result.violations)) for d in designs] + extra,
        )
    )
    return rows


def columns(c: Comparison) -> list[str]:
    return [d.design for d in c.designs] + (["linux (kernel)"] if c.kernel is not None else [])


def print_comparison(console: Console, c: Comparison) -> None:
    console.rule(f"[bold]{escape(c.scenario)}")
    if c.description:
        console.print(escape(c.description))
    table = Table("", *(escape(x) for x in columns(c)), box=None, padding=(0, 1))
    for label, cells in comparison_rows(c):
        if not cells:
            table.add_row(f"[bold]{escape(label)}[/]")
        else:
            table.add_row(escape(label), *(escape(x) for x in cells))
    console.print(table)
    notes = []
    if any(d.result.final.estimated for d in c.designs):
        notes.append("* estimated sizes")
    if c.kernel is not None:
        notes.append("≠ the kernel's count differs from the anon_vma model's")
    elif c.kernel_reason:
        notes.append(f"no kernel column: {c.kernel_reason}")
    if notes:
        console.print("  " + "; ".join(notes))
    for line in recording_notes(c):
        console.print(f"  [yellow]{escape(line)}[/]")


def recording_notes(c: Comparison) -> list[str]:
    """What a reader of a recording's row must know: why it is not exactly
    replayable, and where the anon_vma design parted from the kernel.  Shared by the
    terminal and HTML."""
    rec = c.recording
    if rec is None:
        return []
    out = [f"recording flagged as not exactly replayable: {flag}" for flag in rec["flags"]]
    lost = {instance: n for instance, n in rec["lost_events"].items() if n}
    if lost:
        out.append(f"events the recording's ring buffers dropped: {lost}")
    if rec["agree"] is False:
        out.append(
            "the anon_vma design's counts differ from the recording's; first difference: "
            f"{rec['first_difference']}"
        )
    return out


def _vma_size(result: ScenarioResult) -> str:
    live = result.final.objects["vm_area_struct"].live
    if not live:
        return ""
    star = "*" if "vm_area_struct" in (result.final.estimated or []) else ""
    return f"{(result.final.bytes or {})['vm_area_struct'] // live}{star}"
