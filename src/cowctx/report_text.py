"""Readable terminal summaries of scenario results (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cowctx.metrics.ledger import WALK_UNITS


def print_result(
    console: Console, result: dict[str, Any], failures: list[str], failed: bool | None = None
) -> None:
    """One scenario on one design: steps that failed, maps, objects, locks, walks."""
    ok = not failed if failed is not None else not failures and not result["oracle"]["violations"]
    mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
    console.print(f"{mark} [bold]{result['scenario']}[/] on [cyan]{escape(result['design'])}[/]")
    for i, step in enumerate(result["steps"]):
        if step["errno"]:
            console.print(f"  step {i} ({step['op']}): {step['errno']}")
    for proc, lines in result["final"]["maps"].items():
        pages = result["final"]["pages"].get(proc, [])
        shared = sum(1 for p in pages if p["mapcount"] > 1)
        zero = sum(1 for p in pages if p["zero_page"])
        layout = " ".join(f"[{s},{e}) {perms}" for s, e, perms in lines) or "(nothing mapped)"
        console.print(f"  {proc}: {layout}   pages {len(pages)}, shared {shared}, zero {zero}")
    objects = Table("object", "live", "allocated", "freed", "bytes live", box=None, padding=(0, 1))
    for kind, s in result["final"]["objects"].items():
        objects.add_row(
            kind,
            str(s["live"]),
            str(s["allocated"]),
            str(s["freed"]),
            str(result["final"]["bytes"].get(kind, "")),
        )
    console.print(objects)
    if result["locks"]:
        locks = Table(
            "lock", "mode", "op", "site", "taken", "VMAs", "objects", box=None, padding=(0, 1)
        )
        for row in result["locks"]:
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
    if result["walks"]:
        console.print("  rmap walk cost, mean per walk:")
        for client, agg in result["walks"].items():
            n = agg["walks"]
            units = ", ".join(f"{u} {agg[u] / n:.1f}" for u in WALK_UNITS if agg[u])
            console.print(f"    {client} x{n}: {units}")
    for v in result["oracle"]["violations"]:
        console.print(
            f"  [red]violation[/] step {v['step']} ({v['op']}) {v['kind']}: {escape(v['detail'])}"
        )
    for v in result["oracle"].get("kernel_limits", []):
        console.print(
            f"  [yellow]kernel limit[/] step {v['step']} ({v['op']}) {v['kind']}: "
            f"{escape(v['detail'])}"
        )
    for f in failures:
        console.print(f"  [red]expectation failed[/] {escape(f)}")
