"""The cost model: NNLS, the fit of the stored measurements, the model's step
counts, calibration files that are wrong, and (on this kernel) a tiny slice of
the calibration measured for real."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cowctx.clients.referenced import folio_referenced
from cowctx.concurrency import runtime as rt
from cowctx.contend.costs import (
    DATA_DIR,
    CostFileError,
    classify,
    classify_object,
    from_json,
    load,
)
from cowctx.contend.count import Counter, step_counts
from cowctx.contend.fit import fit, nnls
from cowctx.contend.run import PROBE
from cowctx.linux.timing import SERIES, SMALL, fit_costs, refit, scenario_of
from cowctx.mm.constants import PAGE_SHIFT
from cowctx.scenario import schema as S
from cowctx.scenario.runner import run_scenario, run_step

STORED = sorted(DATA_DIR.glob("*.json"))


def test_nnls_recovers_nonnegative_coefficients() -> None:
    rows = [[1.0, float(x), float(x * x % 7)] for x in range(12)]
    y = [5 + 3 * r[1] + 2 * r[2] for r in rows]
    w = nnls(rows, y)
    assert w == pytest.approx([5.0, 3.0, 2.0], abs=1e-4)
    # the unconstrained optimum has a negative slope: NNLS keeps it at 0
    down = fit(["a", "b"], [[1.0, float(x)] for x in range(10)], [10.0 - 2 * x for x in range(10)])
    assert down.coef["b"] == 0.0 and down.coef["a"] == pytest.approx(1.0)


def test_the_stored_calibration_refits_to_itself() -> None:
    assert STORED, f"no calibration in {DATA_DIR}"
    data = json.loads(STORED[-1].read_text())
    again = refit(STORED[-1])
    assert again["fit"] == data["fit"]
    for op in ("fork", "exit", "munmap", "madvise", "reclaim"):
        assert data["quality"][op]["r2"] > 0.5, (op, data["quality"][op])  # noisy machine
    # each further process in the anon_vma tree costs the walk something
    assert all(v > 0 for v in data["quality"]["reclaim"]["per_mapper_ns"])
    assert load(STORED[-1]).base_ns("fork") > 0


def test_the_fit_follows_the_measurements() -> None:
    """A fit that ignored the kernel's times would not move when they double."""
    data = json.loads(STORED[-1].read_text())
    rows: list[dict[str, Any]] = copy.deepcopy(data["raw"])
    for r in rows:
        r["median_ns"] *= 2
    doubled = fit_costs(rows, 1000.0)["fit"]
    base = data["fit"]
    assert doubled["base_ns"]["fork"] == pytest.approx(2 * base["base_ns"]["fork"], rel=1e-3)
    assert doubled["step_ns"]["fork"]["pte"] == pytest.approx(
        2 * base["step_ns"]["fork"]["pte"], rel=1e-3
    )


def test_counts_grow_with_the_size_varied() -> None:
    s = next(x for x in SERIES if x.name == "fork_pages")
    small, big = (int(step_counts(scenario_of(s, n))[2]["pte"]) for n in (64, 256))
    assert big - small >= 192  # at least one PTE step per page copied
    m = next(x for x in SERIES if x.name == "pageout_mappers")
    c0, c4 = step_counts(scenario_of(m, 0))[-1], step_counts(scenario_of(m, 4))[-1]
    assert c4["pte"] > c0["pte"] and c4["vma"] > c0["vma"]  # the walk probes 4 more mms


def test_bad_calibration_files_name_the_field(tmp_path: Path) -> None:
    good: dict[str, Any] = {
        "fit": {"base_ns": {"fork": 1}, "step_ns": {"fork": {"pte": 1}}, "wakeup_ns": 5}
    }
    assert from_json(good, "x").table("fork")["pte"] == 1
    bad = copy.deepcopy(good)
    del bad["fit"]["wakeup_ns"]
    with pytest.raises(CostFileError, match="x: field fit: KeyError"):
        from_json(bad, "x")
    neg = copy.deepcopy(good)
    neg["fit"]["step_ns"]["fork"]["pte"] = -1
    with pytest.raises(CostFileError, match=r"fit.step_ns.fork.pte: negative"):
        from_json(neg, "x")
    odd = copy.deepcopy(good)
    odd["fit"]["step_ns"]["fork"]["tlb"] = 1
    with pytest.raises(CostFileError, match="unknown class 'tlb'"):
        from_json(odd, "x")
    p = tmp_path / "c.json"
    p.write_text("{")
    with pytest.raises(CostFileError, match=str(p)):
        load(p)


@pytest.mark.kernel
def test_a_tiny_calibration_slice_on_this_kernel() -> None:
    from cowctx.linux.harness import wakeup_latency_ns
    from cowctx.linux.timing import measure

    rows = measure(SMALL, repeats=2)
    forks = [r for r in rows if r["op"] == "fork" and r["series"] == "fork_pages"]
    assert {r["size"] for r in forks} == {1, 256} and all(r["median_ns"] > 0 for r in forks)
    pageouts = [r for r in rows if r["op"] == "madvise"]
    assert len(pageouts) == 2 and all(len(r["samples_ns"]) == 2 for r in pageouts)
    assert pageouts[1]["counts"]["pte"] > pageouts[0]["counts"]["pte"]
    wake = wakeup_latency_ns(rounds=200, batches=1)
    assert 0 < wake["median_ns"] < 10_000_000


def test_the_reclaim_trace_counts_only_the_harness_anon_lru() -> None:
    from cowctx.linux.harness import _shrink_counts

    line = (
        "  harness-1a2b3c-4242 [001] ..... 12.5: mm_vmscan_lru_shrink_inactive: nid=0 "
        "nr_scanned=32 nr_reclaimed=20 nr_dirty=0 nr_writeback=0 nr_congested=0 "
        "nr_immediate=0 nr_activate_anon=0 nr_activate_file=0 nr_ref_keep={keep} "
        "nr_unmap_fail=0 priority=12 flags=RECLAIM_WB_{lru}|RECLAIM_WB_ASYNC"
    )
    lines = [
        line.format(keep=5, lru="ANON"),
        line.format(keep=7, lru="FILE"),  # the file LRU: not the rmap walk's
        line.format(keep=3, lru="ANON").replace("harness-1a2b3c", "kswapd0"),  # not ours
        "garbage",
    ]
    got = _shrink_counts(lines)
    assert got["events"] == 1 and got["nr_ref_keep"] == 5 and got["nr_scanned"] == 32


def test_the_reclaim_comparison_pairs_each_configuration() -> None:
    from cowctx.contend.validate import reclaim_side_by_side, side_by_side

    stored = json.loads((DATA_DIR / "validation" / STORED[-1].name).read_text())
    rows = reclaim_side_by_side(stored["reclaim_measured"], load(STORED[-1]))
    assert [r["config"] for r in rows] == ["1cpu", "2cpu"]
    assert rows[0]["measured_kept"] == 0 and rows[0]["simulated_kept"] == 0
    two = rows[1]
    assert two["measured_kept"] > 0 and two["measured_outside_kept"] > 0
    # what fork/exit on the pager's anon_vma adds: the difference to the forker outside
    diff = two["measured_rate"] - two["measured_outside_rate"]
    assert two["measured_rate_minus_outside"] == round(diff, 4)
    side = side_by_side(stored["measured"], load(STORED[-1]), 20_000_000)
    assert side[2]["config"] == "2cpu" and side[2]["measured_walks"] == 3 * 300 * 64
    assert 0 < side[2]["measured_read_wait_rate"] < 0.01  # measured here: 90 of 57,600


def test_lock_waits_pairs_each_wait_and_counts_only_the_harness() -> None:
    from cowctx.linux.harness import lock_waits

    def ev(pid: int, ts: str, what: str, comm: str = "harness-1a2b3c") -> str:
        return f"  {comm}-{pid} [001] d..2. {ts}: {what}"

    lines = [
        ev(10, "5.000100", "contention_begin: 00000000aaaa (flags=WRITE)"),
        ev(11, "5.000150", "contention_begin: 00000000aaaa (flags=READ)"),
        ev(12, "5.000160", "contention_begin: 00000000cccc (flags=SPIN)"),
        ev(12, "5.000161", "contention_end: 00000000cccc (ret=0)"),
        ev(10, "5.000140", "contention_end: 00000000aaaa (ret=0)"),
        ev(11, "5.002150", "contention_end: 00000000aaaa (ret=0)"),
        ev(13, "5.000100", "contention_begin: 00000000bbbb (flags=WRITE)", comm="cc1"),
        ev(13, "5.100100", "contention_end: 00000000bbbb (ret=0)", comm="cc1"),
        ev(14, "5.000300", "contention_end: 00000000aaaa (ret=0)"),  # begun before tracing
        "garbage",
    ]
    got = lock_waits(lines)
    assert got["WRITE"]["n"] == 1 and got["WRITE"]["total_ns"] == 40_000
    assert got["READ"]["n"] == 1 and got["READ"]["total_ns"] == 2_000_000
    assert got["READ"]["per_lock"] == {"00000000aaaa": 1} and got["other_waits"] == 1


def test_shrink_by_pid_splits_the_reclaimers() -> None:
    from cowctx.linux.harness import shrink_by_pid

    line = (
        "  {comm}-{pid} [001] ..... 12.5: mm_vmscan_lru_shrink_inactive: nid=0 "
        "nr_scanned={n} nr_reclaimed=0 nr_ref_keep={k} priority=12 flags=RECLAIM_WB_{lru}"
    )
    lines = [
        line.format(comm="harness-1a2b3c", pid=7, n=30, k=3, lru="ANON"),
        line.format(comm="harness-1a2b3c", pid=7, n=2, k=0, lru="ANON"),
        line.format(comm="harness-1a2b3c", pid=9, n=5, k=1, lru="ANON"),
        line.format(comm="harness-1a2b3c", pid=9, n=50, k=9, lru="FILE"),
        line.format(comm="kswapd0", pid=3, n=99, k=9, lru="ANON"),
    ]
    got = shrink_by_pid(lines)
    assert got["processes"] == 2
    assert got["top"][0] == {"pid": 7, "events": 2, "nr_scanned": 32, "nr_ref_keep": 3}
    assert got["top"][1]["nr_scanned"] == 5


def test_recount_finds_stale_counts_and_refits() -> None:
    """A stored row whose counts are not today's model's is found, re-counted (to
    what step_counts says) and the fit follows; a row that is today's stays."""
    from cowctx.contend.recount import recount

    data = json.loads(STORED[-1].read_text())
    data["raw"] = [r for r in data["raw"] if r["series"] == "faults" and r["size"] in (16, 256)]
    s = next(x for x in SERIES if x.name == "faults")
    today = {n: step_counts(scenario_of(s, n)) for n in (16, 256)}
    for r in data["raw"]:
        r["counts"] = dict(today[r["size"]][r["step"]])
    again, lines = recount(data, "x")
    assert (
        lines == [] and again["fit"] == fit_costs(data["raw"], data["wakeup"]["median_ns"])["fit"]
    )
    stale = copy.deepcopy(data)
    for r in stale["raw"]:
        if r["op"] == "write":
            r["counts"]["pte"] //= 2
    new, lines = recount(stale, "x")
    assert lines and all(line.startswith("write pte: 2 rows") for line in lines), lines
    assert [r["counts"] for r in new["raw"]] == [r["counts"] for r in data["raw"]]
    assert new["fit"] == again["fit"]
    bad = copy.deepcopy(data)
    bad["raw"][0]["series"] = "nope"
    with pytest.raises(ValueError, match=r"x: raw\[0\].series: unknown series 'nope'"):
        recount(bad, "x")


class _Recorder(Counter):
    """The counting runtime, also keeping every (object, field) a step names."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[object, object]] = []

    def point(self, kind: str, obj: object, fld: object, write: bool) -> None:
        self.seen.append((obj, fld))
        super().point(kind, obj, fld, write)

    def points(self, kind: str, accesses: list[tuple[object, object, bool]]) -> None:
        self.seen += [(o, f) for o, f, _ in accesses]
        super().points(kind, accesses)

    def pte(self, mm: object, vpn: int, write: bool, folios: tuple[object, ...]) -> None:
        self.seen.append((mm, ("pte", vpn)))
        self.seen += [(f, fld) for f in folios for fld in ("mapcount", "refcount")]
        super().pte(mm, vpn, write, folios)


@pytest.mark.parametrize("design", ["anon_vma", "cow_context", "cow_context_poc"])
def test_classify_per_type_agrees_with_each_object(design: str) -> None:
    """classify() keeps its answer per type of object: every object the model's
    fork, CoW fault, rmap walk and exit name must get the class its own
    attributes give (a model class whose instances differ would be charged
    wrongly, and this fails)."""
    run = run_scenario(PROBE, design, check=False)
    rec = _Recorder()
    prev, rt.current = rt.current, rec  # type: ignore[assignment]
    try:
        run_step(run, S.ForkStep(op="fork", proc="p0", child="c0"))
        run_step(run, S.WriteStep(op="write", proc="c0", page=0, pages=1))
        mm = run.procs["p0"].mm
        assert mm is not None
        folio = run.machine.folio_at(run.procs["p0"], max(mm.pgd) << PAGE_SHIFT)
        assert folio is not None and folio.mapcount == 2
        folio_referenced(run.machine, folio)
        run_step(run, S.ExitStep(op="exit", proc="c0"))
    finally:
        rt.current = prev
    kinds = {classify_object(o, f) for o, f in rec.seen}
    assert {"pte", "folio", "vma", "rmap"} <= kinds
    wrong = [(type(o).__name__, f) for o, f in rec.seen if classify(o, f) != classify_object(o, f)]
    assert wrong == []
    # and the check would see a type whose instances differ
    odd = [_Odd(), _Odd()]
    odd[1].vm_id = 1  # type: ignore[attr-defined]
    assert [classify(o, "x") for o in odd] != [classify_object(o, "x") for o in odd]


class _Odd:
    pass


@pytest.mark.kernel
def test_lock_tracing_instance_is_private_and_removed() -> None:
    """The lock-wait tracing of the validation runs in its own tracefs instance,
    follows this process's children only, and is gone afterwards, also when the
    body raises."""
    from cowctx.linux.harness import _lock_tracing, wakeup_latency_ns
    from cowctx.linux.tracefs import tracefs_root

    before = set(os.listdir(tracefs_root() / "instances"))
    with pytest.raises(RuntimeError, match="boom"), _lock_tracing(True) as collect:
        assert collect is not None
        mine = set(os.listdir(tracefs_root() / "instances")) - before
        assert len(mine) == 1 and next(iter(mine)).endswith("-locks")
        inst = tracefs_root() / "instances" / next(iter(mine))
        assert (inst / "set_event_pid").read_text().split() == [str(os.getpid())]
        wakeup_latency_ns(rounds=50, batches=1)
        got = collect()
        assert got["lost_events"] == 0 and got["WRITE"]["n"] >= 0
        raise RuntimeError("boom")
    assert set(os.listdir(tracefs_root() / "instances")) - before == set()
    with _lock_tracing(False) as off:
        assert off is None


def test_the_stored_hold_scale_refits_from_the_stored_validation() -> None:
    """The calibration's hold block is what python -m cowctx.contend.hold gives
    for the stored validation measurement (the kernel's pageout walks that slept
    on the root, the model's hold per fork+exit simulated at scale 1); a
    measurement without lock waits is refused, naming the file and field."""
    from cowctx.contend.hold import fit_hold_scale

    data = json.loads(STORED[-1].read_text())
    measured = json.loads((DATA_DIR / "validation" / STORED[-1].name).read_text())["measured"]
    block = fit_hold_scale(measured, load(STORED[-1]), "v.json")
    assert block == {**data["hold"], "source": "v.json"}
    assert 0 < block["scale"] < 1  # the model held the root longer than the kernel can
    assert block["kernel_hold_per_cycle_ns_at_most"] == round(
        block["kernel_read_waits"] / block["kernel_walks"] / block["kernel_forks_per_s"] * 1e9, 1
    )
    bad = copy.deepcopy(measured)
    del bad["2cpu"]["lock_waits"]
    with pytest.raises(ValueError, match=r"v.json: measured.2cpu: KeyError"):
        fit_hold_scale(bad, load(STORED[-1]), "v.json")
