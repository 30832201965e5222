"""Small concurrent programs over plain shared cells, for checking the explorer.

Each program is a dict thread name -> list of operations; ``ToyProgram`` runs
them through the runtime hooks, so every access is a scheduling point.
"""

from __future__ import annotations

from cowctx.concurrency import runtime as rt
from cowctx.concurrency.scheduler import Execution


class Cell:
    def __init__(self, name: str, value: int = 0) -> None:
        self.name = name
        self.value = value


class ToyProgram:
    """Operations: ``("r", x)`` load into a register, ``("w", x, v)``, ``("inc", x)``
    (load then store: not atomic), ``("lock"|"unlock", L)`` spinlock,
    ``("rlock"|"runlock"|"wlock"|"wunlock", S)`` rwsem, ``("try", L)`` trylock
    (result in a register), ``("rcu_lock",)``, ``("rcu_unlock",)``, ``("sync",)``
    synchronize_rcu, ``("sleep",)`` may-sleep point, ``("wseq", S)`` a writer's
    ``write_seqcount_begin()``/``_end()`` (a store of the count), ``("seqread", S,
    x, y)`` a reader's loop: ``read_seqcount_begin()`` (wait for an even count,
    load it), load ``x`` and ``y``, ``read_seqcount_retry()`` (load it again,
    retry if it moved); a pass that kept ``x != y`` is a ``torn`` violation."""

    def __init__(self, threads: dict[str, list[tuple]], init: dict[str, int] | None = None) -> None:
        self.spec = threads
        self.init = init or {}
        self.names = list(threads)

    def start(self) -> Execution:
        self.cells: dict[str, Cell] = {}
        self.regs: dict[str, object] = {}
        for ops in self.spec.values():
            for op in ops:
                names = op[1:] if op[0] == "seqread" else op[1:2]
                for cell in names:
                    self.cells.setdefault(cell, Cell(cell, self.init.get(cell, 0)))
        return Execution([(n, self._body(n, ops)) for n, ops in self.spec.items()])

    def _body(self, name: str, ops: list[tuple]):
        def body() -> None:
            for i, op in enumerate(ops):
                kind = op[0]
                c = self.cells[op[1]] if len(op) > 1 else Cell("-")
                if kind == "r":
                    rt.point("load", c, "v")
                    self.regs[f"{name}.{i}"] = c.value
                elif kind == "w":
                    rt.point("store", c, "v", True)
                    c.value = op[2]
                elif kind == "inc":
                    rt.point("load", c, "v")
                    x = c.value
                    rt.point("store", c, "v", True)
                    c.value = x + 1
                elif kind == "lock":
                    rt.lock("spinlock", c)
                elif kind == "unlock":
                    rt.unlock("spinlock", c)
                elif kind in ("rlock", "wlock"):
                    rt.lock("anon_vma", c, "read" if kind == "rlock" else "write")
                elif kind in ("runlock", "wunlock"):
                    rt.unlock("anon_vma", c, "read" if kind == "runlock" else "write")
                elif kind == "try":
                    ok = rt.trylock("spinlock", c)
                    self.regs[f"{name}.{i}"] = ok
                    if ok:
                        rt.unlock("spinlock", c)
                elif kind == "rcu_lock":
                    rt.rcu_read_lock()
                elif kind == "rcu_unlock":
                    rt.rcu_read_unlock()
                elif kind == "sync":
                    rt.synchronize_rcu()
                elif kind == "sleep":
                    rt.may_sleep("toy")
                elif kind == "wseq":
                    rt.point("store", c, "v", True)
                    c.value += 1
                elif kind == "seqread":
                    self.regs[f"{name}.{i}"] = self._seqread(c, op[2], op[3])
                else:  # pragma: no cover - test bug
                    raise ValueError(kind)

        return body

    def _seqread(self, seq: Cell, x: str, y: str) -> tuple[int, int, int]:
        """The reader's values of ``x`` and ``y`` and how many passes it took."""
        passes = 0
        while True:
            passes += 1
            rt.wait_until("seqcount", seq, "v", lambda: seq.value % 2 == 0)
            rt.point("load", seq, "v")
            start = seq.value
            if start % 2:
                continue
            rt.point("load", self.cells[x], "v")
            vx = self.cells[x].value
            rt.point("load", self.cells[y], "v")
            vy = self.cells[y].value
            rt.point("load", seq, "v")
            if seq.value == start:
                return vx, vy, passes

    def finish(self, ex: Execution) -> tuple[str, list[tuple[str, str]]]:
        cells = sorted((k, c.value) for k, c in self.cells.items())
        torn = [
            ("torn", f"{k}: {v}")
            for k, v in sorted(self.regs.items())
            if isinstance(v, tuple) and v[0] != v[1]
        ]
        return repr(cells) + repr(sorted(self.regs.items(), key=str)), torn


I, L, M = "inc", "lock", "unlock"
PROGRAMS: dict[str, tuple[dict[str, list[tuple]], dict[str, int]]] = {
    "inc2": ({"a": [(I, "x")], "b": [(I, "x")]}, {}),
    "inc3": ({"a": [(I, "x")], "b": [(I, "x")], "c": [(I, "x")]}, {}),
    "inc-two-vars": ({"a": [(I, "x"), (I, "x")], "b": [(I, "x"), (I, "y")], "c": [(I, "y")]}, {}),
    "independent": ({"a": [(I, "x"), (I, "x")], "b": [(I, "y"), (I, "y")]}, {}),
    "sb": ({"a": [("w", "x", 1), ("r", "y")], "b": [("w", "y", 1), ("r", "x")]}, {}),
    "mp": ({"a": [("w", "d", 1), ("w", "f", 1)], "b": [("r", "f"), ("r", "d")]}, {}),
    "lb": ({"a": [("r", "x"), ("w", "y", 1)], "b": [("r", "y"), ("w", "x", 1)]}, {}),
    "iriw": (
        {
            "w1": [("w", "x", 1)],
            "w2": [("w", "y", 1)],
            "r1": [("r", "x"), ("r", "y")],
            "r2": [("r", "y"), ("r", "x")],
        },
        {},
    ),
    "locked-inc": ({"a": [(L, "l"), (I, "x"), (M, "l")], "b": [(L, "l"), (I, "x"), (M, "l")]}, {}),
    "locked-inc3": (
        {t: [(L, "l"), (I, "x"), (M, "l")] for t in ("a", "b", "c")},
        {},
    ),
    "abba": (
        {
            "a": [(L, "l"), (L, "m"), (M, "m"), (M, "l")],
            "b": [(L, "m"), (L, "l"), (M, "l"), (M, "m")],
        },
        {},
    ),
    "half-locked": ({"a": [(L, "l"), (I, "x"), (M, "l")], "b": [(I, "x")]}, {}),
    "trylock": ({"a": [(L, "l"), ("w", "x", 1), (M, "l")], "b": [("try", "l"), ("r", "x")]}, {}),
    "rwsem": (
        {
            "r1": [("rlock", "s"), ("r", "x"), ("runlock", "s")],
            "r2": [("rlock", "s"), ("r", "x"), ("runlock", "s")],
            "w": [("wlock", "s"), ("w", "x", 1), ("wunlock", "s")],
        },
        {},
    ),
    "rcu-sync-read": (
        {
            "reader": [("rcu_lock",), ("r", "x"), ("r", "y"), ("rcu_unlock",)],
            "writer": [("w", "x", 1), ("sync",), ("w", "y", 1)],
        },
        {},
    ),
    "rcu-two-readers": (
        {
            "r1": [("rcu_lock",), ("r", "x"), ("rcu_unlock",)],
            "r2": [("rcu_lock",), ("r", "x"), ("rcu_unlock",)],
            "w": [("w", "x", 1), ("sync",), ("w", "x", 2)],
        },
        {},
    ),
    "rcu-sync-sync": (
        {
            "w1": [("w", "x", 1), ("sync",)],
            "w2": [("rcu_lock",), ("r", "x"), ("rcu_unlock",), ("sync",)],
        },
        {},
    ),
    "sleep-under-lock": ({"a": [(L, "l"), ("sleep",), (M, "l")], "b": [(L, "l"), (M, "l")]}, {}),
    "dekker-ish": (
        {
            "a": [("w", "fa", 1), ("r", "fb"), ("w", "x", 1)],
            "b": [("w", "fb", 1), ("r", "fa"), ("w", "x", 2)],
        },
        {},
    ),
    "chain": ({"a": [("w", "x", 1)], "b": [("r", "x"), ("w", "y", 1)], "c": [("r", "y")]}, {}),
    "three-writers": (
        {"a": [("w", "x", 1)], "b": [("w", "x", 2)], "c": [("w", "x", 3), ("r", "x")]},
        {},
    ),
    "seqcount": (
        {
            "w": [("wseq", "s"), ("w", "x", 1), ("w", "y", 1), ("wseq", "s")],
            "r": [("seqread", "s", "x", "y")],
        },
        {},
    ),
    "seqcount-torn": (
        {
            "w": [("wseq", "s"), ("w", "x", 1), ("wseq", "s"), ("w", "y", 1)],
            "r": [("seqread", "s", "x", "y")],
        },
        {},
    ),
    "lock-and-rcu": (
        {
            "a": [(L, "l"), ("w", "x", 1), (M, "l"), ("sync",)],
            "b": [("rcu_lock",), ("r", "x"), ("rcu_unlock",), (L, "l"), (M, "l")],
        },
        {},
    ),
}
