"""The simulator and the step counter implement every hook the runtime calls.

Both duck-type the explorer's ``Execution`` (``runtime.current``).  A hook added
to :mod:`cowctx.concurrency.runtime` (or a field of the running thread or of its
walk that a hook reads) that they lack makes every model thread die with an
AttributeError in a simulation; this test reads what the runtime, and any model
code that looks at ``rt.current`` itself, asks of the object and checks that the
simulator, its threads and walks, and the counter have it."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import cowctx
from cowctx.concurrency import runtime
from cowctx.concurrency.scheduler import Execution, Thread, Walk
from cowctx.contend.costs import CostModel
from cowctx.contend.count import Counter, _Me
from cowctx.contend.sim import SimThread, Simulator, SimWalk

SRC = Path(cowctx.__file__).resolve().parent
LEVELS = ("ex", "thread", "walk")


def _level(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """What ``node`` stands for: the runtime's object (``ex``), its running
    thread, that thread's walk; None if none of them."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        value = node.value
        if isinstance(value, ast.Name) and node.attr == "current" and value.id in ("rt", "runtime"):
            return "ex"
        up = _level(node.value, aliases)
        if up == "ex" and node.attr == "running":
            return "thread"
        if up == "thread" and node.attr == "walk":
            return "walk"
    return None


def used_by(path: Path, module_current: bool) -> dict[str, set[str]]:
    """Attributes read of the runtime object, its thread and its walk in the
    functions of ``path`` (``module_current``: the bare name ``current`` is the
    runtime object, as inside runtime.py)."""
    tree = ast.parse(path.read_text(), str(path))
    out: dict[str, set[str]] = {lv: set() for lv in LEVELS}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        aliases: dict[str, str] = {"current": "ex"} if module_current else {}
        for node in ast.walk(fn):  # aliases first: ex = current; w = ex.running.walk
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                lv = _level(node.value, aliases)
                if isinstance(target, ast.Name) and lv is not None:
                    aliases[target.id] = lv
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute):
                lv = _level(node.value, aliases)
                if lv is not None:
                    out[lv].add(node.attr)
    return out


@cache
def runtime_uses() -> dict[str, set[str]]:
    """Everything the runtime's hooks, and model code reading ``rt.current``,
    ask of the runtime object (and its thread and walk)."""
    uses = used_by(Path(runtime.__file__), module_current=True)
    for path in sorted(SRC.rglob("*.py")):
        if "concurrency" in path.parts or "contend" in path.parts:
            continue  # the runtime's implementations, and the simulator itself
        for lv, names in used_by(path, module_current=False).items():
            uses[lv] |= names
    return uses


def missing(ex: object, thread: object, walk: object | None) -> list[str]:
    uses = runtime_uses()
    out = [f"runtime object: {a}" for a in sorted(uses["ex"]) if not hasattr(ex, a)]
    out += [f"thread: {a}" for a in sorted(uses["thread"]) if not hasattr(thread, a)]
    if walk is not None:
        out += [f"walk: {a}" for a in sorted(uses["walk"]) if not hasattr(walk, a)]
    return out


def test_the_extraction_sees_the_hooks_the_runtime_calls() -> None:
    """A reading that saw nothing would pass anything."""
    uses = runtime_uses()
    assert {"point", "points", "lock", "unlock", "walk_begin", "violation"} <= uses["ex"]
    assert {"mappings_of", "running"} <= uses["ex"]
    assert {"walk", "local", "name", "tid"} <= uses["thread"]  # tid: the PoC's _who()
    assert {"abandoned", "alive", "mms"} <= uses["walk"]
    # the explorer, which the runtime is written for, has all of it
    assert missing(Execution([]), Thread(0, "t", lambda: None), Walk(0, "w", set())) == []


def test_the_simulator_has_every_hook() -> None:
    sim = Simulator(1, CostModel({}, {}, wakeup_ns=0))
    thread = SimThread(0, "t", "worker", lambda t: None)
    assert missing(sim, thread, SimWalk(0, "w", set())) == []


def test_the_step_counter_has_every_hook() -> None:
    # the counter never starts a walk (walk_begin does nothing): no walk to read
    assert missing(Counter(), _Me(), None) == []


class _Without:
    """An object without one attribute of another (a simulator lacking a hook)."""

    def __init__(self, of: object, lacks: str) -> None:
        self._of, self._lacks = of, lacks

    def __getattr__(self, name: str) -> object:
        if name == self._lacks:
            raise AttributeError(name)
        return getattr(self._of, name)


def test_a_missing_hook_is_caught() -> None:
    sim = Simulator(1, CostModel({}, {}, wakeup_ns=0))
    thread = SimThread(0, "t", "worker", lambda t: None)
    walk = SimWalk(0, "w", set())
    assert missing(_Without(sim, "points"), thread, walk) == ["runtime object: points"]
    assert missing(sim, _Without(thread, "local"), walk) == ["thread: local"]
    assert missing(sim, thread, _Without(walk, "mms")) == ["walk: mms"]
