"""Train the LightGBM fallback: quantile boosters on engineered curve features."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from earlystop_predict.forecast import calibration
from earlystop_predict.forecast.base import QUANTILES, qkey
from earlystop_predict.forecast.history import (  # noqa: F401 - HISTORY_*: their old home
    HISTORY_FRACTIONS,
    HISTORY_PARAMS,
    LAST_COL,
    grow_history,
    history_samples,
)
from earlystop_predict.forecast.lgbm import (
    FEATURE_NAMES,
    HistoryForecaster,
    LGBMForecaster,
    aux_features,
    curve_features,
    to_space,
)
from earlystop_predict.records.record import RunRecord
from earlystop_predict.training.data import (
    CurveBatch,
    ForecastRows,
    Part,
    Source,
    fit_post,
    slice_batch,
)


def batch_samples(batch: CurveBatch, rng: np.random.Generator | None, kind: int,
                  observed: np.ndarray | None = None, target: np.ndarray | None = None,
                  aux: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, target delta in model space, kind) for one prefix per curve.

    Drawn at random unless given: E among the recorded epochs, M the planned end
    half of the time, else uniform after E. A delta is NaN where the run holds no
    value at M (it diverged or stopped early): callers drop those rows. ``aux``
    appends the other curves' features (:data:`~earlystop_predict.forecast.lgbm.AUX_NAMES`).
    """
    b = batch.target.shape[0]
    T = batch.horizon
    if observed is None:
        assert rng is not None
        observed = 1 + np.floor(rng.random(b) * (np.minimum(T, batch.recorded) - 1))
        observed = observed.astype(np.int64)
    if target is None:
        assert rng is not None
        span = T - observed
        target = np.where(rng.random(b) < 0.5, T, observed + 1 + np.floor(rng.random(b) * span))
        target = np.minimum(target, T).astype(np.int64)
    y, clean = (batch.target, batch.clean) if kind == 0 else (batch.val_loss, batch.clean_loss)
    if kind == 1:  # loss always observed for loss-kind samples
        y = np.where(np.isfinite(y), y, clean)
    kinds = np.full(b, kind)
    x = curve_features(to_space(y, kinds), observed, observed, target, T, batch.static, kinds)
    if aux:
        last = x[:, LAST_COL] if kind == 0 else np.full(b, np.nan)
        x = np.concatenate([x, aux_features(batch.val_loss, batch.train_acc, batch.train_loss,
                                            observed, last)], axis=1)
    goal = to_space(clean[np.arange(b), np.minimum(target, clean.shape[1]) - 1], kinds)
    return x, goal - x[:, LAST_COL], kinds


def build_dataset(parts: Sequence[Part], rng: np.random.Generator, draws: int = 6,
                  batch_size: int = 4096,
                  loss_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``draws`` augmented prefixes of every row (a share as loss-kind samples)."""
    xs, ys = [], []
    for _ in range(draws):
        for source, rows in parts:
            perm = rng.permutation(rows)
            for i in range(0, len(perm), batch_size):
                batch = source.sample(perm[i:i + batch_size], rng)
                kind = 1 if rng.random() < loss_fraction else 0
                x, y, _ = batch_samples(batch, rng, kind)
                ok = np.isfinite(y)
                xs.append(x[ok])
                ys.append(y[ok])
    return np.concatenate(xs), np.concatenate(ys)


BASE_PARAMS = {"learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 200,
               "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1,
               "max_bin": 127, "verbose": -1}


def _objectives() -> list[tuple[str, dict[str, Any]]]:
    return [("mean", {"objective": "regression"})] + [
        (qkey(q), {"objective": "quantile", "alpha": q}) for q in QUANTILES]


def train_lgbm(parts: Sequence[Part], val: Sequence[Part], *, draws: int = 6,
               rounds: int = 600, seed: int = 0,
               init: LGBMForecaster | None = None, learning_rate: float = 0.05,
               min_data_in_leaf: int = 200,
               progress: Callable[[str], None] | None = None,
               threads: int | None = None) -> LGBMForecaster:
    """Fit the mean (L2) and quantile boosters, early-stopped on ``val`` (which also
    fits the interval calibration and the mean shrinkage). ``init`` continues the
    boosters of a shipped model (fine-tuning: new trees fit what it gets wrong on
    ``parts``)."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x, y = build_dataset(parts, rng, draws=draws)
    if progress:
        progress(f"lightgbm: {len(y)} training samples")
    base = {**BASE_PARAMS, "learning_rate": learning_rate, "min_data_in_leaf": min_data_in_leaf,
            "seed": seed, "num_threads": threads or (os.cpu_count() or 2)}
    xv, yv = build_dataset(val, np.random.default_rng(seed + 1), draws=max(1, draws // 2))
    boosters = {}
    for name, obj in _objectives():
        start = None if init is None else init.boosters[name]
        dtrain = lgb.Dataset(x, y, feature_name=list(FEATURE_NAMES), free_raw_data=False)
        dval = lgb.Dataset(xv, yv, reference=dtrain, free_raw_data=False)
        booster = lgb.train({**base, **obj}, dtrain, num_boost_round=rounds,
                            valid_sets=[dval], init_model=start,
                            callbacks=[lgb.early_stopping(30, verbose=False)])
        boosters[name] = booster
        if progress:
            progress(f"lightgbm {name}: {booster.current_iteration()} rounds")
    model = LGBMForecaster(boosters)
    model.calibration, model.shrink = fit_lgbm_calibration(model, val)
    return model


def lgbm_rows(model: LGBMForecaster, source: Source, rows: np.ndarray) -> ForecastRows:
    """Raw (uncalibrated, unshrunk) forecasts of every prefix of ``rows`` aimed at the
    planned end, with the outcomes."""
    saved = model.calibration, model.shrink
    model.calibration = calibration.as_table((1.0, 1.0))
    model.shrink = calibration.as_shrink(None)
    try:
        batch = source.sample(rows, np.random.default_rng(1), augment=False)
        T = batch.horizon
        out = []
        for e in range(1, int(T.max())):
            ok = e < np.minimum(T, batch.recorded)
            if not ok.any():
                continue
            sub = np.where(ok)[0]
            x, y, kinds = batch_samples(slice_batch(batch, sub), None, 0, np.full(len(sub), e),
                                        T[sub], aux=model.aux)
            fin = np.isfinite(y) & np.isfinite(x[:, LAST_COL])
            last = x[fin, LAST_COL]
            mean, q = model.predict_matrix(x[fin], kinds[fin], last)
            out.append(ForecastRows(q=q, mean=mean, y=(y + x[:, LAST_COL])[fin],
                                    frac=(e / T[sub])[fin].astype(np.float64), last=last))
        return ForecastRows.concat(out)
    finally:
        model.calibration, model.shrink = saved


def fit_lgbm_calibration(model: LGBMForecaster, parts: Sequence[Part],
                         shrink: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(interval factors, shrinkage) fitted on curves held aside from training (every
    prefix forecasting the planned end), every source weighing the same."""
    return fit_post([lgbm_rows(model, s, r) for s, r in parts], shrink=shrink)


def train_history(records: Sequence[RunRecord], val: Sequence[Part] | None = None, *,
                  seed: int = 0, rounds: int = 400,
                  threads: int | None = None) -> HistoryForecaster:
    """The history model of ``train --from``: boosters grown on a user's runs alone
    (:func:`~earlystop_predict.forecast.history.grow_history`: its point forecast is
    the conditional median), with the interval calibration fitted on ``val`` (none
    without it)."""
    boosters = grow_history(records, seed=seed, rounds=rounds,
                            threads=threads or (os.cpu_count() or 2))
    model = HistoryForecaster(boosters)
    if val:
        model.calibration, model.shrink = fit_lgbm_calibration(model, val, shrink=False)
    return model
