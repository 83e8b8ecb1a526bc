"""Growing a history model: LightGBM boosters on one user's (or one study's) runs alone.

The pieces that ``earlystop-predict train --from`` (:mod:`earlystop_predict.training`)
and a study grown in the background
(:mod:`~earlystop_predict.forecast.study_model`) share: the samples a history model
learns from (:func:`history_samples`, built by the code that serves:
:func:`~earlystop_predict.forecast.lgbm.record_matrix`), its boosters
(:func:`grow_history`), and how a blend weight is scored on finished runs
(:func:`blend_queries`, :func:`weight_errors`). numpy and LightGBM only (a core
dependency), no deep-learning framework.

Example:
    >>> from earlystop_predict.records.record import RunRecord
    >>> runs = [RunRecord(f"r{i}", epochs=[{"epoch": e, "val_accuracy": 0.5 + 0.01 * e}
    ...         for e in range(1, 11)]) for i in range(4)]
    >>> prefixes, ends, truth = blend_queries(runs, fractions=(0.2, 0.4))
    >>> [p.n_epochs for p in prefixes[:4]], ends[0], round(float(truth[0]), 2)
    ([2, 2, 2, 2], 10, 0.6)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from earlystop_predict.forecast.base import QUANTILES, qkey
from earlystop_predict.forecast.lgbm import (
    BOOSTERS,
    CURVE_NAMES,
    HistoryForecaster,
    metric_kind,
    record_matrix,
    to_space,
)
from earlystop_predict.records.record import RunRecord

LAST_COL = CURVE_NAMES.index("last")
#: Observed fractions of each run the history model learns from: where stopping
#: decisions are made.
HISTORY_FRACTIONS = tuple(np.round(np.linspace(0.05, 0.6, 12), 3))
HISTORY_PARAMS = {"learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 20,
                  "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "max_bin": 127, "verbose": -1}
#: Observed fractions at which a blend is scored on finished runs.
BLEND_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: The blend weights scored: the first model's share, 0, 0.1 ... 1.
BLEND_WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 1))


def history_samples(records: Sequence[RunRecord],
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(features, target delta in model space) of the history model: every run's
    prefixes at :data:`HISTORY_FRACTIONS`, each aimed at its last epoch and at a
    random later one. Built by the very code that serves (:func:`record_matrix`)."""
    prefixes, targets, kinds, goals = [], [], [], []
    for rec in records:
        kind = metric_kind(rec)
        y = rec.series(rec.metric)
        n = rec.n_epochs
        if kind is None or n < 2:
            continue
        for frac in HISTORY_FRACTIONS:
            e = min(max(1, int(round(frac * n))), n - 1)
            if not np.isfinite(y[:e]).any():
                continue
            prefix = rec.truncated(e)  # one copy serves both targets
            for k in {n - 1, int(rng.integers(e, n))}:  # row index of the target epoch
                if np.isfinite(y[k]):
                    prefixes.append(prefix)
                    targets.append(int(rec.epochs[k]["epoch"]))
                    kinds.append(kind)
                    goals.append(y[k])
    if not prefixes:
        return np.empty((0, len(HistoryForecaster.feature_names))), np.empty(0)
    x = record_matrix(prefixes, targets, kinds, aux=True)
    kind_arr = np.asarray(kinds)
    return x, to_space(np.asarray(goals), kind_arr) - x[:, LAST_COL]


def grow_history(records: Sequence[RunRecord], *, names: Sequence[str] = BOOSTERS,
                 seed: int = 0, rounds: int = 400, threads: int = 1) -> dict[str, Any]:
    """The history model's boosters grown on ``records`` alone (no augmentation, no
    masking: the runs are the population it will serve).

    The point forecast (``"mean"``) is fitted with absolute loss, i.e. it is the
    conditional median: on a few hundred runs, of which some jump late and some never
    do, a squared-error booster follows those few jumps and its error on the rest
    grows (on the collector's families: up to 20 % more absolute error).

    Args:
        records: the runs (an accuracy-like or a loss-like target, >= 2 epochs).
        names: the boosters to grow, of :data:`~earlystop_predict.forecast.lgbm.BOOSTERS`.
            Default all (a :class:`HistoryForecaster`'s).
        seed: LightGBM's and the sampled targets' seed. Default 0.
        rounds: boosting rounds of each booster, >= 1. Default 400.
        threads: LightGBM threads, >= 1. Default 1.

    Returns:
        ``{name: lightgbm.Booster}``.

    Raises:
        ValueError: no run has two or more epochs of a usable target metric.
    """
    import lightgbm as lgb  # deferred: a core dependency, but only a fit needs it here

    x, y = history_samples(records, np.random.default_rng(seed))
    if not len(y):
        raise ValueError("no run with two or more epochs of a usable target metric")
    params = {**HISTORY_PARAMS, "seed": seed, "num_threads": int(threads)}
    objectives = {"mean": {"objective": "l1"}} | {
        qkey(q): {"objective": "quantile", "alpha": q} for q in QUANTILES}
    boosters = {}
    for name in names:
        data = lgb.Dataset(x, y, feature_name=list(HistoryForecaster.feature_names))
        boosters[name] = lgb.train({**params, **objectives[name]}, data,
                                   num_boost_round=rounds)
    return boosters


def blend_queries(runs: Sequence[RunRecord], fractions: Sequence[float] = BLEND_FRACTIONS
                  ) -> tuple[list[RunRecord], list[int], np.ndarray]:
    """The queries a blend is scored on: each run's first ``fraction`` of epochs (at
    least one), forecasting its last epoch.

    Returns:
        ``(prefixes, target epochs, true ends)``, fraction-major: the runs in order at
        the first fraction, then at the next...
    """
    prefixes, ends, truth = [], [], []
    for frac in fractions:
        for r in runs:
            prefixes.append(r.truncated(max(1, int(round(frac * r.n_epochs)))))
            ends.append(r.last_epoch)
            truth.append(r.series(r.metric)[-1])
    return prefixes, ends, np.asarray(truth, dtype=np.float64)


def weight_errors(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean absolute error of ``w * a + (1 - w) * b`` against ``y`` for each weight of
    :data:`BLEND_WEIGHTS` (the mean over the last axis: ``(..., len(BLEND_WEIGHTS))``)."""
    w = np.asarray(BLEND_WEIGHTS)[:, None]
    a, b, y = (np.asarray(v, dtype=np.float64)[..., None, :] for v in (a, b, y))
    return np.abs(w * a + (1.0 - w) * b - y).mean(axis=-1)
