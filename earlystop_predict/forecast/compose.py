"""Composite forecasters: the bundled choice (LSTM and LightGBM averaged, LightGBM
alone where the LSTM cannot serve), the fine-tuned
blend, a strict single model, and :func:`load_model`, which builds them from a model
directory.

These sit above the single models (:mod:`~earlystop_predict.forecast.lstm`,
:mod:`~earlystop_predict.forecast.lgbm`) and import them; the models import only
:mod:`~earlystop_predict.forecast.base`, so there is no cycle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from earlystop_predict.errors import ConfigError, ForecastUnavailableError, ModelArtifactError
from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest
from earlystop_predict.forecast.base import (
    Forecast,
    Forecaster,
    as_record,
    as_records,
    is_finite,
    observed_forecast,
)
from earlystop_predict.forecast.lgbm import HistoryForecaster, LGBMForecaster
from earlystop_predict.forecast.lstm import LSTMForecaster
from earlystop_predict.records.record import RunRecord

#: The LSTM's share of the bundled ensemble where a manifest does not set one
#: (``"ensemble": {"lstm_weight": w}``); 1.0 serves the LSTM alone.
ENSEMBLE_LSTM_WEIGHT = 0.5


def mix_forecasts(first: Forecast, second: Forecast, weight: float, model: str, *,
                  second_point: float | None = None) -> Forecast:
    """``weight`` of ``first`` and ``1 - weight`` of ``second``, for each of ``first``'s
    quantile levels (quantile averaging), and for the mean: ``first``'s mean with
    ``second_point`` (default ``second``'s mean). The result keeps ``first``'s epochs
    and bounds and reads ``model``."""
    keys = sorted(first.quantiles, key=float)
    qs = sorted(weight * first.quantiles[k] + (1.0 - weight) * second.quantile(float(k))
                for k in keys)
    point = second.mean if second_point is None else second_point
    # Averages of coherent forecasts are coherent; the clip only absorbs rounding.
    mean = min(max(weight * first.mean + (1.0 - weight) * point, qs[0]), qs[-1])
    return replace(first, mean=mean, quantiles=dict(zip(keys, qs, strict=True)), model=model)


class AutoForecaster(Forecaster):
    """The LSTM and LightGBM averaged where both serve, LightGBM alone where the LSTM
    cannot; each forecast says which served and why.

    Where both serve, a forecast is ``lstm_weight`` of the LSTM's and the rest of
    LightGBM's (:func:`mix_forecasts`; ``model="lstm+lightgbm"``): out of fold they err
    on different families, and their average errs less than either on LCBench's
    held-out tasks and on the real families (``benchmarks/real_curves.py``). Where
    LightGBM fails on a query the LSTM's forecast stands, with why.

    Args:
        primary: the first choice (the LSTM), or None if it failed to load.
        fallback: the model that serves the rest (LightGBM), and the ensemble's other half.
        primary_error: why the primary is unavailable (recorded as the reason).
        lstm_weight: the primary's share where both serve, in [0, 1]; 1.0 serves the
            primary alone.
    """

    name = "auto"

    def __init__(self, primary: Forecaster | None, fallback: Forecaster,
                 primary_error: str = "", *, lstm_weight: float = 1.0) -> None:
        if not 0.0 <= lstm_weight <= 1.0:
            raise ConfigError("ensemble lstm_weight", "in [0, 1]", lstm_weight)
        self.primary = primary
        self.fallback = fallback
        self.primary_error = primary_error
        self.lstm_weight = float(lstm_weight)

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        records = as_records(records)
        targets = self._targets(records, target_epoch)
        out: list[Forecast | None] = [None] * len(records)
        reasons: dict[int, str] = {}
        serve = self._triage(records, targets, out, reasons)
        if serve:
            self._serve_primary(records, targets, serve, out, reasons)
            if self.lstm_weight < 1.0:
                self._mix(records, targets, [i for i in serve if out[i] is not None], out)
        rest = [i for i in range(len(records)) if out[i] is None]
        if rest:
            got = self.fallback.forecast_many([records[i] for i in rest],
                                              [targets[i] for i in rest])
            for i, fc in zip(rest, got, strict=False):
                if not is_finite(fc):
                    raise ForecastUnavailableError(
                        f"run {records[i].run_id!r}: {reasons.get(i) or self.primary_error}; "
                        f"{self.fallback.name} forecast is not finite")
                out[i] = replace(fc, reason=reasons.get(i, fc.reason))
        return out  # type: ignore[return-value]

    def _triage(self, records: Sequence[RunRecord], targets: list[int],
                out: list[Forecast | None], reasons: dict[int, str]) -> list[int]:
        """Fill ``out`` with the observed targets and ``reasons`` with why the primary
        cannot serve; return the indices the primary serves."""
        serve: list[int] = []
        cannot_serve = None if self.primary is None else getattr(
            self.primary, "cannot_serve", lambda rec, t: "")
        for i, (rec, t) in enumerate(zip(records, targets, strict=False)):
            eps = rec.epochs
            seen = observed_forecast(rec, t) if eps and int(eps[-1]["epoch"]) >= t else None
            if seen is not None:  # the target is held already
                out[i] = seen
            elif cannot_serve is None:
                reasons[i] = self.primary_error
            elif why := cannot_serve(rec, t):
                reasons[i] = why
            else:
                serve.append(i)
        return serve

    def _serve_primary(self, records: Sequence[RunRecord], targets: list[int],
                       serve: list[int], out: list[Forecast | None],
                       reasons: dict[int, str]) -> None:
        """The primary's forecasts into ``out``; where it fails or gives a forecast
        that is not finite, the reason into ``reasons`` (the fallback serves those)."""
        name = self.primary.name  # type: ignore[union-attr]
        try:
            got = self.primary.forecast_many(  # type: ignore[union-attr]
                [records[i] for i in serve], [targets[i] for i in serve])
        except Exception as exc:  # noqa: BLE001 - any LSTM failure falls back
            for i in serve:
                reasons[i] = f"{name} failed: {type(exc).__name__}: {exc}"
            return
        for i, fc in zip(serve, got, strict=False):
            if is_finite(fc):
                out[i] = fc
            else:
                reasons[i] = f"{name} forecast is not finite"


    def _mix(self, records: Sequence[RunRecord], targets: list[int], idx: list[int],
             out: list[Forecast | None]) -> None:
        """Average the primary's forecasts ``out[idx]`` with the fallback's; where the
        fallback fails or is not finite, the primary's forecast stands, with why."""
        if not idx:
            return
        name = self.fallback.name
        try:
            got: list[Forecast | None] = list(self.fallback.forecast_many(
                [records[i] for i in idx], [targets[i] for i in idx]))
        except Exception as exc:  # noqa: BLE001 - the primary's forecasts stand
            why = f"{name} failed: {type(exc).__name__}: {exc}"
            got = [None] * len(idx)
        for i, other in zip(idx, got, strict=True):
            fc = out[i]
            assert fc is not None
            if other is not None and is_finite(other):
                # A booster's median errs less than its mean (an L2 fit chases the
                # runs that jump), so LightGBM's point in the mean is its median.
                out[i] = mix_forecasts(fc, other, self.lstm_weight, f"{fc.model}+{name}",
                                       second_point=other.quantile(0.5))
            else:
                out[i] = replace(fc, reason=why if other is None else
                                 f"{name} forecast is not finite")


class BlendForecaster(Forecaster):
    """A fine-tuned model directory's forecasts: its own (LSTM, LightGBM fallback)
    averaged with those of a model grown on the user's history alone.

    ``weight`` of the first and ``1 - weight`` of the second, for the mean and each
    quantile (the history model's point forecast is its median); ``earlystop-predict
    train --from`` chooses the weight (:func:`~earlystop_predict.training.finetune.
    fit_blend_weight`). A forecast of both reads ``"lstm+lightgbm+history"`` (or
    ``"lightgbm+history"`` where the LSTM cannot serve); a target already observed is served as it is, and where the
    history model cannot serve or fails, the first model's forecast stands, with why.

    Args:
        primary: the directory's model (an :class:`AutoForecaster`).
        history: the history model (:class:`~earlystop_predict.forecast.lgbm.HistoryForecaster`).
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
        records = as_records(records)
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
        for i, h in zip(idx, got, strict=True):
            out[i] = mix_forecasts(out[i], h, self.weight, f"{out[i].model}+{self.history.name}")
        return out


def load_model(kind: str | os.PathLike[str] = "auto") -> Forecaster:
    """Load an accModel.

    Args:
        kind: ``"auto"`` (the bundled LSTM and LightGBM averaged, LightGBM alone where
            the LSTM cannot serve; a manifest's ``"ensemble": {"lstm_weight": w}`` sets
            the LSTM's share, default :data:`ENSEMBLE_LSTM_WEIGHT`), ``"lstm"`` (LSTM only:
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
    auto = AutoForecaster(primary, fallback, error, lstm_weight=ensemble_weight(manifest))
    blend = manifest.get("blend")
    if not blend or blend.get("weight", 1.0) >= 1.0 or "history" not in manifest["artifacts"]:
        return auto
    try:
        history: Forecaster = HistoryForecaster.from_dir(directory, manifest)
    except ModelArtifactError as exc:  # served without the blend; every forecast says why
        return _Unblended(auto, f"history model unavailable: {exc}")
    return BlendForecaster(auto, history, float(blend["weight"]))


def ensemble_weight(manifest: dict) -> float:
    """The LSTM's share of a model directory's ensemble: its manifest's
    ``"ensemble": {"lstm_weight": w}`` (checked by ``read_manifest``), else
    :data:`ENSEMBLE_LSTM_WEIGHT`."""
    entry = manifest.get("ensemble")
    return ENSEMBLE_LSTM_WEIGHT if entry is None else float(entry["lstm_weight"])


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
                for fc in self.inner.forecast_many(as_records(records), target_epoch)]


class StrictForecaster(Forecaster):
    """Serve with one model only: a query it cannot serve raises instead of falling back."""

    def __init__(self, inner: Forecaster) -> None:
        self.inner = inner
        self.name = inner.name

    def cannot_serve(self, record: RunRecord, target_epoch: int) -> str:
        """Why the model cannot serve the query, or ``""``."""
        inner = getattr(self.inner, "cannot_serve", None)
        return inner(as_record(record), target_epoch) if inner is not None else ""

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        records = as_records(records)
        targets = self._targets(records, target_epoch)
        for rec, t in zip(records, targets, strict=False):
            why = self.cannot_serve(rec, t)
            if why:
                raise ForecastUnavailableError(f"run {rec.run_id!r}: {why}")
        out = self.inner.forecast_many(records, targets)
        for rec, fc in zip(records, out, strict=True):
            if not is_finite(fc):
                raise ForecastUnavailableError(f"run {rec.run_id!r}: {self.name} forecast "
                                               "is not finite")
        return out
