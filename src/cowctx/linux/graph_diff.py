"""Compare the model's anon_vma graph with the kernel's, structure first.

Differences come in a fixed order, so the first one is the first structural difference: the
set of anon_vmas, each anon_vma's root and parent, each window VMA's anon_vma and chain, each
mapped anon page's folio anon_vma, index and PG_anon_exclusive, and last the counters
(refcount, num_children, num_active_vmas).  Lines read ``final.graph.folios.p1[page 3]:
folio in AV(p1 fault step 4) on the kernel, AV(p0 fault step 1) in the model``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cowctx.scenario.results import ScenarioResult

STRUCTURE_FIELDS = ("root", "parent")
COUNTER_FIELDS = ("refcount", "num_children", "num_active_vmas")


def diff_graphs(model: dict[str, Any], kernel: dict[str, Any], where: str) -> list[str]:
    """Every difference between two graphs (linux/graph.py's form), structure first."""
    out: list[str] = []
    mav, kav = model["anon_vmas"], kernel["anon_vmas"]
    for name in sorted(set(mav) | set(kav)):
        if name not in mav:
            out.append(f"{where}.anon_vmas: {name} on the kernel, not in the model")
        elif name not in kav:
            out.append(f"{where}.anon_vmas: {name} in the model, not on the kernel")
    for name in sorted(set(mav) & set(kav)):
        for field in STRUCTURE_FIELDS:
            if mav[name][field] != kav[name][field]:
                out.append(
                    f"{where}.anon_vmas.{name}.{field}: {kav[name][field]} on the kernel, "
                    f"{mav[name][field]} in the model"
                )
    for proc in sorted(set(model["vmas"]) | set(kernel["vmas"])):
        mv = {(v["start"], v["end"]): v for v in model["vmas"].get(proc, [])}
        kv = {(v["start"], v["end"]): v for v in kernel["vmas"].get(proc, [])}
        if set(mv) != set(kv):
            out.append(
                f"{where}.vmas.{proc}: VMAs {sorted(kv)} on the kernel, {sorted(mv)} in the model"
            )
        for key in sorted(set(mv) & set(kv)):
            label = f"{where}.vmas.{proc}[{key[0]},{key[1]})"
            for field in ("anon_vma", "chain"):
                if mv[key][field] != kv[key][field]:
                    out.append(
                        f"{label}.{field}: {kv[key][field]} on the kernel, "
                        f"{mv[key][field]} in the model"
                    )
    for proc in sorted(set(model["folios"]) | set(kernel["folios"])):
        mf = {f["page"]: f for f in model["folios"].get(proc, [])}
        kf = {f["page"]: f for f in kernel["folios"].get(proc, [])}
        for page in sorted(set(mf) | set(kf)):
            label = f"{where}.folios.{proc}[page {page}]"
            a, b = mf.get(page), kf.get(page)
            if a is None or b is None:
                out.append(
                    f"{label}: {'an anon folio' if b else 'no anon folio'} on the kernel, "
                    f"{'an anon folio' if a else 'none'} in the model"
                )
                continue
            if a["anon_vma"] != b["anon_vma"]:
                out.append(
                    f"{label}: folio in {b['anon_vma']} on the kernel, {a['anon_vma']} in the model"
                )
            for field in ("index", "exclusive"):
                if a.get(field) != b.get(field):
                    out.append(
                        f"{label}.{field}: {b.get(field)} on the kernel, "
                        f"{a.get(field)} in the model"
                    )
    for name in sorted(set(mav) & set(kav)):
        for field in COUNTER_FIELDS:
            if mav[name][field] != kav[name][field]:
                out.append(
                    f"{where}.anon_vmas.{name}.{field}: {kav[name][field]} on the kernel, "
                    f"{mav[name][field]} in the model"
                )
    return out


def graph_diffs(model: ScenarioResult, kernel: ScenarioResult) -> list[str]:
    """Graph differences of two results (per step where both have step graphs, then at
    the end); nothing when either side has no graph (another design, or no BPF)."""
    out: list[str] = []
    for i, (ms, ks) in enumerate(zip(model.steps, kernel.steps, strict=False)):
        if ms.graph is not None and ks.graph is not None:
            out.extend(diff_graphs(ms.graph, ks.graph, f"steps.{i} ({ms.op}).graph"))
    mg, kg = model.final.graph, kernel.final.graph
    if mg is not None and kg is not None:
        out.extend(diff_graphs(mg, kg, "final.graph"))
    return out


def add_model_graphs(
    scenario: Any, design: Any, run: Any, model: ScenarioResult, kernel: ScenarioResult
) -> None:
    """Give ``model`` (the result of ``run``) the graph blocks ``kernel`` has: at the end, and
    after every step when the kernel read one per step (the model re-runs each prefix)."""
    from cowctx.designs.anon_vma.graph import anon_vma_graph, is_anon_vma_run
    from cowctx.scenario.runner import run_scenario

    if not is_anon_vma_run(run):
        return
    if kernel.final.graph is not None:
        model.final.graph = anon_vma_graph(run)
    for i, ks in enumerate(kernel.steps):
        if ks.graph is not None and i < len(model.steps):
            prefix = scenario.model_copy(update={"steps": scenario.steps[: i + 1], "expect": None})
            model.steps[i].graph = anon_vma_graph(run_scenario(prefix, design, check=False))
