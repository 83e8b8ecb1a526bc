"""Training samples from learning curves, with the augmentation the corpus needs.

The LCBench surrogate curves are smooth, 52 epochs long, all SGD + cosine. A
forecaster trained on them as they are learns that early epochs say more than
they do on real runs. So every batch is augmented:

* **schedule horizons**: a curve is time-warped onto T planned epochs
  (8..120; the original 52 for 55 % of curves), as a cosine run of T epochs
  would trace it;
* **observation noise** (on 35 % of curves): binomial noise of a finite
  validation set (50..20000 examples) plus epoch-to-epoch jitter, on the inputs
  only (targets stay clean). It costs the clean held-out LCBench tasks some
  accuracy (at 5 % the bundle's error there fell from 0.51 to 0.48 x last value
  at 20 % observed), but the interval calibration then fell short (73 %
  coverage) and real families held out did not improve; see the README;
* **missing values**: hyperparameters and meta masked at random, so a user who
  passes fewer of them still gets a forecast;
* **random E and M**: every observed prefix length of the curve is a sample,
  each with its own target epoch (the planned end half of the time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from earlystop_predict.forecast import calibration
from earlystop_predict.records.features import (
    STATIC_DIM,
    encode_static,
    encode_static_numeric,
    static_slot,
)
from earlystop_predict.training.lcbench import MAX_EPOCHS, LCBench

MAX_HORIZON = 120
MIN_HORIZON = 8
#: Share of LCBench curves kept at their own 52 epochs (the rest are time-warped).
NATIVE_HORIZON_SHARE = 0.55
#: Share of LCBench curves given observation noise.
NOISY_SHARE = 0.35
N_NUMERIC_HP = 8  # hparam numeric slots come first in the static vector
STATIC_DIM_NUMERIC = static_slot("max_epochs")[1] - static_slot("max_epochs")[0]


def static_matrix(data: LCBench) -> np.ndarray:
    """encode_static of every row (meta: 52 planned epochs, torch), ``(N, STATIC_DIM)``."""
    out = np.empty((len(data.task_id), STATIC_DIM), dtype=np.float32)
    for i in range(len(data.task_id)):
        out[i] = encode_static(data.hparam_dict(i), {"max_epochs": MAX_EPOCHS,
                                                     "framework": "torch"})
    return out


@dataclass
class CurveBatch:
    """A batch of augmented curves, padded to ``MAX_HORIZON`` epochs (NaN past T).

    Attributes:
        target: (B, L) observed target metric (noisy), NaN where absent.
        clean: (B, L) the noise-free curve (what forecasts are scored against).
        val_loss: (B, L) observed validation loss (noisy), NaN where absent.
        horizon: (B,) planned epochs T.
        static: (B, STATIC_DIM) encoded hparams/meta with random masking.
        clean_loss: (B, L) the noise-free validation loss curve.
        train_acc, train_loss: (B, L) training curves, or None (LCBench has none).
        length: (B,) last recorded epoch, or None (every epoch to the horizon).
    """

    target: np.ndarray
    clean: np.ndarray
    val_loss: np.ndarray
    horizon: np.ndarray
    static: np.ndarray
    clean_loss: np.ndarray
    train_acc: np.ndarray | None = None
    train_loss: np.ndarray | None = None
    length: np.ndarray | None = None

    @property
    def recorded(self) -> np.ndarray:
        """(B,) epochs recorded: ``length``, else the horizon."""
        return self.horizon if self.length is None else self.length


def mask_static(st: np.ndarray, rng: np.random.Generator, *,
                horizon_too: bool = True) -> np.ndarray:
    """Hide hyperparameters and meta at random (in place), as users omit them:
    each numeric one 15 % of the time, all of them for 10 % of runs, the one-hot
    groups for 15 %, and (``horizon_too``) the planned epochs for 10 %."""
    b = st.shape[0]
    drop = rng.random((b, N_NUMERIC_HP)) < 0.15
    drop |= (rng.random(b) < 0.1)[:, None]
    idx = np.arange(N_NUMERIC_HP)
    st[:, idx] = np.where(drop, 0.0, st[:, idx])
    st[:, idx + STATIC_DIM_NUMERIC] = np.where(drop, 0.0, st[:, idx + STATIC_DIM_NUMERIC])
    onehots = slice(2 * STATIC_DIM_NUMERIC, STATIC_DIM)
    st[:, onehots] = np.where((rng.random(b) < 0.15)[:, None], 0.0, st[:, onehots])
    if horizon_too:
        v_i, m_i = static_slot("max_epochs")
        gone = rng.random(b) < 0.1
        st[gone, v_i] = 0.0
        st[gone, m_i] = 0.0
    return st


def _warp(curves: np.ndarray, horizon: np.ndarray, length: int) -> np.ndarray:
    """Resample (B, 52) curves onto T epochs each: epoch e of T reads 52*e/T."""
    b = curves.shape[0]
    e = np.arange(1, length + 1, dtype=np.float64)[None, :]
    pos = np.clip(e * MAX_EPOCHS / horizon[:, None], 1.0, MAX_EPOCHS) - 1.0
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, MAX_EPOCHS - 1)
    w = pos - lo
    rows = np.arange(b)[:, None]
    out = curves[rows, lo] * (1 - w) + curves[rows, hi] * w
    out[e > horizon[:, None]] = np.nan
    return out


def sample_batch(data: LCBench, static: np.ndarray, rows: np.ndarray,
                 rng: np.random.Generator, *, augment: bool = True,
                 length: int = MAX_HORIZON) -> CurveBatch:
    """Augmented curves for the given rows (see the module doc)."""
    b = len(rows)
    acc = data.acc[rows].astype(np.float64)
    loss = data.loss[rows].astype(np.float64)
    st = static[rows].copy()
    if augment:
        horizon = np.where(rng.random(b) < NATIVE_HORIZON_SHARE, MAX_EPOCHS,
                           np.exp(rng.uniform(np.log(MIN_HORIZON), np.log(MAX_HORIZON), b)))
        horizon = np.round(horizon).astype(np.int64)
    else:
        horizon = np.full(b, MAX_EPOCHS, dtype=np.int64)
    clean = _warp(acc, horizon, length)
    vloss = _warp(loss, horizon, length)
    clean_loss = vloss.copy()
    target = clean.copy()
    if augment:
        noisy = rng.random(b) < NOISY_SHARE
        n_val = np.exp(rng.uniform(np.log(50), np.log(20000), b))[:, None]
        p = np.clip(np.nan_to_num(clean), 1e-4, 1 - 1e-4)
        sd = np.sqrt(p * (1 - p) / n_val) + rng.uniform(0, 0.012, b)[:, None]
        target = np.where(noisy[:, None], clean + sd * rng.standard_normal(clean.shape), clean)
        target = np.clip(target, 0.0, 1.0)
        lsd = rng.uniform(0, 0.06, b)[:, None]
        vloss = np.where(noisy[:, None], vloss * np.exp(lsd * rng.standard_normal(vloss.shape)),
                         vloss)
        # val_loss is not always logged: drop it for some runs.
        vloss[rng.random(b) < 0.25] = np.nan
    v_i, m_i = static_slot("max_epochs")
    st[:, v_i] = encode_static_numeric("max_epochs", horizon)
    st[:, m_i] = 1.0
    if augment:  # hyperparameters / meta missing at random; sometimes all of them
        mask_static(st, rng, horizon_too=True)
    return CurveBatch(target=target, clean=clean, val_loss=vloss, horizon=horizon, static=st,
                      clean_loss=clean_loss)




class LCBenchCurves:
    """LCBench rows as a training source (the same ``sample`` as :class:`.real.RealCurves`)."""

    def __init__(self, data: LCBench, static: np.ndarray | None = None) -> None:
        self.data = data
        self.static = static_matrix(data) if static is None else static
        self.group = data.task_id

    def __len__(self) -> int:
        return len(self.data.task_id)

    def sample(self, rows: np.ndarray, rng: np.random.Generator, *,
               augment: bool = True) -> CurveBatch:
        """Augmented (time-warped, noisy, masked) curves of ``rows``; see the module doc."""
        return sample_batch(self.data, self.static, rows, rng, augment=augment)


def slice_batch(batch: CurveBatch, idx: np.ndarray) -> CurveBatch:
    """The rows ``idx`` of a batch."""
    return CurveBatch(**{k: (None if getattr(batch, k) is None else getattr(batch, k)[idx])
                         for k in batch.__dataclass_fields__})


class Source(Protocol):
    """Curves to train on: :class:`.data.LCBenchCurves` or :class:`.real.RealCurves`."""

    group: np.ndarray

    def sample(self, rows: np.ndarray, rng: np.random.Generator, *,
               augment: bool = True) -> CurveBatch: ...


#: A source and the rows of it to use (a row repeated is drawn that many times).
Part = tuple[Source, np.ndarray]


@dataclass
class ForecastRows:
    """Raw (uncalibrated) forecasts of held-aside curves and what happened: what
    the interval calibration and the mean shrinkage are fitted on.

    Attributes: q (N, 5) quantiles, mean (N,), y (N,) outcome, frac (N,) observed
    fraction E / planned, last (N,) last observed value.
    """

    q: np.ndarray
    mean: np.ndarray
    y: np.ndarray
    frac: np.ndarray
    last: np.ndarray

    @classmethod
    def concat(cls, rows: Sequence[ForecastRows]) -> ForecastRows:
        """All rows of several sets."""
        return cls(*(np.concatenate([getattr(r, k) for r in rows])
                     for k in ("q", "mean", "y", "frac", "last")))

    def take(self, idx: np.ndarray) -> ForecastRows:
        """The rows ``idx``."""
        return ForecastRows(self.q[idx], self.mean[idx], self.y[idx], self.frac[idx],
                            self.last[idx])


def fit_post(sets: Sequence[ForecastRows], seed: int = 0,
             shrink: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(calibration table, shrink factors) fitted on several sets of rows, each
    subsampled to the size of the smallest so that no source dominates: first the
    mean shrinkage (unless ``shrink`` is False), then the interval factors on the
    shrunk quantiles."""
    sets = [s for s in sets if len(s.y)]
    n = min(len(s.y) for s in sets)
    rng = np.random.default_rng(seed)
    rows = ForecastRows.concat([s.take(rng.permutation(len(s.y))[:n]) for s in sets])
    alphas = (calibration.fit_shrink(rows.mean, rows.last, rows.y, rows.frac) if shrink
              else np.ones(len(calibration.EDGES)))
    _, q = calibration.shrink(rows.mean, rows.q, rows.last, rows.frac, alphas)
    table = calibration.fit(np.clip(q, 0.0, 1.0), rows.y, rows.frac)
    return table, alphas
