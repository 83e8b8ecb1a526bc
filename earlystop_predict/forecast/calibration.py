"""Interval calibration shared by both accModels (split conformal, by observed fraction).

A model's raw quantiles are rescaled around the median: one factor for the
0.25–0.75 interval, one for 0.1–0.9, fitted on tasks held aside from training
so that they cover 50 % and 80 % of outcomes. How much of the run was observed
changes how wide the raw intervals are off, so the factors are fitted per bin
of the observed fraction E / planned epochs.
"""

from __future__ import annotations

import numpy as np

#: Lower edges of the observed-fraction bins: [0, .15), [.15, .3), [.3, .5), [.5, ...).
EDGES = np.array([0.0, 0.15, 0.3, 0.5])
GOALS = (0.5, 0.8)  # coverage of the inner (0.25-0.75) and outer (0.1-0.9) intervals


def scale(q: np.ndarray, inner: np.ndarray | float, outer: np.ndarray | float) -> np.ndarray:
    """Scale quantiles ``(B, 5)`` (0.1..0.9) about the median; order is kept."""
    inner = np.asarray(inner, dtype=np.float64).reshape(-1, 1)
    outer = np.asarray(outer, dtype=np.float64).reshape(-1, 1)
    med = q[:, 2:3]
    out = q.copy()
    out[:, [1, 3]] = med + inner * (q[:, [1, 3]] - med)
    out[:, [0, 4]] = med + outer * (q[:, [0, 4]] - med)
    out[:, 0] = np.minimum(out[:, 0], out[:, 1])
    out[:, 4] = np.maximum(out[:, 4], out[:, 3])
    return out


def _bin(observed_frac: np.ndarray) -> np.ndarray:
    """Index of each row's observed-fraction bin (below 0 counts as the first)."""
    return np.maximum(np.searchsorted(EDGES, observed_frac, side="right") - 1, 0)


def as_table(calibration: object) -> np.ndarray:
    """A ``(len(EDGES), 2)`` table from a stored calibration (a bare pair is broadcast)."""
    table = np.asarray(calibration, dtype=np.float64)
    if table.shape == (2,):
        table = np.tile(table, (len(EDGES), 1))
    if table.shape != (len(EDGES), 2) or not np.isfinite(table).all() or (table <= 0).any():
        raise ValueError(f"calibration must be positive, shape (2,) or ({len(EDGES)}, 2)")
    return table


def apply(q: np.ndarray, observed_frac: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Calibrate quantiles ``(B, 5)`` given each row's observed fraction E / planned."""
    b = _bin(observed_frac)
    return scale(q, table[b, 0], table[b, 1])


def fit(q: np.ndarray, y: np.ndarray, observed_frac: np.ndarray,
        clip: tuple[float, float] | None = (0.0, 1.0), min_rows: int = 200) -> np.ndarray:
    """Factors per bin giving :data:`GOALS` coverage of ``y`` (bisection, log scale)."""
    b = _bin(observed_frac)

    def solve(qq: np.ndarray, yy: np.ndarray, lo: int, hi: int, goal: float) -> float:
        a, z = 0.05, 20.0
        for _ in range(40):
            mid = np.sqrt(a * z)
            c = scale(qq, mid, mid)
            if clip:
                c = np.clip(c, *clip)
            if ((yy >= c[:, lo] - 1e-12) & (yy <= c[:, hi] + 1e-12)).mean() < goal:
                a = mid
            else:
                z = mid
        return float(z)

    glob = [solve(q, y, 1, 3, GOALS[0]), solve(q, y, 0, 4, GOALS[1])]
    table = np.tile(glob, (len(EDGES), 1))
    for k in range(len(EDGES)):
        sel = b == k
        if sel.sum() >= min_rows:
            table[k] = [solve(q[sel], y[sel], 1, 3, GOALS[0]), solve(q[sel], y[sel], 0, 4, GOALS[1])]
    return table


# ------------------------------------------------------------------ mean shrinkage
#: Shrinkage factors tried by :func:`fit_shrink`.
SHRINK_GRID = np.linspace(0.0, 1.5, 31)


def shrink(mean: np.ndarray, q: np.ndarray, last: np.ndarray, observed_frac: np.ndarray,
           alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pull forecasts towards the last observed value: ``last + a * (mean - last)``
    with ``a`` per observed-fraction bin; the quantiles move with their median.

    On a family of runs unlike the training ones a model's forecast changes are
    less reliable than on its own; ``a`` < 1, fitted on families held out of
    training, says by how much.
    """
    a = np.asarray(alphas, dtype=np.float64)[_bin(observed_frac)]
    new_mean = last + a * (mean - last)
    med = q[:, 2]
    q = q + (last + a * (med - last) - med)[:, None]
    return new_mean, q


def as_shrink(alphas: object) -> np.ndarray:
    """A ``(len(EDGES),)`` vector from a stored value (None: no shrinkage)."""
    if alphas is None:
        return np.ones(len(EDGES))
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.shape == (1,):
        a = np.repeat(a, len(EDGES))
    if a.shape != (len(EDGES),) or not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"shrink must be non-negative, shape ({len(EDGES)},)")
    return a


def fit_shrink(mean: np.ndarray, last: np.ndarray, y: np.ndarray, observed_frac: np.ndarray,
               min_rows: int = 200) -> np.ndarray:
    """Per-bin factor (from :data:`SHRINK_GRID`) minimising the MAE of the shrunk mean."""
    b = _bin(observed_frac)

    def best(sel: np.ndarray) -> float:
        d, lv, yy = mean[sel] - last[sel], last[sel], y[sel]
        errs = [np.abs(lv + a * d - yy).mean() for a in SHRINK_GRID]
        return float(SHRINK_GRID[int(np.argmin(errs))])

    glob = best(np.ones(len(y), dtype=bool))
    out = np.full(len(EDGES), glob)
    for k in range(len(EDGES)):
        sel = b == k
        if sel.sum() >= min_rows:
            out[k] = best(sel)
    return out


# ------------------------------------------------------------------ coherence
def coherent(mean: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One distribution from a model's mean ``(B,)`` and quantiles ``(B, 5)``: the
    quantiles made non-decreasing and the mean kept within [q0.1, q0.9].

    Why it is needed: every model estimates its mean and its quantiles separately
    (the LSTM's head has a mean output beside the median and the gaps; LightGBM and
    the prior grow one booster for the mean and one per quantile), and the interval
    calibration (:func:`apply`) rescales the quantiles about the median without the
    mean. Nothing ties the two, and on held-out LCBench runs the mean fell outside
    its own 0.1-0.9 interval in 1 % (LSTM) to 13 % (LightGBM) of forecasts. Moving
    the mean to the nearer interval end changes the interval's calibrated coverage
    not at all and the mean's error slightly for the better (the median, which the
    quantiles share, is the more accurate point there). NaN stays NaN (a forecast
    that is not finite is refused later, never served).
    """
    q = np.maximum.accumulate(q, axis=1)
    return np.minimum(np.maximum(mean, q[:, 0]), q[:, -1]), q
