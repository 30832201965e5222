"""Differential fuzzing: random kernel-capable scenarios run on the model and on
the running kernel; each disagreement is shrunk to a minimal scenario and
written out with the kernel's numbers as its ``expect``."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cowctx.files import write_atomically
from cowctx.fuzz.generate import files_block, generate_scenario
from cowctx.fuzz.shrink import scenario_yaml, shrink_steps
from cowctx.linux.diff import kernel_diff
from cowctx.linux.executor import TraceLost
from cowctx.scenario.loader import ScenarioError, parse_scenario
from cowctx.scenario.results import ScenarioResult
from cowctx.scenario.schema import FORMAT, Scenario


@dataclass
class Finding:
    seed: int
    diffs: list[str]
    """The shrunk scenario's differences."""
    path: Path | None
    yaml_text: str


@dataclass
class KernelFuzzResult:
    scenarios: int = 0
    steps: int = 0
    findings: list[Finding] = field(default_factory=list)
    unreproduced: list[tuple[int, list[str]]] = field(default_factory=list)
    """(generator seed, diffs) of disagreements that a re-run of the same scenario did
    not show: the kernel side was not deterministic there (another process's load
    on the CPU's LRU batches, a write completing early).  Reported, not findings."""


REPRODUCE_RUNS = 2
"""How many times a disagreement is re-run before it counts as a finding."""


def scenario_seed(seed: int, index: int) -> int:
    """The generator seed of scenario ``index`` of a run with ``seed``."""
    return seed * 1_000_003 + index


def diff_class(diff: str) -> str:
    """What kind of difference a diff line is: its field path without indices and
    page numbers, e.g. ``final.pages.p?[page ?]: present``."""
    path, _, rest = diff.partition(":")
    path = re.sub(r"\d+", "?", path)
    path = re.sub(r" \(\w+\)", "", path)
    kind = "presence" if "absent" in rest or "present" in rest else ""
    return f"{path} {kind}".strip()


def _scenario(steps: list[dict[str, Any]], name: str = "kernel-fuzz") -> Scenario | None:
    try:
        return parse_scenario(
            {"format": FORMAT, "name": name, "files": files_block(), "steps": steps}
        )
    except ScenarioError:
        return None


SWAP_EVERY = 2
"""Default for ``kernel_fuzz(swap_every=)`` and ``cowctx kernel-fuzz --swap-every``: every
other scenario is a swap variant (0: none).  On since swap runs agree over 2,000 swap
variants (docs/kernel-referee.md, "Findings")."""
PAGEOUT_AFTER_WRITE = 0.35
SWAPIN_AFTER_PAGEOUT = 0.6


def swap_variant(scenario: Scenario, seed: int) -> Scenario:
    """The scenario with private anonymous memory only, and MADV_PAGEOUT + swap-in steps.

    File and shared mappings become private anonymous ones (the referee switches swap on
    only for scenarios without shmem, see swap.wants_swap); after a write, now and then,
    the writer pages the range out, and sometimes at once reads or writes one page of it
    back (a swap-in; later steps of the scenario swap in too, from other processes after
    a fork)."""
    rng = random.Random(seed * 7919 + 17)
    steps: list[dict[str, Any]] = []
    for st in scenario.steps:
        raw = st.model_dump(exclude_none=True)
        raw.pop("errno", None)
        if raw["op"] == "mmap":
            for key in ("file", "file_page", "shared"):
                raw.pop(key, None)
        steps.append(raw)
        if raw["op"] != "write" or rng.random() >= PAGEOUT_AFTER_WRITE:
            continue
        page, pages = raw["page"], raw.get("pages", 1)
        steps.append(
            {
                "op": "madvise",
                "proc": raw["proc"],
                "page": page,
                "pages": pages,
                "advice": "pageout",
            }
        )
        if rng.random() < SWAPIN_AFTER_PAGEOUT:
            back = {"op": rng.choice(("read", "write")), "proc": raw["proc"]}
            back["page"] = page + rng.randrange(pages)
            steps.append(back)
    return _scenario(steps, scenario.name) or scenario


TRACE_RETRIES = 3


def _diff(scenario: Scenario, session: Any, design: Any) -> tuple[Any, ScenarioResult, list[str]]:
    """``kernel_diff``, run again (up to TRACE_RETRIES times) when the trace buffer dropped
    events: other processes' anon_vma traffic is no finding."""
    for attempt in range(TRACE_RETRIES + 1):
        try:
            return kernel_diff(scenario, session, design)
        except TraceLost:
            if attempt == TRACE_RETRIES:
                raise
    raise AssertionError("unreachable")


def kernel_expect_yaml(kernel: ScenarioResult) -> str:
    """An ``expect`` block holding the kernel's final objects and maps."""
    final = kernel.final
    expect: dict[str, Any] = {
        kind: final.objects[kind].to_json()
        for kind in ("anon_vma", "anon_vma_chain")
        if kind in final.objects
    }
    expect["maps"] = {p: [m.to_json() for m in lines] for p, lines in final.maps.items()}
    return yaml.safe_dump({"expect": expect}, default_flow_style=None, sort_keys=False)


def kernel_fuzz(
    session: Any,
    seed: int,
    scenarios: int,
    steps: int = 60,
    *,
    design: Any = "anon_vma",
    out_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    swap_every: int = SWAP_EVERY,
) -> KernelFuzzResult:
    """Run ``scenarios`` random scenarios of ``steps`` steps in ``session``; with
    ``swap_every`` N > 0 every Nth is a ``swap_variant`` (pageout and swap-in steps)."""
    result = KernelFuzzResult()
    for index in range(scenarios):
        sseed = scenario_seed(seed, index)
        scenario = generate_scenario(sseed, steps, kernel_only=True)
        if swap_every > 0 and index % swap_every == swap_every - 1:
            scenario = swap_variant(scenario, sseed)
        _, _, diffs = _diff(scenario, session, design)
        result.scenarios += 1
        result.steps += len(scenario.steps)
        if progress is not None:
            progress(index + 1)
        if not diffs:
            continue
        wanted = diff_class(diffs[0])
        if not all(
            any(diff_class(d) == wanted for d in _diff(scenario, session, design)[2])
            for _ in range(REPRODUCE_RUNS)
        ):
            result.unreproduced.append((sseed, diffs))
            continue

        def still_fails(candidate: list[dict[str, Any]], wanted: str = wanted) -> bool:
            s = _scenario(candidate)
            if s is None:
                return False
            return any(diff_class(d) == wanted for d in _diff(s, session, design)[2])

        raw = [s.model_dump(exclude_none=True) for s in scenario.steps]
        for step in raw:
            step.pop("errno", None)
        small = shrink_steps(raw, still_fails)
        final = _scenario(small)
        assert final is not None
        _, kernel, small_diffs = _diff(final, session, design)
        if not small_diffs:  # the shrunk scenario no longer disagrees: noise after all
            result.unreproduced.append((sseed, diffs))
            continue
        name = f"kernel-fuzz-{seed}-{index}"
        description = (
            f"Found by cowctx kernel-fuzz --seed {seed} (scenario {index}, generator seed "
            f"{sseed}), shrunk. The model disagreed with Linux here: "
            + "; ".join(small_diffs[:3])
            + ". The expect block holds the kernel's numbers."
        )
        steps_with_errno = [
            {**st, **({"errno": ks.errno} if ks.errno else {})}
            for st, ks in zip(small, kernel.steps, strict=True)
        ]
        text = scenario_yaml(name, steps_with_errno, files_block(), description)
        text += kernel_expect_yaml(kernel)
        path = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{name}.yaml"
            write_atomically(path, text)
        result.findings.append(Finding(sseed, small_diffs, path, text))
    return result
