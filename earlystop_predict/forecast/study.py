"""Study-aware forecasts: the study's finished runs correct the base model's gain.

A cross-family model can be systematically off on a family it never saw (it
over-forecasts runs that stay flat, under-forecasts runs that keep climbing). The
runs of the same study that already finished are evidence of how far off: for each
of them we know what the base model forecast at the same point of the run and where
the run really ended. :class:`StudyContext` fits, on those pairs, a correction of the
forecast *gain* (forecast minus the value now)::

    corrected gain = shift + slope * base gain

by least absolute deviations (slope on a grid in [0, 1.5], shift the median
residual), shrunk towards no correction (slope 1, shift 0) by ``prior`` pseudo-runs.
It is **guarded**: the correction serves only when, left out one finished run at a
time, it forecasts those runs' ends with at most ``guard`` times the base model's
error; otherwise the base forecast serves unchanged. The whole distribution moves by
the same map (each quantile's gain is corrected), so the quantiles stay ordered.

Pairs are matched at the same fraction of the run: a finished run of ``n`` epochs
answers for a run at ``E`` of ``M`` with its prefix of ``round(E * n / M)`` epochs.

:class:`StudyForecaster` wraps any :class:`~earlystop_predict.forecast.base.Forecaster`
with a context; its forecasts say ``model="<base>+study"`` and, in ``reason``, from
how many finished runs. Measured in ``benchmarks/study_context.py``.

Example:
    >>> from earlystop_predict.forecast.base import ScriptedForecaster
    >>> from earlystop_predict.records.record import RunRecord
    >>> base = ScriptedForecaster(lambda r, m: r.series(r.metric)[-1] + 0.2)  # over-forecasts
    >>> runs = [RunRecord(f"r{i}", epochs=[{"epoch": e, "val_accuracy": 0.5 + 0.001 * i}
    ...         for e in range(1, 11)]) for i in range(8)]                      # flat runs
    >>> fc = StudyForecaster(base, StudyContext(base, runs)).forecast(runs[0].truncated(3), 10)
    >>> fc.model, round(fc.mean, 3)
    ('scripted+study', 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import Forecast, Forecaster, as_record, as_records
from earlystop_predict.records.record import RunRecord

MIN_STUDY_RUNS = 5
"""Finished runs a study needs before its correction may serve (the benchmark's
smallest context that helped on average)."""
MAX_STUDY_RUNS = 60
"""The most recent finished runs a context keeps (the correction's cost grows with the
square of this number; beyond it the fit hardly moves)."""
_SLOPES = np.linspace(0.0, 1.5, 16)


@dataclass(frozen=True)
class StudyCorrection:
    """``corrected gain = shift + slope * gain``, fitted on ``runs`` finished runs.

    Attributes:
        slope: the gain's factor, in [0, 1.5].
        shift: added to the gain, in the metric's units.
        runs: finished runs it was fitted on.
        error_ratio: its leave-one-out error over the base model's on those runs.
        width: the spread's factor around the median, from the coverage of the
            finished runs' ends (1: unchanged).
    """

    slope: float
    shift: float
    runs: int
    error_ratio: float
    width: float = 1.0

    def map(self, value: float, last: float) -> float:
        """A forecast ``value`` of a run whose value now is ``last``, its gain corrected."""
        return last + self.shift + self.slope * (value - last)

    def apply(self, forecast: Forecast, last: float) -> Forecast:
        """``forecast`` with its gain over ``last`` corrected: the mean and the median
        move by the map, the other quantiles keep their distance from the median times
        :attr:`width` (bounds kept)."""
        lo, hi = forecast.bounds if forecast.bounds is not None else (-np.inf, np.inf)
        med = forecast.quantile(0.5)
        new_med = self.map(med, last)

        def clip(v: float) -> float:
            return float(min(max(v, lo), hi))

        note = (f"study: {self.runs} finished runs, gain x{self.slope:.2f} "
                f"{self.shift:+.4f}, spread x{self.width:.2f} (error {self.error_ratio:.2f} "
                "x the base's)")
        qs = {k: clip(new_med + self.width * (v - med)) for k, v in forecast.quantiles.items()}
        mean = clip(self.map(forecast.mean, last))
        if qs:  # one coherent distribution: the mean within the outermost quantiles
            mean = min(max(mean, min(qs.values())), max(qs.values()))
        return replace(forecast, mean=mean, quantiles=qs,
                       model=f"{forecast.model}+study",
                       reason="; ".join(x for x in (forecast.reason, note) if x))


def _fit(gain: np.ndarray, real: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope and shift minimising ``sum |real - shift - slope * gain|`` plus the prior's
    pull, fitted on each row of the last axis (arrays ``(..., k)``)."""
    resid = real[..., None, :] - _SLOPES[:, None] * gain[..., None, :]     # (..., S, k)
    shift = np.median(resid, axis=-1)                                     # (..., S)
    scale = np.mean(np.abs(gain), axis=-1, keepdims=True) + 1e-9          # (..., 1)
    cost = np.abs(resid - shift[..., None]).sum(axis=-1) \
        + prior * (np.abs(_SLOPES - 1.0) * scale + np.abs(shift))
    pick = np.argmin(cost, axis=-1)
    shift = np.take_along_axis(shift, pick[..., None], axis=-1)[..., 0]
    return _SLOPES[pick], shift


def fit_correction(gain: Sequence[float], real: Sequence[float],
                   half_width: Sequence[float] | None = None, *, prior: float = 3.0,
                   guard: float = 0.95, min_runs: int = MIN_STUDY_RUNS
                   ) -> StudyCorrection | None:
    """The guarded correction of finished runs' forecast gains towards their real ones.

    Args:
        gain: each finished run's base forecast minus its value at the matched point.
        real: each run's real end minus that value.
        half_width: each forecast's (q0.9 - q0.1) / 2, for the spread's factor (the
            one that would have covered 80 % of the runs' ends out of sample, shrunk
            towards 1 by ``prior``); None: spread unchanged.
        prior: pseudo-runs pulling towards no correction, >= 0. Default 3.
        guard: the leave-one-out error must be at most this times the base's, > 0.
            Default 0.95.
        min_runs: fewer pairs than this give None, >= 2. Default 5.

    Returns:
        The correction, or None when there are too few runs or it does not beat the
        base model out of sample.
    """
    g, r = np.asarray(gain, dtype=np.float64), np.asarray(real, dtype=np.float64)
    hw = np.ones_like(g) if half_width is None else np.asarray(half_width, dtype=np.float64)
    keep = np.isfinite(g) & np.isfinite(r) & np.isfinite(hw)
    g, r, hw = g[keep], r[keep], hw[keep]
    k = len(g)
    if k < max(2, min_runs):
        return None
    others = ~np.eye(k, dtype=bool)
    g_loo = np.broadcast_to(g, (k, k))[others].reshape(k, k - 1)
    r_loo = np.broadcast_to(r, (k, k))[others].reshape(k, k - 1)
    slope_j, shift_j = _fit(g_loo, r_loo, prior)
    loo = np.abs(r - shift_j - slope_j * g).sum()
    base = np.abs(r - g).sum()
    ratio = float(loo / base) if base > 0 else 1.0
    if ratio > guard:
        return None
    slope, shift = _fit(g, r, prior)
    width = 1.0
    if half_width is not None:
        need = np.abs(r - shift_j - slope_j * g) / np.maximum(hw, 1e-4)
        width = float(np.clip((k * np.quantile(need, 0.8) + prior) / (k + prior), 0.5, 3.0))
    return StudyCorrection(float(slope), float(shift), k, ratio, width)


def finished_runs(records: Iterable[RunRecord | Mapping[str, Any]]) -> list[RunRecord]:
    """The records that ran to their end: at least 3 epochs, not stopped, a finite last
    value, and (for a ledger's record) status ``completed``."""
    out = []
    for rec in records:
        rec = as_record(rec)
        if rec.stopped or rec.n_epochs < 3 or rec.extra.get("status", "completed") != "completed":
            continue
        values = rec.series(rec.metric)
        if len(values) and np.isfinite(values[-1]):
            out.append(rec)
    return out


class StudyContext:
    """A study's finished runs and the base model's forecasts along each of them.

    Args:
        base: the model whose forecasts are corrected.
        runs: the study's runs (records or RUN_RECORD.md mappings); only finished ones
            (see :func:`finished_runs`) are kept, the most recent :data:`MAX_STUDY_RUNS`.
        min_runs: finished runs needed before a correction serves, >= 2.
            Default :data:`MIN_STUDY_RUNS`.
        exclude: a run id to leave out (the run being forecast).
        max_runs: the most recent finished runs kept, >= min_runs, or None for all.
            Default :data:`MAX_STUDY_RUNS`.
        guard: :func:`fit_correction`'s guard. Default 0.95.

    Building forecasts every prefix of every finished run in one batch (about
    25,000 forecasts a second on one core); :meth:`correction` is then cheap and
    cached per (observed epochs, target).
    """

    def __init__(self, base: Forecaster, runs: Iterable[RunRecord | Mapping[str, Any]], *,
                 min_runs: int = MIN_STUDY_RUNS, exclude: str | None = None,
                 max_runs: int | None = MAX_STUDY_RUNS, guard: float = 0.95) -> None:
        if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 2:
            raise ConfigError("min_runs", "an integer >= 2", min_runs)
        self.min_runs, self.guard = min_runs, guard
        kept = [r for r in finished_runs(runs) if r.run_id != exclude]
        kept = kept[-max_runs:] if max_runs is not None else kept
        self.run_ids = tuple(r.run_id for r in kept)
        # each finished run: its values, the base mean and half 0.1-0.9 width at each
        # prefix length, and its end (built once min_runs have finished)
        self._curves: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        self._cache: dict[tuple[int, int], StudyCorrection | None] = {}
        if len(kept) >= min_runs:
            self._build(base, kept)

    def __len__(self) -> int:
        return len(self.run_ids)

    @classmethod
    def from_curves(cls, curves: Iterable[tuple[Sequence[float], Sequence[float],
                                                Sequence[float], float]], *,
                    min_runs: int = MIN_STUDY_RUNS, guard: float = 0.95) -> StudyContext:
        """A context from finished runs' forecasts made elsewhere (``replay``'s tables):
        each run as ``(values, means, half_widths, end)``, the first three at prefix
        lengths 1, 2, ... (the base forecast's mean and (q0.9 - q0.1) / 2 after each
        epoch), ``end`` its value at its target epoch."""
        ctx = object.__new__(cls)
        ctx.min_runs, ctx.guard, ctx._cache = min_runs, guard, {}
        ctx._curves = [(np.asarray(v, dtype=np.float64), np.asarray(m, dtype=np.float64),
                        np.asarray(h, dtype=np.float64), float(e)) for v, m, h, e in curves]
        ctx.run_ids = tuple(str(i) for i in range(len(ctx._curves)))
        return ctx

    def subset(self, run_ids: Iterable[str]) -> StudyContext:
        """A context of some of these runs, sharing their forecasts (no model call)."""
        pick = set(run_ids)
        sub = object.__new__(StudyContext)
        sub.min_runs, sub.guard, sub._cache = self.min_runs, self.guard, {}
        built = self.run_ids if self._curves else ()  # too few runs: nothing was built
        rows = [(i, c) for i, c in zip(built, self._curves, strict=True) if i in pick]
        sub.run_ids = tuple(i for i, _ in rows)
        sub._curves = [c for _, c in rows]
        return sub

    def _build(self, base: Forecaster, runs: list[RunRecord]) -> None:
        prefixes, targets = [], []
        for rec in runs:
            prefixes.extend(rec.truncated(e) for e in range(1, rec.n_epochs))
            targets.extend([rec.n_epochs] * (rec.n_epochs - 1))
        fcs = base.forecast_many(prefixes, targets)
        at = 0
        for rec in runs:
            values = rec.series(rec.metric)
            n = rec.n_epochs - 1
            mean = np.array([fc.mean for fc in fcs[at:at + n]])
            half = np.array([(fc.quantile(0.9) - fc.quantile(0.1)) / 2 for fc in fcs[at:at + n]])
            self._curves.append((values[:n], mean, half, float(values[-1])))
            at += n

    def prepare(self, target: int) -> StudyContext:
        """Fit the corrections of every observed length of a run to ``target`` now
        (a callback does it before the run's first epoch, so that no epoch pays for a
        fit). Returns the context."""
        if len(self) >= self.min_runs:
            for observed in range(1, int(target)):
                self.correction(observed, target)
        return self

    def correction(self, observed: int, target: int) -> StudyCorrection | None:
        """The correction for a run at ``observed`` of ``target`` epochs, or None."""
        key = (int(observed), int(target))
        if key not in self._cache:
            self._cache[key] = self._fit(*key) if self._curves else None
        return self._cache[key]

    def apply(self, record: RunRecord, target: int, forecast: Forecast) -> Forecast:
        """``forecast`` (the base model's, of ``record`` at ``target``) corrected where a
        correction serves; as it is otherwise (an observed target, too few runs...)."""
        if forecast.model == "observed" or not record.n_epochs:
            return forecast
        return self.correct(record.n_epochs, target, float(record.series(record.metric)[-1]),
                            forecast)

    def correct(self, observed: int, target: int, last: float, forecast: Forecast) -> Forecast:
        """:meth:`apply` from plain numbers: the run is at ``observed`` epochs of
        ``target``, its value now ``last``."""
        if len(self) < self.min_runs or not np.isfinite(last):
            return forecast
        fix = self.correction(observed, target)
        return forecast if fix is None else fix.apply(forecast, last)

    def at(self, index: int, observed: int) -> tuple[float, float]:
        """The ``index``-th finished run's value after ``observed`` epochs (1 to its
        length - 1) and the base model's mean forecast of its end from there."""
        values, mean, _, _ = self._curves[index]
        return float(values[observed - 1]), float(mean[observed - 1])

    def corrected_mean(self, observed: int, target: int, last: float, mean: float) -> float:
        """The mean ``mean`` of a base forecast (of a run at ``observed`` of ``target``
        epochs, its value now ``last``) as :meth:`correct` would serve it."""
        if len(self) < self.min_runs or not np.isfinite(last):
            return mean
        fix = self.correction(observed, target)
        return mean if fix is None else fix.map(mean, last)

    def _fit(self, observed: int, target: int) -> StudyCorrection | None:
        gain, real, half = [], [], []
        for last, mean, hw, end in self._curves:
            e = min(max(round(observed * (len(last) + 1) / target), 1), len(last)) - 1
            gain.append(mean[e] - last[e])
            real.append(end - last[e])
            half.append(hw[e])
        return fit_correction(gain, real, half, min_runs=self.min_runs, guard=self.guard)


class StudyForecaster(Forecaster):
    """``base``'s forecasts, corrected by a study's finished runs where that helps.

    Args:
        base: the model to correct.
        context: the study's finished runs (:class:`StudyContext`), or None: ``base``
            unchanged.
    """

    def __init__(self, base: Forecaster, context: StudyContext | None) -> None:
        self.base = base
        self.context = context
        self.name = f"{getattr(base, 'name', 'forecaster')}+study"

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        records = as_records(records)
        targets = self._targets(records, target_epoch)
        out = self.base.forecast_many(records, targets)
        if self.context is None:
            return out
        return [self.context.apply(rec, t, fc) for rec, t, fc in zip(records, targets, out,
                                                                     strict=True)]
