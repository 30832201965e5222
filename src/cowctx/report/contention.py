"""``cowctx contend`` results: JSON, a terminal table, SVG line plots (one line per
design against the CPU count) and an HTML report section."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from cowctx.contend.run import RunResult

COLOURS = ["#4c72b0", "#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd"]


def contention_json(meta: dict[str, Any], results: list[RunResult]) -> dict[str, Any]:
    """Every run: design, CPUs, workers, its numbers (``stats``) and violations."""
    return {
        "contend": meta,
        "runs": [
            {
                "design": r.design,
                "cpus": r.cpus,
                "workers": r.workers,
                **r.stats,
                "violations": [{"kind": k, "detail": d} for k, d in r.violations],
            }
            for r in results
        ],
    }


def _walk(r: RunResult) -> dict[str, Any]:
    walks = r.stats["walks"]
    return walks.get("reclaim") or (next(iter(walks.values())) if walks else {})


def _top_lock(r: RunResult) -> tuple[str, int, str]:
    """The lock waited on longest, its total wait (ns), and whom it was waited behind."""
    best = ("-", 0, "")
    for key, s in r.stats["locks"].items():
        total = int(s["wait"]["total_ns"])
        if total > best[1]:
            holders = s["wait_by_holder_ns"]
            who = max(holders, key=lambda h: holders[h]) if holders else ""
            best = (key, total, who)
    return best


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def contention_table(meta: dict[str, Any], results: list[RunResult]) -> str:
    """One row per run."""
    head = (
        f"{meta['workload']}: {meta['duration_s']} simulated s per run, seed {meta['seed']}, "
        f"walkers {','.join(meta['walkers']) or 'none'}; costs {Path(str(meta['costs'])).name}"
    )
    dw = max([14, *(len(r.design) for r in results)])  # whole names: variants differ at the end
    cols = (
        f"{'design':{dw}} {'cpus':>4} {'units/s':>9} {'walk p50':>9} {'p99 us':>8} "
        f"{'max us':>8} {'rotated':>8} {'waited most on (ms, behind)':>34}"
    )
    lines = [head, cols, "-" * len(cols)]
    for r in results:
        w = _walk(r)
        key, total, who = _top_lock(r)
        lines.append(
            f"{r.design:{dw}} {r.cpus:>4} {r.stats['throughput_per_s']:>9.0f} "
            f"{_us(w.get('p50_ns', 0)):>9} {_us(w.get('p99_ns', 0)):>8} "
            f"{_us(w.get('max_ns', 0)):>8} {100 * w.get('rotation_rate', 0.0):>7.1f}% "
            f"{f'{key} {total / 1e6:.2f} ({who})':>34}"
        )
    biggest = {r.design: r for r in results if r.cpus == max(x.cpus for x in results)}
    for design, r in biggest.items():
        lines.append("")
        lines.append(f"{design}, {r.cpus} CPUs: lock waits (ms) behind each holder, holds")
        for key, s in sorted(r.stats["locks"].items()):
            waits = s["wait_by_holder_ns"]
            behind = ", ".join(f"{h} {ns / 1e6:.2f}" for h, ns in sorted(waits.items())) or "-"
            hold = s["hold"]
            lines.append(
                f"  {key:16} {s['acquisitions']:>8} taken, {s['contended']:>6} contended, "
                f"{s['trylock_failed']:>6} try-locks failed; waited behind: {behind}; "
                f"hold p50 {_us(hold['p50_ns'])} p99 {_us(hold['p99_ns'])} max "
                f"{_us(hold['max_ns'])} us"
            )
    return "\n".join(lines)


def line_svg(
    title: str,
    ylabel: str,
    series: dict[str, list[tuple[int, float]]],
    width: int = 460,
    height: int = 260,
) -> str:
    """Lines of y against CPUs (log2 x axis), one per design, as an SVG string."""
    left, top, bottom = 78, 28, 36
    right = max(120, 40 + 7 * max((len(n) for n in series), default=0))
    width = max(width, left + 280 + right)
    pw, ph = width - left - right, height - top - bottom
    xs = sorted({x for pts in series.values() for x, _ in pts}) or [1]
    ymax = max((y for pts in series.values() for _, y in pts), default=1.0) or 1.0
    lx0, lx1 = math.log2(xs[0]), math.log2(xs[-1])

    def px(x: int) -> float:
        return left + (pw * (math.log2(x) - lx0) / (lx1 - lx0) if lx1 > lx0 else pw / 2)

    def py(y: float) -> float:
        return top + ph - ph * y / ymax

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"font-family='sans-serif' font-size='11'>",
        f"<text x='{left}' y='16' font-weight='bold'>{html.escape(title)}</text>",
        f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#444'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#444'/>",
    ]
    for x in xs:
        out.append(f"<text x='{px(x):.1f}' y='{top + ph + 14}' text-anchor='middle'>{x}</text>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 4}' text-anchor='middle'>CPUs</text>")
    for k in range(5):
        y = ymax * k / 4
        out.append(
            f"<text x='{left - 4}' y='{py(y) + 4:.1f}' text-anchor='end'>"
            f"{f'{y:,.0f}' if ymax >= 100 else f'{y:.3g}'}</text>"
            f"<line x1='{left}' y1='{py(y):.1f}' x2='{left + pw}' y2='{py(y):.1f}' "
            "stroke='#ddd'/>"
        )
    out.append(
        f"<text x='12' y='{top + ph / 2}' transform='rotate(-90 12 {top + ph / 2})' "
        f"text-anchor='middle'>{html.escape(ylabel)}</text>"
    )
    for i, (name, pts) in enumerate(sorted(series.items())):
        c = COLOURS[i % len(COLOURS)]
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f"<polyline fill='none' stroke='{c}' stroke-width='2' points='{path}'/>")
        for x, y in pts:
            out.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{c}'/>")
        ly = top + 14 * i + 6
        out.append(
            f"<line x1='{left + pw + 10}' y1='{ly}' x2='{left + pw + 26}' y2='{ly}' "
            f"stroke='{c}' stroke-width='2'/>"
            f"<text x='{left + pw + 30}' y='{ly + 4}'>{html.escape(name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def plots(results: list[RunResult]) -> list[str]:
    """Throughput and reclaim walk p99 against CPUs, one line per design."""
    thr: dict[str, list[tuple[int, float]]] = {}
    p99: dict[str, list[tuple[int, float]]] = {}
    rot: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        thr.setdefault(r.design, []).append((r.cpus, float(r.stats["throughput_per_s"])))
        w = _walk(r)
        p99.setdefault(r.design, []).append((r.cpus, w.get("p99_ns", 0) / 1000))
        rot.setdefault(r.design, []).append((r.cpus, 100 * float(w.get("rotation_rate", 0.0))))
    return [
        line_svg("workload throughput", "units per simulated s", thr),
        line_svg("reclaim walk latency p99", "microseconds", p99),
        line_svg("folios rotated (failed try-lock)", "% of folios scanned", rot),
    ]


def contention_section(meta: dict[str, Any], results: list[RunResult]) -> str:
    """The HTML section: the plots, then the table."""
    parts = [
        f"<h2>Contention: {html.escape(str(meta['workload']))} on simulated CPUs</h2>",
        f"<p>{html.escape(str(meta.get('description', '')))}</p>",
        f"<p class='note'>{html.escape(str(meta['duration_s']))} simulated s per run, seed "
        f"{meta['seed']}, walkers {html.escape(','.join(meta['walkers']) or 'none')}, cost model "
        f"{html.escape(Path(str(meta['costs'])).name)} (docs/contention.md).</p>",
        "<div class='plots'>" + "".join(plots(results)) + "</div>",
        "<pre>" + html.escape(contention_table(meta, results)) + "</pre>",
    ]
    return "".join(parts)


def write_contention_report(path: Path, meta: dict[str, Any], results: list[RunResult]) -> None:
    from cowctx.files import write_atomically
    from cowctx.report.html import render_report

    text = render_report(
        [],
        title=f"cowctx contend: {meta['workload']}",
        sections=[contention_section(meta, results)],
    )
    write_atomically(path, text)
