"""Held-out evaluation of forecasters on full curves: MAE, RMSE, rank, coverage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from earlystop_predict.forecast.base import Forecaster
from earlystop_predict.records.record import RunRecord

# (records truncated to E, target epoch or one per record) -> (mean (B,), q10 (B,) or None,
# q90 (B,) or None)
PredictFn = Callable[[list[RunRecord], Any], tuple[np.ndarray, np.ndarray | None,
                                                   np.ndarray | None]]


def forecaster_fn(model: Forecaster) -> PredictFn:
    """Wrap a :class:`Forecaster` as a :data:`PredictFn`."""
    def fn(records: list[RunRecord], target: int):  # noqa: ANN202
        fcs = model.forecast_many(records, target)
        return (np.array([f.mean for f in fcs]), np.array([f.quantile(0.1) for f in fcs]),
                np.array([f.quantile(0.9) for f in fcs]))
    return fn


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def evaluate(fn: PredictFn, records: Sequence[RunRecord], observed: int,
             target: int) -> dict[str, float]:
    """Score ``fn`` forecasting epoch ``target`` from the first ``observed`` epochs.

    Returns MAE and RMSE in accuracy points (x100), mean within-task Spearman of
    forecast vs realized, and the 0.1–0.9 interval coverage (NaN without quantiles).
    """
    prefix = [r.truncated(observed) for r in records]
    truth = np.array([r.series(r.metric)[target - 1] for r in records])
    mean, q10, q90 = fn(prefix, target)
    return _scores(records, truth, mean, q10, q90)


def _scores(records: Sequence[RunRecord], truth: np.ndarray, mean: np.ndarray,
            q10: np.ndarray | None, q90: np.ndarray | None) -> dict[str, float]:
    err = mean - truth
    tasks = np.array([r.task or "" for r in records])
    rhos = [r for t in np.unique(tasks)
            if np.isfinite(r := _spearman(mean[tasks == t], truth[tasks == t]))]
    out = {"mae": float(np.abs(err).mean() * 100), "rmse": float(np.sqrt((err ** 2).mean()) * 100),
           # NaN (no warning) where no task has 3 runs to rank
           "spearman": float(np.mean(rhos)) if rhos else float("nan"),
           "coverage80": float("nan")}
    if q10 is not None and q90 is not None:
        out["coverage80"] = float(((truth >= q10 - 1e-9) & (truth <= q90 + 1e-9)).mean() * 100)
    return out


def last_value_fn(records: list[RunRecord], target: int):  # noqa: ANN201
    """Baseline: the last observed value."""
    return np.array([r.series(r.metric)[-1] for r in records]), None, None


def best_so_far_fn(records: list[RunRecord], target: int):  # noqa: ANN201
    """Baseline: the best observed value."""
    return np.array([np.nanmax(r.series(r.metric)) for r in records]), None, None


def completed(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs that trained to their planned end with a finite final value."""
    out = []
    for r in records:
        planned = r.meta.get("max_epochs")
        if r.stopped or (planned and r.last_epoch != int(planned)) or r.n_epochs < 5:
            continue
        if np.isfinite(r.series(r.metric)[-1]):
            out.append(r)
    return out


def evaluate_end(fn: PredictFn, records: Sequence[RunRecord], frac: float) -> dict[str, float]:
    """Score ``fn`` forecasting each run's last epoch from the first ``frac`` of its
    epochs (at least one): MAE, RMSE, within-task Spearman, 0.1-0.9 coverage."""
    if not records:
        return {"mae": float("nan"), "rmse": float("nan"), "spearman": float("nan"),
                "coverage80": float("nan")}
    ends = [r.last_epoch for r in records]
    prefix = [r.truncated(max(1, int(round(frac * r.n_epochs)))) for r in records]
    truth = np.array([r.series(r.metric)[-1] for r in records])
    mean, q10, q90 = fn(prefix, ends)
    return _scores(records, truth, mean, q10, q90)
