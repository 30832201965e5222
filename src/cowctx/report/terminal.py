"""Readable terminal summaries of scenario results (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cowctx.metrics.ledger import WALK_UNITS
from cowctx.report.compare import lock_totals
from cowctx.report.tables import object_rows
from cowctx.scenario.results import ScenarioResult


def print_result(
    console: Console, result: ScenarioResult, failures: list[str], failed: bool | None = None
) -> None:
    """One scenario on one design: steps that failed, maps, objects, locks, walks."""
    ok = not failed if failed is not None else not failures and not result.violations
    mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
    console.print(f"{mark} [bold]{result.scenario}[/] on [cyan]{escape(result.design)}[/]")
    for i, step in enumerate(result.steps):
        if step.errno:
            console.print(f"  step {i} ({step.op}): {step.errno}")
    final = result.final
    for proc, lines in final.maps.items():
        pages = final.pages.get(proc, [])
        shared = sum(1 for p in pages if p.mapcount > 1)
        zero = sum(1 for p in pages if p.zero_page)
        layout = " ".join(f"[{m.start},{m.end}) {m.perms}" for m in lines) or "(nothing mapped)"
        console.print(f"  {proc}: {layout}   pages {len(pages)}, shared {shared}, zero {zero}")
    objects = Table("object", "live", "allocated", "freed", "bytes live", box=None, padding=(0, 1))
    for kind, c in final.objects.items():
        objects.add_row(
            kind,
            str(c.live),
            str(c.allocated),
            str(c.freed),
            str((final.bytes or {}).get(kind, "")),
        )
    console.print(objects)
    if result.locks:
        locks = Table(
            "lock", "mode", "op", "site", "taken", "VMAs", "objects", box=None, padding=(0, 1)
        )
        for row in result.locks:
            locks.add_row(
                row["lock"],
                row["mode"],
                row["op"],
                row["site"],
                str(row["acquisitions"]),
                str(row["vmas"]),
                str(row["objects"]),
            )
        console.print(locks)
    if result.walks:
        console.print("  rmap walk cost, mean per walk:")
        for client, agg in result.walks.items():
            n = agg["walks"]
            units = ", ".join(f"{u} {agg[u] / n:.1f}" for u in WALK_UNITS if agg[u])
            console.print(f"    {client} x{n}: {units}")
    for v in result.violations:
        console.print(f"  [red]violation[/] step {v.step} ({v.op}) {v.kind}: {escape(v.detail)}")
    for v in result.oracle.kernel_limits if result.oracle else []:
        console.print(
            f"  [yellow]kernel limit[/] step {v.step} ({v.op}) {v.kind}: {escape(v.detail)}"
        )
    for f in failures:
        console.print(f"  [red]expectation failed[/] {escape(f)}")


def print_side_by_side(console: Console, results: list[ScenarioResult], failed: list[bool]) -> None:
    """One scenario on several designs, one column per design: objects, bytes,
    lock acquisitions by kind and mode, and rmap walk cost per walk."""
    scenario = results[0].scenario
    console.rule(f"[bold]{escape(scenario)}")
    for result, bad in zip(results, failed, strict=True):
        mark = "[red]FAIL[/]" if bad else "[green]PASS[/]"
        kinds = sorted({v.kind for v in result.violations})
        note = f" (violations: {', '.join(kinds)})" if kinds else ""
        console.print(f"{mark} {escape(result.design)}{note}")
    table = Table("", *(escape(r.design) for r in results), box=None, padding=(0, 1))
    for label, cells in object_rows(results):
        table.add_row(f"[bold]{label}[/]" if not cells else label, *cells)
    table.add_row("[bold]locks taken (VMAs+objects held)[/]")
    totals = [lock_totals(r.locks or []) for r in results]
    for key in sorted({k for t in totals for k in t}):
        table.add_row(
            f"  {key[0]} {key[1]}",
            *(
                f"{t[key]['acquisitions']:,} ({t[key]['vmas'] + t[key]['objects']:,})"
                if key in t
                else ""
                for t in totals
            ),
        )
    table.add_row("[bold]rmap walk cost per walk[/]")
    walks = [sum(a["walks"] for a in (r.walks or {}).values()) for r in results]
    table.add_row("  walks", *(str(n) for n in walks))
    for unit in WALK_UNITS:
        cells = []
        for r, n in zip(results, walks, strict=True):
            total = sum(a[unit] for a in (r.walks or {}).values())
            cells.append(f"{total / n:.2f}" if n else "")
        if any(c not in ("", "0.00") for c in cells):
            table.add_row(f"  {unit}", *cells)
    console.print(table)
    if any(r.final.estimated for r in results):
        console.print("  * estimated sizes (no kernel has these objects yet)")
