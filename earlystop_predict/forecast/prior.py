"""Zero-epoch forecasts: where a configuration will end before it trains at all.

A search that knows which configurations look promising can try those first.
:class:`PriorForecaster` answers from the hyperparameters and meta alone (no
epoch observed): LightGBM quantile boosters on the encoded hparams/meta and the
target epoch, trained beside the accModels on the same curves (``prior.txt.gz``
in a model directory). :func:`rank` orders candidate configurations by it.

Example:
    >>> from earlystop_predict.forecast.prior import load_prior, rank
    >>> prior = load_prior()
    >>> ranked = rank([{"hparams": {"learning_rate": 0.01, "optimizer": "adam"},
    ...                 "meta": {"max_epochs": 50}}], 50, prior)
    >>> ranked[0]["rank"]
    1
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError, RecordError
from earlystop_predict.forecast import calibration as calib
from earlystop_predict.forecast.base import QUANTILES, Forecast, qkey
from earlystop_predict.forecast.lgbm import N_NUMERIC_STATIC, LGBMForecaster
from earlystop_predict.records.features import STATIC_NAMES, encode_static

QUERY_NAMES = ("target", "planned", "target_frac", "log_target")
PRIOR_FEATURES: tuple[str, ...] = (QUERY_NAMES + STATIC_NAMES[:N_NUMERIC_STATIC]
                                   + STATIC_NAMES[2 * N_NUMERIC_STATIC:])


def prior_features(static: np.ndarray, target: np.ndarray, planned: np.ndarray) -> np.ndarray:
    """Feature matrix ``(B, len(PRIOR_FEATURES))`` from encoded static rows (masked
    numerics become NaN: LightGBM routes missing values itself)."""
    m = np.asarray(target, dtype=np.float64)
    t = np.asarray(planned, dtype=np.float64)
    num = static[:, :N_NUMERIC_STATIC].astype(np.float64)
    mask = static[:, N_NUMERIC_STATIC:2 * N_NUMERIC_STATIC]
    num = np.where(mask > 0, num, np.nan)
    query = np.stack([m, t, m / np.maximum(t, 1.0), np.log(np.maximum(m, 1.0))], axis=1)
    return np.concatenate([query, num, static[:, 2 * N_NUMERIC_STATIC:]], axis=1)


class PriorForecaster(LGBMForecaster):
    """Quantile boosters from hparams, meta and the target epoch. Use :func:`load_prior`."""

    name = "prior"
    artifact = "prior"
    header = "# earlystop_predict-prior "
    feature_names = PRIOR_FEATURES

    def predict_matrix(self, x: np.ndarray, kind: np.ndarray | None = None,
                       last: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, quantiles (B, 5)) of the metric at the target, from a feature matrix."""
        mean = self.boosters["mean"].predict(x, num_threads=1)
        q = np.sort(np.stack([self.boosters[qkey(lv)].predict(x, num_threads=1)
                              for lv in QUANTILES], axis=1), axis=1)
        q = calib.apply(q, np.zeros(len(x)), self.calibration)
        return np.clip(mean, 0.0, 1.0), np.clip(q, 0.0, 1.0)

    def forecast_configs(self, configs: Sequence[Mapping[str, Any]],
                         target_epoch: int) -> list[Forecast]:
        """Forecasts of the metric at ``target_epoch`` for configurations
        (``{"hparams": ..., "meta": ...}``), before any epoch is trained."""
        if not configs:
            return []
        static = np.stack([encode_static(c.get("hparams") or {}, c.get("meta") or {})
                           for c in configs])
        planned = np.array([_planned(c, target_epoch) for c in configs])
        x = prior_features(static, np.full(len(configs), target_epoch), planned)
        mean, q = self.predict_matrix(x)
        mean, q = calib.coherent(mean, q)  # one distribution (as forecasts_from_arrays)
        return [Forecast(mean=float(mean[i]),
                         quantiles={qkey(lv): float(q[i, j]) for j, lv in enumerate(QUANTILES)},
                         model=self.name, reason="zero-epoch forecast from hparams and meta",
                         target_epoch=int(target_epoch), observed_epochs=0)
                for i in range(len(configs))]


def _planned(config: Mapping[str, Any], target_epoch: int) -> float:
    try:
        value = float((config.get("meta") or {}).get("max_epochs") or target_epoch)
    except (TypeError, ValueError):
        value = float(target_epoch)
    return value if np.isfinite(value) and value > 0 else float(target_epoch)


def load_prior(model: str | os.PathLike[str] = "bundled") -> PriorForecaster:
    """The zero-epoch model of a model directory (``"bundled"``: the shipped one).

    Raises:
        ModelArtifactError: the directory has no ``prior`` artifact, or it is corrupt.
    """
    from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest

    directory = bundled_dir() if str(model) in ("bundled", "auto") else Path(model)
    return PriorForecaster.from_dir(directory, read_manifest(directory))


def rank(candidates: Sequence[Mapping[str, Any]], target_epoch: int,
         prior: PriorForecaster | None = None) -> list[dict[str, Any]]:
    """Order candidate configurations by their forecast metric at ``target_epoch``.

    Args:
        candidates: objects with ``hparams`` and optionally ``meta``, ``run_id``,
            ``metric`` and ``mode`` (RUN_RECORD.md shape; ``epochs`` are ignored).
        target_epoch: the epoch to forecast (>= 1).
        prior: the zero-epoch model. Default: the bundled one.

    Returns:
        One object per candidate, best first: ``rank`` (1-based), ``run_id``,
        ``target_epoch``, ``mean``, ``quantiles``, ``model`` and the candidate's
        ``hparams`` and ``meta``. Ties keep the input order.

    Raises:
        ConfigError: ``target_epoch`` < 1.
        RecordError: a candidate is not an object, has no ``hparams`` object, or
            targets a metric that is not accuracy-like.
    """
    if isinstance(target_epoch, bool) or not isinstance(target_epoch, int | np.integer) \
            or target_epoch < 1:
        raise ConfigError("target epoch", "an integer >= 1", target_epoch)
    for i, c in enumerate(candidates, start=1):
        if not isinstance(c, Mapping):
            raise RecordError("candidate is not a JSON object", line=i)
        if not isinstance(c.get("hparams"), Mapping):
            raise RecordError("no hparams object", line=i, field="hparams")
        if c.get("meta") is not None and not isinstance(c.get("meta"), Mapping):
            raise RecordError("meta is not an object", line=i, field="meta")
        metric = str(c.get("metric", "val_accuracy"))
        if "acc" not in metric or c.get("mode", "max") != "max":
            raise RecordError(f"zero-epoch forecasts know accuracy-like metrics (max), not "
                              f"{metric!r}", line=i, field="metric")
    prior = prior or load_prior()
    forecasts = prior.forecast_configs(candidates, int(target_epoch))
    order = sorted(range(len(candidates)), key=lambda i: -forecasts[i].mean)
    out = []
    for r, i in enumerate(order, start=1):
        c, f = candidates[i], forecasts[i]
        out.append({"rank": r, "run_id": c.get("run_id", f"candidate-{i + 1}"),
                    "target_epoch": int(target_epoch), "mean": round(f.mean, 6),
                    "quantiles": {k: round(v, 6) for k, v in f.quantiles.items()},
                    "model": f.model, "hparams": dict(c["hparams"]),
                    "meta": dict(c.get("meta") or {})})
    return out
