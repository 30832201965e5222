"""Non-negative least squares, in plain Python (the project has no numpy of its own).

Lawson and Hanson's active-set algorithm (Solving Least Squares Problems, 1974,
ch. 23) over the normal equations; problems here have a handful of unknowns and
tens of rows.  Columns that never vary are dropped (their cost is 0) and reported.
"""

from __future__ import annotations

from dataclasses import dataclass


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(b)
    m = [[*row[:], b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-12:
            return None
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c and m[r][c]:
                f = m[r][c] / m[c][c]
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    return [m[i][n] / m[i][i] for i in range(n)]


def _lstsq(x: list[list[float]], y: list[float], cols: list[int]) -> list[float] | None:
    ata = [[sum(r[i] * r[j] for r in x) for j in cols] for i in cols]
    aty = [sum(r[i] * v for r, v in zip(x, y, strict=True)) for i in cols]
    # a tiny ridge keeps collinear columns (always moving together) solvable
    scale = max((ata[i][i] for i in range(len(cols))), default=1.0) or 1.0
    for i in range(len(cols)):
        ata[i][i] += 1e-9 * scale
    return _solve(ata, aty)


def nnls(x: list[list[float]], y: list[float], iters: int = 200) -> list[float]:
    """min ||x w - y|| subject to w >= 0."""
    n = len(x[0]) if x else 0
    w = [0.0] * n
    passive: list[int] = []
    for _ in range(iters):
        resid = [v - sum(r[j] * w[j] for j in range(n)) for r, v in zip(x, y, strict=True)]
        grad = [sum(r[j] * e for r, e in zip(x, resid, strict=True)) for j in range(n)]
        cand = [j for j in range(n) if j not in passive and grad[j] > 1e-9 * (1 + abs(grad[j]))]
        if not cand:
            break
        passive.append(max(cand, key=lambda j: grad[j]))
        while True:
            z = _lstsq(x, y, passive)
            if z is None:
                passive.pop()
                break
            if all(v > 0 for v in z):
                for j in range(n):
                    w[j] = 0.0
                for j, v in zip(passive, z, strict=True):
                    w[j] = v
                break
            alpha = min(w[j] / (w[j] - v) for j, v in zip(passive, z, strict=True) if v <= 0)
            for j, v in zip(passive, z, strict=True):
                w[j] += alpha * (v - w[j])
            passive = [j for j in passive if w[j] > 1e-12]
            for j in range(n):
                if j not in passive:
                    w[j] = 0.0
            if not passive:
                break
    return w


@dataclass
class Fit:
    names: list[str]
    coef: dict[str, float]
    residuals: list[float]
    rms: float
    r2: float


def fit(names: list[str], rows: list[list[float]], y: list[float]) -> Fit:
    """NNLS of ``y`` on ``rows`` (columns ``names``); residuals are measured minus fitted."""
    w = nnls(rows, y)
    pred = [sum(a * b for a, b in zip(r, w, strict=True)) for r in rows]
    res = [v - p for v, p in zip(y, pred, strict=True)]
    mean = sum(y) / len(y) if y else 0.0
    ss_tot = sum((v - mean) ** 2 for v in y)
    ss_res = sum(e * e for e in res)
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    rms = (ss_res / len(y)) ** 0.5 if y else 0.0
    return Fit(names, dict(zip(names, w, strict=True)), res, rms, r2)
