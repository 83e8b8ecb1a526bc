"""Hugging Face ``Trainer`` adapter: :class:`HFForecastCallback`.

A thin :class:`transformers.TrainerCallback` around
:class:`~earlystop_predict.policy.monitor.ForecastMonitor`: each evaluation becomes one
row of the run record, the monitor forecasts the target and decides, and the
callback stops the run with ``control.should_training_stop``. No policy here.

Example:
    >>> from transformers import Trainer
    >>> cb = HFForecastCallback(monitor="eval_accuracy", threshold=0.85, min_epochs=3)
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
    ...                   compute_metrics=accuracy, callbacks=[cb])      # doctest: +SKIP
    >>> trainer.train()                                                # doctest: +SKIP
    >>> cb.stopped                                                     # doctest: +SKIP
    {'epoch': 4, 'reason': 'forecast q0.9 0.71 < threshold 0.85'}
"""

from __future__ import annotations

import json
import math
import os
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from earlystop_predict._imports import require

transformers = require("transformers", extra="transformers")

from transformers.trainer_callback import (  # noqa: E402
    CallbackHandler,
    ExportableState,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)

from earlystop_predict.errors import (  # noqa: E402
    ConfigError,
    EarlystopPredictError,
    MetricNotFoundError,
)
from earlystop_predict.forecast.base import Forecaster  # noqa: E402
from earlystop_predict.integrations._common import (  # noqa: E402
    drop_none,
    positive,
    scalar_metrics,
    torch_optimizer_hparams,
)
from earlystop_predict.policy.monitor import STATE_VERSION, ForecastMonitor  # noqa: E402
from earlystop_predict.policy.stop import Decision  # noqa: E402
from earlystop_predict.records.features import (  # noqa: E402
    canonical_metrics,
    canonical_optimizer,
)
from earlystop_predict.records.record import RunRecord, is_accuracy_like  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from earlystop_predict.ledger import Ledger

__all__ = ["HFForecastCallback"]

#: Version of the progress this callback saves in checkpoints (``state()``).
PROGRESS_VERSION = 1
#: Suffixes of the speed metrics the Trainer adds to every evaluation (not recorded).
_SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second",
                   "_model_preparation_time", "_jit_compilation_time")
#: Model config attributes read as hparams, first present wins (BERT, GPT-2, T5/BART...).
_CONFIG_KEYS = {
    "dropout": ("hidden_dropout_prob", "dropout", "resid_pdrop", "dropout_rate"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "width": ("hidden_size", "n_embd", "d_model"),
}
#: Live instances, most recent last: a checkpoint restore re-uses the live one (see ``state``).
_LIVE: list[weakref.ReferenceType[HFForecastCallback]] = []


def _hf_key(monitor: str) -> str:
    """The Trainer's key of a metric: ``accuracy``/``val_accuracy`` -> ``eval_accuracy``."""
    if monitor.startswith("eval_"):
        return monitor
    return "eval_" + (monitor[4:] if monitor.startswith("val_") else monitor)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _eval_prefix(metrics: Mapping[str, Any]) -> str | None:
    """The evaluation's key prefix (``eval``, ``eval_<dataset>``) from its speed metrics."""
    for key in metrics:
        if key.endswith("_runtime") and not key.startswith("train"):
            return key[: -len("_runtime")]
    return None


def _is_ours(entry: Mapping[str, Any]) -> bool:
    return "esp/decision" in entry


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _distributed(args: Any) -> Any | None:
    """``torch.distributed`` when this Trainer runs data parallel over its process group."""
    world = int(getattr(args, "world_size", 1) or 1)
    if world < 2:
        return None
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - transformers' Trainer needs torch
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() == world:
        return dist
    return None


def _calling_handler() -> CallbackHandler | None:
    """The :class:`CallbackHandler` that is calling this callback, found on the stack.

    Callbacks get no handle on the Trainer, and the Trainer logs an evaluation's
    metrics *before* ``on_evaluate``; to feed the reporting integrations
    (TensorBoard, W&B, MLflow...) our values, the callback sends them as one more
    ``on_log`` event through the handler that called it.
    """
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return None
        obj = frame.f_locals.get("self")
        if isinstance(obj, CallbackHandler):
            return obj
        frame = frame.f_back
    return None


def _schedule(value: Any) -> str | None:
    name = _enum_value(value)
    if name is None:
        return None
    name = str(name)
    return "constant" if name.startswith("constant") else name  # constant_with_warmup


def _warmup_fraction(args: Any, max_steps: int) -> float | None:
    ratio = positive(getattr(args, "warmup_ratio", None))
    if ratio:
        return ratio
    steps = positive(getattr(args, "warmup_steps", None))
    if steps is None:
        return None
    if steps < 1:  # transformers >= 5: a float < 1 is a fraction of the training steps
        return steps
    return min(1.0, steps / max_steps) if max_steps > 0 else None


class HFForecastCallback(TrainerCallback, ExportableState):
    """Stops a Hugging Face ``Trainer`` run whose forecast falls short.

    Each evaluation during training is one row of the run record; the callback
    acts in ``on_evaluate`` and stops with ``control.should_training_stop``.
    What an evaluation is numbered depends on ``args.eval_strategy``:

    - ``"epoch"``: the row's epoch is ``round(state.epoch)``; ``target_epoch``
      defaults to the planned epochs (``num_train_epochs``, or as derived from
      ``max_steps``).
    - ``"steps"``: every evaluation is one row, numbered 1, 2, ... n in order
      (``epoch`` in the record means "evaluation"); ``target_epoch`` defaults to
      the planned number of evaluations, ``max_steps // eval_steps``, and
      ``min_epochs`` counts evaluations.

    Evaluations at step 0 (``eval_on_start``) and outside ``train()`` are ignored.
    The row holds the evaluation's metrics (speed metrics left out) and the
    latest training ``loss`` logged since the previous evaluation, if any.
    Hyperparameters are read from ``args`` and the model at ``on_train_begin``
    (learning rate, global batch size, weight decay, ``adam_beta1`` as momentum,
    optimizer, schedule, warmup, dropout, layers, width; parameter count, labels,
    train set size, planned epochs); ``hparams``/``meta`` given here win.

    Every decision is appended to ``state.log_history`` as one row (``epoch``,
    ``step``, ``esp/forecast_mean``, ``esp/forecast_q10``, ``esp/forecast_q90``,
    ``esp/stop``, plus ``esp/index``, ``esp/run_id``, ``esp/poor_streak`` and
    ``esp/decision``, the RUN_RECORD.md forecast entry) and sent to the reporting
    integrations as one ``on_log`` event (numeric ``esp/*`` values, NaN before
    the first forecast).

    Resume: the progress is saved in every checkpoint (``ExportableState``) and
    restored with ``restore_callback_states_from_checkpoint=True``; the live
    callback keeps its arguments and takes the saved progress. Without that flag
    the progress is rebuilt from ``state.log_history`` of the checkpoint (run id,
    rows, forecasts, patience count; rebuilt rows lack ``time``).

    Several processes: every rank runs the monitor on the same gathered metrics,
    only the world process zero writes the ledger, and rank 0's decision is
    broadcast so that all ranks stop at the same evaluation.

    Args:
        monitor: metric to forecast, as ``compute_metrics`` names it; the
            Trainer's ``eval_`` prefix is added when missing (``"accuracy"`` and
            ``"val_accuracy"`` mean ``"eval_accuracy"``). With several eval data
            sets name the prefixed key (``"eval_valid_accuracy"``).
            Default ``"eval_accuracy"``.
        mode: ``"max"`` or ``"min"``. Default: from the metric name.
        target_epoch: 1-based epoch (evaluation in steps mode) to forecast,
            >= max(2, min_epochs). Default: the planned count, as above.
        threshold: value the metric must be likely to reach at ``target_epoch``
            (fraction for accuracies). None: no threshold rule. Default None.
        confidence: quantile level that must clear the bar, in (0.5, 1). Default 0.95.
        min_epochs: first epoch (evaluation) at which a stop may happen, >= 1. Default 3.
        patience: consecutive poor forecasts needed to stop, >= 1. Default 1.
        study: name grouping comparable runs in the ledger (incumbent rule). Default None.
        ledger: path of the SQLite ledger or a :class:`~earlystop_predict.ledger.store.Ledger`;
            written by the world process zero only. Default None (no ledger).
        hparams: hyperparameters, merged over those read from the Trainer. Default None.
        meta: meta data, merged over those read from the Trainer. Default None.
        model: ``"auto"``, ``"lstm"``, ``"lightgbm"``, a model directory or a
            :class:`~earlystop_predict.forecast.base.Forecaster`. Default ``"auto"``.
        dry_run: forecast and record, never stop. Default False.
        run_id: id of the run in the record and the ledger. Default: random.
        task: task or data set name for the record. Default None.
        stop_on_divergence: stop at a NaN/inf metric or loss. Default True.

    Raises:
        ConfigError: an argument is out of range (at construction).
        MetricNotFoundError: an evaluation lacks ``monitor`` (lists the keys it has).

    Example:
        >>> cb = HFForecastCallback("eval_accuracy", threshold=0.9, target_epoch=20)
        >>> cb.metric_key, cb.monitor.metric
        ('eval_accuracy', 'val_accuracy')
    """

    def __new__(cls, *args: Any, _restore: bool = False, **kwargs: Any) -> HFForecastCallback:
        # The Trainer restores an ExportableState as ``type(cb)(**state["args"])`` and
        # then swaps it in for ``cb``; handing back the live ``cb`` itself keeps the
        # user's arguments (forecaster objects are not JSON) and the user's reference:
        # a restore brings back progress, never init arguments.
        if _restore:
            live = cls._live_instance(kwargs.get("monitor", args[0] if args else None))
            if live is not None:
                return live
        return super().__new__(cls)

    def __init__(self, monitor: str = "eval_accuracy", mode: str | None = None, *,
                 target_epoch: int | None = None, threshold: float | None = None,
                 confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
                 study: str | None = None,
                 ledger: str | os.PathLike[str] | Ledger | None = None,
                 hparams: Mapping[str, Any] | None = None,
                 meta: Mapping[str, Any] | None = None,
                 model: str | os.PathLike[str] | Forecaster = "auto", dry_run: bool = False,
                 run_id: str | None = None, task: str | None = None,
                 stop_on_divergence: bool = True, _restore: bool = False) -> None:
        if _restore and getattr(self, "_initialised", False):
            return  # the live instance, handed back by __new__: keep it as it is
        self._init_args: dict[str, Any] = dict(
            monitor=monitor, mode=mode, target_epoch=target_epoch, threshold=threshold,
            confidence=confidence, min_epochs=min_epochs, patience=patience, study=study,
            ledger=ledger, hparams=dict(hparams or {}), meta=dict(meta or {}), model=model,
            dry_run=dry_run, run_id=run_id, task=task, stop_on_divergence=stop_on_divergence)
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError("monitor", "a non-empty metric name", monitor)
        self.metric_key = _hf_key(monitor)
        #: The ForecastMonitor (rebuilt at each ``train()``: every rank has one, rank 0
        #: alone with the ledger).
        self.monitor = self._make_monitor(ledger=None)  # validates every argument
        self.restored_state: dict[str, Any] | None = None
        self._training = False
        self._started = False
        self._steps_mode = False
        self._n_evals = 0
        self._matched_step: int | None = None
        self._unmatched: dict[str, Any] | None = None
        self._initialised = True
        _LIVE[:] = [ref for ref in _LIVE if ref() is not None] + [weakref.ref(self)]

    # ------------------------------------------------------------------ access
    @property
    def record(self) -> RunRecord:
        """The run record so far (rows, forecasts, stop)."""
        return self.monitor.record

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the latest evaluation, None before the first."""
        return self.monitor.last_decision

    @property
    def stopped(self) -> dict[str, Any] | None:
        """``{"epoch", "reason"}`` once the callback stopped the run, else None."""
        return self.monitor.stopped

    # ------------------------------------------------------------------ set-up
    @classmethod
    def _live_instance(cls, monitor: Any) -> HFForecastCallback | None:
        alive = [cb for cb in (ref() for ref in _LIVE) if cb is not None]
        _LIVE[:] = [weakref.ref(cb) for cb in alive]
        mine = [cb for cb in alive if type(cb) is cls]
        same = [cb for cb in mine if cb._init_args["monitor"] == monitor]
        return (same or mine or [None])[-1]

    def _make_monitor(self, *, ledger: Any) -> ForecastMonitor:
        a = self._init_args
        return ForecastMonitor(
            self.metric_key, a["mode"], target_epoch=a["target_epoch"],
            threshold=a["threshold"], confidence=a["confidence"], min_epochs=a["min_epochs"],
            patience=a["patience"], study=a["study"], ledger=ledger, hparams=a["hparams"],
            meta=a["meta"], model=a["model"], dry_run=a["dry_run"], run_id=a["run_id"],
            task=a["task"], stop_on_divergence=a["stop_on_divergence"])

    def _planned(self, args: Any, state: TrainerState) -> int | None:
        if self._steps_mode:
            eval_steps = int(state.eval_steps or 0)
            return int(state.max_steps) // eval_steps if eval_steps > 0 else None
        epochs = state.num_train_epochs or getattr(args, "num_train_epochs", None)
        return math.ceil(float(epochs)) if epochs else None

    def _read_run(self, args: Any, state: TrainerState, model: Any, train_dataloader: Any,
                  optimizer: Any, planned: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hparams, meta) read from the training arguments, the model and the data."""
        world = max(1, int(getattr(args, "world_size", 1) or 1))
        accum = max(1, int(getattr(args, "gradient_accumulation_steps", 1) or 1))
        per_device = getattr(args, "per_device_train_batch_size", None)
        optim = _enum_value(getattr(args, "optim", None))
        hp: dict[str, Any] = {
            "learning_rate": positive(getattr(args, "learning_rate", None)),
            "batch_size": int(per_device) * world * accum if per_device else None,
            "weight_decay": positive(getattr(args, "weight_decay", None)),
            "optimizer": optim,
            "lr_schedule": _schedule(getattr(args, "lr_scheduler_type", None)),
            "warmup_fraction": _warmup_fraction(args, int(state.max_steps or 0)),
        }
        if optim is not None and canonical_optimizer(optim) in ("adam", "adamw"):
            hp["momentum"] = positive(getattr(args, "adam_beta1", None))
        # The optimizer actually built wins over the arguments (Trainer(optimizers=...)).
        hp.update(torch_optimizer_hparams(optimizer))
        config = getattr(model, "config", None)
        for key, names in _CONFIG_KEYS.items():
            value = next((getattr(config, n) for n in names if positive(getattr(config, n, None))
                          is not None), None)
            hp[key] = None if value is None else (
                float(value) if key == "dropout" else int(value))
        meta: dict[str, Any] = {"framework": "transformers", "max_epochs": planned}
        parameters = getattr(model, "parameters", None)
        if callable(parameters):
            meta["num_params"] = int(sum(p.numel() for p in parameters()))
        labels = getattr(config, "num_labels", None)
        if isinstance(labels, int) and labels >= 2 and is_accuracy_like(self.metric_key) \
                and "Classification" in type(model).__name__:
            meta["num_classes"] = labels
        try:
            meta["train_size"] = len(train_dataloader.dataset)
        except (AttributeError, TypeError):
            pass
        return drop_none(hp), drop_none(meta)

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args: Any, state: TrainerState, control: TrainerControl,
                       model: Any = None, train_dataloader: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        """Start (or resume) the run record; read hyperparameters."""
        self._steps_mode = str(_enum_value(getattr(args, "eval_strategy", ""))) == "steps"
        planned = self._planned(args, state)
        # Every rank runs a monitor; only the world process zero has the ledger.
        ledger = self._init_args["ledger"] if state.is_world_process_zero else None
        mon = self.monitor = self._make_monitor(ledger=ledger)
        hp, meta = self._read_run(args, state, model, train_dataloader, optimizer, planned)
        progress, self.restored_state = self.restored_state, None
        if progress is not None and progress.get("monitor", {}).get("record", {}).get(
                "metric") != mon.metric:
            progress = None  # saved by a callback on another metric: not this run's progress
        if progress is None and state.global_step > 0:
            progress = self._progress_from_history(state.log_history)
        self._n_evals = 0
        if progress is not None:
            if progress.get("version") != PROGRESS_VERSION:
                raise EarlystopPredictError(
                    f"HFForecastCallback: checkpoint progress version {progress.get('version')!r}"
                    f", expected {PROGRESS_VERSION}")
            mon.load_state_dict(progress["monitor"])
            self._n_evals = int(progress.get("evals", 0))
        mon.begin(hp, meta, target_epoch=planned, resume=progress is not None)
        self._matched_step = None
        self._unmatched = None
        self._training = self._started = True

    def on_step_begin(self, args: Any, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        """Fail if the last step's evaluations all lacked the monitored metric."""
        self._raise_unmatched()

    def on_epoch_begin(self, args: Any, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """Fail if the last epoch's evaluations all lacked the monitored metric."""
        self._raise_unmatched()

    def on_evaluate(self, args: Any, state: TrainerState, control: TrainerControl,
                    metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Record the evaluation, forecast, decide; stop all ranks alike."""
        if not self._training or state.global_step <= 0:
            return
        metrics = dict(metrics or {})
        mon = self.monitor
        present = self.metric_key in metrics or mon.metric in canonical_metrics(metrics)
        prefix = _eval_prefix(metrics)
        if not present and prefix not in (None, "eval"):
            # Another eval data set's metrics (``eval_<name>_*``): not this monitor's;
            # fail later if no evaluation of this step had it.
            if self._matched_step != state.global_step:
                self._unmatched = {**(self._unmatched or {}), **metrics}
            return
        self._matched_step = state.global_step
        self._unmatched = None
        index = self._n_evals + 1 if self._steps_mode else int(round(state.epoch or 0))
        decision: Decision | None = None
        error: BaseException | None = None
        try:
            if not present:
                raise MetricNotFoundError(self.metric_key, [k for k in metrics if k != "epoch"])
            row = self._row_metrics(metrics, self._recent_loss(state.log_history))
            decision = mon.update(index, row)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the ranks agree
            error = exc
        stop, reason, remote_error = self._agree(args, decision, error)
        if error is not None:
            raise error
        if remote_error is not None:
            raise EarlystopPredictError(f"HFForecastCallback failed on rank 0: {remote_error}")
        if decision is None:  # pragma: no cover - update() returns a Decision or raises
            return
        if stop != decision.stop:  # rank 0 decided otherwise (it alone sees the incumbent)
            decision = mon.override(stop, f"rank 0: {reason}")
        self._n_evals += 1
        self._log(decision, index, args, state, control)
        if stop:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Close the run in the ledger (completed or stopped)."""
        if not self._training:
            return
        self._training = False
        mon = self.monitor
        try:
            mon.end("failed" if self._unmatched is not None else None)
            self._raise_unmatched()
        finally:
            # A ledger opened from a path is ours to close; a Ledger object is the user's.
            if isinstance(self._init_args["ledger"], (str, os.PathLike)) \
                    and mon.ledger is not None:
                mon.ledger.close()

    # ------------------------------------------------------------------ helpers
    def _raise_unmatched(self) -> None:
        if self._unmatched is not None:
            keys, self._unmatched = self._unmatched, None
            raise MetricNotFoundError(self.metric_key, [k for k in keys if k != "epoch"])

    def _is_eval_entry(self, entry: Mapping[str, Any]) -> bool:
        if _is_ours(entry):
            return False
        return self.metric_key in entry or (
            _eval_prefix(entry) is not None
            and self.monitor.metric in canonical_metrics(entry))

    @staticmethod
    def _row_metrics(metrics: Mapping[str, Any], loss: Any) -> dict[str, Any]:
        row = {k: v for k, v in scalar_metrics(metrics).items()
               if k not in ("epoch", "step") and not k.endswith(_SPEED_SUFFIXES)}
        if loss is not None:
            row.setdefault("loss", loss)
        return row

    def _recent_loss(self, history: Sequence[Mapping[str, Any]]) -> Any:
        """The latest training ``loss`` logged since the previous evaluation, if any."""
        seen_current = False
        for entry in reversed(history):
            if _is_ours(entry):
                return None
            if self._is_eval_entry(entry):
                if seen_current:
                    return None
                seen_current = True  # the Trainer logs this evaluation before on_evaluate
                continue
            if "loss" in entry:
                return entry["loss"]
        return None

    def _agree(self, args: Any, decision: Decision | None,
               error: BaseException | None) -> tuple[bool, str, str | None]:
        """(stop, reason, rank 0's error): rank 0's decision, broadcast to every rank.

        Ranks see the same gathered metrics and the forecaster is deterministic, but
        only rank 0 reads the ledger (incumbent rule): its decision is the one taken.
        Every rank joins the broadcast even after an error, so none is left waiting.
        """
        stop = bool(decision is not None and decision.stop)
        reason = decision.reason if decision is not None else ""
        dist = _distributed(args)
        if dist is None:
            return stop, reason, None
        mine = {"stop": stop, "reason": reason,
                "error": None if error is None else f"{type(error).__name__}: {error}"}
        payload: list[Any] = [mine if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(payload, src=0)
        got = payload[0] or mine
        return (bool(got["stop"]), str(got["reason"]),
                got["error"] if dist.get_rank() != 0 else None)

    def _log(self, decision: Decision, index: int, args: Any, state: TrainerState,
             control: TrainerControl) -> None:
        items = decision.log_items()
        state.log_history.append({
            "epoch": state.epoch, "step": state.global_step, **items, "esp/index": index,
            "esp/run_id": self.record.run_id,
            "esp/poor_streak": self.monitor.poor_streak,
            "esp/decision": decision.to_dict()})
        handler = _calling_handler()
        if handler is not None:
            handler.on_log(args, state, control, {**items, "epoch": state.epoch})

    def _progress_from_history(self, history: Sequence[Mapping[str, Any]]
                               ) -> dict[str, Any] | None:
        """Progress rebuilt from a checkpoint's ``log_history`` (rows, forecasts, run id)."""
        mon = self.monitor
        rows: dict[int, dict[str, Any]] = {}
        ours: dict[int, Mapping[str, Any]] = {}
        n_evals = 0
        loss: Any = None
        for entry in history:
            if _is_ours(entry):
                ours[int(entry["esp/index"])] = entry
                loss = None
            elif self._is_eval_entry(entry):
                if int(entry.get("step", 0) or 0) > 0:
                    n_evals += 1
                    index = n_evals if self._steps_mode else int(round(entry.get("epoch", 0)))
                    metrics = canonical_metrics(self._row_metrics(entry, loss))
                    rows[index] = {"epoch": index, **{
                        k: (v if math.isfinite(v) else None) for k, v in metrics.items()}}
                loss = None
            elif "loss" in entry:
                loss = entry["loss"]
        if not rows:
            return None
        forecasts = [dict(ours[i]["esp/decision"]) for i in sorted(ours) if i in rows]
        last = ours[max(ours)] if ours else {}
        stopped = None
        if forecasts and forecasts[-1].get("stop"):
            stopped = {"epoch": forecasts[-1]["at_epoch"], "reason": forecasts[-1]["reason"]}
        record = RunRecord(run_id=last.get("esp/run_id") or mon.record.run_id,
                           metric=mon.metric, mode=mon.mode, task=mon.task,
                           epochs=[rows[i] for i in sorted(rows)], forecasts=forecasts,
                           stopped=stopped)
        return {"version": PROGRESS_VERSION, "evals": n_evals, "monitor": {
            "version": STATE_VERSION, "record": record.to_dict(), "target_epoch": None,
            "poor_streak": int(last.get("esp/poor_streak", 0)), "stopped": stopped}}

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON checkpoint state: the JSON-able init arguments and the progress.

        The Trainer saves it in every checkpoint (``trainer_state.json``) and, with
        ``restore_callback_states_from_checkpoint=True``, hands it back on resume as
        ``type(cb)(**state["args"])``: that call returns the live callback of the same
        class and monitor (the most recent one) when there is one, so the callback
        keeps its own arguments, forecaster and ledger, and only the progress
        (``attributes``) is restored; with none alive it builds one from the
        JSON-able arguments.
        """
        args = {k: v for k, v in self._init_args.items()
                if k not in ("ledger", "model") and _jsonable(v)}
        for key in ("ledger", "model"):
            value = self._init_args[key]
            if isinstance(value, (str, os.PathLike)):
                args[key] = os.fspath(value)
        progress = None
        if self._started:
            progress = {"version": PROGRESS_VERSION, "evals": self._n_evals,
                        "monitor": self.monitor.state_dict()}
        return {"args": {**args, "_restore": True}, "attributes": {"restored_state": progress}}
