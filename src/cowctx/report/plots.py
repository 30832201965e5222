"""Plots of comparisons and sweeps (matplotlib, rendered to PNG in memory)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cowctx.report.compare import CLIENTS, Comparison, lock_totals

COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#dd8452"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bytes_plot(c: Comparison) -> bytes:
    """Live bytes per design, stacked by object kind."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    designs = [d.design for d in c.designs]
    kinds = sorted({k for d in c.designs for k in d.result.final.bytes or {}})
    bottom = [0.0] * len(designs)
    for i, kind in enumerate(kinds):
        values = [float((d.result.final.bytes or {}).get(kind, 0)) for d in c.designs]
        if not any(values):
            continue
        ax.bar(designs, values, bottom=bottom, label=kind, color=COLOURS[i % len(COLOURS)])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("bytes live at the end")
    ax.set_title(f"{c.scenario}: memory (CoW context sizes are estimates)")
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def walk_plot(c: Comparison) -> bytes:
    """Mean page-table probes per walk, per client, exclusive and shared folios."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    groups = [
        (client, kind)
        for client in CLIENTS
        for kind in ("exclusive", "shared")
        if any(kind in d.walks.get(client, {}) for d in c.designs)
    ]
    width = 0.8 / max(1, len(c.designs))
    for i, d in enumerate(c.designs):
        values = [d.walks.get(cl, {}).get(k, {}).get("mean", 0.0) for cl, k in groups]
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=d.design, color=COLOURS[i % len(COLOURS)])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{cl}\n{k}" for cl, k in groups], fontsize=6)
    ax.set_ylabel("page-table probes per walk")
    ax.set_title(f"{c.scenario}: rmap walk cost")
    ax.legend(fontsize=7)
    return _png(fig)


def lock_plot(c: Comparison) -> bytes:
    """Lock acquisitions by the workload, per design and lock kind/mode."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    totals = [lock_totals(d.workload_locks) for d in c.designs]
    keys = sorted({k for t in totals for k in t})
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        values = [t.get(key, {}).get("acquisitions", 0) for t in totals]
        xs = [x + i * width for x in range(len(c.designs))]
        ax.bar(xs, values, width=width, label=f"{key[0]} {key[1]}", color=COLOURS[i % len(COLOURS)])
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(c.designs))])
    ax.set_xticklabels([d.design for d in c.designs], fontsize=8)
    ax.set_ylabel("acquisitions")
    ax.set_title(f"{c.scenario}: locks taken by the workload")
    if keys:
        ax.legend(fontsize=7)
    return _png(fig)


def sweep_plot(
    param: str, values: list[float], metric: str, series: dict[str, list[float | None]], title: str
) -> bytes:
    """One metric against the swept parameter, one line per design."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for i, (design, ys) in enumerate(series.items()):
        points = [(x, y) for x, y in zip(values, ys, strict=True) if y is not None]
        if points:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=design,
                color=COLOURS[i % len(COLOURS)],
            )
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)
