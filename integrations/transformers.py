"""Hugging Face ``Trainer`` adapter: :class:`HFForecastCallback`.

Each evaluation during training becomes one row for the
:class:`~earlystop_predict.policy.monitor.ForecastMonitor`, which forecasts and
decides; the callback stops the run with ``control.should_training_stop``.

Example:
    >>> cb = HFForecastCallback(monitor="eval_accuracy", study="bert", ledger="runs.db")
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
    ...                   compute_metrics=accuracy, callbacks=[cb])      # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from earlystop_predict._imports import require

transformers = require("transformers", extra="transformers")

from transformers.trainer_callback import (  # noqa: E402
    CallbackHandler,
    ExportableState,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)

from earlystop_predict.errors import ConfigError, MetricNotFoundError  # noqa: E402
from earlystop_predict.integrations._checkpoint import CheckpointProgress  # noqa: E402
from earlystop_predict.integrations._config import MonitorViews, monitor_arguments  # noqa: E402
from earlystop_predict.integrations._distributed import rank_zero_decides, torch_broadcast  # noqa: E402
from earlystop_predict.integrations._hparams import (  # noqa: E402
    enum_value,
    hf_check_best_model,
    hf_eval_prefix,
    hf_eval_row,
    hf_hparams,
    hf_key,
    hf_planned,
)
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402
from earlystop_predict.policy.stop import Decision  # noqa: E402
from earlystop_predict.records.features import canonical_metrics  # noqa: E402

__all__ = ["HFForecastCallback"]

def _calling_handler() -> CallbackHandler | None:
    """The :class:`CallbackHandler` calling this callback, found on the stack: the Trainer
    logs an evaluation *before* ``on_evaluate``, so our values reach the reporting
    integrations (TensorBoard, W&B...) as one more ``on_log`` event through it."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None or isinstance(frame.f_locals.get("self"), CallbackHandler):
            break
        frame = frame.f_back
    return frame.f_locals["self"] if frame is not None else None


@monitor_arguments()
class HFForecastCallback(MonitorViews, CheckpointProgress, TrainerCallback, ExportableState):
    """Stops a Hugging Face ``Trainer`` run whose forecast falls short.

    Each evaluation during training is one row: with ``eval_strategy="epoch"`` its
    epoch is ``round(state.epoch)`` and ``target_epoch`` defaults to the planned epochs;
    with ``"steps"`` evaluations are numbered 1, 2, ... (``min_epochs`` counts them)
    and ``target_epoch`` defaults to ``max_steps // eval_steps``. A row holds the
    evaluation's metrics and the latest training ``loss``; hyperparameters are read
    from ``args``, the model and the data. Each decision is appended to
    ``state.log_history`` (``esp/*``) and sent to the reporting integrations as one
    ``on_log`` event. Progress is saved in every checkpoint and read back on resume.
    Several processes: the world process zero alone writes the ledger, and rank 0's
    decision is the one every rank takes.

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
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError("monitor", "a non-empty metric name", monitor)
        self.metric_key = hf_key(monitor)
        self.restore_best_weights = bool(restore_best_weights)
        self._options = {"mode": mode, **options}
        #: The ForecastMonitor, rebuilt at each ``train()`` (rank 0 alone with the ledger).
        self.monitor = self._make_monitor(ledger=None)  # checks every argument
        self.restored_state: dict[str, Any] | None = None
        self._training = self._started = self._steps_mode = self._warned = False
        self._n_evals = 0
        self._matched_step: int | None = None
        self._unmatched: dict[str, Any] | None = None
        self._register()

    def _make_monitor(self, *, ledger: Any) -> ForecastMonitor:
        return ForecastMonitor(self.metric_key, **{**self._options, "ledger": ledger})

    def _progress(self, state: TrainerState) -> dict[str, Any] | None:
        """The progress saved in the checkpoint resumed from (the Trainer's own state)."""
        progress, self.restored_state = self.restored_state, None
        if progress is None and state.global_step > 0:
            return self.saved_progress(state.stateful_callbacks, type(self).__name__,
                                       self.monitor.metric)
        return self.checked(progress, self.monitor.metric)

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args: Any, state: TrainerState, control: TrainerControl,
                       model: Any = None, train_dataloader: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        """Start (or resume) the run record; read hyperparameters."""
        self._steps_mode = str(enum_value(getattr(args, "eval_strategy", ""))) == "steps"
        planned = hf_planned(args, state, self._steps_mode)
        ledger = self._options.get("ledger") if state.is_world_process_zero else None
        mon = self.monitor = self._make_monitor(ledger=ledger)
        self._warned = hf_check_best_model(args, self.metric_key, self.monitor.metric,
                                           self.restore_best_weights, self._warned)
        hp, meta = hf_hparams(args, int(state.max_steps or 0), model, train_dataloader,
                              optimizer, self.metric_key)
        progress = self._progress(state)
        if progress is not None:
            mon.load_state_dict(progress["monitor"])
        self._n_evals = int(progress.get("evals", 0)) if progress else 0
        mon.begin(hp, {**meta, **({"max_epochs": planned} if planned else {})}, target_epoch=planned,
                  resume=progress is not None)
        self._matched_step = self._unmatched = None
        self._training = self._started = True

    def on_step_begin(self, args: Any, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        """Fail if the last step's evaluations all lacked the monitored metric."""
        self._raise_unmatched()

    on_epoch_begin = on_step_begin

    def on_evaluate(self, args: Any, state: TrainerState, control: TrainerControl,
                    metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Record the evaluation, forecast, decide; stop all ranks alike."""
        if not self._training or state.global_step <= 0:
            return
        metrics = dict(metrics or {})
        mon = self.monitor
        present = self.metric_key in metrics or mon.metric in canonical_metrics(metrics)
        if not present and hf_eval_prefix(metrics) not in (None, "eval"):
            # Another eval data set's metrics: fail later if no evaluation of this step had ours.
            if self._matched_step != state.global_step:
                self._unmatched = {**(self._unmatched or {}), **metrics}
            return
        self._matched_step, self._unmatched = state.global_step, None
        index = self._n_evals + 1 if self._steps_mode else int(round(state.epoch or 0))

        def decide() -> tuple[bool, str]:
            if not present:
                raise MetricNotFoundError(self.metric_key, [k for k in metrics if k != "epoch"])
            decision = mon.update(index, hf_eval_row(metrics, state.log_history, self._is_eval))
            return decision.stop, decision.reason

        is_zero, broadcast = torch_broadcast(int(getattr(args, "world_size", 1) or 1))
        stop, reason = rank_zero_decides(decide, is_zero=is_zero, broadcast=broadcast,
                                         every_rank=True)
        decision = mon.last_decision
        if decision is not None and stop != decision.stop:  # rank 0 alone sees the incumbent
            decision = mon.override(stop, f"rank 0: {reason}")
        self._n_evals += 1
        self._log(decision, index, args, state, control)
        control.should_training_stop = control.should_training_stop or stop

    def on_train_end(self, args: Any, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Close the run in the ledger (completed or stopped)."""
        if not self._training:
            return
        self._training = False
        best = {r.get("step"): r.get("esp/index") for r in state.log_history
                if "esp/index" in r}.get(state.best_global_step)
        if self.restore_best_weights and best is not None:  # the Trainer loaded it already
            self.monitor.note_restored(int(best))
        try:
            self.monitor.end("failed" if self._unmatched is not None else None)
            self._raise_unmatched()
        finally:
            # A ledger opened from a path is ours to close; a Ledger object is the user's.
            if isinstance(self._options.get("ledger"), (str, os.PathLike)) \
                    and self.monitor.ledger is not None:
                self.monitor.ledger.close()

    # ------------------------------------------------------------------ helpers
    def _raise_unmatched(self) -> None:
        if self._unmatched is not None:
            keys, self._unmatched = self._unmatched, None
            raise MetricNotFoundError(self.metric_key, [k for k in keys if k != "epoch"])

    def _is_eval(self, entry: Mapping[str, Any]) -> bool:
        return self.metric_key in entry or (hf_eval_prefix(entry) is not None and
                                            self.monitor.metric in canonical_metrics(entry))

    def _log(self, decision: Decision | None, index: int, args: Any, state: TrainerState,
             control: TrainerControl) -> None:
        items = self.monitor.log_items()
        state.log_history.append({
            "epoch": state.epoch, "step": state.global_step, **items, "esp/index": index,
            "esp/run_id": self.record.run_id, "esp/poor_streak": self.monitor.poor_streak,
            "esp/decision": decision.to_dict() if decision is not None else None})
        handler = _calling_handler()
        if handler is not None:
            handler.on_log(args, state, control, {**items, "epoch": state.epoch})

    # ------------------------------------------------------------------ state
    def _init_args(self) -> dict[str, Any]:
        return {"monitor": self.metric_key, **self._options,
                "restore_best_weights": self.restore_best_weights}

    def _progress_now(self) -> dict[str, Any] | None:
        if not self._started:
            return None
        return {"evals": self._n_evals, "monitor": self.monitor.state_dict()}

    def _same_run(self, kwargs: Mapping[str, Any]) -> bool:
        return self.monitor.monitor == hf_key(kwargs.get("monitor", ""))
