"""Keras 3 adapter: :class:`KerasForecastCallback`.

A thin wrapper around :class:`~earlystop_predict.policy.monitor.ForecastMonitor`: it
reads the run's hyperparameters from the model, its optimizer and ``fit()``'s
data, feeds each epoch's logs to the monitor, adds the ``esp/*`` keys to the
logs (so ``History`` and ``CSVLogger`` record them) and stops through
``model.stop_training``. All policy lives in the monitor.

Example:
    >>> from earlystop_predict.integrations.keras import KerasForecastCallback
    >>> cb = KerasForecastCallback("val_accuracy", threshold=0.9, ledger="runs.db")
    >>> model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[cb])  # doctest: +SKIP
    >>> cb.monitor.stopped                                                 # doctest: +SKIP
    {'epoch': 7, 'reason': 'forecast q0.9 0.52 < threshold 0.9'}
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from earlystop_predict._imports import require

keras = require("keras", extra="keras")

from earlystop_predict.integrations._common import (  # noqa: E402
    drop_none,
    layer_hparams,
    output_meta,
    positive,
    positive_int,
    read_state,
    scalar_metrics,
    to_float,
    write_state,
)
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from earlystop_predict.forecast.base import Forecaster
    from earlystop_predict.ledger import Ledger

__all__ = ["KerasForecastCallback", "keras_hparams"]


def _optimizer_hparams(optimizer: Any) -> dict[str, Any]:
    """Optimizer class, initial learning rate, schedule, momentum/beta_1, weight decay."""
    inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer
    optimizer = inner if inner is not None else optimizer
    if optimizer is None or not hasattr(optimizer, "get_config"):
        return {}
    try:
        config = optimizer.get_config()
    except (NotImplementedError, TypeError, ValueError):
        config = {}
    lr_cfg = config.get("learning_rate")
    schedule = "constant"
    lr = None
    if isinstance(lr_cfg, Mapping):  # a serialised LearningRateSchedule
        schedule = str(lr_cfg.get("class_name", "other"))
        lr = (lr_cfg.get("config") or {}).get("initial_learning_rate")
    elif lr_cfg is not None:
        lr = lr_cfg
    if lr is None:  # the schedule's value now (its start when training starts)
        lr = to_float(getattr(optimizer, "learning_rate", None))
    momentum = config.get("beta_1", config.get("momentum"))
    return drop_none({
        "optimizer": type(optimizer).__name__,
        "learning_rate": positive(lr),
        "lr_schedule": schedule,
        "momentum": positive(momentum),
        "weight_decay": positive(config.get("weight_decay")),
    })


def _layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models flattened, in order."""
    out: list[Any] = []
    for layer in getattr(model, "layers", None) or []:
        if getattr(layer, "layers", None):
            out.extend(_layers(layer))
        else:
            out.append(layer)
    return out


def _fit_data_sizes() -> tuple[int | None, int | None]:
    """``(batch_size, train_size)`` of the running ``fit()``, best effort.

    Keras does not hand callbacks the batch size, so this looks up ``fit``'s
    ``epoch_iterator`` on the call stack (read once per ``fit``) and asks its data
    adapter. Returns ``(None, None)`` when it cannot tell (pass them in ``hparams``).
    """
    frame = inspect.currentframe()
    f = frame.f_back if frame is not None else None
    try:
        for _ in range(8):
            if f is None:
                break
            adapter = getattr(f.f_locals.get("epoch_iterator"), "data_adapter", None)
            if adapter is not None:
                batch = positive_int(getattr(adapter, "batch_size", None))
                steps = positive_int(getattr(adapter, "num_batches", None))
                if batch is None or steps is None:
                    return batch, None
                partial = positive_int(getattr(adapter, "partial_batch_size", None))
                has_partial = bool(getattr(adapter, "has_partial_batch", False)) and partial
                return batch, (steps - 1) * batch + partial if has_partial else steps * batch
            f = f.f_back
    finally:
        del frame, f  # no reference cycle through the frames
    return None, None


def keras_hparams(model: Any, params: Mapping[str, Any] | None = None,
                  metric: str = "val_accuracy") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, meta)`` read from a compiled Keras model and ``fit``'s params.

    Args:
        model: the Keras model being trained (built and compiled).
        params: the callback's ``self.params`` (``epochs``, ``steps``). Default None.
        metric: the monitored metric (``num_classes`` is only read for accuracies).

    Returns:
        hparams: optimizer, learning_rate, lr_schedule, momentum (``beta_1`` for the
        Adam family), weight_decay, dropout (highest ``Dropout`` rate), num_layers and
        width (hidden ``Dense`` layers). meta: framework, max_epochs, num_params,
        num_features, num_classes. Values Keras cannot tell are left out.
    """
    hparams = _optimizer_hparams(getattr(model, "optimizer", None))
    layers = _layers(model)
    dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    rates = [getattr(layer, "rate", None) for layer in layers
             if "Dropout" in type(layer).__name__]
    hparams.update(layer_hparams([int(d.units) for d in dense], rates))
    num_features = None
    if dense and getattr(dense[0], "kernel", None) is not None:
        num_features = int(dense[0].kernel.shape[0])
    try:
        num_params: int | None = int(model.count_params())
    except (ValueError, AttributeError):  # an unbuilt model
        num_params = None
    meta = drop_none({
        "framework": "keras",
        "max_epochs": positive_int((params or {}).get("epochs")),
        "num_params": num_params,
        **output_meta([int(d.units) for d in dense], metric, num_features),
    })
    return drop_none(hparams), meta


class KerasForecastCallback(keras.callbacks.Callback):
    """Forecast the monitored metric at ``target_epoch`` and stop doomed runs.

    Reads hyperparameters from the model (see :func:`keras_hparams`) and the batch
    size and training-set size from ``fit()``'s data; the user's ``hparams`` and
    ``meta`` win. Each epoch, adds ``esp/forecast_mean``, ``esp/forecast_q10``,
    ``esp/forecast_q90`` and ``esp/stop`` to ``logs`` (NaN before the first
    forecast); list this callback before a ``CSVLogger``. One instance may serve
    several ``fit()`` calls: each starts a fresh run.

    Args:
        monitor: metric to forecast, as Keras logs it. Default ``"val_accuracy"``.
        mode: ``"max"`` or ``"min"``. Default: from the metric name.
        target_epoch: 1-based epoch to forecast, >= max(2, min_epochs).
            Default: ``fit``'s ``epochs``.
        threshold: value the run must be likely to reach (fraction for accuracies);
            None: incumbent rule only. Default None.
        confidence: quantile level that must clear the bar, in (0.5, 1). Default 0.95.
        min_epochs: first 1-based epoch at which a stop may happen, >= 1. Default 3.
        patience: consecutive poor forecasts before stopping, >= 1. Default 1.
        study: name grouping comparable runs for the incumbent rule. Default None.
        ledger: SQLite ledger path or :class:`~earlystop_predict.ledger.store.Ledger`;
            None: none. Default None.
        hparams: hyperparameters, merged over the ones read. Default None.
        meta: meta data, merged over the ones read. Default None.
        model: the forecaster: ``"auto"``, ``"lstm"``, ``"lightgbm"``, a model
            directory or a :class:`~earlystop_predict.forecast.base.Forecaster`.
            Default ``"auto"``.
        dry_run: forecast, decide and record, never stop. Default False.
        run_id: id of the run in records and the ledger. Default: random per fit.
        task: data set or task name for the record. Default None.
        stop_on_divergence: stop at a NaN/inf metric or loss. Default True.
        state_path: JSON file the progress is written to (atomically) after each
            epoch and resumed from when ``fit`` starts past epoch 0 (``initial_epoch``
            or ``BackupAndRestore``). Default None: no state file.

    Attributes:
        monitor: the :class:`~earlystop_predict.policy.monitor.ForecastMonitor`
            (``monitor.record``, ``monitor.last_decision``, ``monitor.stopped``).

    Example:
        >>> cb = KerasForecastCallback("val_accuracy", threshold=0.8, min_epochs=3)
        >>> model.fit(x, y, validation_data=(xv, yv), epochs=30,
        ...           callbacks=[cb, keras.callbacks.CSVLogger("log.csv")])  # doctest: +SKIP
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None, *,
                 target_epoch: int | None = None, threshold: float | None = None,
                 confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
                 study: str | None = None, ledger: str | os.PathLike[str] | Ledger | None = None,
                 hparams: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                 model: str | os.PathLike[str] | Forecaster = "auto", dry_run: bool = False,
                 run_id: str | None = None, task: str | None = None,
                 stop_on_divergence: bool = True,
                 state_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.monitor = ForecastMonitor(
            monitor, mode, target_epoch=target_epoch, threshold=threshold,
            confidence=confidence, min_epochs=min_epochs, patience=patience, study=study,
            ledger=ledger, hparams=hparams, meta=meta, model=model, dry_run=dry_run,
            run_id=run_id, task=task, stop_on_divergence=stop_on_divergence)
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self._read: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self._pending_begin = False

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Read the run's hyperparameters; the run (fresh or resumed) starts at its first epoch."""
        hparams, meta = keras_hparams(self.model, self.params, self.monitor.metric)
        batch_size, train_size = _fit_data_sizes()
        hparams = drop_none({**hparams, "batch_size": batch_size})
        meta = drop_none({**meta, "train_size": train_size})
        self._read = (hparams, meta)
        self._pending_begin = True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """On ``fit``'s first epoch: start a fresh run, or resume from ``state_path``."""
        if not self._pending_begin:
            return
        self._pending_begin = False
        resume = False
        if self.state_path is not None and epoch > 0:
            state = read_state(self.state_path)
            if state is not None:
                self.monitor.load_state_dict(state)
                resume = True
        hparams, meta = self._read
        self.monitor.begin(hparams, meta, resume=resume)  # target: meta["max_epochs"]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record the epoch, log ``esp/*`` into ``logs``, stop if the monitor says so."""
        if logs is None:
            logs = {}
        try:
            decision = self.monitor.update(epoch + 1, scalar_metrics(logs))
        except Exception:
            self.monitor.end("failed")
            raise
        logs.update(decision.log_items())
        if decision.stop:
            self.model.stop_training = True
        if self.state_path is not None:
            write_state(self.state_path, self.monitor.state_dict())

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Close the run in the ledger (final value, stop reason)."""
        self._pending_begin = False
        self.monitor.end()
