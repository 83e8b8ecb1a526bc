"""Keras Tuner adapter: a search whose trials are the runs of one forecast study.

Keras Tuner fits a deep copy of each callback per trial and execution, and marks a trial
``COMPLETED`` when its fit returns: a callback never learns its trial, nor can it tell the
oracle it stopped one. So the tuner does: :class:`ForecastTuner` (a mixin, in
:class:`ForecastRandomSearch`, :class:`ForecastBayesianOptimization`, :class:`ForecastHyperband`)
hands each ``KerasForecastCallback`` copy its trial and ends the trials it stopped
``STOPPED``. Every rule lives in the monitor.

Example:
    >>> from earlystop_predict.integrations.keras_tuner import ForecastRandomSearch
    >>> tuner = ForecastRandomSearch(build_model, objective="val_accuracy", max_trials=20,
    ...                              project_name="mlp")                 # doctest: +SKIP
    >>> cb = KerasForecastCallback("val_accuracy", ledger="runs.db")     # doctest: +SKIP
    >>> tuner.search(x, y, validation_split=0.2, epochs=30, callbacks=[cb])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from earlystop_predict._imports import require

kt = require("keras_tuner", extra="keras_tuner")

from earlystop_predict.integrations import _tuner_trials as trials_  # noqa: E402
from earlystop_predict.integrations._state import StateFile  # noqa: E402
from earlystop_predict.integrations.keras import KerasForecastCallback  # noqa: E402
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

__all__ = ["ForecastBayesianOptimization", "ForecastHyperband", "ForecastRandomSearch",
           "ForecastTuner"]


def _forecast_callbacks(callbacks: Iterable[Any] | None) -> list[KerasForecastCallback]:
    return [cb for cb in callbacks or () if isinstance(cb, KerasForecastCallback)]


class ForecastTuner:
    """Mixin for a Keras Tuner ``Tuner``: each trial is a run of one study; a stopped trial
    ends ``STOPPED``. Put it first: ``class MyTuner(ForecastTuner, keras_tuner.Tuner)``.

    Each copy of a ``KerasForecastCallback`` gets, before its fit: the study (its
    ``study``, else the tuner's ``project_name``); the run id ``{study}-trial-{trial_id}``
    (its ``run_id`` as prefix if given; ``-1``, ``-2``... for a trial's further executions;
    its ``state_path`` gets the run id before the suffix);
    the trial's values as ``hparams`` (its own win; no ``tuner/*`` key); ``meta["trial_id"]``
    (``meta["parent_trial"]`` for a trial Hyperband promoted: its run starts at the parent's
    last epoch + 1); the best value each ended (completed or stopped) trial reached, from
    the oracle, via :meth:`~earlystop_predict.policy.monitor.ForecastMonitor.observe_study`;
    and, for an oracle with ``max_epochs`` (Hyperband), that as default ``target_epoch``.

    A trial a callback stopped ends ``STOPPED``, ``score`` the best objective value it
    reached, ``message`` the stop. The oracle's ``get_best_trials`` (so
    ``get_best_hyperparameters``, ``get_best_models``) ranks it with the completed trials
    by that score (:mod:`._tuner_trials`); Hyperband never promotes it (a round promotes
    completed trials only, so one fewer); Bayesian optimization fits what it reached. Needs
    ``Tuner.run_trial`` (an own ``run_trial`` calls ``super()``) and one process.

    Attributes:
        forecast_records: ``{trial_id: [RunRecord, ...]}`` of the trials run in this process.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forecast_records: dict[str, list[RunRecord]] = {}
        cls = type(self.oracle)  # the oracle's class, with the STOPPED cases (methods only)
        bayes = [_BayesianStopped] if issubclass(cls, kt.oracles.BayesianOptimizationOracle) else []
        if not issubclass(cls, _StoppedTrials):
            self.oracle.__class__ = type(cls.__name__, (*bayes, _StoppedTrials, cls), {})

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> Any:
        """Keras Tuner's ``search``; the accModel is loaded once, the trials share it."""
        for cb in _forecast_callbacks(fit_kwargs.get("callbacks")):
            cb.monitor.forecaster  # noqa: B018  (loads it: the copies share what is loaded)
        return super().search(*fit_args, **fit_kwargs)

    def _build_and_fit_model(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        """Keras Tuner's per-execution fit (``kwargs["callbacks"]`` are this execution's
        copies): each forecast copy joins the trial before it, is kept after it."""
        runs = self.forecast_records.setdefault(trial.trial_id, [])
        copies = _forecast_callbacks(kwargs.get("callbacks"))
        for n, cb in enumerate(copies, start=len(runs)):
            self._join(cb.monitor, trial, n)
            if cb.state_path is not None:  # one state file per run, not one for all trials
                root, ext = os.path.splitext(cb.state_path)
                cb.state_path = f"{root}.{cb.monitor.run_id_arg}{ext}"
                cb._state = StateFile(cb.state_path)
        try:
            return super()._build_and_fit_model(trial, *args, **kwargs)
        finally:
            runs.extend(cb.monitor.record for cb in copies)

    def _join(self, mon: ForecastMonitor, trial: Any, n: int) -> None:
        values = trial.hyperparameters.values
        mon.study = mon.study or self.project_name
        mon.run_id_arg = f"{mon.run_id_arg or mon.study}-trial-{trial.trial_id}" + (
            f"-{n}" if n else "")
        mon.user_hparams = {**{k: v for k, v in values.items() if not k.startswith("tuner/")},
                            **mon.user_hparams}
        parent = {"parent_trial": values["tuner/trial_id"]} if "tuner/trial_id" in values else {}
        mon.user_meta = {"trial_id": trial.trial_id, **parent, **mon.user_meta}
        budget = getattr(self.oracle, "max_epochs", None)
        if mon.target_epoch_arg is None and budget is not None:
            mon.target_epoch_arg = mon._check_target(int(budget))
        mon.observe_study(trials_.reached(t, mon.metric, mon.mode)
                          for t in self.oracle.trials.values()
                          if t.status in trials_.ENDED and t.trial_id != trial.trial_id)

    def on_trial_begin(self, trial: Any) -> None:
        """Keras Tuner's hook; a retried trial starts its records afresh."""
        self.forecast_records.pop(trial.trial_id, None)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial: Any) -> None:
        """Keras Tuner's hook: a trial a callback stopped ends ``STOPPED``, scored."""
        stops = [r.stopped for r in self.forecast_records.get(trial.trial_id, []) if r.stopped]
        if stops and trial.status == trials_.COMPLETED:
            trial.status, trial.message = trials_.STOPPED, trials_.stop_message(stops[0])
            self.oracle.score_trial(self.oracle.get_trial(trial.trial_id))
        super().on_trial_end(trial)


class _StoppedTrials:
    """Mixed into the tuner's oracle class: the best trials count stopped ones too."""

    def get_best_trials(self, num_trials: int = 1) -> list[Any]:
        """Completed and stopped trials, best score first; then the others."""
        return trials_.ranked(self.trials.values(), self.objective.direction)[:num_trials]


class _BayesianStopped:
    """The Gaussian process fits what each stopped trial reached (Keras Tuner 1.4's gave it
    the score of the trial before it, or raised ``UnboundLocalError``)."""

    def _vectorize_trials(self) -> Any:
        with trials_.stopped_as_completed(self.trials.values()):
            return super()._vectorize_trials()


class ForecastRandomSearch(ForecastTuner, kt.RandomSearch):
    """``keras_tuner.RandomSearch`` with :class:`ForecastTuner`; the same arguments."""


class ForecastHyperband(ForecastTuner, kt.Hyperband):
    """``keras_tuner.Hyperband`` with :class:`ForecastTuner`; forecasts ``max_epochs``."""


class ForecastBayesianOptimization(ForecastTuner, kt.BayesianOptimization):
    """``keras_tuner.BayesianOptimization`` with :class:`ForecastTuner`; the same arguments."""
