"""Train the LightGBM fallback: quantile boosters on engineered curve features."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .. import calibration
from ..forecaster import QUANTILES, qkey
from ..lgbm import CURVE_NAMES, FEATURE_NAMES, LGBMForecaster, curve_features, to_space
from .data import CurveBatch, sample_batch
from .lcbench import LCBench

LAST_COL = CURVE_NAMES.index("last")


def batch_samples(batch: CurveBatch, rng: np.random.Generator | None, kind: int,
                  observed: np.ndarray | None = None,
                  target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, target delta in model space, kind) for one prefix per curve."""
    b = batch.target.shape[0]
    T = batch.horizon
    if observed is None:
        assert rng is not None
        observed = 1 + np.floor(rng.random(b) * (T - 1)).astype(np.int64)
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
    goal = to_space(clean[np.arange(b), target - 1], kinds)
    return x, goal - x[:, LAST_COL], kinds


def build_dataset(data: LCBench, static: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
                  draws: int = 6, batch_size: int = 4096,
                  loss_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``draws`` augmented prefixes of every row (a share as loss-kind samples)."""
    xs, ys = [], []
    for _ in range(draws):
        perm = rng.permutation(rows)
        for i in range(0, len(perm), batch_size):
            batch = sample_batch(data, static, perm[i:i + batch_size], rng)
            kind = 1 if rng.random() < loss_fraction else 0
            x, y, _ = batch_samples(batch, rng, kind)
            ok = np.isfinite(y)
            xs.append(x[ok])
            ys.append(y[ok])
    return np.concatenate(xs), np.concatenate(ys)


def train_lgbm(data: LCBench, static: np.ndarray, train_rows: np.ndarray,
               val_rows: np.ndarray | None, *, draws: int = 6, rounds: int = 600,
               fixed_rounds: dict[str, int] | None = None, seed: int = 0,
               progress: Callable[[str], None] | None = None,
               threads: int | None = None) -> LGBMForecaster:
    """Fit the mean (L2) and quantile boosters, early-stopped on ``val_rows``; with
    ``val_rows=None`` (a refit) each booster runs ``fixed_rounds[name]`` rounds and
    keeps unit calibration (the caller sets it)."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x, y = build_dataset(data, static, train_rows, rng, draws=draws)
    if progress:
        progress(f"lightgbm: {len(y)} training samples")
    base = {"learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 200,
            "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1,
            "max_bin": 127, "verbose": -1, "seed": seed,
            "num_threads": threads or (os.cpu_count() or 2)}
    dtrain = lgb.Dataset(x, y, feature_name=list(FEATURE_NAMES), free_raw_data=False)
    if val_rows is not None:
        xv, yv = build_dataset(data, static, val_rows, np.random.default_rng(seed + 1), draws=1)
        dval = lgb.Dataset(xv, yv, reference=dtrain)
    boosters = {}
    specs = [("mean", {"objective": "regression"})] + [
        (qkey(q), {"objective": "quantile", "alpha": q}) for q in QUANTILES]
    for name, obj in specs:
        if val_rows is None:
            n = (fixed_rounds or {}).get(name, rounds)
            booster = lgb.train({**base, **obj}, dtrain, num_boost_round=n)
        else:
            booster = lgb.train({**base, **obj}, dtrain, num_boost_round=rounds,
                                valid_sets=[dval],
                                callbacks=[lgb.early_stopping(30, verbose=False)])
        boosters[name] = booster
        if progress:
            progress(f"lightgbm {name}: {booster.best_iteration} rounds")
    model = LGBMForecaster(boosters)
    if val_rows is not None:
        model.calibration = fit_lgbm_calibration(model, data, static, val_rows)
    return model


def fit_lgbm_calibration(model: LGBMForecaster, data: LCBench, static: np.ndarray,
                         rows: np.ndarray, target: int = 52) -> np.ndarray:
    """Per-bin interval factors fitted on held-aside tasks (clean curves, every prefix)."""
    batch = sample_batch(data, static, rows, np.random.default_rng(1), augment=False)
    model.calibration = calibration.as_table((1.0, 1.0))
    qs, ys, fracs = [], [], []
    for e in range(1, target):
        obs = np.full(len(rows), e)
        x, y, kinds = batch_samples(batch, None, 0, obs, np.full(len(rows), target))
        _, q = model.predict_matrix(x, kinds, x[:, LAST_COL])
        qs.append(q)
        ys.append(y + x[:, LAST_COL])
        fracs.append(np.full(len(rows), e / target))
    return calibration.fit(np.concatenate(qs), np.concatenate(ys), np.concatenate(fracs))
