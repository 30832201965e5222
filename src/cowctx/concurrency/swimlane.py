"""A schedule as a swimlane: threads as lanes, each step with what it touched.

As text for the terminal, as SVG for the HTML report, and as Chrome/Perfetto
trace-event JSON (``ui.perfetto.dev`` opens it): one complete event (``ph: X``)
per step, one track (``tid``) per thread, the violation as an instant event.
"""

from __future__ import annotations

import html
import json

from cowctx.concurrency.explorer import Program, run_schedule
from cowctx.trace_event import complete, process_name, thread_name


def replay_trace(program: Program, schedule: list[str]) -> list[tuple[str, str]]:
    """(thread, step label) for each step of ``schedule``, re-run."""
    names: list[str] = program.names  # type: ignore[attr-defined]
    steps: list[tuple[str, str]] = []
    from cowctx.concurrency.scheduler import Execution

    orig = program.start

    def start() -> Execution:
        ex = orig()
        steps_ref.append(ex)
        return ex

    steps_ref: list[Execution] = []
    program.start = start  # type: ignore[method-assign]
    try:
        run_schedule(program, names, schedule)
    finally:
        program.start = orig  # type: ignore[method-assign]
    for e in steps_ref[0].trace:
        steps.append((names[e.tid], e.label))
    return steps


def text_swimlane(program: Program, schedule: list[str], detail: str, width: int = 38) -> str:
    """One row per step, the running thread's lane filled; consecutive steps of
    one thread are kept (they are the story); the violation is the last line."""
    names: list[str] = program.names  # type: ignore[attr-defined]
    steps = replay_trace(program, schedule)
    head = " | ".join(n[:width].ljust(width) for n in names)
    lines = [head, "-" * len(head)]
    for thread, label in steps:
        cells = [(label if n == thread else "").ljust(width)[:width] for n in names]
        lines.append(" | ".join(cells))
    lines.append(f"!! {detail}")
    return "\n".join(lines)


def trace_events(program: Program, schedule: list[str], detail: str) -> str:
    """Chrome trace-event JSON (JSON Object Format) of the schedule."""
    names: list[str] = program.names  # type: ignore[attr-defined]
    steps = replay_trace(program, schedule)
    events: list[dict[str, object]] = [process_name(1, "cowctx explore")]
    events += [thread_name(1, i + 1, n) for i, n in enumerate(names)]
    for ts, (thread, label) in enumerate(steps):
        cat = label.split(" ", 1)[0]
        events.append(complete(label, cat, ts * 10, 10, 1, names.index(thread) + 1, {"step": ts}))
    events.append(
        {
            "name": detail,
            "cat": "violation",
            "ph": "i",
            "s": "g",
            "ts": len(steps) * 10,
            "pid": 1,
            "tid": 0,
        }
    )
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}, indent=1)


def svg_swimlane(program: Program, schedule: list[str], detail: str) -> str:
    """The swimlane as a self-contained SVG."""
    names: list[str] = program.names  # type: ignore[attr-defined]
    steps = replay_trace(program, schedule)
    lane_w, row_h, top = 300, 16, 40
    w = lane_w * len(names) + 20
    h = top + row_h * (len(steps) + 2)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="monospace" font-size="11">'
    ]
    for i, n in enumerate(names):
        x = 10 + i * lane_w
        out.append(f'<text x="{x + 4}" y="20" font-weight="bold">{html.escape(n)}</text>')
        out.append(f'<line x1="{x}" y1="26" x2="{x}" y2="{h - 10}" stroke="#ccc"/>')
    for r, (thread, label) in enumerate(steps):
        x = 10 + names.index(thread) * lane_w
        y = top + r * row_h
        out.append(
            f'<rect x="{x + 2}" y="{y - 11}" width="{lane_w - 6}" height="{row_h - 2}" '
            'fill="#e8f0fe"/>'
        )
        out.append(f'<text x="{x + 6}" y="{y}">{html.escape(label)}</text>')
    y = top + len(steps) * row_h + 4
    out.append(f'<text x="10" y="{y}" fill="#c00" font-weight="bold">{html.escape(detail)}</text>')
    out.append("</svg>")
    return "\n".join(out)
