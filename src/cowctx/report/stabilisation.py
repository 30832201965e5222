"""The stabilisation matrix (issue 11): every case of a race suite × every design,
with its verdict, as a Markdown table (the terminal's and docs/stabilisation.md's)
and as an HTML section of the report (verdicts link to the schedule files, and
each violation's shortest schedule is drawn as a swimlane).

Input: the results of :func:`cowctx.concurrency.suite.run.run_suite`, one JSON
object per (case, design), in any grouping; cases and designs keep their first
order of appearance.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

Result = dict[str, Any]
Cell = tuple[str, str]
"""(case, design)."""

LEGEND = (
    "clean: no violation in any explored execution; otherwise the violation kinds "
    "(docs/concurrency.md, Checks); * a kind a serial execution already shows (the set-up "
    "or one order of the threads, not a race); ~ the search was stopped by "
    "--max-executions; error: the job raised."
)


def verdict(result: Result) -> str:
    """The cell of a result: ``clean``, ``error``, or its kinds (``missed*,stale``)."""
    if result["verdict"] == "error":
        return "error"
    serial = set(result.get("serial_kinds", []))
    text = ",".join(k + ("*" if k in serial else "") for k in result["kinds"]) or "clean"
    return text + ("" if result.get("complete", True) else " ~")


def _axes(results: list[Result]) -> tuple[list[str], list[str], dict[Cell, Result]]:
    cases: dict[str, None] = {}
    designs: dict[str, None] = {}
    cells: dict[Cell, Result] = {}
    for r in results:
        cases.setdefault(r["case"], None)
        designs.setdefault(r["design"], None)
        cells[(r["case"], r["design"])] = r
    return list(cases), list(designs), cells


def totals(results: list[Result]) -> dict[str, dict[str, int]]:
    """Per design: cases ``clean``, with a ``violation``, with one only a race
    shows (``race``: a kind no serial execution has), ``error``, ``executions``
    (DPOR and PCT), and the number of cases per violation kind (``kind:NAME``)."""
    out: dict[str, Counter[str]] = {}
    for r in results:
        t = out.setdefault(r["design"], Counter())
        t[r["verdict"]] += 1
        if set(r["kinds"]) - set(r.get("serial_kinds", [])):
            t["race"] += 1
        t["executions"] += sum(r.get(b, {}).get("executions", 0) for b in ("explore", "pct"))
        for k in r["kinds"]:
            t[f"kind:{k}"] += 1
    return {
        d: {k: t[k] for k in ("clean", "violation", "race", "error", "executions")}
        | {k: v for k, v in sorted(t.items()) if k.startswith("kind:")}
        for d, t in out.items()
    }


def _md_row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def matrix_markdown(results: list[Result]) -> str:
    """The matrix case × design and the totals per design, as Markdown tables
    (aligned, so the terminal shows them as they are).  Deterministic: no
    wall-clock field is used."""
    cases, designs, cells = _axes(results)
    rows = [["case", *designs]]
    for case in cases:
        rows.append(
            [case, *(verdict(cells[(case, d)]) if (case, d) in cells else "" for d in designs)]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [_md_row(rows[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [_md_row(r, widths) for r in rows[1:]]
    tot = totals(results)
    names = sorted({k for t in tot.values() for k in t}, key=_total_order)
    trows = [["total", *designs]] + [[n, *(str(tot[d].get(n, 0)) for d in designs)] for n in names]
    tw = [max(len(r[i]) for r in trows) for i in range(len(trows[0]))]
    lines += ["", _md_row(trows[0], tw), "|" + "|".join("-" * (w + 2) for w in tw) + "|"]
    lines += [_md_row(r, tw) for r in trows[1:]]
    lines += ["", LEGEND]
    return "\n".join(lines)


def _total_order(name: str) -> tuple[int, str]:
    fixed = ("clean", "violation", "race", "error", "executions")
    return (fixed.index(name), "") if name in fixed else (len(fixed), name)


def matrix_html(
    results: list[Result],
    *,
    links: dict[Cell, list[tuple[str, str]]] | None = None,
    swimlanes: dict[Cell, list[tuple[str, str, str]]] | None = None,
    command: str | None = None,
) -> str:
    """The report's stabilisation section.  ``links``: per cell, (label, href)
    of its files (shown by the label's part before its first ``-``: the schedule's
    number, or ``scenario``); ``swimlanes``: per cell, (kind, detail, SVG) of the
    violations to draw; ``command``: how to reproduce the matrix."""
    links = links or {}
    swimlanes = swimlanes or {}
    cases, designs, cells = _axes(results)
    out = ["<h2 id='stabilisation'>Stabilisation: the race suite</h2>"]
    if command:
        out.append(f"<p>Reproduce: <code>{html.escape(command)}</code></p>")
    out.append(f"<p class='note'>{html.escape(LEGEND)}</p>")
    out.append(
        "<table class='matrix'><tr><th>case</th>"
        + "".join(f"<th>{html.escape(d)}</th>" for d in designs)
        + "</tr>"
    )
    for case in cases:
        row = [f"<td style='white-space:nowrap'>{html.escape(case)}</td>"]
        for d in designs:
            r = cells.get((case, d))
            if r is None:
                row.append("<td></td>")
                continue
            text = html.escape(verdict(r))
            anchor = _anchor(case, d)
            if (case, d) in swimlanes:
                text = f"<a href='#{anchor}'>{text}</a>"
            files = " ".join(
                f"<a href='{html.escape(href)}' title='{html.escape(label)}'>"
                f"{html.escape(label.split('-', 1)[0])}</a>"
                for label, href in links.get((case, d), [])
            )
            style = "text-align:left" + ("" if r["verdict"] == "clean" else ";background:#fde8e8")
            note = f" <span class='note'>{files}</span>" if files else ""
            row.append(f"<td style='{style}'>{text}{note}</td>")
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table>")
    tot = totals(results)
    names = sorted({k for t in tot.values() for k in t}, key=_total_order)
    out.append(
        "<table><tr><th>total</th>"
        + "".join(f"<th>{html.escape(d)}</th>" for d in designs)
        + "</tr>"
        + "".join(
            f"<tr><td>{html.escape(n)}</td>"
            + "".join(f"<td>{tot[d].get(n, 0)}</td>" for d in designs)
            + "</tr>"
            for n in names
        )
        + "</table>"
    )
    for case in cases:
        for d in designs:
            for kind, detail, svg in swimlanes.get((case, d), []):
                out.append(
                    f"<h3 id='{_anchor(case, d)}'>{html.escape(case)} on {html.escape(d)}</h3>"
                    f"<p><b>{html.escape(kind)}</b>: {html.escape(detail)}</p>"
                    f"<div class='graph swimlane'>{svg}</div>"
                )
    return "".join(out)


def _anchor(case: str, design: str) -> str:
    raw = f"st-{case}-{design}"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw)
