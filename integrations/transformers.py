"""Hugging Face ``Trainer`` adapter: :class:`HFForecastCallback`.

Each evaluation during training becomes one row for the
:class:`~earlystop_predict.policy.monitor.ForecastMonitor`, which forecasts and
decides; the callback stops the run with ``control.should_training_stop``. All
that is not translation (eval sets, search trials, ranks, logs) is in ``_hf``.

Example:
    >>> cb = HFForecastCallback(monitor="eval_accuracy", study="bert", ledger="runs.db")
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
    ...                   compute_metrics=accuracy, callbacks=[cb])      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from earlystop_predict._imports import require

transformers = require("transformers", extra="transformers")

from transformers import trainer_callback as tc  # noqa: E402

from earlystop_predict.integrations import _hf  # noqa: E402
from earlystop_predict.integrations._checkpoint import CheckpointProgress  # noqa: E402
from earlystop_predict.integrations._config import MonitorViews, monitor_arguments  # noqa: E402

__all__ = ["HFForecastCallback"]


@monitor_arguments()
class HFForecastCallback(MonitorViews, CheckpointProgress, tc.TrainerCallback, tc.ExportableState):
    """Stops a Hugging Face ``Trainer`` run whose forecast falls short.

    Each evaluation is one row: its epoch is ``round(state.epoch)`` with
    ``eval_strategy="epoch"`` (``target_epoch`` defaults to the planned epochs); with
    ``"steps"`` evaluations are numbered 1, 2, ... (``min_epochs`` counts them;
    ``target_epoch`` defaults to ``max_steps // eval_steps``). A row holds the
    evaluation's metrics and the latest training ``loss``; hyperparameters come from
    ``args``, the model and the data. Decisions go to ``state.log_history`` (``esp/*``)
    and, as one ``on_log`` event, to the reporting integrations. Progress is saved in
    every checkpoint and read back on resume. Several processes: the world process zero
    alone writes the ledger; rank 0's decision is every rank's.

    In ``hyperparameter_search`` each trial is its own run (``<run_id or search
    name>-trial-<n>``, the trial's params as hyperparameters, in ``study`` or else the
    search's), held against what earlier trials reached. An Optuna pruner judges each
    evaluation after us: a trial we stop is a completed Optuna trial with the value
    reached; one it prunes is recorded as stopped (``"pruned by the search"``).
    ``pruner=optuna.pruners.NopPruner()`` leaves stopping to the forecast alone.

    Args:
        monitor: metric to forecast, as ``compute_metrics`` names it (``"accuracy"``
            means ``"eval_accuracy"``; with several eval sets name the prefixed key,
            ``"eval_valid_accuracy"``). Default ``"eval_accuracy"``.
        restore_best_weights: end a run this callback stopped with the best
            checkpoint's weights, which the Trainer loads: needs
            ``TrainingArguments(load_best_model_at_end=True)``, whose
            ``metric_for_best_model`` should be ``monitor`` (a warning says when it is
            not). Default False.

    Raises:
        ConfigError: an argument is out of range, or ``restore_best_weights`` without
            ``load_best_model_at_end``.
        MetricNotFoundError: an evaluation lacks ``monitor`` (lists the keys it has).
    """

    def __init__(self, monitor: str = "eval_accuracy", mode: str | None = None, *,
                 restore_best_weights: bool = False, _restore: bool = False,
                 **options: Any) -> None:
        if _restore and getattr(self, "_options", None) is not None:
            return  # the live instance, handed back by __new__: keep it as it is
        self.metric_key = _hf.hf_key(monitor)
        self.restore_best_weights = bool(restore_best_weights)
        self._options = {"mode": mode, **options}
        #: The ForecastMonitor, rebuilt at each ``train()`` (rank 0 alone with the ledger).
        self.monitor = _hf.trial_monitor(self.metric_key, self._options, None,
                                         rank_zero=False, reached={})  # checks the arguments
        self.restored_state: dict[str, Any] | None = None
        self._evals = _hf.EvalMatcher(self.metric_key, self.monitor.metric)
        self._training = self._started = self._warned = False
        self._n_evals, self._trial, self._reached = 0, None, {}  # reached: by study
        self._register()

    def on_train_begin(self, args: Any, state: tc.TrainerState, control: tc.TrainerControl,
                       model: Any = None, train_dataloader: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        """Start (or resume) the run record, a search trial's own; read hyperparameters."""
        self._trial = _hf.search_trial(_hf.on_stack(tc.CallbackHandler)[1].get("trial"),
                                       state.trial_params, state.trial_name)
        mon = self.monitor = _hf.trial_monitor(self.metric_key, self._options, self._trial,
                                               rank_zero=state.is_world_process_zero,
                                               reached=self._reached)
        self._warned = _hf.hf_check_best_model(args, self.metric_key, mon.metric,
                                               self.restore_best_weights, self._warned)
        progress = self.resumed_progress(state.stateful_callbacks, state.global_step, mon.metric)
        self._n_evals = _hf.begin(mon, args, state, progress, model=model,
                                  loader=train_dataloader, optimizer=optimizer)
        self._evals.reset()
        self._training = self._started = True

    def on_step_begin(self, args: Any, state: tc.TrainerState, control: tc.TrainerControl,
                      **kwargs: Any) -> None:
        """Fail if the last step's evaluations all lacked the monitored metric."""
        self._evals.raise_unmatched()

    on_epoch_begin = on_step_begin

    def on_evaluate(self, args: Any, state: tc.TrainerState, control: tc.TrainerControl,
                    metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Record the evaluation, forecast, decide; stop all ranks alike; log."""
        metrics = dict(metrics or {})
        if not self._training or state.global_step <= 0 or \
                (present := self._evals.match(metrics, state.global_step)) is None:
            return  # before training, or another eval set's evaluation
        mon, index = self.monitor, _hf.eval_index(args, state.epoch, self._n_evals)
        stop, decision = _hf.decide(
            mon, index, lambda: _hf.hf_eval_row(metrics, state.log_history, self._evals.is_eval),
            None if present else self._evals.missing(metrics), int(args.world_size or 1))
        self._n_evals += 1
        _hf.report(tc.CallbackHandler, args, state, control, mon, index, decision)
        control.should_training_stop = control.should_training_stop or stop

    def on_train_end(self, args: Any, state: tc.TrainerState, control: tc.TrainerControl,
                     **kwargs: Any) -> None:
        """Close the run in the ledger (completed, stopped, or pruned by the search)."""
        if not self._training:
            return
        self._training, mon = False, self.monitor
        best = _hf.index_at_step(state.log_history, state.best_global_step) \
            if self.restore_best_weights else None
        _hf.finish(mon, restored=best,
                   pruned=_hf.pruned_by_search(state.global_step, state.max_steps,
                                               control.should_training_stop),
                   failed=self._evals.unmatched is not None,
                   ledger_option=self._options.get("ledger"),
                   reached=self._reached if self._trial is not None else None)
        self._evals.raise_unmatched()

    def _init_args(self) -> dict[str, Any]:
        return {"monitor": self.metric_key, **self._options,
                "restore_best_weights": self.restore_best_weights}

    def _progress_now(self) -> dict[str, Any] | None:
        return {"evals": self._n_evals, "monitor": self.monitor.state_dict()} \
            if self._started else None

    def _same_run(self, kwargs: Mapping[str, Any]) -> bool:
        return self.monitor.monitor == _hf.hf_key(kwargs.get("monitor", "eval_accuracy"))
