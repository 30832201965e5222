"""Compare what the model did with what the running kernel did, field by field.

Only what both sides can see is compared: per step the errno and the
anon_vma/anon_vma_chain allocations and frees; at the end the objects
(live, allocated, freed), every live process's window maps, and per page
whether it is present, which pages share a physical page (folio ids are
numbered in the same canonical order on both sides, so equal ids mean equal
partitions), the mapcount, the anon flag and the zero page.
"""

from __future__ import annotations

from typing import Any

from cowctx.linux.views import add_model_views, kernel_had_swap, referee_diffs, with_swap

KERNEL_KINDS = ("anon_vma", "anon_vma_chain")


def diff_results(model: dict[str, Any], kernel: dict[str, Any]) -> list[str]:
    """Every field that differs, as ``path: model X, kernel Y``."""
    diffs: list[str] = []
    for i, (ms, ks) in enumerate(zip(model["steps"], kernel["steps"], strict=True)):
        where = f"steps.{i} ({ms['op']})"
        if ms["errno"] != ks["errno"]:
            diffs.append(f"{where}.errno: model {ms['errno']}, kernel {ks['errno']}")
        for kind in KERNEL_KINDS:
            for field in ("allocated", "freed"):
                mv = ms["objects"].get(kind, {}).get(field, 0)
                kv = ks["objects"].get(kind, {}).get(field, 0)
                if mv != kv:
                    diffs.append(f"{where}.objects.{kind}.{field}: model {mv}, kernel {kv}")
    mf, kf = model["final"], kernel["final"]
    for kind in KERNEL_KINDS:
        for field in ("live", "allocated", "freed"):
            mv = mf["objects"].get(kind, {}).get(field, 0)
            kv = kf["objects"].get(kind, {}).get(field, 0)
            if mv != kv:
                diffs.append(f"final.objects.{kind}.{field}: model {mv}, kernel {kv}")
    for proc in sorted(set(mf["maps"]) | set(kf["maps"])):
        mm, km = mf["maps"].get(proc), kf["maps"].get(proc)
        if mm != km:
            diffs.append(f"final.maps.{proc}: model {mm}, kernel {km}")
    for proc in sorted(set(mf["pages"]) | set(kf["pages"])):
        mp = {p["page"]: p for p in mf["pages"].get(proc, [])}
        kp = {p["page"]: p for p in kf["pages"].get(proc, [])}
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
                if a[field] != b[field]:
                    diffs.append(f"{where}.{field}: model {a[field]}, kernel {b[field]}")
    diffs.extend(referee_diffs(model, kernel))
    return diffs


def kernel_diff(
    scenario: Any, session: Any, design: Any = "anon_vma"
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
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
        result["available"] = True
        result["agree"] = not diffs
        result["diffs"] = diffs
    return model, kernel, diffs
