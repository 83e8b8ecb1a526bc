"""ForecastMonitor: the framework-neutral heart of every callback.

Adapters translate framework events into three calls: :meth:`ForecastMonitor.begin`
when training starts, :meth:`ForecastMonitor.update` after each epoch's
validation, and :meth:`ForecastMonitor.end` when training ends. The monitor
keeps the :class:`~earlystop_predict.records.record.RunRecord`, asks the forecaster,
applies the :class:`~earlystop_predict.policy.stop.StopPolicy` and writes every
epoch, forecast and decision to the ledger.

Example:
    >>> from earlystop_predict.forecast.base import ScriptedForecaster
    >>> mon = ForecastMonitor(target_epoch=20, threshold=0.9, min_epochs=2,
    ...                       model=ScriptedForecaster(lambda r, m: 0.5), ledger=None)
    >>> mon.begin()
    >>> mon.update(1, {"val_accuracy": 0.3}).stop, mon.update(2, {"val_accuracy": 0.4}).stop
    (False, True)
"""

from __future__ import annotations

import copy
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from earlystop_predict.errors import (
    ConfigError,
    EarlystopPredictError,
    ForecastUnavailableError,
    MetricNotFoundError,
    RecordError,
)
from earlystop_predict.forecast.base import Forecast, Forecaster
from earlystop_predict.forecast.study import StudyContext
from earlystop_predict.forecast.study_model import (
    MIN_STUDY_MODEL_RUNS,
    StudyModelGrower,
    grower_for,
)
from earlystop_predict.policy.stop import (
    CLIMB_WINDOW,
    RUNG_FACTOR,
    Decision,
    StopPolicy,
    top_cutoff,
)
from earlystop_predict.records.features import (
    canonical_hparams,
    canonical_meta,
    canonical_metric,
    canonical_metrics,
)
from earlystop_predict.records.record import (
    RunRecord,
    default_mode,
    finite_or_none,
    is_accuracy_like,
)

if TYPE_CHECKING:  # pragma: no cover
    from earlystop_predict.ledger import Ledger

STATE_VERSION = 1
_LOSS_KEYS = ("train_loss", "val_loss")
_FORECAST_LOG_KEYS = ("esp/forecast_mean", "esp/forecast_q10", "esp/forecast_q90")


def in_range(metric: str, value: float) -> bool:
    """Whether a finite ``value`` fits ``metric``: accuracy-like ones are in [0, 1]."""
    return not is_accuracy_like(metric) or 0.0 <= value <= 1.0


def best_of(values: Iterable[float | None], mode: str) -> float | None:
    """The best of the values that are not None (highest for ``"max"``), None if none."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return max(kept) if mode == "max" else min(kept)


def epoch_curve(record: RunRecord, metric: str) -> list[Any]:
    """``record``'s ``metric`` at epochs 1, 2, ... (None where it has no row), as
    :meth:`ForecastMonitor.observe_study_curves` takes a run."""
    curve: list[Any] = []
    for row in record.epochs:
        e = row.get("epoch")
        if isinstance(e, int) and e >= 1:
            curve.extend([None] * (e - len(curve)))
            curve[e - 1] = row.get(metric)
    return curve


def _peer_curve(values: Iterable[Any], mode: str) -> tuple[list[float], list[float]]:
    """A peer's value at each epoch of ``values`` (NaN where missing) and its best so
    far there (NaN before the first value)."""
    raw: list[float] = []
    out: list[float] = []
    best = math.nan
    for v in values:
        v = finite_or_none(v)
        if v is not None and (math.isnan(best) or (v > best if mode == "max" else v < best)):
            best = v
        raw.append(math.nan if v is None else float(v))
        out.append(best)
    return raw, out


def _resolve_model(model: str | os.PathLike[str] | Forecaster) -> Forecaster:
    if isinstance(model, Forecaster):
        return model
    from earlystop_predict.forecast.compose import load_model

    return load_model(model)


class ForecastMonitor:
    """Collects a run's epochs, forecasts the target epoch and decides when to stop.

    Its keyword arguments are the ones every adapter shares (the callbacks take them
    as they are; Optuna and Ray take the study-wide ones): this is where they are
    declared and documented.

    Args:
        monitor: metric to forecast, as logged (aliases like ``val_acc`` and
            ``eval_accuracy`` are understood). Default ``"val_accuracy"``.
        mode: ``"max"`` or ``"min"``. Default: from the metric name.
        target_epoch: 1-based epoch to forecast, >= max(2, min_epochs). Default: the
            run's planned epochs (``meta["max_epochs"]``, read by the adapters).
        threshold: value the run must be likely to reach at ``target_epoch``
            (a fraction for accuracies); None: no threshold rule. Default None.
        confidence: quantile level that must clear the bar, in (0.5, 1). Default 0.95.
        min_epochs: first 1-based epoch at which a stop may happen, >= 1. Default 3.
        patience: consecutive poor forecasts before stopping, >= 1. Default 1.
        min_delta: the gain rule: stop when the run is unlikely to improve on its
            best value so far by more than this by ``target_epoch``, in the metric's
            units, >= 0; ``"auto"``: 0.03 when no other bar is set, 0.001 beside a
            threshold or an incumbent; None: off. Default ``"auto"``
            (:class:`~earlystop_predict.policy.stop.StopPolicy`'s).
        use_incumbent: also stop when unlikely to beat the best value the study's finished runs reached
            (from the ledger, or handed in with :meth:`observe_study`). Default True.
        study: name grouping comparable runs; with a ledger, the incumbent rule
            compares against the best value this study's finished runs reached. Default None.
        use_study: with a study and a ledger, let the study's finished runs correct the
            model's forecasts (:class:`~earlystop_predict.forecast.study.StudyContext`,
            read at :meth:`begin`; it serves once 5 runs have finished and only where
            it beat the model on them; forecasts then say ``model="<model>+study"``).
            Default True.
        study_model_runs: with ``use_study``, from this many finished runs of the study
            a study model is grown on them in a background thread and, where it beats
            what serves on held-out ones, blended in (forecasts then say
            ``model="<model>+study+study-model"``; see
            :mod:`~earlystop_predict.forecast.study_model`), >= 8; None: off.
            Default 40.
        ledger: where the ledger lives: an SQLite file path, a ``sqlite:///path.db`` or
            ``postgresql://user@host:port/database`` URL (one ledger for workers on many
            machines; the ``postgres`` extra), a :class:`~earlystop_predict.ledger.store.Ledger`,
            or None for none. A malformed URL fails here. Default None.
        hparams: hyperparameters, merged over those the adapter reads. Default None.
        meta: meta data, merged over those the adapter reads. Default None.
        model: ``"auto"``, ``"lstm"``, ``"lightgbm"``, a model directory or a
            :class:`~earlystop_predict.forecast.base.Forecaster`. Default ``"auto"``.
        dry_run: forecast, decide and record, never stop. Default False.
        run_id: id of this run in records and the ledger. Default: a random id.
        task: task or data set name for the record. Default None.
        stop_on_divergence: stop at a NaN/inf metric or loss. Default True.
        gain_patience: the gain rule also needs the run's best to have stood this many
            epochs, >= 0 (0: the forecast alone decides). Default 3
            (:class:`~earlystop_predict.policy.stop.StopPolicy`'s).
        keep_top: never stop a run whose best so far is in this top fraction of what the
            study's other runs (the ledger's, or :meth:`observe_study_curves`: the Optuna
            pruner and the Ray scheduler hand in their finished trials' curves without a
            ledger) had reached by the same epoch, in (0, 1]; None: off. Default
            :data:`~earlystop_predict.policy.stop.DEFAULT_KEEP_TOP` (0.15).
        flat_delta: in a study, a run whose best is within this of its first value (it
            has not started to learn) is judged by ASHA's rung rule against the study's
            other runs, not by its forecast; None: off. Default
            :data:`~earlystop_predict.policy.stop.DEFAULT_FLAT_DELTA` (0.05).
        climb_credit: the incumbent rule adds this share of a climbing run's recent
            slope, carried on to the target epoch, to its forecast; None or 0: off.
            Default :data:`~earlystop_predict.policy.stop.DEFAULT_CLIMB_CREDIT` (0.05).

    Raises:
        ConfigError: an argument is out of range (at construction).
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None, *,
                 target_epoch: int | None = None, threshold: float | None = None,
                 confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
                 min_delta: float | str | None = StopPolicy.min_delta, use_incumbent: bool = True,
                 study: str | None = None, use_study: bool = True,
                 study_model_runs: int | None = MIN_STUDY_MODEL_RUNS,
                 ledger: str | os.PathLike[str] | Ledger | None = None,
                 hparams: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                 model: str | os.PathLike[str] | Forecaster = "auto", dry_run: bool = False,
                 run_id: str | None = None, task: str | None = None,
                 stop_on_divergence: bool = True,
                 gain_patience: int = StopPolicy.gain_patience,
                 keep_top: float | None = StopPolicy.keep_top,
                 flat_delta: float | None = StopPolicy.flat_delta,
                 climb_credit: float | None = StopPolicy.climb_credit) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError("monitor", "a non-empty metric name", monitor)
        self.monitor = monitor
        self.metric = canonical_metric(monitor)
        mode = mode if mode is not None else default_mode(self.metric)
        self.policy = StopPolicy(threshold=threshold, confidence=confidence,
                                 min_epochs=min_epochs, patience=patience, mode=mode,
                                 use_incumbent=use_incumbent, min_delta=min_delta,
                                 stop_on_divergence=stop_on_divergence, dry_run=dry_run,
                                 gain_patience=gain_patience, keep_top=keep_top,
                                 flat_delta=flat_delta, climb_credit=climb_credit)
        self.mode = mode
        if target_epoch is not None:
            self._check_target(target_epoch)
        self.target_epoch_arg = target_epoch
        self.study = study
        self.use_study = bool(use_study)
        self.study_context: StudyContext | None = None
        if study_model_runs is not None:
            StudyModelGrower(study_model_runs)  # a bad value fails here
        self.study_model_runs = study_model_runs
        self.study_model: StudyModelGrower | None = None  # the study's, once it is offered runs
        self.user_hparams = dict(hparams or {})
        self.user_meta = dict(meta or {})
        self.run_id_arg = run_id
        self.task = task
        self._model_arg = model
        self._forecaster: Forecaster | None = model if isinstance(model, Forecaster) else None
        if isinstance(ledger, str):
            from earlystop_predict.ledger.target import parse_target

            parse_target(ledger)  # a bad URL fails at construction, not at the first epoch
        self._ledger_arg = ledger
        self._ledger: Ledger | None = None
        self._study_best: float | None = None
        # The study's other runs: (value, best so far) per epoch.
        self._peer_curves: list[tuple[list[float], list[float]]] = []
        self.reset()

    # ------------------------------------------------------------------ set-up
    def _check_target(self, target_epoch: Any) -> int:
        if isinstance(target_epoch, bool) or not isinstance(target_epoch, int) or \
                target_epoch <= self.policy.min_epochs - 1 or target_epoch < 2:
            raise ConfigError("target_epoch",
                              f"an integer >= max(2, min_epochs={self.policy.min_epochs})",
                              target_epoch)
        return target_epoch

    @property
    def forecaster(self) -> Forecaster:
        """The accModel, loaded on first use."""
        if self._forecaster is None:
            self._forecaster = _resolve_model(self._model_arg)
        return self._forecaster

    @property
    def ledger(self) -> Ledger | None:
        """The ledger, opened on first use (None when no ledger was given)."""
        if self._ledger is None and self._ledger_arg is not None:
            from earlystop_predict.ledger import Ledger

            arg = self._ledger_arg
            self._ledger = arg if isinstance(arg, Ledger) else Ledger(arg)
        return self._ledger

    def reset(self) -> None:
        """Forget the run: a fresh record, counters at zero (called by :meth:`begin`)."""
        self.record = RunRecord(run_id=self.run_id_arg or uuid.uuid4().hex[:12],
                                metric=self.metric, mode=self.mode, task=self.task,
                                hparams=canonical_hparams(self.user_hparams),
                                meta=canonical_meta(self.user_meta))
        self.target_epoch: int | None = self.target_epoch_arg
        self.poor_streak = 0
        self.last_decision: Decision | None = None
        self.stopped: dict[str, Any] | None = None
        self.finished = False
        self.diverged = False
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.first: float | None = None  # the metric's first value (``flat_delta``)
        self._best_trail: list[tuple[int, float]] = []  # (epoch, best after it)
        self._streaks: list[tuple[int, int]] = []  # (epoch, poor_streak after it)
        self._ledger_best: float | None = None
        self._t_last: float | None = None
        self._started = False
        self._restored = False
        self._pending: tuple[int, bool] = (0, False)  # (epoch, diverged) of add_epoch

    # ------------------------------------------------------------------- study
    @property
    def incumbent(self) -> float | None:
        """The best value the study's finished runs reached (stopped ones included),
        None with none or with ``use_incumbent=False``: the ledger's (read at
        :meth:`begin`) or the values handed in by :meth:`observe_study`, whichever is
        better."""
        if not self.policy.use_incumbent:
            return None
        return best_of((self._ledger_best, self._study_best), self.mode)

    @incumbent.setter
    def incumbent(self, value: float | None) -> None:
        self._ledger_best = None
        self._study_best = finite_or_none(value)

    def observe_study(self, values: Iterable[Any]) -> float | None:
        """Hand in the values the study's finished runs reached (the hook of the search
        adapters: the best value of each of Optuna's completed and pruned trials, of
        each of Ray's ended trials; a stopped run counts with what it reached).

        Values that are missing, not finite or outside the metric's range are left
        out. Returns the incumbent now in force (None with ``use_incumbent=False``).
        """
        kept = [v for v in (finite_or_none(x) for x in values)
                if v is not None and in_range(self.metric, v)]
        self._study_best = best_of(kept, self.mode)
        return self.incumbent

    def observe_study_runs(self, runs: Iterable[RunRecord | Mapping[str, Any]]) -> int:
        """Hand in the study's runs for the study model (the hook of the search adapters
        without a ledger: Optuna's completed trials' reported values): the finished ones
        correct this run's forecasts from now on, as a ledger's would at :meth:`begin`.

        Call it after :meth:`begin`. Returns how many finished runs the context holds
        (0 with ``use_study=False``).
        """
        if not self.use_study or self.target_epoch is None:
            return 0
        runs = list(runs)
        self.study_context = StudyContext(self.forecaster, runs, exclude=self.record.run_id
                                          ).prepare(self.target_epoch)
        self._grow_study_model(runs)
        return len(self.study_context)

    def observe_study_curves(self, curves: Iterable[Iterable[Any]]) -> int:
        """Hand in the study's other runs as they went (``keep_top``): one sequence per
        run of its metric at epochs 1, 2, ... (None or NaN where missing; a stopped run
        up to its stop). Replaces the curves held; returns how many are held."""
        self._peer_curves = [_peer_curve(c, self.mode) for c in curves]
        return len(self._peer_curves)

    def add_study_curves(self, curves: Iterable[Iterable[Any]]) -> int:
        """Add runs to those :meth:`observe_study_curves` handed in (runs of the study
        that ended since); returns how many are held."""
        self._peer_curves.extend(_peer_curve(c, self.mode) for c in curves)
        return len(self._peer_curves)

    def _peers_at(self, epoch: int) -> tuple[list[float], list[float]]:
        """The study's other runs' values and best so far at ``epoch`` (those that
        reached it)."""
        got = [(raw[epoch - 1], best[epoch - 1]) for raw, best in self._peer_curves
               if len(raw) >= epoch]
        return [v for v, _ in got], [b for _, b in got]

    def _peer_cutoff(self, at: list[float]) -> float | None:
        """``keep_top``'s cutoff of the peers' values ``at`` this epoch."""
        if self.policy.keep_top is None:
            return None
        return top_cutoff(at, self.policy.keep_top, self.mode)

    def begin(self, hparams: Mapping[str, Any] | None = None,
              meta: Mapping[str, Any] | None = None, *, target_epoch: int | None = None,
              resume: bool = False) -> None:
        """Start (or resume) a run.

        Args:
            hparams: hyperparameters read from the framework; the user's win on conflict.
            meta: meta data read from the framework (``max_epochs``...); the user's win.
            target_epoch: the run's planned epochs, used when the user gave none.
            resume: keep the progress restored by :meth:`load_state_dict`.
        """
        if not resume:
            self.reset()
        read_hp = canonical_hparams(hparams)
        read_meta = canonical_meta(meta)
        self.record.hparams = {**read_hp, **canonical_hparams(self.user_hparams)}
        self.record.meta = {**read_meta, **canonical_meta(self.user_meta)}
        if self.target_epoch is None:
            planned = target_epoch or self.record.meta.get("max_epochs")
            if planned is None:
                raise ConfigError("target_epoch", "given, or max_epochs known to the adapter",
                                  None)
            self.target_epoch = self._check_target(int(planned))
        self.record.meta.setdefault("max_epochs", self.target_epoch)
        if self.ledger is not None:
            self.ledger.start_run(self.record, study=self.study,
                                  target_epoch=self.target_epoch)
            if self.policy.use_incumbent and self.study is not None:
                self._ledger_best = self.ledger.best_value(
                    self.study, self.metric, self.mode, exclude_run=self.record.run_id)
            if self.study is not None and (self.use_study or self.policy.uses_peers):
                self._read_study()
        self._t_last = time.perf_counter()
        self._started = True

    def _read_study(self) -> None:
        """The ledger's runs of this study, read once at :meth:`begin`: the finished ones
        correct the forecasts and grow the study model (``use_study``), the others' curves
        are ``keep_top``'s evidence. A ledger that cannot be read leaves both without
        evidence: the model's forecast decides alone."""
        self.study_context = None
        try:
            runs = self.ledger.records(self.study)  # type: ignore[union-attr]
        except EarlystopPredictError:  # LedgerError, RecordError
            runs = None
        if self.policy.uses_peers:
            self.observe_study_curves(epoch_curve(rec, self.metric) for rec in runs or ()
                                      if rec.run_id != self.record.run_id)
        if self.use_study and runs is not None:
            self.study_context = self._study_context(runs)

    def _study_context(self, runs: list[RunRecord]) -> StudyContext | None:
        """The study's finished runs, forecast along their length (and offered to the
        study model); None (forecasts uncorrected) where the model fails on them."""
        try:
            context = StudyContext(self.forecaster, runs, exclude=self.record.run_id
                                   ).prepare(self.target_epoch)
        except EarlystopPredictError:  # RecordError, ForecastUnavailableError
            return None
        self._grow_study_model(runs)
        return context

    def _grow_study_model(self, runs: list[Any]) -> None:
        """Offer the study's runs to its study model (a fit starts in the background
        when they warrant one; this never waits for it)."""
        if self.study_model_runs is None:
            return
        ledger = self._ledger_arg
        where = getattr(ledger, "url", None) or (os.fspath(ledger) if ledger is not None else None)
        model = self._model_arg if not isinstance(self._model_arg, Forecaster) \
            else getattr(self._model_arg, "name", type(self._model_arg).__name__)
        self.study_model = grower_for((where, self.study, str(model)), self.study_model_runs)
        self.study_model.offer(self.forecaster, runs)  # finished ones only: not this run

    # ------------------------------------------------------------------ update
    def update(self, epoch: int, metrics: Mapping[str, Any]) -> Decision:
        """Record one finished epoch, forecast the target epoch and decide.

        An epoch at or before the last one held (a resume from an earlier point)
        replaces the tail: the later epochs, their forecasts and their patience count
        are dropped, as if the run had never gone past it.

        Args:
            epoch: 1-based epoch just finished (Keras ``epoch + 1``...).
            metrics: the epoch's logged values; aliases are canonicalised.

        Raises:
            MetricNotFoundError: the monitored metric is not in ``metrics``.
            RecordError: an accuracy-like value is outside [0, 1] (a percent): it is
                refused before it is recorded.
        """
        self.add_epoch(epoch, metrics)
        return self.decide(*self.own_forecast())

    # The two halves of :meth:`update`, for :func:`update_many` (one forecaster call for
    # many runs): the epoch is recorded, then its forecast is made and decided on.
    def add_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Record one finished epoch without forecasting it: :meth:`decide` follows
        (:meth:`update` is both). Raises as :meth:`update` does."""
        if not self._started:
            self.begin(resume=self._restored)
        row, diverged = self._row(int(epoch), metrics)
        self._trim(row["epoch"])
        self.record.epochs.append(row)
        self._track_best(row)
        self._pending = (int(epoch), diverged)

    def own_forecast(self) -> tuple[Forecast | None, str]:
        """This monitor's own forecast of the epoch :meth:`add_epoch` recorded, and why
        there is none (``""``); what :meth:`decide` takes."""
        epoch, diverged = self._pending
        return self._forecast(epoch) if not diverged else (None, "")

    def wants_forecast(self) -> bool:
        """Whether the epoch :meth:`add_epoch` recorded asks the forecaster (not
        diverged, before the target epoch)."""
        epoch, diverged = self._pending
        return not diverged and self.target_epoch is not None and epoch < self.target_epoch

    def decide(self, forecast: Forecast | None, why: str = "") -> Decision:
        """Decide on the epoch :meth:`add_epoch` recorded, given its forecast (or None
        and why there is none); record the decision and write the ledger."""
        epoch, diverged = self._pending
        row = self.record.epochs[-1]
        values, bests = self._peers_at(int(epoch))
        decision = self.policy.decide(forecast, epoch=epoch, poor_streak=self.poor_streak,
                                      incumbent=self.incumbent, diverged=diverged,
                                      best=self.best, since_best=self._since_best(epoch),
                                      peer_cutoff=self._peer_cutoff(bests),
                                      first=self.first, climb=self._climb(int(epoch)),
                                      rung_cutoff=self._rung_cutoff(values),
                                      value=row.get(self.metric))
        if why and not decision.stop and not diverged:
            decision = replace(decision, reason=f"no forecast: {why}")
        self.diverged = self.diverged or diverged
        self.poor_streak = self.poor_streak + 1 if decision.poor else 0
        self._streaks.append((epoch, self.poor_streak))
        self.last_decision = decision
        self.record.forecasts.append(decision.to_dict())
        if decision.stop:
            self.stopped = {"epoch": epoch, "reason": decision.reason}
            self.record.stopped = self.stopped
        if self.ledger is not None:
            self.ledger.log_epoch(self.record.run_id, row, decision)
        return decision

    def _row(self, epoch: int, metrics: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The epoch's record row and whether the target or a loss diverged."""
        canon = canonical_metrics(metrics)
        if self.metric not in canon:
            raise MetricNotFoundError(self.monitor, metrics)
        row: dict[str, Any] = {"epoch": epoch}
        diverged = False
        for key, value in canon.items():
            if isinstance(value, str) or key == "epoch":
                continue
            row[key] = finite_or_none(value)
            if row[key] is None:
                diverged = diverged or (value is not None and key in self._diverge_keys)
            elif not in_range(key, row[key]):
                raise RecordError(f"{row[key]!r} is outside [0, 1] at epoch {epoch}",
                                  field=key, hint="accuracy-like metrics are fractions; "
                                  "divide percents by 100")
        now = time.perf_counter()
        if "time" not in row and self._t_last is not None:
            row["time"] = now - self._t_last
        self._t_last = now
        return row, diverged

    @property
    def _diverge_keys(self) -> tuple[str, ...]:
        return (self.metric, *_LOSS_KEYS)

    def _trim(self, epoch: int) -> None:
        """Drop what was held from ``epoch`` on (a replayed epoch after a resume)."""
        epochs = self.record.epochs
        if not epochs or int(epochs[-1]["epoch"]) < epoch:
            return
        self.record.epochs = [r for r in epochs if int(r["epoch"]) < epoch]
        self.record.forecasts = [f for f in self.record.forecasts if int(f["at_epoch"]) < epoch]
        self._streaks = [s for s in self._streaks if s[0] < epoch]
        self.poor_streak = self._streaks[-1][1] if self._streaks else 0
        if self.stopped is not None and int(self.stopped["epoch"]) >= epoch:
            self.stopped = self.record.stopped = None
        self._replay_best()

    def _replay_best(self) -> None:
        """The best, its epoch, the first value and the best's trail from the rows held."""
        self.best = self.best_epoch = self.first = None
        self._best_trail = []
        for row in self.record.epochs:
            self._track_best(row)

    def _track_best(self, row: Mapping[str, Any]) -> None:
        value = row.get(self.metric)
        if value is not None and (self.best is None or
                                  (value > self.best if self.mode == "max" else value < self.best)):
            self.best, self.best_epoch = float(value), int(row["epoch"])
        if value is not None and self.first is None and math.isfinite(value):
            self.first = float(value)
        if self.best is not None:
            self._best_trail.append((int(row["epoch"]), self.best))
            del self._best_trail[:-CLIMB_WINDOW - 1]

    def _climb(self, epoch: int) -> float | None:
        """The best's gain per epoch over the last :data:`CLIMB_WINDOW` epochs (in the
        metric's better direction), None before that many epochs have a best."""
        trail = self._best_trail
        if len(trail) <= CLIMB_WINDOW or trail[-1][0] != epoch:
            return None
        (e0, b0), (e1, b1) = trail[0], trail[-1]
        if e1 - e0 != CLIMB_WINDOW:
            return None
        gain = b1 - b0 if self.mode == "max" else b0 - b1
        return gain / CLIMB_WINDOW

    def _rung_cutoff(self, at: list[float]) -> float | None:
        """For a flat run: the top quarter's cutoff of the peers' values ``at`` this
        epoch (their value there, as ASHA's rung records it)."""
        if not at or not self.policy.is_flat(self.first, self.best):
            return None
        return top_cutoff(at, 1.0 / RUNG_FACTOR, self.mode)

    def _since_best(self, epoch: int) -> int | None:
        """Epochs since the run's best value (the gain rule's ``gain_patience``)."""
        return None if self.best_epoch is None else int(epoch) - self.best_epoch

    def log_items(self) -> dict[str, float]:
        """The ``esp/*`` values of the latest decision, for the framework's logs.

        NaN before the first forecast; at and after the target epoch the forecast of
        the target is the observed value (a forecast of an observed epoch is the
        observation), never NaN.
        """
        decision = self.last_decision
        if decision is None:
            return {}
        items = decision.log_items()
        if decision.forecast is None and self.target_epoch is not None \
                and decision.epoch >= self.target_epoch and self.record.epochs:
            seen = self.record.epochs[-1].get(self.metric)
            if seen is not None:
                items.update({k: float(seen) for k in _FORECAST_LOG_KEYS})
        return items

    def override(self, stop: bool, reason: str) -> Decision:
        """Replace this epoch's decision with one taken elsewhere (rank 0 of a
        distributed run, which alone sees the incumbent): the record's last
        forecast entry and the stop state follow it. Returns the new decision.

        Raises:
            RuntimeError: no epoch has been recorded yet.
        """
        if self.last_decision is None:
            raise RuntimeError("override() before the first update()")
        decision = replace(self.last_decision, stop=bool(stop), reason=reason)
        self.last_decision = decision
        if self.record.forecasts:
            self.record.forecasts[-1] = decision.to_dict()
        self.stopped = {"epoch": decision.epoch, "reason": reason} if stop else None
        self.record.stopped = self.stopped
        return decision

    def note_restored(self, epoch: int) -> None:
        """Say in the stop reason (record and ledger) that the adapter set the weights
        of ``epoch`` back (``restore_best_weights``)."""
        if self.stopped is not None:
            self.override(True, f"{self.stopped['reason']}; restored the weights of epoch {epoch}")

    def _forecast(self, epoch: int) -> tuple[Forecast | None, str]:
        """This epoch's forecast, or None and why there is none (never raises on data)."""
        if self.target_epoch is None or epoch >= self.target_epoch:
            return None, "target epoch reached"
        try:
            fc = self.forecaster.forecast(self.record, self.target_epoch)
        except ForecastUnavailableError as exc:  # documented fallback: record, go on
            return None, str(exc)
        return self.served(fc), ""

    def served(self, forecast: Forecast) -> Forecast:
        """The model's forecast of this run as it serves: corrected by the study's
        finished runs where their correction serves (:attr:`study_context`), blended
        with the study model where one serves (:attr:`study_model`)."""
        if self.study_context is not None:
            forecast = self.study_context.apply(self.record, int(self.target_epoch), forecast)
        if self.study_model is not None:
            forecast = self.study_model.serve(self.record, int(self.target_epoch), forecast)
        return forecast

    def end(self, status: str | None = None) -> None:
        """Close the run: write its final values and stop reason to the ledger."""
        if self.finished or not self._started:
            return
        self.finished = True
        if self.ledger is not None:
            self.ledger.finish_run(self.record.run_id, final_value=self.record.final_value(),
                                   final_epoch=self.record.last_epoch, stopped=self.stopped,
                                   status=status or self._status())
            if self._ledger is not self._ledger_arg:  # opened here from a path: close it
                self._ledger.close()
                self._ledger = None

    def _status(self) -> str:
        if self.diverged:
            return "diverged"  # also under dry_run, where the run went on
        return "stopped" if self.stopped else "completed"

    # ------------------------------------------------------------------- state
    def state_dict(self, *, snapshot: bool = True) -> dict[str, Any]:
        """Versioned, JSON-ready progress: record, counters, target and stop.

        Args:
            snapshot: copy the record (True), or hand a view of it to a caller that
                serialises it at once (False: no copy). Default True.
        """
        record = self.record.to_dict()
        return {
            "version": STATE_VERSION,
            "record": copy.deepcopy(record) if snapshot else record,
            "target_epoch": self.target_epoch,
            "poor_streak": self.poor_streak,
            "streaks": [list(s) for s in self._streaks] if snapshot else list(self._streaks),
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress saved by :meth:`state_dict` (not the init arguments)."""
        version = state.get("version")
        if version != STATE_VERSION:
            raise ConfigError("state['version']", f"{STATE_VERSION}", version)
        self.record = RunRecord.from_dict(copy.deepcopy(state["record"]), validate=False)
        if self.target_epoch_arg is None:
            self.target_epoch = state.get("target_epoch")
        self.poor_streak = int(state.get("poor_streak", 0))
        # Older states lack the per-epoch counts: a trim then restarts patience at 0.
        self._streaks = [(int(e), int(n)) for e, n in state.get("streaks", [])]
        self._replay_best()
        self.stopped = state.get("stopped")
        self.record.stopped = self.stopped
        self.finished = False
        self._restored = True  # an update() before begin() resumes, not resets


def update_many(updates: Sequence[tuple[ForecastMonitor, int, Mapping[str, Any]]]
                ) -> list[Decision]:
    """:meth:`ForecastMonitor.update` of many runs: each epoch recorded, then one
    ``forecast_many`` call per forecaster for all of them (:func:`decide_many`).

    Args:
        updates: ``(monitor, 1-based epoch, metrics)``, one per monitor at most.

    Returns:
        The decisions, in the order given: those :meth:`~ForecastMonitor.update` would
        make one run at a time.
    """
    for mon, epoch, metrics in updates:
        mon.add_epoch(epoch, metrics)
    return decide_many([mon for mon, _, _ in updates])


def decide_many(monitors: Sequence[ForecastMonitor]) -> list[Decision]:
    """:meth:`ForecastMonitor.decide` of each monitor's recorded epoch, their forecasts
    made in one ``forecast_many`` call per forecaster. Where a batch's model cannot
    serve one of them (:class:`ForecastUnavailableError`), that batch is forecast one
    run at a time, as :meth:`~ForecastMonitor.update` would."""
    got: dict[int, tuple[Forecast | None, str]] = {}
    groups: dict[int, list[int]] = {}
    for i, mon in enumerate(monitors):
        if mon.wants_forecast():
            groups.setdefault(id(mon.forecaster), []).append(i)
        else:
            got[i] = mon.own_forecast()
    for idx in groups.values():
        batch = [monitors[i] for i in idx]
        try:
            fcs = batch[0].forecaster.forecast_many([m.record for m in batch],
                                                    [int(m.target_epoch) for m in batch])
        except ForecastUnavailableError:
            fcs = None
        for i, mon, fc in zip(idx, batch, fcs or [None] * len(idx), strict=True):
            got[i] = (mon.served(fc), "") if fcs is not None else mon.own_forecast()
    return [mon.decide(*got[i]) for i, mon in enumerate(monitors)]
