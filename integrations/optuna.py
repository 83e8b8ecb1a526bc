"""Optuna adapter: :class:`ForecastPruner`, a pruner that forecasts.

Optuna's own pruners compare a trial's value *now* with other trials' values at
the same step (median, percentile, successive halving). This one forecasts
where the trial will *end* (the accModel, from its reported values and its
parameters) and prunes it when that forecast is unlikely to beat the best
finished trial, or to reach a ``threshold``, with the same
:class:`~earlystop_predict.policy.stop.StopPolicy` as the training callbacks. Every
forecast and decision is kept in :attr:`ForecastPruner.records` and, with a ``ledger``
(a file, ``sqlite:///...`` or ``postgresql://...``: one for all workers), in a database.
Workers on one storage (``RDBStorage``) share one bar: it is read from the storage at each
decision, so each worker prunes against every worker's finished trials.
Passing the pruner as a callback too closes each trial's ledger row when the trial ends.

Example:
    >>> import optuna
    >>> from earlystop_predict.integrations.optuna import ForecastPruner
    >>> pruner = ForecastPruner(target_epoch=50, ledger="runs.db")
    >>> study = optuna.create_study(direction="maximize", pruner=pruner)
    >>> def objective(trial):                              # doctest: +SKIP
    ...     for epoch in range(50):
    ...         acc = train_one_epoch(...)
    ...         trial.report(acc, epoch)                   # step 0 is epoch 1
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return acc
    >>> study.optimize(objective, n_trials=100, callbacks=[pruner])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from earlystop_predict._imports import require

optuna = require("optuna", extra="optuna")

from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.integrations._config import (  # noqa: E402
    SEARCH_OPTIONS,
    check_options,
    check_target_epoch,
    monitor_arguments,
)
from earlystop_predict.integrations._study import FinishedTrials  # noqa: E402
from earlystop_predict.policy.monitor import ForecastMonitor, _resolve_model  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

_STATES = optuna.trial.TrialState


@monitor_arguments(only=SEARCH_OPTIONS)
class ForecastPruner(optuna.pruners.BasePruner):
    """Prune trials whose forecast final value is poor.

    At each decision the trial's monitor is handed what the study's finished trials
    reached, read from the storage (every worker's): a completed trial's value, a pruned
    one's best reported value (``ForecastMonitor.observe_study``). The monitor owns the
    incumbent; ``use_incumbent=False`` switches that rule off.

    Args:
        target_epoch: the epoch the trials train to (the forecast's target), >= 2.
        metric: name of the reported value in the records. Default ``"val_accuracy"``
            (accuracy-like: forecast by the LSTM; any other by LightGBM).
        step_offset: epoch = reported step + this, >= 0. Default 1
            (``trial.report(v, epoch)`` with a 0-based epoch).

    Raises:
        ConfigError: ``target_epoch`` < 2, ``step_offset`` < 0 or a bad shared argument.
    """

    def __init__(self, target_epoch: int, *, metric: str = "val_accuracy",
                 step_offset: int = 1, **options: Any) -> None:
        self.target_epoch = check_target_epoch(target_epoch)
        if not isinstance(step_offset, int) or step_offset < 0:
            raise ConfigError("step_offset", "an integer >= 0", step_offset)
        options = check_options(type(self), options)
        self.step_offset = step_offset
        self.metric = metric
        self.meta = dict(options.pop("meta", None) or {})
        self.model = _resolve_model(options.pop("model", "auto"))
        self.ledger = options.pop("ledger", None)
        self._options = options
        ForecastMonitor(metric, target_epoch=target_epoch, model=self.model,
                        ledger=self.ledger, **options)  # checks them all; opens nothing
        self.use_incumbent = options.get("use_incumbent", True)
        self._monitors: dict[tuple[str, int], ForecastMonitor] = {}
        self._fed: dict[tuple[str, int], int] = {}
        self._finished = FinishedTrials(metric, step_offset)

    # ----------------------------------------------------------------- optuna API
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Feed the trial's new reported values to its monitor; True to prune."""
        key = (study.study_name, trial.number)
        mode = "min" if study.direction == optuna.study.StudyDirection.MINIMIZE else "max"
        values = self._study_values(study, mode)
        mon = self._monitors.get(key)
        if mon is None:
            mon = self._monitors[key] = self._monitor(study.study_name, trial.number,
                                                      trial.params, mode)
        mon.observe_study(values)
        self._finished.feed_curves(mon, study.study_name)
        last = self._fed.get(key, -1)
        for step in sorted(s for s in trial.intermediate_values if s > last):
            epoch = step + self.step_offset
            if epoch < 1:
                raise ConfigError("reported step", f">= {1 - self.step_offset} "
                                  f"(step_offset {self.step_offset})", step)
            mon.update(epoch, {self.metric: trial.intermediate_values[step]})
            self._fed[key] = step
        return mon.last_decision is not None and mon.last_decision.stop

    def _study_values(self, study: optuna.Study, mode: str) -> list[float | None]:
        """What the study's finished trials reached, every worker's (the storage is read
        now); the completed ones' curves serve the study model."""
        for t in study.get_trials(deepcopy=False, states=(_STATES.COMPLETE, _STATES.PRUNED)):
            self._finished.add(study.study_name, t.number, completed=t.state == _STATES.COMPLETE,
                               value=t.value, reported=t.intermediate_values, mode=mode)
        return self._finished.values(study.study_name)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """As a ``study.optimize`` callback: close the trial's run (ledger row)."""
        mon = self._monitors.get((study.study_name, trial.number))
        if mon is not None:
            status = {_STATES.COMPLETE: None, _STATES.PRUNED: "stopped",
                      _STATES.FAIL: "failed"}.get(trial.state)
            mon.end(status if not mon.diverged else "diverged")

    # ----------------------------------------------------------------- records
    @property
    def records(self) -> dict[int, RunRecord]:
        """Each trial's record (epochs, forecasts, decisions), by trial number."""
        return {number: mon.record for (_, number), mon in self._monitors.items()}

    def _monitor(self, study: str, number: int, params: Mapping[str, Any],
                 mode: str) -> ForecastMonitor:
        mon = ForecastMonitor(self.metric, mode, target_epoch=self.target_epoch,
                              study=study, model=self.model, ledger=self.ledger,
                              run_id=f"{study}-trial-{number}", hparams=dict(params),
                              meta={**self.meta, "max_epochs": self.target_epoch},
                              task=study, **self._options)
        mon.begin()
        if self.ledger is None:  # the study model learns from the storage's trials
            mon.observe_study_runs(self._finished.runs(study))
        return mon
