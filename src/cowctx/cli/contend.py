"""``cowctx contend``: a workload on N simulated CPUs per design, timed by the cost
model calibrated on this kernel; ``--calibrate`` re-measures the kernel and
``--validate`` puts simulated and measured MADV_PAGEOUT side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cowctx.cli.options import design_option, html_option, json_option, parse_designs


def _ints(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of integers", param_hint=what) from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"{value!r}: give positive integers", param_hint=what)
    return out


def _params(workload: str, items: tuple[str, ...]) -> dict[str, float]:
    from cowctx.workloads import WORKLOADS

    out: dict[str, float] = {}
    for item in items:
        key, _, text = item.partition("=")
        if key not in WORKLOADS[workload].defaults:
            raise click.BadParameter(
                f"{workload} has no parameter {key!r} ({', '.join(WORKLOADS[workload].defaults)})",
                param_hint="--param",
            )
        try:
            value = float(text)
            WORKLOADS[workload].check(key, value)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {exc}", param_hint="--param") from None
        out[key] = value
    return out


@click.command("contend")
@click.argument("workload", required=False)
@click.option(
    "--cpus",
    default="1,2,4,8,16,32,64",
    show_default=True,
    help="Simulated CPU counts, comma-separated.",
)
@design_option("anon_vma,cow_context", "--designs")
@click.option(
    "--duration",
    type=click.FloatRange(min=1e-6),
    default=0.02,
    show_default=True,
    help="Simulated seconds per run.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--walkers",
    default="reclaim",
    show_default=True,
    help="Background walkers: reclaim, migrate, collapse, comma-separated ('' for none).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Workload threads (default: one per CPU left after the walkers).",
)
@click.option(
    "--walker-pace",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Microseconds a walker sleeps between folios.",
)
@click.option(
    "--param", "params", multiple=True, metavar="NAME=V", help="A workload parameter (repeatable)."
)
@click.option(
    "--scale", type=float, default=1.0, show_default=True, help="Multiply every workload size."
)
@click.option(
    "--quantum",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="ns a spinlock event may move early (0: every lock event exact).",
)
@click.option(
    "--costs",
    "costs_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Calibration file (default: the newest in data/calibration).",
)
@json_option("One JSON object: every run's numbers.")
@html_option()
@click.option(
    "--perfetto",
    "perfetto_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Trace-event file of one run: the first design at the largest CPU count.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Re-measure this kernel and write the cost model (needs root, tracefs).",
)
@click.option(
    "--validate",
    is_flag=True,
    help="Measure MADV_PAGEOUT and memory-cgroup reclaim beside a forker on this kernel, "
    "at 1 and 2 CPUs, and simulate them.",
)
@click.option(
    "--measured",
    "measured_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="With --validate: simulate against this stored measurement (a validation "
    "file) instead of measuring the kernel again.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Kernel repetitions per calibration scenario.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Where --calibrate / --validate write (default: data/calibration/).",
)
def contend_command(
    workload: str | None,
    cpus: str,
    design: str,
    duration: float,
    seed: int,
    walkers: str,
    workers: int | None,
    walker_pace: float,
    params: tuple[str, ...],
    scale: float,
    quantum: int,
    costs_path: Path | None,
    as_json: bool,
    html_path: Path | None,
    perfetto_path: Path | None,
    calibrate: bool,
    validate: bool,
    measured_path: Path | None,
    repeats: int,
    out_path: Path | None,
) -> None:
    """Run WORKLOAD on N simulated CPUs for each design and CPU count: throughput,
    reclaim walk latency, rotations, lock waits and holds (docs/contention.md)."""
    from cowctx.contend.costs import CostFileError, load

    if calibrate:
        _calibrate(out_path, repeats)
        return
    try:
        costs = load(costs_path)
    except CostFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if validate:
        _validate(out_path, costs, duration, measured_path)
        return
    if workload is None:
        raise click.BadParameter(
            "give a WORKLOAD (or --calibrate / --validate)", param_hint="WORKLOAD"
        )
    _simulate(
        workload,
        cpus,
        design,
        duration,
        seed,
        walkers,
        workers,
        walker_pace,
        params,
        scale,
        quantum,
        costs,
        as_json,
        html_path,
        perfetto_path,
    )


def _simulate(
    workload: str,
    cpus: str,
    design: str,
    duration: float,
    seed: int,
    walkers: str,
    workers: int | None,
    walker_pace: float,
    params: tuple[str, ...],
    scale: float,
    quantum: int,
    costs: Any,
    as_json: bool,
    html_path: Path | None,
    perfetto_path: Path | None,
) -> None:
    from cowctx.contend.drivers import WALKERS, PlanError, make_plan
    from cowctx.contend.perfetto import TraceLog
    from cowctx.contend.run import RunSpec, simulate
    from cowctx.report.contention import contention_json, contention_table
    from cowctx.workloads import WORKLOADS

    if workload not in WORKLOADS:
        raise click.BadParameter(
            f"unknown workload {workload!r} ({', '.join(WORKLOADS)})", param_hint="WORKLOAD"
        )
    counts = _ints(cpus, "--cpus")
    designs = parse_designs(design)
    kinds = tuple(w.strip() for w in walkers.split(",") if w.strip())
    for k in kinds:
        if k not in WALKERS:
            raise click.BadParameter(
                f"unknown walker {k!r} ({', '.join(WALKERS)})", param_hint="--walkers"
            )
    try:
        plan = make_plan(workload, _params(workload, params), scale)
    except PlanError as exc:
        raise click.BadParameter(str(exc), param_hint="WORKLOAD") from None
    spec = RunSpec(1, int(duration * 1e9), seed, kinds, workers, int(walker_pace * 1000), quantum)
    results = []
    for d in designs:
        for n in counts:
            trace = None
            if perfetto_path is not None and d == designs[0] and n == max(counts):
                trace = TraceLog()
            r = simulate(plan, d, RunSpec(**{**spec.__dict__, "cpus": n}), costs, trace)
            click.echo(
                f"{d} cpus={n}: {r.stats['throughput_per_s']:.0f} units/s (wall {r.wall_s:.1f} s)",
                err=True,
            )
            results.append(r)
            if trace is not None and perfetto_path is not None:
                perfetto_path.write_text(trace.to_json(f"{workload} on {d}, {n} CPUs"))
    meta = {
        "workload": workload,
        "description": plan.description,
        "duration_s": duration,
        "seed": seed,
        "walkers": list(kinds),
        "quantum_ns": quantum,
        "costs": costs.source,
    }
    if as_json:
        click.echo(json.dumps(contention_json(meta, results), indent=1, sort_keys=True))
    else:
        click.echo(contention_table(meta, results))
    if html_path is not None:
        from cowctx.report.contention import write_contention_report

        write_contention_report(html_path, meta, results)
    if any(r.violations for r in results):
        for r in results:
            for kind, detail in r.violations[:5]:
                click.echo(f"{r.design} cpus={r.cpus}: {kind}: {detail}", err=True)
        sys.exit(1)


def _calibrate(out_path: Path | None, repeats: int) -> None:
    from cowctx.linux.executor import kernel_unavailable_reason
    from cowctx.linux.timing import calibrate, default_path

    reason = kernel_unavailable_reason()
    if reason is not None:
        click.echo(f"error: cannot calibrate here: {reason}", err=True)
        sys.exit(2)
    out = out_path or default_path()
    data = calibrate(out, repeats, progress=lambda s: click.echo(f"measured {s}", err=True))
    click.echo(f"wrote {out} ({data['seconds']} s)")
    for op, q in sorted(data["quality"].items()):
        click.echo(f"  {op:8} r2 {q['r2']:.3f}  rms {q['rms_ns'] / 1000:.1f} us  rows {q['rows']}")


def _validate(
    out_path: Path | None, costs: Any, duration: float, measured_path: Path | None
) -> None:
    from cowctx.contend.costs import DATA_DIR
    from cowctx.contend.validate import reclaim_side_by_side, side_by_side
    from cowctx.linux.harness import pageout_experiment
    from cowctx.linux.swap import swap_unavailable_reason

    if measured_path is not None:
        try:
            stored = json.loads(measured_path.read_text())
            measured = stored["measured"]
            reclaim = stored.get("reclaim_measured")
        except (OSError, ValueError, KeyError) as exc:
            click.echo(f"error: {measured_path}: field measured: {exc}", err=True)
            sys.exit(2)
    else:
        from cowctx.linux.harness import reclaim_experiment, reclaim_unavailable_reason

        reason = swap_unavailable_reason()
        if reason is not None:
            click.echo(f"error: cannot validate here: {reason}", err=True)
            sys.exit(2)
        measured = pageout_experiment()
        reclaim = None
        why = reclaim_unavailable_reason()
        if why is None:
            reclaim = reclaim_experiment()
        else:
            click.echo(f"note: no reclaim measurement: {why}", err=True)
    rows = side_by_side(measured, costs, max(int(duration * 1e9), 100_000_000))
    reclaim_rows = reclaim_side_by_side(reclaim, costs) if reclaim else []
    out = out_path or DATA_DIR / "validation" / (Path(costs.source).stem + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "measured": measured,
                "rows": rows,
                "reclaim_measured": reclaim,
                "reclaim_rows": reclaim_rows,
                "costs": costs.source,
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    click.echo(f"wrote {out}")
    for r in rows:
        click.echo(
            f"{r['config']:6} median measured {r['measured_median_ns'] / 1000:8.1f} us "
            f"simulated {r['simulated_median_ns'] / 1000:8.1f} us "
            f"error {100 * r['error_median_ns']:+.0f}%"
        )
    for r in reclaim_rows:
        click.echo(
            f"{r['config']:6} folios kept on a failed try-lock: measured "
            f"{100 * r['measured_rate']:.1f}% of {r['measured_scanned']}, simulated "
            f"{100 * r['simulated_rate']:.1f}% of {r['simulated_scanned']}"
        )
