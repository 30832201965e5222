"""What a simulated run measures: operations, walks, rotations, lock waits and holds.

Distributions of lock waits and holds are kept as log2 histograms (bucket b holds
values in [2^(b-1), 2^b) ns, bucket 0 the zeroes) with count, sum and max, so a
run of millions of acquisitions stays small; walk latencies are kept whole.
Everything is integer nanoseconds: results are byte-identical for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hist:
    count: int = 0
    total: int = 0
    max: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, v: int) -> None:
        self.count += 1
        self.total += v
        if v > self.max:
            self.max = v
        b = int(v).bit_length()
        self.buckets[b] = self.buckets.get(b, 0) + 1

    def quantile(self, q: float) -> int:
        """Upper edge of the bucket holding the ``q`` quantile (capped at the max)."""
        if not self.count:
            return 0
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(self.max, (1 << b) - 1 if b else 0)
        return self.max

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_ns": self.total,
            "mean_ns": self.total // self.count if self.count else 0,
            "p50_ns": self.quantile(0.5),
            "p99_ns": self.quantile(0.99),
            "max_ns": self.max,
            "log2_buckets": {str(b): n for b, n in sorted(self.buckets.items())},
        }


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile of ``values`` (0 when empty)."""
    if not values:
        return 0
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-int(q * 1000) * len(s) // 1000) - 1))
    return s[k]


@dataclass
class LockKindStats:
    acquisitions: int = 0
    contended: int = 0
    trylock_failed: int = 0
    wait: Hist = field(default_factory=Hist)
    hold: dict[str, Hist] = field(default_factory=dict)
    """Hold time by holder operation."""
    wait_by_holder: dict[str, int] = field(default_factory=dict)
    """ns waited, by the operation of the holder(s) waited behind."""
    wait_by_waiter: dict[str, int] = field(default_factory=dict)
    failed_by_holder: dict[str, int] = field(default_factory=dict)


@dataclass
class Stats:
    ops: dict[tuple[str, str], Hist] = field(default_factory=dict)
    """(role, op) -> latency."""
    units: dict[str, int] = field(default_factory=dict)
    """Completed workload iterations per worker role."""
    walks: dict[str, list[int]] = field(default_factory=dict)
    """Walker op -> latency of each completed rmap walk."""
    walker_folios: dict[str, int] = field(default_factory=dict)
    rotations: dict[str, int] = field(default_factory=dict)
    """Walker op -> folios given up on because an rmap try-lock failed (kept/rotated)."""
    locks: dict[str, LockKindStats] = field(default_factory=dict)
    end: int = 0
    _by_pair: dict[tuple[str, str], LockKindStats] = field(default_factory=dict)

    def _lk(self, kind: str, mode: str) -> LockKindStats:
        s = self._by_pair.get((kind, mode))
        if s is None:
            s = self.locks[f"{kind}:{mode}"] = self._by_pair[(kind, mode)] = LockKindStats()
        return s

    def op(self, role: str, op: str, latency: int) -> None:
        h = self.ops.get((role, op))
        if h is None:
            h = self.ops[(role, op)] = Hist()
        h.add(latency)

    def unit(self, role: str) -> None:
        self.units[role] = self.units.get(role, 0) + 1

    def walk(self, op: str, latency: int) -> None:
        self.walks.setdefault(op, []).append(latency)

    def folio(self, op: str, rotated: bool) -> None:
        self.walker_folios[op] = self.walker_folios.get(op, 0) + 1
        if rotated:
            self.rotations[op] = self.rotations.get(op, 0) + 1

    def acquired(self, kind: str, mode: str, waited: int) -> None:
        s = self._lk(kind, mode)
        s.acquisitions += 1
        if waited:
            s.contended += 1

    def waited(self, kind: str, mode: str, op: str, holders: list[str], waited: int) -> None:
        s = self._lk(kind, mode)
        s.wait.add(waited)
        s.wait_by_waiter[op] = s.wait_by_waiter.get(op, 0) + waited
        for h in sorted(set(holders)):
            s.wait_by_holder[h] = s.wait_by_holder.get(h, 0) + waited

    def trylock_failed(self, kind: str, mode: str, op: str, holders: list[str]) -> None:
        s = self._lk(kind, mode)
        s.trylock_failed += 1
        for h in sorted(set(holders)):
            s.failed_by_holder[h] = s.failed_by_holder.get(h, 0) + 1

    def held(self, kind: str, mode: str, op: str, ns: int) -> None:
        s = self._lk(kind, mode)
        h = s.hold.get(op)
        if h is None:
            h = s.hold[op] = Hist()
        h.add(ns)

    def to_json(self) -> dict[str, Any]:
        """The run's numbers; rates per simulated second."""
        secs = self.end / 1e9 if self.end else 0.0
        walks = {}
        for op, lat in sorted(self.walks.items()):
            folios = self.walker_folios.get(op, 0)
            rot = self.rotations.get(op, 0)
            walks[op] = {
                "folios": folios,
                "completed_walks": len(lat),
                "rotations": rot,
                "rotation_rate": round(rot / folios, 4) if folios else 0.0,
                "rotations_per_s": round(rot / secs, 1) if secs else 0.0,
                "p50_ns": percentile(lat, 0.5),
                "p99_ns": percentile(lat, 0.99),
                "max_ns": max(lat) if lat else 0,
            }
        for op, folios in sorted(self.walker_folios.items()):
            if op not in walks:
                rot = self.rotations.get(op, 0)
                walks[op] = {
                    "folios": folios,
                    "completed_walks": 0,
                    "rotations": rot,
                    "rotation_rate": round(rot / folios, 4) if folios else 0.0,
                    "rotations_per_s": round(rot / secs, 1) if secs else 0.0,
                    "p50_ns": 0,
                    "p99_ns": 0,
                    "max_ns": 0,
                }
        locks: dict[str, Any] = {}
        for key in sorted(self.locks):
            s = self.locks[key]
            all_holds = Hist()
            for h in s.hold.values():
                all_holds.count += h.count
                all_holds.total += h.total
                all_holds.max = max(all_holds.max, h.max)
                for b, n in h.buckets.items():
                    all_holds.buckets[b] = all_holds.buckets.get(b, 0) + n
            locks[key] = {
                "acquisitions": s.acquisitions,
                "contended": s.contended,
                "trylock_failed": s.trylock_failed,
                "wait": s.wait.to_json(),
                "wait_by_holder_ns": dict(sorted(s.wait_by_holder.items())),
                "wait_by_waiter_ns": dict(sorted(s.wait_by_waiter.items())),
                "trylock_failed_by_holder": dict(sorted(s.failed_by_holder.items())),
                "hold": all_holds.to_json(),
                "hold_by_op": {op: h.to_json() for op, h in sorted(s.hold.items())},
            }
        ops = {f"{role}:{op}": h.to_json() for (role, op), h in sorted(self.ops.items())}
        units = sum(self.units.values())
        return {
            "simulated_ns": self.end,
            "units": units,
            "throughput_per_s": round(units / secs, 1) if secs else 0.0,
            "ops": ops,
            "walks": walks,
            "locks": locks,
        }
