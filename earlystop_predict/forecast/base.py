"""Forecasts and forecasters: the accModel's public face.

A :class:`Forecaster` answers one question: given a run's first E epochs, its
hyperparameters and a target epoch M > E, where will the target metric be at
M? The answer is a :class:`Forecast`: a mean and monotone quantiles, plus which
model served and why.

Example:
    >>> from earlystop_predict import load_model, RunRecord
    >>> model = load_model()                      # bundled LSTM and LightGBM averaged
    >>> rec = RunRecord(run_id="r", epochs=[{"epoch": 1, "val_accuracy": 0.4},
    ...                                     {"epoch": 2, "val_accuracy": 0.5}])
    >>> fc = model.forecast(rec, target_epoch=50)
    >>> 0.0 <= fc.quantiles["0.1"] <= fc.quantiles["0.9"] <= 1.0
    True
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError, RecordError
from earlystop_predict.forecast.calibration import coherent
from earlystop_predict.records.record import RunRecord

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
        xs, ys = self._levels
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

    @functools.cached_property
    def _levels(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The stored quantile levels as floats, ascending, and their values: parsed
        once per forecast (kept in the instance's ``__dict__``, not a field: equality,
        :meth:`to_dict` and :func:`dataclasses.replace` do not see it)."""
        qs = self.quantiles
        if len(qs) == len(QKEYS) and tuple(qs) == QKEYS:  # the models' own keys
            return QUANTILES, tuple(qs.values())
        pairs = sorted((float(k), v) for k, v in qs.items())
        return tuple(lv for lv, _ in pairs), tuple(v for _, v in pairs)

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

    Every model's forecasts pass here, and leave as one coherent distribution
    (:func:`~earlystop_predict.forecast.calibration.coherent`): quantiles
    non-decreasing, the mean within [q0.1, q0.9].

    The batch path builds each frozen instance from its field dict in one step
    (what ``__init__`` would set, field by field, through ``object.__setattr__``):
    at tens of thousands of forecasts a second the per-field calls are a good part
    of the cost.
    """
    mean, q = coherent(np.asarray(mean, dtype=np.float64), np.asarray(q, dtype=np.float64))
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


def as_record(record: RunRecord | Mapping[str, Any], source: str | None = None) -> RunRecord:
    """A :class:`RunRecord` as it is, or one built from a mapping in the RUN_RECORD.md
    shape (a parsed JSONL line), validated.

    Args:
        record: a record or a mapping.
        source: where the mapping came from, for the error (e.g. ``"records[3]"``).

    Raises:
        RecordError: not a record or a mapping, or a mapping that breaks
            RUN_RECORD.md (names the field).
    """
    if isinstance(record, RunRecord):
        return record
    if isinstance(record, Mapping):
        return RunRecord.from_dict(dict(record), source=source)
    raise RecordError(f"a run record must be a RunRecord or a mapping, not "
                      f"{type(record).__name__}", source=source)


def as_records(records: Sequence[RunRecord | Mapping[str, Any]]) -> Sequence[RunRecord]:
    """:func:`as_record` of each (the same sequence when all are records already).

    Raises:
        RecordError: as :func:`as_record`; a batch's error names the item
            (``records[i]``).
    """
    if isinstance(records, (RunRecord, Mapping)):
        raise RecordError("expected a sequence of run records, got a single "
                          f"{type(records).__name__}")
    if all(type(r) is RunRecord for r in records):
        return records
    return [as_record(r, f"records[{i}]") for i, r in enumerate(records)]


def is_finite(forecast: Forecast) -> bool:
    """Whether a forecast's mean and every quantile are finite numbers."""
    return math.isfinite(forecast.mean) and all(math.isfinite(v)
                                                for v in forecast.quantiles.values())


def _check_target(target_epoch: int) -> int:
    if isinstance(target_epoch, bool) or not isinstance(target_epoch, (int, np.integer)):
        raise ConfigError("target_epoch", "a positive integer", target_epoch)
    if target_epoch < 1:
        raise ConfigError("target_epoch", "a positive integer", target_epoch)
    return int(target_epoch)


def observed_forecast(record: RunRecord, target_epoch: int) -> Forecast | None:
    """If the record already holds ``target_epoch``, the observed value as a forecast."""
    record = as_record(record)
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
            record: the run so far (at least one epoch): a :class:`RunRecord` or a
                mapping in the RUN_RECORD.md shape (a parsed JSONL line).
            target_epoch: 1-based epoch to forecast, > the last epoch held.

        Raises:
            RecordError: a mapping that breaks RUN_RECORD.md (names the field).
        """
        return self.forecast_many([as_record(record)], target_epoch)[0]

    @abstractmethod
    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        """Vectorised :meth:`forecast`: one target for all, or one per record.

        Records may be mappings in the RUN_RECORD.md shape (:func:`as_records`).
        """

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
        records = as_records(records)
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
