"""The cost model: simulated nanoseconds per model step, by operation and step class.

A model operation (a fork, a fault, an exit, a walker's folio) runs the model's
hooks (:mod:`cowctx.concurrency.runtime`); each hook is one step of a *class*
(:func:`classify`).  An operation costs ``base[op]`` plus, for every step,
``step[op][class]``.  Both are fitted by least squares from this kernel's timings
of scenarios that vary one size at a time (:mod:`cowctx.contend.fit`,
``cowctx contend --calibrate``), against the model's own step counts for the same
scenarios: the simulation charges, per step, what the kernel spent per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSES = ("pte", "folio", "vma", "rmap", "lock")
"""``pte``: a page-table entry load/store (``("pte", vpn)``); ``folio``: a folio
field or a folio allocation; ``vma``: a VMA field; ``rmap``: an rmap object
(anon_vma, AVC, CoW context) field, a slab allocation or free; ``lock``: a lock or
unlock of any kind (the uncontended atomic), an RCU read section."""

OPS = (
    "fork",
    "exit",
    "write",
    "read",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "exec",
    "reclaim",
    "migrate",
    "collapse",
)
"""Operations with costs of their own.  ``reclaim`` is fitted from MADV_PAGEOUT
(per folio, and per further mapper: :mod:`cowctx.linux.timing`); ``migrate`` (the
compaction walker) and ``collapse`` (khugepaged's lock pattern) are charged the
reclaim walk's costs per step."""

WALKER_SOURCE = {"reclaim": "madvise", "migrate": "reclaim", "collapse": "reclaim"}

DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "calibration"
"""Where calibrations live in the repository (``data/calibration/*.json``)."""


def classify(obj: object, fld: object) -> str:
    """The class of a load/store of ``obj``'s ``fld``.  The answer for a field
    of an object is kept per type of the object (:func:`classify_object` looks
    at attributes every instance of a model class has): this runs for every
    model step of a simulation."""
    if type(fld) is tuple:
        return "pte"
    if fld == "folio":
        return classify_object(obj, fld)
    c = _CLASS_OF_TYPE.get(type(obj))
    if c is None:
        c = _CLASS_OF_TYPE[type(obj)] = classify_object(obj, fld)
    return c


_CLASS_OF_TYPE: dict[type, str] = {}


def classify_object(obj: object, fld: object) -> str:
    """:func:`classify` from the object itself (no per-type answer)."""
    if isinstance(fld, tuple):
        return "pte"
    if hasattr(obj, "vm_id"):
        return "vma"
    if hasattr(obj, "pfn") or fld == "folio":
        return "folio"
    return "rmap"


@dataclass(frozen=True)
class CostModel:
    """Nanoseconds per operation (``base``) and per step (``step[op][class]``)."""

    base: dict[str, float]
    step: dict[str, dict[str, float]]
    wakeup_ns: float
    """A sleeping waiter handed a lock: wake-up and schedule-in latency."""
    rcu_gp_ns: float = 1_000_000.0
    """A grace period (``synchronize_rcu()``, ``call_rcu()``).  No model path
    waits for one today; assumed, not calibrated (the rcutree default with
    HZ=1000 is a few jiffies)."""
    source: str = "?"
    meta: dict[str, Any] = field(default_factory=dict)
    hold_scale: float = 1.0
    """The share of the fitted cost of the steps an operation takes under an
    rmap write lock (``anon_vma_lock_write()``, a CoW context's lock) that is
    spent holding it; the rest is spent right after the unlock.  1.0: all of it
    (what a whole-operation fit gives).  Calibrated from how often this kernel's
    MADV_PAGEOUT walks find the root anon_vma write-held beside a forker
    (the calibration file's ``hold`` block, written by ``python -m
    cowctx.contend.hold``): the per-class fit puts a
    fork's or exit's cost wherever its steps are, and many are under the lock
    in the model where the kernel's time is mostly outside it."""

    def op_of(self, op: str) -> str:
        if op in self.step:
            return op
        return WALKER_SOURCE.get(op, op)

    def table(self, op: str) -> dict[str, int]:
        """Integer ns per class for ``op`` (integers: byte-identical results)."""
        src = self.step.get(self.op_of(op), {})
        return {c: round(src.get(c, 0.0)) for c in CLASSES}

    def base_ns(self, op: str) -> int:
        return round(self.base.get(self.op_of(op), 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "base_ns": self.base,
            "step_ns": self.step,
            "wakeup_ns": self.wakeup_ns,
            "rcu_gp_ns": self.rcu_gp_ns,
        }


class CostFileError(ValueError):
    """A calibration file that cannot be used; the message names the file and field."""


def from_json(data: dict[str, Any], source: str) -> CostModel:
    """The cost model of a calibration file's ``fit`` block."""
    try:
        fit = data["fit"]
        base = {str(k): float(v) for k, v in fit["base_ns"].items()}
        step = {
            str(op): {str(c): float(v) for c, v in per.items()}
            for op, per in fit["step_ns"].items()
        }
        wakeup = float(fit["wakeup_ns"])
        gp = float(fit.get("rcu_gp_ns", 1_000_000.0))
        hold_scale = float(data.get("hold", {}).get("scale", 1.0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CostFileError(f"{source}: field fit: {type(exc).__name__}: {exc}") from exc
    for op, per in step.items():
        for c, v in per.items():
            if c not in CLASSES:
                raise CostFileError(f"{source}: fit.step_ns.{op}: unknown class {c!r}")
            if v < 0:
                raise CostFileError(f"{source}: fit.step_ns.{op}.{c}: negative cost {v}")
    if not 0.0 < hold_scale <= 1.0:
        raise CostFileError(f"{source}: hold.scale: {hold_scale} is not in (0, 1]")
    return CostModel(base, step, wakeup, gp, source, dict(data.get("machine", {})), hold_scale)


def load(path: Path | None = None) -> CostModel:
    """The calibration at ``path``, else the newest file in :data:`DATA_DIR`."""
    if path is None:
        files = sorted(DATA_DIR.glob("*.json"))
        if not files:
            raise CostFileError(f"{DATA_DIR}: no calibration (run: cowctx contend --calibrate)")
        path = files[-1]
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CostFileError(f"{path}: {exc}") from exc
    return from_json(data, str(path))
