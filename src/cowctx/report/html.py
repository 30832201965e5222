"""One self-contained HTML file: comparison tables, plots (PNG, embedded), the
hierarchy of small runs (SVG, embedded, where Graphviz is installed), sweeps,
and for each number what it counts."""

from __future__ import annotations

import base64
import html
import platform
from dataclasses import dataclass
from pathlib import Path

from cowctx import __version__
from cowctx.files import write_atomically
from cowctx.report.compare import Comparison
from cowctx.report.graph import render_svg
from cowctx.report.plots import bytes_plot, lock_plot, sweep_plot, walk_plot
from cowctx.report.sweep import METRICS, SweepResult
from cowctx.report.tables import columns, comparison_rows, recording_notes

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
td, th { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
tr.section td { font-weight: bold; background: #f4f6fa; text-align: left; }
.plots img { width: 46%; margin: 0.5em 1%; border: 1px solid #ddd; vertical-align: top; }
.graph svg, .graph img { max-width: 100%; height: auto; border: 1px solid #ddd; }
dt { font-weight: bold; margin-top: 0.6em; } .note { color: #666; font-size: 0.85em; }
"""

GLOSSARY: dict[str, str] = {
    "objects live (allocated)": "Objects alive at the end of the run, and (in parentheses) "
    "how many the run allocated in all. anon_vma and anon_vma_chain are Linux 6.18's; "
    "cow_context, remap_entry (a pgoff range in a context's remap maple tree), offset_array "
    "(the array of an entry holding several offsets) and maple_node are the CoW context "
    "design's; vm_area_struct is every VMA. * marks estimated sizes.",
    "bytes live": "Live objects times their size: slab sizes measured on Linux 6.18 "
    "(anon_vma 104 B, anon_vma_chain 64 B, vm_area_struct 192 B) or estimates for CoW "
    "context objects (context 100 B, maple node 256 B per 16 ranges, offset array 144 B, "
    "vm_area_struct 168 B without the anon_vma_chain list and pointer).",
    "VMA size": "Bytes per vm_area_struct in each design.",
    "locks": "Acquisitions of each lock kind and mode by the workload's operations (not by "
    "the measurement walks): anon_vma.rwsem is the root rwsem of a whole fork hierarchy; "
    "CoW context takes short spinlocks (a context's children list, remap entry writes) and "
    "RCU read sections. In parentheses: the VMAs and objects (AVCs, remap entries, contexts) "
    "handled while the lock was held, summed, and the most in one hold.",
    "walk cost": "After the workload, folio_referenced and then migration (try_to_migrate "
    "and remove_migration_ptes) run over every mapped anon folio. For each client, folios "
    "mapped once (exclusive) and more than once (shared) apart: page-table probes per walk "
    "(candidate mappings checked in a page table), mean, 99th percentile and maximum, and n, "
    "the number of walks.",
    "walk breadth": "Per folio_referenced walk, the anchors visited (anon_vmas, or contexts) "
    "and the VMAs examined.",
    "mappings the measurement walks missed": "Mappings folio_referenced did not reach "
    "(short of the folio's mapcount), and mappings try_to_migrate left on the old folio or "
    "migration entries remove_migration_ptes left behind, over the end-of-run measurement: 0 "
    "for a sound design.",
    "oracle violations": "Mappings an rmap walk missed, or broken invariants, found by "
    "checking against a scan of every page table (only with --check; the PoC design is "
    "expected to have some).",
    "linux (kernel)": "With --kernel, the same steps run on this machine's kernel; its "
    "anon_vma and anon_vma_chain counts (from kmem tracepoints) stand beside the model's; ≠ "
    "marks a difference.",
    "recordings": "A real program recorded with cowctx record and replayed on every design "
    "(docs/record-replay.md). A finished program has freed everything, so it is measured at "
    "its peak: objects live, bytes and the walks where the kernel had the most anon_vmas and "
    "anon_vma_chains live for it (with every event in flight complete); allocated counts and "
    "locks over the whole recording. Its linux (kernel) column is the recording's own counts, "
    "not a new run.",
}


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(c: Comparison) -> str:
    head = "".join(f"<th>{html.escape(x)}</th>" for x in columns(c))
    rows = [f"<tr><th></th>{head}</tr>"]
    for label, cells in comparison_rows(c):
        if not cells:
            rows.append(
                f'<tr class="section"><td colspan="{len(columns(c)) + 1}">'
                f"{html.escape(label)}</td></tr>"
            )
        else:
            rows.append(
                "<tr><td>"
                + html.escape(label)
                + "</td>"
                + "".join(f"<td>{html.escape(x)}</td>" for x in cells)
                + "</tr>"
            )
    return "<table>" + "".join(rows) + "</table>"


def _graphs(c: Comparison) -> str:
    parts = []
    for d in c.designs:
        if d.graph_dot is None:
            continue
        svg = render_svg(d.graph_dot)
        if svg is not None:
            start = svg.find("<svg")
            body = svg[start:] if start >= 0 else svg
            b64 = base64.b64encode(body.encode()).decode()
            parts.append(
                f"<h4>{html.escape(d.design)}</h4><div class='graph'>"
                f'<img alt="hierarchy on {html.escape(d.design)}" '
                f'src="data:image/svg+xml;base64,{b64}"></div>'
            )
        else:
            parts.append(f"<h4>{html.escape(d.design)}</h4><pre>{html.escape(d.graph_dot)}</pre>")
    if not parts:
        return ""
    return "<h3>The hierarchy at the end</h3>" + "".join(parts)


def _sweep(s: SweepResult) -> str:
    fixed = ", ".join(f"{k}={v:g}" for k, v in s.fixed.items()) or "defaults"
    out = [
        f"<h2>Sweep: {html.escape(s.workload)} over {html.escape(s.param)}</h2>",
        f"<p>Values {', '.join(f'{v:g}' for v in s.values)}; other parameters: "
        f"{html.escape(fixed)}.</p><div class='plots'>",
    ]
    for metric, meaning in METRICS.items():
        series = s.series(metric)
        if any(v is not None for ys in series.values() for v in ys):
            out.append(
                _img(
                    sweep_plot(s.param, s.values, metric, series, f"{s.workload}: {metric}"),
                    meaning,
                )
            )
    out.append(
        "</div><dl>"
        + "".join(f"<dt>{html.escape(m)}</dt><dd>{html.escape(t)}</dd>" for m, t in METRICS.items())
        + "</dl>"
    )
    return "".join(out)


@dataclass(frozen=True)
class Exploration:
    """One design's exploration of a concurrent scenario, for the report: the
    explorer's summary and, per violation, its shortest schedule as a swimlane."""

    scenario: str
    description: str
    design: str
    summary: dict[str, object]
    """executions, pruned, final_states (the ``explore`` block's counts)."""
    swimlanes: list[tuple[str, str, str]]
    """(kind, detail, SVG) per violation."""


def _explorations(runs: list[Exploration]) -> str:
    out = ["<h2>Interleavings explored</h2>"]
    for r in runs:
        out.append(
            f"<h3>{html.escape(r.scenario)} on {html.escape(r.design)}</h3>"
            f"<p>{html.escape(r.description)}</p><p class='note'>"
            + ", ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in r.summary.items())
            + "</p>"
        )
        if not r.swimlanes:
            out.append("<p>No violation in any explored execution.</p>")
        for kind, detail, svg in r.swimlanes:
            out.append(
                f"<p><b>{html.escape(kind)}</b>: {html.escape(detail)}</p>"
                f"<div class='graph swimlane'>{svg}</div>"
            )
    return "".join(out)


def render_report(
    comparisons: list[Comparison],
    sweeps: list[SweepResult] | None = None,
    title: str = "cowctx: anon_vma and CoW context side by side",
    explorations: list[Exploration] | None = None,
    sections: list[str] | None = None,
) -> str:
    """The whole report; ``sections`` are further HTML sections (each starting
    with its ``<h2>``: :func:`cowctx.report.stabilisation.matrix_html`,
    :func:`cowctx.report.contention.contention_section`), placed before the glossary."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>cowctx {__version__}, Python {platform.python_version()} on "
        f"{html.escape(platform.release())}. Sizes marked * are estimates.</p>",
    ]
    for c in comparisons:
        parts.append(f"<h2>{html.escape(c.scenario)}</h2><p>{html.escape(c.description)}</p>")
        if c.kernel is None and c.kernel_reason:
            parts.append(f"<p class='note'>No kernel column: {html.escape(c.kernel_reason)}</p>")
        for line in recording_notes(c):
            parts.append(f"<p class='note'>{html.escape(line)}</p>")
        parts.append(_table(c))
        parts.append(
            "<div class='plots'>"
            + _img(bytes_plot(c), f"{c.scenario} memory")
            + _img(walk_plot(c), f"{c.scenario} walk cost")
            + _img(lock_plot(c), f"{c.scenario} locks")
            + "</div>"
        )
        parts.append(_graphs(c))
    for s in sweeps or []:
        parts.append(_sweep(s))
    if explorations:
        parts.append(_explorations(explorations))
    parts.extend(sections or [])
    parts.append("<h2>What each number counts</h2><dl>")
    for term, text in GLOSSARY.items():
        parts.append(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>")
    parts.append("</dl></body></html>")
    return "\n".join(parts)


def write_report(
    path: Path,
    comparisons: list[Comparison],
    sweeps: list[SweepResult] | None = None,
    explorations: list[Exploration] | None = None,
    sections: list[str] | None = None,
) -> None:
    """Write the report atomically (a temporary file renamed over ``path``)."""
    write_atomically(
        path, render_report(comparisons, sweeps, explorations=explorations, sections=sections)
    )
