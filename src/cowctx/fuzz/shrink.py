"""Shrink a failing step list to a short one that fails the same way, and write
it as a scenario file.

Delta debugging over steps (chunks, then single steps), then simpler fields
(fewer pages, fewer flags, default prot), then fewer processes (a child's steps
done by its parent), repeated until nothing changes.  Every candidate is kept
valid for the schema: a step whose process does not exist (its fork was
removed) or has exited is dropped with it.  Deterministic: no randomness, and
candidates are tried in a fixed order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from cowctx.scenario.schema import FORMAT

Steps = list[dict[str, Any]]
RANGE_OPS = ("mmap", "munmap", "mprotect", "mremap", "madvise", "read", "write")
KEY_ORDER = (
    "op",
    "proc",
    "child",
    "page",
    "pages",
    "new_pages",
    "new_page",
    "prot",
    "file",
    "file_page",
    "shared",
    "advice",
    "flags",
    "value",
    "errno",
)


def repair(steps: Steps) -> Steps:
    """Drop every step the schema would refuse: a process that does not exist
    (its fork was removed) or has exited, and a fork reusing a name."""
    alive, known = {"p0"}, {"p0"}
    out: Steps = []
    for step in steps:
        proc = step.get("proc", "p0")
        if proc not in alive:
            continue
        if step["op"] == "fork":
            if step["child"] in known:
                continue
            alive.add(step["child"])
            known.add(step["child"])
        elif step["op"] == "exit":
            alive.discard(proc)
        out.append(step)
    return out


def _key(steps: Steps) -> str:
    return json.dumps(steps, sort_keys=True)


class _Shrinker:
    def __init__(self, still_fails: Callable[[Steps], bool]) -> None:
        self.still_fails = still_fails
        self.cache: dict[str, bool] = {}
        self.tests = 0

    def test(self, steps: Steps) -> bool:
        key = _key(steps)
        hit = self.cache.get(key)
        if hit is None:
            self.tests += 1
            hit = self.cache[key] = bool(self.still_fails(steps))
        return hit

    # --- fewer steps --------------------------------------------------------------------

    def remove_chunks(self, steps: Steps) -> Steps:
        """ddmin: remove chunks of halving size; a removal that still fails is kept."""
        n = 2
        while steps:
            size = max(1, -(-len(steps) // n))
            progress = False
            i = 0
            while i < len(steps):
                cand = repair(steps[:i] + steps[i + size :])
                if len(cand) < len(steps) and self.test(cand):
                    steps, progress = cand, True
                else:
                    i += size
            if not progress:
                if size == 1:
                    break
                n = min(2 * n, len(steps))
        return steps

    # --- fewer processes ----------------------------------------------------------------

    def merge_processes(self, steps: Steps) -> Steps:
        """A child's steps done by its parent instead: its fork and exits go."""
        i = len(steps) - 1
        while i >= 0:
            if i < len(steps) and steps[i]["op"] == "fork":
                for keep_exits in (False, True):
                    cand = repair(rename_process(steps, i, keep_exits=keep_exits))
                    if self.test(cand):
                        steps = cand
                        break
            i -= 1
        return steps

    def renumber(self, steps: Steps) -> Steps:
        """Children named p1, p2, ... in fork order (if the failure allows it)."""
        names = {"p0": "p0"}
        for step in steps:
            if step["op"] == "fork":
                names[step["child"]] = f"p{len(names)}"
        if all(k == v for k, v in names.items()):
            return steps
        cand = []
        for step in steps:
            new = dict(step)
            new["proc"] = names[step.get("proc", "p0")]
            if "child" in step:
                new["child"] = names[step["child"]]
            cand.append(new)
        return cand if self.test(cand) else steps

    # --- simpler fields -------------------------------------------------------------------

    def simplify_fields(self, steps: Steps) -> Steps:
        """Each step in turn takes its simplest variant that still fails, again
        and again until none does."""
        i = 0
        while i < len(steps):
            for cand_step in _simpler(steps[i]):
                cand = [*steps[:i], cand_step, *steps[i + 1 :]]
                if self.test(cand):
                    steps = cand
                    break
            else:
                i += 1
        return steps


def _simpler(step: dict[str, Any]) -> list[dict[str, Any]]:
    """Simpler variants of one step, most aggressive first."""
    out: list[dict[str, Any]] = []
    op = step["op"]

    def variant(**changes: Any) -> None:
        new = dict(step)
        for k, v in changes.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        if new != step and new not in out:
            out.append(new)

    if op in RANGE_OPS:
        pages = step.get("pages", 1)
        default = None if op in ("read", "write") else 1
        for smaller in (1, pages // 2, pages - 1):
            if 1 <= smaller < pages:
                variant(pages=default if smaller == 1 else smaller)
        if op != "mremap":  # the tail of the range (mremap: the VMA start matters)
            page = step["page"]
            for smaller in (1, pages - pages // 2, pages - 1):
                if 1 <= smaller < pages:
                    variant(page=page + pages - smaller, pages=default if smaller == 1 else smaller)
    if op == "mremap":
        new_pages = step["new_pages"]
        for smaller in (1, new_pages // 2, new_pages - 1):
            if 1 <= smaller < new_pages:
                variant(new_pages=smaller)
        flags = list(step.get("flags", []))
        for flag in flags:
            rest = [f for f in flags if f != flag]
            variant(flags=rest or None, new_page=step.get("new_page") if flag != "fixed" else None)
    if op == "mmap":
        variant(prot=None)
        variant(file=None, file_page=None, shared=None)
        variant(file_page=None)
        variant(shared=None)
        flags = list(step.get("flags", []))
        for flag in flags:
            rest = [f for f in flags if f != flag]
            variant(flags=rest or None)
    if op == "mprotect":
        variant(prot="rw")
    if op == "write":
        variant(value=None)
    return out


def rename_process(steps: Steps, fork_index: int, *, keep_exits: bool = False) -> Steps:
    """Without the fork at ``fork_index``: its child's steps done by the parent.
    The child's exit is dropped (the parent lives on), or with ``keep_exits`` the
    parent exits there (what the child forked lives on without either)."""
    fork = steps[fork_index]
    child, parent = fork["child"], fork.get("proc", "p0")
    out: Steps = []
    for i, step in enumerate(steps):
        if i == fork_index:
            continue
        if step.get("proc", "p0") == child:
            if step["op"] == "exit" and not keep_exits:
                continue
            step = {**step, "proc": parent}
        out.append(step)
    return out


def shrink_steps(steps: Steps, still_fails: Callable[[Steps], bool]) -> Steps:
    """A short step list that ``still_fails``, found from ``steps`` (which should
    fail).  Deterministic; ``still_fails`` is called once per distinct candidate."""
    shrinker = _Shrinker(still_fails)
    current = repair([dict(s) for s in steps])
    if not shrinker.test(current):
        return current
    while True:
        before = current
        current = shrinker.remove_chunks(current)
        current = shrinker.merge_processes(current)
        current = shrinker.simplify_fields(current)
        if current == before:
            break
    return shrinker.renumber(current)


# --- writing scenario files ---------------------------------------------------------------


def _ordered(step: Mapping[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(KEY_ORDER)}
    return {k: step[k] for k in sorted(step, key=lambda k: (rank.get(k, len(rank)), k))}


def _flow(data: Mapping[str, Any]) -> str:
    return str(
        yaml.safe_dump(dict(data), default_flow_style=True, sort_keys=False, width=1 << 20)
    ).strip()


def scenario_yaml(
    name: str,
    steps: Steps,
    files: Mapping[str, int | Mapping[str, int]] | None = None,
    description: str | None = None,
) -> str:
    """A ``cowctx-scenario/1`` YAML file, one step per line in flow style."""
    if not re.fullmatch(r"[a-z0-9._-]+", name):
        raise ValueError(f"scenario name {name!r} is not [a-z0-9._-]+")
    lines = [f"format: {FORMAT}", f"name: {name}"]
    if description:
        lines.append(
            str(yaml.safe_dump({"description": description}, sort_keys=False, width=96)).rstrip()
        )
    if files:
        lines.append("files:")
        for fname, spec in files.items():
            spec_map = {"pages": spec} if isinstance(spec, int) else dict(spec)
            lines.append(f"  {_flow({fname: spec_map})[1:-1]}")
    if not steps:
        lines.append("steps: []")
    else:
        lines.append("steps:")
        lines.extend(f"  - {_flow(_ordered(step))}" for step in steps)
    return "\n".join(lines) + "\n"
