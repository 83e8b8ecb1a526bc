"""Forecasts and forecasters: the accModel's public face.

A :class:`Forecaster` answers one question: given a run's first E epochs, its
hyperparameters and a target epoch M > E, where will the target metric be at
M? The answer is a :class:`Forecast`: a mean and monotone quantiles, plus which
model served and why.

Example:
    >>> from earlystop_predict import load_model, RunRecord
    >>> model = load_model()                      # bundled LSTM, LightGBM fallback
    >>> rec = RunRecord(run_id="r", epochs=[{"epoch": 1, "val_accuracy": 0.4},
    ...                                     {"epoch": 2, "val_accuracy": 0.5}])
    >>> fc = model.forecast(rec, target_epoch=50)
    >>> 0.0 <= fc.quantiles["0.1"] <= fc.quantiles["0.9"] <= 1.0
    True
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from .errors import ConfigError, ForecastUnavailableError, ModelArtifactError
from .record import RunRecord

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def qkey(q: float) -> str:
    """The quantile's key in forecast dicts: ``0.1 -> "0.1"``."""
    return f"{q:g}"


QKEYS: tuple[str, ...] = tuple(qkey(q) for q in QUANTILES)
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Forecast:
    """A forecast of the target metric at ``target_epoch``.

    Attributes:
        mean: expected value of the metric at the target epoch.
        quantiles: ``{"0.1": ..., "0.5": ..., "0.9": ...}``, non-decreasing in q.
        model: the model that served: ``"lstm"``, ``"lightgbm"``, ``"observed"``...
        reason: why that model served (empty when the first choice served).
        observed_epochs: how many epochs the forecast was made from (E).
        target_epoch: the epoch forecast (M).
        bounds: the metric's range where it has one (``(0.0, 1.0)`` for the
            accuracies the accModels forecast), else None; :meth:`quantile` keeps
            its tail extension inside it.
    """

    mean: float
    quantiles: dict[str, float]
    model: str
    reason: str = ""
    observed_epochs: int = 0
    target_epoch: int = 0
    bounds: tuple[float, float] | None = None

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, for any ``q`` in (0, 1).

        Interpolated linearly between the stored levels; beyond the outermost one
        the tail is extended as a normal distribution would (the distance from
        the median grows with the standard normal quantile), so that a
        ``confidence`` of 0.95 asks more than one of 0.9, within :attr:`bounds`.
        """
        levels = sorted((float(k), v) for k, v in self.quantiles.items())
        xs = [lv for lv, _ in levels]
        ys = [v for _, v in levels]
        if not xs:
            return self.mean
        if xs[0] <= q <= xs[-1] or len(xs) < 2:
            return float(np.interp(q, xs, ys))
        med = float(np.interp(0.5, xs, ys))
        edge_q, edge_v = (xs[-1], ys[-1]) if q > xs[-1] else (xs[0], ys[0])
        z = _NORMAL.inv_cdf(min(max(q, 1e-9), 1 - 1e-9))
        z_edge = _NORMAL.inv_cdf(edge_q)
        if z_edge == 0.0:
            return edge_v
        value = float(med + (edge_v - med) * z / z_edge)
        if self.bounds is not None:
            value = min(max(value, self.bounds[0]), self.bounds[1])
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (RUN_RECORD.md forecast fields)."""
        out: dict[str, Any] = {
            "observed_epochs": self.observed_epochs,
            "target_epoch": self.target_epoch,
            "mean": self.mean,
            "quantiles": dict(self.quantiles),
            "model": self.model,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def forecasts_from_arrays(records: Sequence[RunRecord], targets: Sequence[int],
                          mean: np.ndarray, q: np.ndarray, model: str,
                          bounds: tuple[float, float] | list[tuple[float, float] | None]
                          | None = None) -> list[Forecast]:
    """:class:`Forecast` objects from (B,) means and (B, 5) quantiles; ``bounds`` a
    tuple (one range for all) or a list (one range, or None, per record).

    The batch path builds each frozen instance from its field dict in one step
    (what ``__init__`` would set, field by field, through ``object.__setattr__``):
    at tens of thousands of forecasts a second the per-field calls are a good part
    of the cost.
    """
    k0, k1, k2, k3, k4 = QKEYS
    new, setattr_ = object.__new__, object.__setattr__
    per = [bounds] * len(records) if bounds is None or isinstance(bounds, tuple) \
        else list(bounds)
    out = []
    append = out.append
    for rec, t, m, (a, b, c, d, e), lim in zip(records, targets, mean.tolist(), q.tolist(),
                                               per, strict=True):
        fc = new(Forecast)
        setattr_(fc, "__dict__", {"mean": m, "quantiles": {k0: a, k1: b, k2: c, k3: d, k4: e},
                                  "model": model, "reason": "",
                                  "observed_epochs": len(rec.epochs), "target_epoch": t,
                                  "bounds": lim})
        append(fc)
    return out


def _check_target(target_epoch: int) -> int:
    if isinstance(target_epoch, bool) or not isinstance(target_epoch, (int, np.integer)):
        raise ConfigError("target_epoch", "a positive integer", target_epoch)
    if target_epoch < 1:
        raise ConfigError("target_epoch", "a positive integer", target_epoch)
    return int(target_epoch)


def observed_forecast(record: RunRecord, target_epoch: int) -> Forecast | None:
    """If the record already holds ``target_epoch``, the observed value as a forecast."""
    for row in reversed(record.epochs):
        if int(row["epoch"]) == target_epoch:
            v = row.get(record.metric)
            v = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else float("nan")
            return Forecast(mean=v, quantiles={qkey(q): v for q in QUANTILES},
                            model="observed", reason="target epoch already observed",
                            observed_epochs=record.n_epochs, target_epoch=target_epoch)
        if int(row["epoch"]) < target_epoch:
            break
    return None


class Forecaster(ABC):
    """Base class of every accModel: ``forecast`` one run, ``forecast_many`` a batch."""

    name: str = "forecaster"

    def forecast(self, record: RunRecord, target_epoch: int) -> Forecast:
        """Forecast ``record.metric`` at ``target_epoch`` from the epochs the record holds.

        Args:
            record: the run so far (at least one epoch).
            target_epoch: 1-based epoch to forecast, > the last epoch held.
        """
        return self.forecast_many([record], target_epoch)[0]

    @abstractmethod
    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        """Vectorised :meth:`forecast`: one target for all, or one per record."""

    @staticmethod
    def _targets(records: Sequence[RunRecord], target_epoch: int | Sequence[int]) -> list[int]:
        if isinstance(target_epoch, (int, np.integer)) and not isinstance(target_epoch, bool):
            return [_check_target(target_epoch)] * len(records)
        given = list(target_epoch)  # type: ignore[arg-type]
        if len(given) != len(records):
            raise ConfigError("target_epoch", f"an int or {len(records)} ints",
                              f"{len(given)} values")
        kinds = {type(t) for t in given}
        if kinds <= {int} and (not given or min(given) >= 1):
            return given  # the common case: plain positive ints, checked at once
        return [_check_target(t) for t in given]


@dataclass
class ScriptedForecaster(Forecaster):
    """A forecaster whose answers are given: for tests, demos and policy replay.

    Args:
        fn: ``fn(record, target_epoch) -> float | (mean, {q: value})``; a bare
            float gives a zero-width forecast.
        name: recorded as the forecast's ``model``. Default ``"scripted"``.

    Example:
        >>> f = ScriptedForecaster(lambda rec, m: 0.2 if rec.n_epochs >= 3 else 0.9)
        >>> f.forecast(RunRecord("r", epochs=[{"epoch": 1, "val_accuracy": .1}]), 10).mean
        0.9
    """

    fn: Callable[[RunRecord, int], Any]
    name: str = "scripted"
    calls: int = field(default=0, init=False)

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        out = []
        for rec, t in zip(records, self._targets(records, target_epoch), strict=False):
            self.calls += 1
            got = self.fn(rec, t)
            if isinstance(got, tuple):
                mean, qs = got
                quantiles = {qkey(float(q)): float(v) for q, v in qs.items()}
            else:
                mean = float(got)
                quantiles = {qkey(q): mean for q in QUANTILES}
            out.append(Forecast(mean=float(mean), quantiles=quantiles, model=self.name,
                                observed_epochs=rec.n_epochs, target_epoch=t))
        return out


class AutoForecaster(Forecaster):
    """The LSTM where it can serve, LightGBM where it cannot; each forecast says why.

    Args:
        primary: the first choice (the LSTM), or None if it failed to load.
        fallback: the model that serves the rest (LightGBM).
        primary_error: why the primary is unavailable (recorded as the reason).
    """

    name = "auto"

    def __init__(self, primary: Forecaster | None, fallback: Forecaster,
                 primary_error: str = "") -> None:
        self.primary = primary
        self.fallback = fallback
        self.primary_error = primary_error

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        targets = self._targets(records, target_epoch)
        out: list[Forecast | None] = [None] * len(records)
        reasons: dict[int, str] = {}
        serve: list[int] = []
        cannot_serve = None if self.primary is None else getattr(
            self.primary, "cannot_serve", lambda rec, t: "")
        for i, (rec, t) in enumerate(zip(records, targets, strict=False)):
            eps = rec.epochs
            if eps and int(eps[-1]["epoch"]) >= t:  # the target may be held already
                seen = observed_forecast(rec, t)
                if seen is not None:
                    out[i] = seen
                    continue
            if cannot_serve is None:
                reasons[i] = self.primary_error
                continue
            why = cannot_serve(rec, t)
            if why:
                reasons[i] = why
            else:
                serve.append(i)
        if serve:
            try:
                got = self.primary.forecast_many(  # type: ignore[union-attr]
                    [records[i] for i in serve], [targets[i] for i in serve])
                for i, fc in zip(serve, got, strict=False):
                    out[i] = fc
            except Exception as exc:  # noqa: BLE001 - any LSTM failure falls back
                for i in serve:
                    reasons[i] = f"{self.primary.name} failed: {type(exc).__name__}: {exc}"
        rest = [i for i in range(len(records)) if out[i] is None]
        if rest:
            got = self.fallback.forecast_many([records[i] for i in rest],
                                              [targets[i] for i in rest])
            for i, fc in zip(rest, got, strict=False):
                out[i] = replace(fc, reason=reasons.get(i, fc.reason))
        return out  # type: ignore[return-value]


class BlendForecaster(Forecaster):
    """A fine-tuned model directory's forecasts: its own (LSTM, LightGBM fallback)
    averaged with those of a model grown on the user's history alone.

    ``weight`` of the first and ``1 - weight`` of the second, for the mean and each
    quantile (the history model's point forecast is its median); ``earlystop-predict
    train --from`` chooses the weight (:func:`~earlystop_predict.training.finetune.
    fit_blend_weight`). A forecast of both reads ``"lstm+history"`` (or
    ``"lightgbm+history"``); a target already observed is served as it is, and where the
    history model cannot serve or fails, the first model's forecast stands, with why.

    Args:
        primary: the directory's model (an :class:`AutoForecaster`).
        history: the history model (:class:`~earlystop_predict.lgbm.HistoryForecaster`).
        weight: the primary's share, in [0, 1].
    """

    name = "blend"

    def __init__(self, primary: Forecaster, history: Forecaster, weight: float) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ConfigError("blend weight", "in [0, 1]", weight)
        self.primary = primary
        self.history = history
        self.weight = float(weight)

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        targets = self._targets(records, target_epoch)
        out = self.primary.forecast_many(records, targets)
        cannot_serve = getattr(self.history, "cannot_serve", lambda rec, t: "")
        idx = [i for i, fc in enumerate(out)
               if fc.model != "observed" and not cannot_serve(records[i], targets[i])]
        if not idx:
            return out
        try:
            got = self.history.forecast_many([records[i] for i in idx],
                                             [targets[i] for i in idx])
        except Exception as exc:  # noqa: BLE001 - the primary's forecast stands
            why = f"{self.history.name} failed: {type(exc).__name__}: {exc}"
            for i in idx:
                out[i] = replace(out[i], reason=out[i].reason or why)
            return out
        w = self.weight
        for i, h in zip(idx, got, strict=True):
            fc = out[i]
            keys = sorted(fc.quantiles, key=float)
            qs = sorted(w * fc.quantiles[k] + (1.0 - w) * h.quantile(float(k)) for k in keys)
            out[i] = replace(fc, mean=w * fc.mean + (1.0 - w) * h.mean,
                             quantiles=dict(zip(keys, qs, strict=True)),
                             model=f"{fc.model}+{self.history.name}")
        return out


def load_model(kind: str | os.PathLike[str] = "auto") -> Forecaster:
    """Load an accModel.

    Args:
        kind: ``"auto"`` (bundled LSTM, LightGBM fallback), ``"lstm"`` (LSTM only:
            queries it cannot serve raise :class:`ForecastUnavailableError`),
            ``"lightgbm"`` (LightGBM only), or the path of a model directory holding
            a ``manifest.json`` (as ``earlystop-predict train`` writes), served as auto;
            a directory fine-tuned on a user's history (``train --from``) serves a
            :class:`BlendForecaster` of that and its history model. Default ``"auto"``.

    Raises:
        ModelArtifactError: a requested artifact is missing or fails its checksum
            (with ``"auto"`` a broken LSTM only makes LightGBM serve).

    Example:
        >>> model = load_model("lightgbm")
    """
    from .artifacts import bundled_dir, read_manifest
    from .lgbm import LGBMForecaster
    from .lstm import LSTMForecaster

    if isinstance(kind, str) and kind in ("auto", "lstm", "lightgbm"):
        directory = bundled_dir()
    else:
        directory = Path(kind)
        kind = "auto"
    manifest = read_manifest(directory)
    if kind == "lightgbm":
        return LGBMForecaster.from_dir(directory, manifest)
    if kind == "lstm":
        return StrictForecaster(LSTMForecaster.from_dir(directory, manifest))
    fallback = LGBMForecaster.from_dir(directory, manifest)
    try:
        primary: Forecaster | None = LSTMForecaster.from_dir(directory, manifest)
        error = ""
    except ModelArtifactError as exc:
        primary, error = None, f"lstm unavailable: {exc}"
    auto = AutoForecaster(primary, fallback, error)
    blend = manifest.get("blend")
    if not blend or blend.get("weight", 1.0) >= 1.0 or "history" not in manifest["artifacts"]:
        return auto
    from .lgbm import HistoryForecaster

    try:
        history: Forecaster = HistoryForecaster.from_dir(directory, manifest)
    except ModelArtifactError as exc:  # served without the blend; every forecast says why
        return _Unblended(auto, f"history model unavailable: {exc}")
    return BlendForecaster(auto, history, float(blend["weight"]))


class _Unblended(Forecaster):
    """A fine-tuned directory whose history model failed to load: its own forecasts,
    each saying why the blend is missing."""

    name = "auto"

    def __init__(self, inner: Forecaster, why: str) -> None:
        self.inner = inner
        self.why = why

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        return [fc if fc.model == "observed" or fc.reason else replace(fc, reason=self.why)
                for fc in self.inner.forecast_many(records, target_epoch)]


class StrictForecaster(Forecaster):
    """Serve with one model only: a query it cannot serve raises instead of falling back."""

    def __init__(self, inner: Forecaster) -> None:
        self.inner = inner
        self.name = inner.name

    def cannot_serve(self, record: RunRecord, target_epoch: int) -> str:
        return self.inner.cannot_serve(record, target_epoch)  # type: ignore[attr-defined]

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        targets = self._targets(records, target_epoch)
        for rec, t in zip(records, targets, strict=False):
            why = self.cannot_serve(rec, t)
            if why:
                raise ForecastUnavailableError(f"run {rec.run_id!r}: {why}")
        return self.inner.forecast_many(records, targets)
