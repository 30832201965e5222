"""Simulated against measured on this 2-CPU machine: MADV_PAGEOUT of a process's
folios while another process forks and reaps children in the same anon_vma
hierarchy, both on one CPU and on two (the harness's ``pageout`` mode,
:func:`cowctx.linux.harness.pageout_experiment`, builds the same processes).

The set-up mirrors the harness: the pager maps 2P pages, writes them, forks S
sleepers, unmaps its first half, writes the second half again (CoW: its own
folios, in the root anon_vma, every walk probes the S sleepers' page tables
first), and forks the forker.  The pager then loops "write a zero to each page
(back in from the zeromap), MADV_PAGEOUT"; the forker loops "fork, child exits".
"""

from __future__ import annotations

from typing import Any

from cowctx.contend.costs import CostModel
from cowctx.contend.sim import SimThread, Simulator
from cowctx.contend.stats import percentile
from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.runner import run_scenario, run_step
from cowctx.scenario.schema import FORMAT


def _setup(pages: int, sleepers: int) -> Any:
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "page": 0, "pages": 2 * pages},
        {"op": "write", "page": 0, "pages": 2 * pages, "value": 1},
    ]
    steps += [{"op": "fork", "child": f"s{i}"} for i in range(sleepers)]
    steps += [
        {"op": "munmap", "page": 0, "pages": pages},
        {"op": "write", "page": pages, "pages": pages, "value": 0},
        {"op": "fork", "child": "forker"},
    ]
    data = {"format": FORMAT, "name": "pageout-pair", "steps": steps}
    return parse_scenario(data, "<pageout pair set-up>")


def simulate_pageout(
    design: str,
    cpus: int,
    costs: CostModel,
    pages: int = 64,
    sleepers: int = 16,
    duration_ns: int = 100_000_000,
    forker: bool = True,
) -> dict[str, Any]:
    """The pager's MADV_PAGEOUT latencies and the forker's forks per second."""
    run = run_scenario(_setup(pages, sleepers), design, check=False)
    run.machine.swap_enabled = True
    sim = Simulator(cpus, costs)
    lat: list[int] = []
    write = parse_scenario(
        {
            "format": FORMAT,
            "name": "x",
            "steps": [
                {"op": "write", "page": pages, "pages": pages, "value": 0},
                {"op": "madvise", "page": pages, "pages": pages, "advice": "pageout"},
                {"op": "fork", "child": "forker"},
                {"op": "fork", "proc": "forker", "child": "g"},
                {"op": "exit", "proc": "g"},
            ],
        },
        "<pageout pair loop>",
    ).steps
    touch, pageout, _, fork, exit_ = write

    def pager(t: SimThread) -> None:
        while True:
            sim.begin(t, "write")
            run_step(run, touch)
            sim.end(t)
            sim.begin(t, "madvise")
            run_step(run, pageout)
            lat.append(sim.end(t))

    def forker_body(t: SimThread) -> None:
        while True:
            sim.begin(t, "fork")
            run_step(run, fork)
            sim.end(t)
            sim.begin(t, "exit")
            run_step(run, exit_)
            sim.end(t)
            sim.stats.unit("forker")

    sim.add_thread("pager", "pager", pager)
    if forker:
        sim.add_thread("forker", "forker", forker_body)
    sim.run(duration_ns)
    secs = sim.stats.end / 1e9
    return {
        "design": design,
        "cpus": cpus,
        "forker": forker,
        "pageouts": len(lat),
        "median_ns": percentile(lat, 0.5),
        "p99_ns": percentile(lat, 0.99),
        "max_ns": max(lat) if lat else 0,
        "forks_per_s": round(sim.stats.units.get("forker", 0) / secs, 1) if secs else 0.0,
        "forker_units": sim.stats.units.get("forker", 0),
        "violations": sim.violations,
        "locks": {
            k: {
                "wait_by_holder_ns": v["wait_by_holder_ns"],
                "acquisitions": v["acquisitions"],
                "contended": v["contended"],
                "hold_total_ns": v["hold"]["total_ns"],
                "hold_p50_ns": v["hold"]["p50_ns"],
                "hold_max_ns": v["hold"]["max_ns"],
            }
            for k, v in sim.stats.to_json()["locks"].items()
        },
    }


def side_by_side(
    measured: dict[str, Any], costs: CostModel, duration_ns: int
) -> list[dict[str, Any]]:
    """Rows (configuration, measured, simulated, error) for the docs table."""
    pages, sleepers = int(measured["pages"]), int(measured["sleepers"])
    rows = []
    for name, cpus, forker in (("alone", 1, False), ("1cpu", 1, True), ("2cpu", 2, True)):
        sim = simulate_pageout("anon_vma", cpus, costs, pages, sleepers, duration_ns, forker)
        m = measured[name]
        row: dict[str, Any] = {"config": name, "cpus": cpus, "forker": forker}
        for key in ("median_ns", "p99_ns"):
            mv, sv = float(m["latency"][key]), float(sim[key])
            row[f"measured_{key}"] = mv
            row[f"simulated_{key}"] = sv
            row[f"error_{key}"] = round((sv - mv) / mv, 3) if mv else 0.0
        waits = m.get("lock_waits")
        if waits:  # the kernel's pager walks that slept on the root (found it write-held)
            walks = len(m["runs"]) * int(measured["iters"]) * pages
            row["measured_read_waits"] = sum(int(w["READ"]["n"]) for w in waits)
            row["measured_walks"] = walks
            row["measured_read_wait_rate"] = round(row["measured_read_waits"] / walks, 5)
        lk = sim["locks"].get("anon_vma:read", {})
        row["simulated_read_wait_rate"] = (
            round(int(lk.get("contended", 0)) / int(lk["acquisitions"]), 5)
            if lk.get("acquisitions")
            else 0.0
        )
        if forker:
            mf = sorted(m["forks_per_s"])[len(m["forks_per_s"]) // 2]
            row["measured_forks_per_s"] = mf
            row["simulated_forks_per_s"] = sim["forks_per_s"]
            row["error_forks_per_s"] = round((sim["forks_per_s"] - mf) / mf, 3) if mf else 0.0
        rows.append(row)
    return rows


def simulate_reclaim(
    design: str,
    cpus: int,
    costs: CostModel,
    pages: int = 1024,
    sleepers: int = 16,
    duration_ns: int = 50_000_000,
    forker: bool = True,
) -> dict[str, Any]:
    """The harness's ``reclaim`` mode in the model: a reclaim walker
    (``folio_referenced()`` with try-lock) over the pager's idle folios beside the
    forker; the fraction of folios kept because the try-lock failed."""
    from cowctx.contend.drivers import Plan, walker_body
    from cowctx.scenario import schema as S

    setup = _setup(pages, sleepers)
    run = run_scenario(setup, design, check=False)
    sim = Simulator(cpus, costs)
    loop = parse_scenario(
        {
            "format": FORMAT,
            "name": "x",
            "steps": [
                {"op": "fork", "child": "forker"},
                {"op": "fork", "proc": "forker", "child": "g"},
                {"op": "exit", "proc": "g"},
            ],
        },
        "<reclaim loop>",
    ).steps
    fork, exit_ = loop[1], loop[2]

    def forker_body(t: SimThread) -> None:
        while True:
            sim.begin(t, "fork")
            run_step(run, fork)
            sim.end(t)
            sim.begin(t, "exit")
            run_step(run, exit_)
            sim.end(t)
            sim.stats.unit("forker")

    # the walker scans the pager's (p0's) folios: a plan naming p0 as the root
    plan = Plan("reclaim-pair", "", setup, "p0", "g", [S.ExitStep(op="exit", proc="g")])
    sim.add_thread("reclaim", "reclaim", walker_body(sim, run, plan, "reclaim", 0, 0))
    if forker:
        sim.add_thread("forker", "forker", forker_body)
    sim.run(duration_ns)
    w = sim.stats.to_json()["walks"].get("reclaim", {})
    return {
        "design": design,
        "cpus": cpus,
        "forker": forker,
        "folios": w.get("folios", 0),
        "rotations": w.get("rotations", 0),
        "rotation_rate": w.get("rotation_rate", 0.0),
        "violations": sim.violations,
    }


def reclaim_side_by_side(measured: dict[str, Any], costs: CostModel) -> list[dict[str, Any]]:
    """Folios kept, measured (``nr_ref_keep`` of the harness's anon LRU) and
    simulated (the pager's folios rotated on a failed try-lock), at 1 and 2 CPUs.
    ``nr_ref_keep`` is not only failed try-locks (docs/contention.md): with the
    ``2cpu-outside`` measurement (the forker outside the pager's anon_vma
    hierarchy) the 2-CPU row also has the kept rate that is left when fork and
    exit never lock the pager's anon_vma, and the difference."""
    pages, sleepers = int(measured["pages"]), int(measured["sleepers"])
    rows = []
    for name, cpus in (("1cpu", 1), ("2cpu", 2)):
        sim = simulate_reclaim("anon_vma", cpus, costs, pages, sleepers, 20_000_000)
        m = measured[name]
        rows.append(
            {
                "config": name,
                "cpus": cpus,
                "measured_scanned": m["nr_scanned"],
                "measured_kept": m["nr_ref_keep"],
                "measured_rate": m["ref_keep_rate"],
                "simulated_scanned": sim["folios"],
                "simulated_kept": sim["rotations"],
                "simulated_rate": sim["rotation_rate"],
            }
        )
    out = measured.get("2cpu-outside")
    if out is not None and out.get("nr_scanned"):
        rows[-1]["measured_outside_scanned"] = out["nr_scanned"]
        rows[-1]["measured_outside_kept"] = out["nr_ref_keep"]
        rows[-1]["measured_outside_rate"] = out["ref_keep_rate"]
        rows[-1]["measured_rate_minus_outside"] = round(
            rows[-1]["measured_rate"] - out["ref_keep_rate"], 4
        )
    return rows
