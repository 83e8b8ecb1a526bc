"""Train the zero-epoch model (:class:`earlystop_predict.forecast.prior.PriorForecaster`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from earlystop_predict.forecast import calibration
from earlystop_predict.forecast.prior import PRIOR_FEATURES, PriorForecaster, prior_features
from earlystop_predict.training.data import ForecastRows, Part, fit_post
from earlystop_predict.training.lgbm_train import BASE_PARAMS, _objectives


def prior_dataset(parts: Sequence[Part], rng: np.random.Generator, draws: int = 3,
                  augment: bool = True,
                  end_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, metric at M, source index) with M the planned end 60 % of the time
    (always with ``end_only``), else uniform over the planned epochs."""
    xs, ys, src = [], [], []
    for _ in range(draws):
        for k, (source, rows) in enumerate(parts):
            for i in range(0, len(rows), 8192):
                batch = source.sample(rows[i:i + 8192], rng, augment=augment)
                T = batch.horizon
                b = len(T)
                M = T.copy() if end_only else np.where(
                    rng.random(b) < 0.6, T, 1 + np.floor(rng.random(b) * T).astype(np.int64))
                y = batch.clean[np.arange(b), np.minimum(M, batch.clean.shape[1]) - 1]
                ok = np.isfinite(y)
                xs.append(prior_features(batch.static[ok], M[ok], T[ok]))
                ys.append(y[ok])
                src.append(np.full(int(ok.sum()), k))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(src)


def train_prior(parts: Sequence[Part], val: Sequence[Part], *, draws: int = 3,
                rounds: int = 800, seed: int = 0, init: PriorForecaster | None = None,
                learning_rate: float = 0.05, min_data_in_leaf: int = 100,
                progress: Callable[[str], None] | None = None,
                threads: int | None = None) -> PriorForecaster:
    """Fit the mean and quantile boosters (early-stopped on ``val``, which also fits
    the interval calibration); ``init`` continues a shipped model's boosters."""
    import lightgbm as lgb

    x, y, _ = prior_dataset(parts, np.random.default_rng(seed), draws=draws)
    params = {**BASE_PARAMS, "learning_rate": learning_rate,
              "min_data_in_leaf": min_data_in_leaf, "seed": seed,
              "num_threads": threads or (os.cpu_count() or 2)}
    dtrain = lgb.Dataset(x, y, feature_name=list(PRIOR_FEATURES), free_raw_data=False)
    xv, yv, _ = prior_dataset(val, np.random.default_rng(seed + 1), draws=1, augment=False)
    dval = lgb.Dataset(xv, yv, reference=dtrain, free_raw_data=False)
    boosters = {}
    for name, obj in _objectives():
        start = None if init is None else init.boosters[name]
        boosters[name] = lgb.train({**params, **obj}, dtrain, num_boost_round=rounds,
                                   valid_sets=[dval], init_model=start,
                                   callbacks=[lgb.early_stopping(30, verbose=False)])
    if progress:
        progress(f"prior: {len(y)} samples, "
                 f"{boosters['mean'].current_iteration()} rounds (mean)")
    model = PriorForecaster(boosters)
    model.calibration = calibration.as_table((1.0, 1.0))
    per_source = []
    for source, rows in val:
        xv, yv, _ = prior_dataset([(source, rows)], np.random.default_rng(seed + 2),
                                  draws=1, augment=False, end_only=True)
        mean, q = model.predict_matrix(xv)
        zeros = np.zeros(len(yv))
        per_source.append(ForecastRows(q=q, mean=mean, y=yv, frac=zeros, last=zeros))
    model.calibration, _ = fit_post(per_source, shrink=False)
    return model
