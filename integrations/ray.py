"""Ray Tune adapter: :class:`ForecastScheduler`, a trial scheduler that forecasts.

Where Tune's own schedulers compare a trial's value *now* with the others' (median
stopping, ASHA's rungs), this one forecasts where the trial will *end* and stops it
by the same :class:`~earlystop_predict.policy.monitor.ForecastMonitor` rules as the
training callbacks. It runs in the Tune driver (trials anywhere in the cluster; only
their metrics reach it); records are in :attr:`ForecastScheduler.records` and the
``ledger`` (the driver's disk). Pass :attr:`ForecastScheduler.callback` to the run
config too, and each result carries the ``esp/*`` values (``progress.csv``,
TensorBoard, ``ResultGrid`` frames).

Example (a whole search in the README):
    >>> sched = ForecastScheduler(target_epoch=50, ledger="runs.db")
    >>> tuner = tune.Tuner(train, tune_config=tune.TuneConfig(                 # doctest: +SKIP
    ...     metric="val_accuracy", mode="max", scheduler=sched, num_samples=100),
    ...     run_config=tune.RunConfig(callbacks=[sched.callback]))

The epoch is read from ``time_attr`` (Tune's own 1-based ``training_iteration``
unless told otherwise). Report one result per epoch.
"""

from __future__ import annotations

from typing import Any

from earlystop_predict._imports import require

tune = require("ray.tune", extra="ray")

from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402

from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.integrations._config import (  # noqa: E402
    SEARCH_OPTIONS,
    check_options,
    check_target_epoch,
    monitor_arguments,
)
from earlystop_predict.integrations._hparams import (  # noqa: E402
    config_hparams,
    scalar_metrics,
    to_float,
)
from earlystop_predict.policy.monitor import ForecastMonitor, _resolve_model, best_of  # noqa: E402
from earlystop_predict.records.features import canonical_metric  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

__all__ = ["ForecastScheduler", "config_hparams"]

#: Curve columns the accModel reads, fed to it when a result holds them.
_CURVE_KEYS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")


@monitor_arguments(only=SEARCH_OPTIONS)
class ForecastScheduler(FIFOScheduler):
    """Stop Tune trials whose forecast final value is poor.

    The best value each ended trial reached (completed, or stopped: censored evidence)
    is handed to each trial's monitor
    (:meth:`~earlystop_predict.policy.monitor.ForecastMonitor.observe_study`), which
    owns the incumbent: ``use_incumbent=False`` switches that rule off, ledger or not.

    Args:
        target_epoch: the epoch the trials train to (the forecast's target), >= 2.
        metric: the reported value to forecast; default: ``TuneConfig(metric=...)``.
            Accuracy-like names (``val_accuracy``, ``val_acc``, ``eval_accuracy``...)
            are forecast by the LSTM; any other by LightGBM.
        mode: ``"max"`` or ``"min"``; default: ``TuneConfig(mode=...)``.
        time_attr: the result key holding the 1-based epoch. Default
            ``"training_iteration"``.
        study: name of the search in records and the ledger. Default ``"tune"``.

    Raises:
        ConfigError: ``target_epoch`` < 2, ``mode`` not max/min, or a bad shared
            argument (at construction, not mid-search).
    """

    def __init__(self, target_epoch: int, *, metric: str | None = None,
                 mode: str | None = None, time_attr: str = "training_iteration",
                 study: str = "tune", **options: Any) -> None:
        super().__init__()
        self.target_epoch = check_target_epoch(target_epoch)
        if mode not in (None, "max", "min"):
            raise ConfigError("mode", '"max" or "min"', mode)
        options = check_options(type(self), options)
        self._metric, self._mode = metric, mode
        self.time_attr = time_attr
        self.meta = dict(options.pop("meta", None) or {})
        self.model = _resolve_model(options.pop("model", "auto"))
        self.ledger = options.pop("ledger", None)
        self.study = study
        self._options = options
        ForecastMonitor(target_epoch=target_epoch, model=self.model, **options)  # checks
        self.use_incumbent = options.get("use_incumbent", True)
        self._monitors: dict[str, ForecastMonitor] = {}
        self._finals: dict[str, float] = {}  # what each ended trial reached
        self.callback = _LogCallback(self)

    # ------------------------------------------------------------------ Tune API
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``TuneConfig`` where not given here."""
        if (self._metric and metric and metric != self._metric) or \
                (self._mode and mode and mode != self._mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._metric or self._mode not in ("max", "min"):
            raise ConfigError("metric and mode", "given to ForecastScheduler or to "
                              "tune.TuneConfig(metric=..., mode=...)",
                              (self._metric, self._mode))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Feed the trial's epoch to its monitor; ``STOP`` if the policy says so."""
        value = to_float(result.get(self._metric))
        epoch = to_float(result.get(self.time_attr))
        if self._metric not in result or epoch is None:
            return TrialScheduler.CONTINUE  # not an epoch result (as Tune's own rules)
        mon = self._monitor(trial)
        if mon.stopped:  # a result buffered before the stop took effect
            return TrialScheduler.STOP
        mon.observe_study(self._finals.values())
        metrics = {k: v for k, v in scalar_metrics(result).items()
                   if canonical_metric(k) in _CURVE_KEYS}
        metrics[self._metric] = value if value is not None else float("nan")
        decision = mon.update(int(epoch), metrics)
        return TrialScheduler.STOP if decision.stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any,
                          result: dict[str, Any]) -> None:
        """Close the trial's run; a trial that trained to the target sets the bar."""
        mon = self._monitors.get(trial.trial_id)
        if mon is None:
            return
        self._reached(trial.trial_id, mon)
        mon.end()

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        """Close the trial's run as failed."""
        self._end(trial, "failed")

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        """Close the trial's run (stopped by us, or failed)."""
        self._end(trial, None)

    def _end(self, trial: Any, status: str | None) -> None:
        mon = self._monitors.get(trial.trial_id)
        if mon is not None:
            if mon.stopped and not mon.diverged:
                self._reached(trial.trial_id, mon)
            mon.end(status or ("stopped" if mon.stopped else "failed"))

    def _reached(self, trial_id: str, mon: ForecastMonitor) -> None:
        """A trial that ended (completed, or stopped: censored evidence) sets the bar
        with the best value it reached, as ``replay`` counts it."""
        best = best_of([v for v in mon.record.series(mon.metric).tolist() if v == v], mon.mode)
        if best is not None:
            self._finals[trial_id] = best

    def debug_string(self) -> str:
        stopped = sum(1 for m in self._monitors.values() if m.stopped)
        return (f"Using ForecastScheduler (earlystop_predict): {stopped} of "
                f"{len(self._monitors)} trials stopped by forecast; target epoch "
                f"{self.target_epoch}, best value reached {self.incumbent}.")

    # ------------------------------------------------------------------ records
    @property
    def incumbent(self) -> float | None:
        """The best value the ended trials reached (completed or stopped)."""
        return best_of(self._finals.values(), "min" if self._mode == "min" else "max")

    @property
    def records(self) -> dict[str, RunRecord]:
        """Each trial's record (epochs, forecasts, decisions), by trial id."""
        return {tid: mon.record for tid, mon in self._monitors.items()}

    def _monitor(self, trial: Any) -> ForecastMonitor:
        mon = self._monitors.get(trial.trial_id)
        if mon is None:
            mon = ForecastMonitor(self._metric, self._mode, target_epoch=self.target_epoch,
                                  study=self.study, model=self.model, ledger=self.ledger,
                                  run_id=f"{self.study}-{trial.trial_id}",
                                  hparams=config_hparams(getattr(trial, "config", {})),
                                  meta={**self.meta, "max_epochs": self.target_epoch},
                                  task=self.study, **self._options)
            mon.begin()
            self._monitors[trial.trial_id] = mon
        return mon


class _LogCallback(tune.Callback):
    """Writes each trial's latest forecast and decision (``esp/*``) into its result,
    so that Tune's loggers and result frames hold them."""

    def __init__(self, scheduler: ForecastScheduler) -> None:
        self.scheduler = scheduler

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        mon = self.scheduler._monitors.get(trial.trial_id)
        decision = None if mon is None else mon.last_decision
        if decision is not None and to_float(result.get(self.scheduler.time_attr)) == \
                decision.epoch:
            result.update(mon.log_items())
