"""What the referee adds to the model's side so it compares with the kernel's beyond counts:
the anon_vma graph (graph_diff.py), the swap entries, and a model run with swap on whenever
the kernel run had a swap file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cowctx.linux.graph_diff import add_model_graphs, graph_diffs
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.mm.folio import is_swap_pte, pte_present, swp_offset
from cowctx.rmap.protocol import AnonRmap
from cowctx.scenario.schema import WINDOW_BASE, WINDOW_PAGES

if TYPE_CHECKING:
    from cowctx.scenario.results import ScenarioResult

WINDOW_END = WINDOW_BASE + (WINDOW_PAGES << PAGE_SHIFT)


def with_swap(design: str | type[AnonRmap]) -> type[AnonRmap]:
    """``design`` on a machine with swap (``Machine.swap_enabled``): MADV_PAGEOUT then swaps
    private anon folios out, as the kernel does once the referee's swap file is on."""
    from cowctx.designs import get_design

    base = get_design(design) if isinstance(design, str) else design

    class Swapping(base):  # type: ignore[valid-type,misc]
        def __init__(self, machine: Any) -> None:
            super().__init__(machine)
            machine.swap_enabled = True

    Swapping.__name__ = f"{base.__name__}WithSwap"
    return Swapping


def kernel_had_swap(kernel: ScenarioResult) -> bool:
    return bool(kernel.kernel.get("kernel", {}).get("swap"))


def model_swap_entries(run: Any) -> dict[str, list[dict[str, int]]]:
    """``{proc: [{"page", "slot"}]}`` like pagemap.number_swap_entries, from the PTEs."""
    ids: dict[int, int] = {}
    out: dict[str, list[dict[str, int]]] = {}
    for proc, task in run.procs.items():
        if task.exit_state or task.mm is None:
            continue
        rows = []
        for vpn, pte in task.mm.iter_ptes(WINDOW_BASE, WINDOW_END):
            if is_swap_pte(pte) and not pte_present(pte):
                slot = ids.setdefault(swp_offset(pte), len(ids))
                rows.append({"page": vpn - (WINDOW_BASE >> PAGE_SHIFT), "slot": slot})
        out[proc] = rows
    return out


def add_model_views(
    scenario: Any, design: Any, run: Any, model: ScenarioResult, kernel: ScenarioResult
) -> None:
    """The graph blocks (see graph_diff.add_model_graphs) and the swap entries."""
    add_model_graphs(scenario, design, run, model, kernel)
    if kernel.final.swap is not None:
        model.final.swap = model_swap_entries(run)


def swap_diffs(model: ScenarioResult, kernel: ScenarioResult) -> list[str]:
    """Which pages are swapped out, and which share a swap entry."""
    ms, ks = model.final.swap, kernel.final.swap
    if ms is None or ks is None:
        return []
    out = []
    for proc in sorted(set(ms) | set(ks)):
        a = {e["page"]: e["slot"] for e in ms.get(proc, [])}
        b = {e["page"]: e["slot"] for e in ks.get(proc, [])}
        for page in sorted(set(a) | set(b)):
            if a.get(page) != b.get(page):
                mv = "not swapped" if page not in a else f"swap entry {a[page]}"
                kv = "not swapped" if page not in b else f"swap entry {b[page]}"
                out.append(f"final.swap.{proc}[page {page}]: model {mv}, kernel {kv}")
    return out


def referee_diffs(model: ScenarioResult, kernel: ScenarioResult) -> list[str]:
    """Swap entries, then the graph."""
    return swap_diffs(model, kernel) + graph_diffs(model, kernel)
