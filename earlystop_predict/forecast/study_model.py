"""The study model: a history model of a study's own finished runs, grown in the background.

Once a study has :data:`MIN_STUDY_MODEL_RUNS` finished runs, a LightGBM point
forecaster is grown on those runs alone (the ``"mean"`` booster of a history model,
:func:`~earlystop_predict.forecast.history.grow_history`, as ``earlystop-predict train
--from`` grows one offline), and the forecast that serves now (the base model's,
corrected by the study where :class:`~earlystop_predict.forecast.study.StudyContext`'s
correction serves) is blended with it::

    mean = weight * served mean + (1 - weight) * study model's

the whole distribution moving with the mean (its spread stays the served forecast's,
which is calibrated; a point forecaster grown on a few dozen runs has no trustworthy
spread of its own, and one booster costs an epoch a sixth of what six would).

**The weight, and the guard.** The finished runs are split into :data:`FOLDS` folds;
for each, a study model grown on the other folds and the correction fitted on them
forecast its runs' ends from 10-50 % of each run (what serves now, and the study
model, both out of sample). For each fold, the weight of least error on the *other*
folds' forecasts is scored on it (so the score pays for choosing the weight too). The
study model serves only where that held-out error is at most ``guard`` times the
error of what serves now; the weight served is the one of least error on all folds,
and the model is grown again on all the runs. Forecasts it serves say
``model="<served>+study-model"`` (``"lstm+study+study-model"`` over a correction,
``"lstm+study-model"`` without) and, in ``reason``, from how many runs.

**In the background.** :class:`StudyModelGrower` fits in a daemon thread, one fit at a
time, started when the study has :data:`MIN_STUDY_MODEL_RUNS` finished runs and again
each time it has :data:`REFIT_GROWTH` times as many as the last fit saw; the forecasts
serve the last good model meanwhile (none at first: the correction, or the base). A fit
that raises leaves the last good model serving and says why in every forecast's
``reason``; one the guard refuses serves nothing (the newer evidence says it does not
help), and says so. LightGBM fits with one thread (``threads``), so that it does not
take the training's cores; the base model's forecasts of the finished runs are made
in that thread too. :func:`grower_for` keeps one grower per study in the process, so
the runs of a search (one monitor each) share it. Measured in
``benchmarks/study_model.py`` and ``benchmarks/study_overhead.py``.

Example:
    >>> grower = StudyModelGrower(min_runs=40)
    >>> grower.offer(base=None, runs=[])     # too few finished runs: nothing starts
    False
    >>> grower.current() is None
    True
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import Forecast, Forecaster
from earlystop_predict.forecast.history import (
    BLEND_FRACTIONS,
    BLEND_WEIGHTS,
    LAST_COL,
    blend_queries,
    grow_history,
    weight_errors,
)
from earlystop_predict.forecast.lgbm import (
    RowPredictor,
    from_space,
    from_space_one,
    metric_kind,
    record_matrix,
)
from earlystop_predict.forecast.study import MIN_STUDY_RUNS, StudyContext, finished_runs
from earlystop_predict.records.record import RunRecord

MIN_STUDY_MODEL_RUNS = 40
"""Finished runs a study needs before its study model is grown (benchmarks/study_model.py:
from 20 runs the guard mostly refused it, and where it served it helped little)."""
MAX_STUDY_MODEL_RUNS = 400
"""The most recent finished runs a fit uses (its cost grows with their number)."""
REFIT_GROWTH = 1.25
"""A new fit starts once the study has this many times the finished runs of the last."""
FOLDS = 4
"""Folds of the finished runs the weight and the guard are scored on."""
ROUNDS = 150
"""Boosting rounds of a study model (a few dozen runs: more only adds cost)."""
GUARD = 0.95
"""Held-out error the blend must stay under, as a multiple of what serves now's."""

FitFn = Callable[[Forecaster, list[RunRecord]], "tuple[StudyModel | None, str]"]


def _servable(record: RunRecord, kind: int | None) -> bool:
    """Whether the study model can forecast ``record`` (metric ``kind`` known, a finite
    value seen)."""
    return kind is not None and bool(record.n_epochs) and record.has_finite(record.metric)


@dataclass(frozen=True)
class StudyModel:
    """A study's point forecaster and the share of the served forecast in its blend.

    Attributes:
        booster: the LightGBM booster (history-model features, gain in model space).
        weight: the served forecast's share in the blend, in [0, 1).
        runs: finished runs it was grown on.
        error_ratio: the blend's held-out error over that of the forecast it blends
            with (nested over the folds; < 1 is better).
    """

    booster: Any
    weight: float
    runs: int
    error_ratio: float
    _predict: RowPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_predict", RowPredictor(self.booster))

    def points(self, records: Sequence[RunRecord], targets: Sequence[int]) -> np.ndarray:
        """The study model's own point forecasts of ``records`` at ``targets`` (NaN
        where it cannot serve: a metric neither accuracy- nor loss-like, none finite)."""
        kinds = [metric_kind(r) for r in records]
        ok = [i for i, (r, k) in enumerate(zip(records, kinds, strict=True))
              if _servable(r, k)]
        out = np.full(len(records), np.nan)
        if ok:
            kind = np.array([kinds[i] for i in ok])
            x = record_matrix([records[i] for i in ok], [targets[i] for i in ok], kind,
                              aux=True)
            gain = self._predict(x)
            out[ok] = from_space(x[:, LAST_COL] + gain, kind)
        return out

    def point(self, record: RunRecord, target: int) -> float:
        """:meth:`points` of one record (a callback's epoch: without the batch's arrays)."""
        kind = metric_kind(record)
        if not _servable(record, kind):
            return math.nan
        x = record_matrix([record], [target], (kind,), aux=True)
        return from_space_one(float(x[0, LAST_COL] + self._predict(x)[0]), kind)

    def apply(self, record: RunRecord, target: int, forecast: Forecast) -> Forecast:
        """``forecast`` (what serves now, of ``record`` at ``target``) blended with this
        model's point forecast; as it is where the study model cannot serve."""
        if forecast.model == "observed":
            return forecast
        point = self.point(record, target)
        if not math.isfinite(point):
            return forecast
        lo, hi = forecast.bounds if forecast.bounds is not None else (-np.inf, np.inf)
        shift = (1.0 - self.weight) * (point - forecast.mean)

        def clip(v: float) -> float:
            return float(min(max(v, lo), hi))

        qs = {k: clip(v + shift) for k, v in forecast.quantiles.items()}
        mean = clip(forecast.mean + shift)
        if qs:
            mean = min(max(mean, min(qs.values())), max(qs.values()))
        note = (f"study model: {self.runs} finished runs, weight {1.0 - self.weight:.1f} "
                f"(held-out error {self.error_ratio:.2f} x without it)")
        return replace(forecast, mean=mean, quantiles=qs,
                       model=f"{forecast.model}+study-model",
                       reason="; ".join(x for x in (forecast.reason, note) if x))


def _grow(runs: Sequence[RunRecord], seed: int, rounds: int, threads: int) -> Any:
    return grow_history(runs, names=("mean",), seed=seed, rounds=rounds,
                        threads=threads)["mean"]


def fit_study_model(base: Forecaster, runs: Iterable[RunRecord | Mapping[str, Any]], *,
                    guard: float = GUARD, folds: int = FOLDS, seed: int = 0,
                    rounds: int = ROUNDS, threads: int = 1) -> tuple[StudyModel | None, str]:
    """Grow a study model on the study's finished runs, its weight and guard scored on
    held-out folds of them (see the module's doc).

    Args:
        base: the model whose forecasts serve now (its study correction is refitted
            on each fold's other runs).
        runs: the study's runs; the finished ones are used
            (:func:`~earlystop_predict.forecast.study.finished_runs`, with an
            accuracy- or loss-like target), the most recent :data:`MAX_STUDY_MODEL_RUNS`.
        guard: the blend's held-out error must be at most this times that of what
            serves now, > 0. Default :data:`GUARD`.
        folds: folds of the runs, >= 2. Default :data:`FOLDS`.
        seed: the folds' and LightGBM's seed. Default 0.
        rounds: boosting rounds, >= 1. Default :data:`ROUNDS`.
        threads: LightGBM threads, >= 1. Default 1 (the training keeps its cores).

    Returns:
        ``(model, "")``, or ``(None, why)`` when there are too few runs or the guard
        refuses it.

    Raises:
        ValueError: LightGBM cannot grow a model on the runs (the grower says why).
    """
    done: dict[str, RunRecord] = {}
    for rec in finished_runs(runs):
        if metric_kind(rec) is not None:
            done.pop(rec.run_id, None)
            done[rec.run_id] = rec  # one run per id, the latest
    kept = list(done.values())[-MAX_STUDY_MODEL_RUNS:]
    k = len(kept)
    if k < max(2 * folds, MIN_STUDY_RUNS):
        return None, f"{k} finished runs, too few for {folds} folds"
    ctx = StudyContext(base, kept, max_runs=None)
    prefixes, ends, y = blend_queries(kept)
    shape = (len(BLEND_FRACTIONS), k)
    y = y.reshape(shape)
    observed = np.array([p.n_epochs for p in prefixes]).reshape(shape)
    served = np.empty(shape)   # what serves now: base + correction of the other folds
    points = np.empty(shape)   # the study model grown on the other folds
    fold = np.random.default_rng(seed).permutation(k) % folds
    for f in range(folds):
        held = np.where(fold == f)[0]
        sub = ctx.subset(kept[i].run_id for i in np.where(fold != f)[0])
        model = StudyModel(_grow([kept[i] for i in np.where(fold != f)[0]], seed, rounds,
                                 threads), 0.0, 0, 1.0)
        for j in range(len(BLEND_FRACTIONS)):
            for i in held:
                e = min(int(observed[j, i]), kept[i].n_epochs - 1)
                last, mean = ctx.at(int(i), e)
                served[j, i] = sub.corrected_mean(e, kept[i].n_epochs, last, mean)
            points[j, held] = model.points([prefixes[j * k + i] for i in held],
                                           [ends[i] for i in held])
    ok = np.isfinite(served) & np.isfinite(points) & np.isfinite(y)
    sums = np.zeros((folds, len(BLEND_WEIGHTS)))  # per fold: each weight's summed error
    for f in range(folds):
        m = ok & (fold == f)[None, :]
        if m.any():
            sums[f] = weight_errors(served[m], points[m], y[m]) * m.sum()
    now = float(sums[:, -1].sum())  # weight 1: what serves now alone
    if now <= 0:
        return None, f"{k} finished runs: what serves now has no held-out error to cut"
    nested = sum(sums[f, int(np.argmin(sums.sum(axis=0) - sums[f]))] for f in range(folds))
    ratio = float(nested / now)
    pick = len(BLEND_WEIGHTS) - 1 - int(np.argmin(sums.sum(axis=0)[::-1]))  # ties: more weight
    weight = BLEND_WEIGHTS[pick]
    if ratio > guard or weight >= 1.0:
        return None, (f"{k} finished runs, held-out error {ratio:.2f} x what serves now "
                      f"(guard {guard:.2f})")
    return StudyModel(_grow(kept, seed, rounds, threads), weight, k, ratio), ""


class StudyModelGrower:
    """One study's study model, grown in a background thread, one fit at a time.

    Args:
        min_runs: finished runs before the first fit, >= 8. Default
            :data:`MIN_STUDY_MODEL_RUNS`.
        fit: ``fit(base, finished runs) -> (StudyModel | None, why)``, run in the
            worker thread. Default :func:`fit_study_model` (looked up at each fit).
        growth: a new fit starts once the study has this many times the finished
            runs the last fit saw, > 1. Default :data:`REFIT_GROWTH`.

    Raises:
        ConfigError: ``min_runs`` or ``growth`` out of range.
    """

    def __init__(self, min_runs: int = MIN_STUDY_MODEL_RUNS, *, fit: FitFn | None = None,
                 growth: float = REFIT_GROWTH) -> None:
        if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 8:
            raise ConfigError("study_model_runs", "an integer >= 8, or None (off)", min_runs)
        if not growth > 1.0:
            raise ConfigError("growth", "> 1", growth)
        self.min_runs, self.growth, self._fit = min_runs, float(growth), fit
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._model: StudyModel | None = None
        self._note = ""
        self._tried = 0  # finished runs the last fit started on
        self.fits = 0  #: fits started

    def __deepcopy__(self, memo: dict[int, Any]) -> StudyModelGrower:
        """The same grower: one per study and process, shared by the study's runs (Keras
        Tuner deep-copies each trial's callbacks, and with them their monitor)."""
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a monitor sent to another process): what it learnt, not its lock
        or its fit in progress."""
        state = self.__dict__.copy()
        state["_lock"] = state["_thread"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a fit is running now."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def offer(self, base: Forecaster, runs: Iterable[RunRecord | Mapping[str, Any]]) -> bool:
        """Start a fit in the background if the study's runs warrant one (enough finished
        runs, enough more than the last fit saw, no fit running); never waits for it.

        Args:
            base: the model that serves (it forecasts the finished runs, in the worker).
            runs: the study's runs (records or RUN_RECORD.md mappings); the finished
                ones count.

        Returns:
            Whether a fit started.
        """
        finished = finished_runs(runs)[-MAX_STUDY_MODEL_RUNS:]
        n = len(finished)
        with self._lock:
            if self.busy or n < self.min_runs or n < self._tried * self.growth:
                return False
            self._tried = n
            self.fits += 1
            self._thread = threading.Thread(target=self._work, args=(base, finished),
                                            name="earlystop-predict study model", daemon=True)
            self._thread.start()
        return True

    def _work(self, base: Forecaster, runs: list[RunRecord]) -> None:
        fit = self._fit or fit_study_model
        try:
            model, why = fit(base, runs)
        except Exception as exc:  # noqa: BLE001 - a failed fit must never reach training
            with self._lock:
                kept = "the last good one serves" if self._model is not None else "not served"
                self._note = (f"study model: the fit on {len(runs)} finished runs failed "
                              f"({type(exc).__name__}: {exc}); {kept}")
            return
        with self._lock:
            self._model = model
            self._note = "" if model is not None else f"study model not served: {why}"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running fit, if any (benchmarks, tests); whether none runs now."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    def current(self) -> StudyModel | None:
        """The study model that serves now (the last good fit), or None."""
        with self._lock:
            return self._model

    @property
    def note(self) -> str:
        """Why no study model serves, or why the last fit failed; ``""`` otherwise."""
        with self._lock:
            return self._note

    def serve(self, record: RunRecord, target: int, forecast: Forecast) -> Forecast:
        """``forecast`` (what serves now) blended with the study model where one serves;
        its ``reason`` says why none does, or why the last fit failed."""
        if forecast.model == "observed":
            return forecast
        with self._lock:
            model, note = self._model, self._note
        if model is not None:
            forecast = model.apply(record, target, forecast)
        if note:
            forecast = replace(forecast, reason="; ".join(x for x in (forecast.reason, note)
                                                          if x))
        return forecast


_GROWERS: OrderedDict[Hashable, StudyModelGrower] = OrderedDict()
_GROWERS_LOCK = threading.Lock()
_MAX_GROWERS = 64


def grower_for(key: Hashable, min_runs: int = MIN_STUDY_MODEL_RUNS) -> StudyModelGrower:
    """The process's grower of one study (``key``: where its runs live, its name and the
    base model), made on first use; the runs of a search share it. The oldest idle
    growers are dropped beyond 64 studies."""
    with _GROWERS_LOCK:
        key = (key, min_runs)
        grower = _GROWERS.get(key)
        if grower is None:
            grower = _GROWERS[key] = StudyModelGrower(min_runs)
            for old in [k for k, g in _GROWERS.items() if not g.busy][:-_MAX_GROWERS]:
                del _GROWERS[old]
        _GROWERS.move_to_end(key)
        return grower
