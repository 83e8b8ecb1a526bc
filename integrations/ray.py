"""Ray Tune adapter: :class:`ForecastScheduler`, a trial scheduler that forecasts.

Tune's own schedulers compare a trial's value *now* with the others'; this one
forecasts where it will *end*. It runs in the Tune driver: trials run anywhere in
the cluster and only their metrics reach it. Example (a search in the README):
    >>> sched = ForecastScheduler(target_epoch=50, ledger="runs.db")
    >>> tuner = tune.Tuner(train, tune_config=tune.TuneConfig(                 # doctest: +SKIP
    ...     metric="val_accuracy", mode="max", scheduler=sched, num_samples=100),
    ...     run_config=tune.RunConfig(callbacks=[sched.callback]))
"""

from __future__ import annotations

from typing import Any

from earlystop_predict._imports import require

tune = require("ray.tune", extra="ray")

from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402

from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.integrations._config import SEARCH_OPTIONS, monitor_arguments  # noqa: E402
from earlystop_predict.integrations._hparams import config_hparams, to_float  # noqa: E402
from earlystop_predict.integrations._trials import (  # noqa: E402
    BookViews,
    SearchSettings,
    TrialBook,
    epoch_metrics,
)
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402

__all__ = ["ForecastScheduler", "config_hparams"]

#: Curve columns the accModel reads, fed to it when a result holds them.
_CURVE_KEYS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
_ACT = {True: TrialScheduler.STOP, False: TrialScheduler.CONTINUE}


@monitor_arguments(only=SEARCH_OPTIONS)
class ForecastScheduler(BookViews, FIFOScheduler):
    """Stop Tune trials whose forecast final value is poor.

    Each trial's monitor is handed what the ended trials reached (completed, or stopped)
    and owns the incumbent; records in :attr:`records` and the ``ledger``. Pass
    :attr:`callback` to the run config too: results then carry the ``esp/*`` values,
    and the scheduler's state is saved with the experiment (``Tuner.restore``).

    Args:
        target_epoch: the epoch the trials train to (the forecast's target), >= 2.
        metric: the reported value to forecast; default: ``TuneConfig(metric=...)``.
            Accuracy-like ones are forecast by the LSTM, any other by LightGBM.
        mode: ``"max"`` or ``"min"``; default: ``TuneConfig(mode=...)``.
        time_attr: the result key holding the 1-based epoch (one result an epoch).
            Default ``"training_iteration"``.
        study: name of the search in records and the ledger. Default ``"tune"``.
        batch: seconds, >= 0, a trial may wait at its result for the other running
            trials' (no longer once all wait), to be forecast in one call with the same
            decisions; ``esp/*`` then reach the trials' last results and ``ResultGrid``,
            not ``progress.csv``. Default 0: each trial decided at once.

    Raises:
        ConfigError: ``target_epoch`` < 2, ``mode`` not max/min, or a bad shared
            argument (at construction, not mid-search).
    """

    def __init__(self, target_epoch: int, *, metric: str | None = None,
                 mode: str | None = None, time_attr: str = "training_iteration",
                 study: str = "tune", batch: float = 0.0, **options: Any) -> None:
        super().__init__()
        if mode not in (None, "max", "min"):
            raise ConfigError("mode", '"max" or "min"', mode)
        if not isinstance(batch, (int, float)) or not batch >= 0:
            raise ConfigError("batch", "seconds >= 0", batch)
        s = self.settings = SearchSettings(type(self), target_epoch, options)
        self.target_epoch, self.meta, self.model, self.ledger, self._options = (
            s.target_epoch, s.meta, s.model, s.ledger, s.options)
        self.use_incumbent = s.use_incumbent
        self._metric, self._mode, self.time_attr, self.study = metric, mode, time_attr, study
        self.batch, self.book = float(batch), TrialBook(self._new_monitor)
        self.callback = _LogCallback(self)

    # ------------------------------------------------------------------ Tune API
    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Feed the trial's epoch to its monitor; ``STOP`` if the policy says so (with
        ``batch``, ``NOOP``: the trial waits for :meth:`choose_trial_to_run`)."""
        got = epoch_metrics(result, self._metric, self.time_attr, _CURVE_KEYS)
        if trial.trial_id in self.book.held:  # Tune's buffered results: the held one first
            self.book.decide_held([trial.trial_id])
        mon = self.book.monitors.get(trial.trial_id)
        if got is None or (mon is not None and mon.stopped):  # not an epoch result, or
            return _ACT[got is not None]  # one buffered before the stop took effect
        hparams = config_hparams(getattr(trial, "config", {}))
        if not self.batch:
            return _ACT[self.book.update(trial.trial_id, hparams, *got).stop]
        self.book.hold(trial.trial_id, hparams, *got, token=trial)
        running = sum(1 for t in tune_controller.get_live_trials() if t.status == "RUNNING")
        if not self.book.due(self.batch, running):
            return TrialScheduler.NOOP
        return self._flush(tune_controller, answer=trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """At each step of the driver: decide the held trials once ``batch`` s passed."""
        if self.book.due(self.batch):
            self._flush(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def _flush(self, tune_controller: Any, answer: Any = None) -> str:
        """Decide every held trial in one forecast; have Tune act on each decision as on
        one returned (after a save in flight), but return ``answer``'s."""
        tc = getattr(tune_controller, "_tune_controller", tune_controller)
        for trial, decision in self.book.decide_held():
            if trial is answer:
                return _ACT[decision.stop]  # answer is held last: the others are done
            if trial.is_saving:
                tc._cached_trial_decisions[trial.trial_id] = _ACT[decision.stop]
            else:
                tc._execute_action(trial, _ACT[decision.stop])
        return TrialScheduler.NOOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: Any) -> None:
        self.book.end(trial.trial_id, None, completed=True)  # it sets the bar

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.book.end(trial.trial_id, "failed")

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.book.end(trial.trial_id, None)  # stopped by us, or failed

    def _new_monitor(self, trial_id: str, hparams: Any) -> ForecastMonitor:
        return self.settings.monitor(self._metric, self._mode, study=self.study,
                                     run_id=f"{self.study}-{trial_id}", hparams=hparams)


class _LogCallback(tune.Callback):
    """Writes each trial's latest forecast and decision (``esp/*``) into its result,
    so that Tune's loggers and result frames hold them; saves and restores the
    scheduler's state with the experiment's (``Tuner.restore``)."""

    def __init__(self, scheduler: ForecastScheduler) -> None:
        self.scheduler = scheduler

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        epoch = to_float(result.get(self.scheduler.time_attr))
        self.scheduler.book.log_into(trial.trial_id, epoch, result)

    def get_state(self) -> dict[str, Any]:
        return self.scheduler.book.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.book.load_state_dict(state)
