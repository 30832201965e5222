"""Compare what the model did with what the running kernel did, field by field.

Only what both sides can see is compared: per step the errno and the
anon_vma/anon_vma_chain allocations and frees; at the end the objects
(live, allocated, freed), every live process's window maps, and per page
whether it is present, which pages share a physical page (folio ids are
numbered in the same canonical order on both sides, so equal ids mean equal
partitions), the mapcount, the anon flag and the zero page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.metrics.ledger import VMSCAN_COUNTERS
from cowctx.scenario.results import Counts, MapLine, ScenarioResult

if TYPE_CHECKING:
    from cowctx.linux.executor import KernelSession
    from cowctx.rmap.protocol import AnonRmap
    from cowctx.scenario.schema import Scenario

from cowctx.linux.views import add_model_views, kernel_had_swap, referee_diffs, with_swap

KERNEL_KINDS = ("anon_vma", "anon_vma_chain")
NONE = Counts(0, 0, 0)


def diff_results(model: ScenarioResult, kernel: ScenarioResult) -> list[str]:
    """Every field that differs, as ``path: model X, kernel Y``."""
    diffs: list[str] = []
    for i, (ms, ks) in enumerate(zip(model.steps, kernel.steps, strict=True)):
        where = f"steps.{i} ({ms.op})"
        if ms.errno != ks.errno:
            diffs.append(f"{where}.errno: model {ms.errno}, kernel {ks.errno}")
        for kind in KERNEL_KINDS:
            mc, kc = ms.objects.get(kind, NONE), ks.objects.get(kind, NONE)
            for field in ("allocated", "freed"):
                mv, kv = getattr(mc, field), getattr(kc, field)
                if mv != kv:
                    diffs.append(f"{where}.objects.{kind}.{field}: model {mv}, kernel {kv}")
        diffs += _vmscan_diffs(where, ms.vmscan, ks.vmscan)
    mf, kf = model.final, kernel.final
    for kind in KERNEL_KINDS:
        mc, kc = mf.objects.get(kind, NONE), kf.objects.get(kind, NONE)
        for field in ("live", "allocated", "freed"):
            mv, kv = getattr(mc, field) or 0, getattr(kc, field) or 0
            if mv != kv:
                diffs.append(f"final.objects.{kind}.{field}: model {mv}, kernel {kv}")
    for proc in sorted(set(mf.maps) | set(kf.maps)):
        mm, km = _maps(mf.maps.get(proc)), _maps(kf.maps.get(proc))
        if mm != km:
            diffs.append(f"final.maps.{proc}: model {mm}, kernel {km}")
    for proc in sorted(set(mf.pages) | set(kf.pages)):
        mp = {p.page: p for p in mf.pages.get(proc, [])}
        kp = {p.page: p for p in kf.pages.get(proc, [])}
        for page in sorted(set(mp) | set(kp)):
            where = f"final.pages.{proc}[page {page}]"
            a, b = mp.get(page), kp.get(page)
            if a is None or b is None:
                diffs.append(
                    f"{where}: model {'absent' if a is None else 'present'}, "
                    f"kernel {'absent' if b is None else 'present'}"
                )
                continue
            for field in ("folio", "mapcount", "anon", "zero_page"):
                if getattr(a, field) != getattr(b, field):
                    diffs.append(
                        f"{where}.{field}: model {getattr(a, field)}, kernel {getattr(b, field)}"
                    )
    diffs.extend(referee_diffs(model, kernel))
    return diffs


def _vmscan_diffs(
    where: str, model: dict[str, int] | None, kernel: dict[str, int] | None
) -> list[str]:
    """Reclaim's verdicts: what ``shrink_folio_list()`` did with each folio it was given."""
    if model is None and kernel is None:
        return []
    m, k = model or {}, kernel or {}
    return [
        f"{where}.vmscan.{key}: model {m.get(key, 0)}, kernel {k.get(key, 0)}"
        for key in VMSCAN_COUNTERS
        if m.get(key, 0) != k.get(key, 0)
    ]


def _maps(lines: list[MapLine] | None) -> list[list[object]] | None:
    return None if lines is None else [m.to_json() for m in lines]


def kernel_diff(
    scenario: Scenario, session: KernelSession, design: str | type[AnonRmap] = "anon_vma"
) -> tuple[ScenarioResult, ScenarioResult, list[str]]:
    """Run ``scenario`` on the model (with per-step timing) and in ``session`` on
    the kernel; returns (model result, kernel result, diffs), both results
    carrying ``available``, ``agree`` and ``diffs`` as SCENARIO.md specifies."""
    from cowctx.scenario.runner import run_scenario

    kernel = session.run(scenario)
    if kernel_had_swap(kernel):  # the model swaps whenever the kernel could
        design = with_swap(design)
    run = run_scenario(scenario, design, timing=True)
    model = run.result(timing=True)
    add_model_views(scenario, design, run, model, kernel)
    diffs = diff_results(model, kernel)
    for result in (model, kernel):
        result.available = True
        result.agree = not diffs
        result.diffs = diffs
    return model, kernel, diffs
