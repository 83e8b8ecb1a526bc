"""Keras 3 adapter: :class:`KerasForecastCallback`.

It translates: reads the run's hyperparameters from the model, its optimizer and
``fit()``'s data (:mod:`earlystop_predict.integrations._hparams`), feeds each epoch's
logs to the :class:`~earlystop_predict.policy.monitor.ForecastMonitor`, adds the
``esp/*`` keys to the logs (so ``History`` and ``CSVLogger`` record them) and stops
through ``model.stop_training``. Every rule lives in the monitor.

Example:
    >>> from earlystop_predict.integrations.keras import KerasForecastCallback
    >>> cb = KerasForecastCallback("val_accuracy", threshold=0.9, ledger="runs.db")
    >>> model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[cb])  # doctest: +SKIP
    >>> cb.monitor.stopped                                                 # doctest: +SKIP
    {'epoch': 7, 'reason': 'forecast q0.9 0.52 < threshold 0.9'}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from earlystop_predict._imports import require

keras = require("keras", extra="keras")

from earlystop_predict.integrations._config import MonitorViews, monitor_arguments  # noqa: E402
from earlystop_predict.integrations._copying import copy_sharing, monitor_resources  # noqa: E402
from earlystop_predict.integrations._hparams import (  # noqa: E402
    drop_none,
    keras_fit_info,
    keras_hparams,
    scalar_metrics,
)
from earlystop_predict.integrations._state import StateFile  # noqa: E402
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402

__all__ = ["KerasForecastCallback", "keras_hparams"]


@monitor_arguments()
class KerasForecastCallback(MonitorViews, keras.callbacks.Callback):
    """Forecast the monitored metric at ``target_epoch`` and stop doomed runs.

    Reads hyperparameters from the model (see :func:`keras_hparams`) and the batch
    size and training-set size from ``fit()``'s data; the user's ``hparams`` and
    ``meta`` win. ``target_epoch`` defaults to ``fit``'s ``epochs``. Each epoch adds
    ``esp/forecast_mean``, ``esp/forecast_q10``, ``esp/forecast_q90`` and ``esp/stop``
    to ``logs`` (NaN before the first forecast; the observed value at the target
    epoch); list this callback before a ``CSVLogger``. Epochs without validation
    (``fit(validation_freq=n)``) are skipped for a ``val_*`` metric. One instance may
    serve several ``fit()`` calls: each starts a fresh run.

    Args:
        monitor: metric to forecast, as Keras logs it. Default ``"val_accuracy"``.
        state_path: JSON file the progress is written to (atomically, when it changed)
            after each epoch and resumed from when ``fit`` starts past epoch 0
            (``initial_epoch`` or ``BackupAndRestore``). Default None: no state file.
        restore_best_weights: keep the weights of the best epoch so far in memory and
            set them back when this callback stops the run, as Keras ``EarlyStopping``
            does. Default False.

    Attributes:
        monitor: the :class:`~earlystop_predict.policy.monitor.ForecastMonitor`
            (``monitor.record``, ``monitor.last_decision``, ``monitor.stopped``; the
            callback shows the same as ``record``, ``last_decision``, ``stopped``).
        restored_epoch: the epoch whose weights were set back, None if none.

    Example:
        >>> cb = KerasForecastCallback("val_accuracy", threshold=0.8, min_epochs=3)
        >>> model.fit(x, y, validation_data=(xv, yv), epochs=30,
        ...           callbacks=[cb, keras.callbacks.CSVLogger("log.csv")])  # doctest: +SKIP
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None, *,
                 state_path: str | os.PathLike[str] | None = None,
                 restore_best_weights: bool = False, **options: Any) -> None:
        super().__init__()
        self.monitor = ForecastMonitor(monitor, mode, **options)
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self._state = StateFile(self.state_path) if self.state_path is not None else None
        self.restore_best_weights = bool(restore_best_weights)
        self.best_weights: list[Any] | None = None
        self.restored_epoch: int | None = None
        self._read: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self._pending_begin = False
        self._val_freq: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> KerasForecastCallback:
        """A copy for another run (Keras Tuner's, one per trial): it shares the accModel and
        a Ledger object, and leaves out the model last trained (:mod:`._copying`)."""
        shared, dropped = monitor_resources(self.monitor)
        return copy_sharing(self, memo, shared=shared,
                            dropped=[*dropped, getattr(self, "_model", None)])

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Read the run's hyperparameters; the run (fresh or resumed) starts at its first epoch."""
        hparams, meta = keras_hparams(self.model, self.params, self.monitor.metric)
        batch_size, train_size, self._val_freq = keras_fit_info()
        self._read = (drop_none({**hparams, "batch_size": batch_size}),
                      drop_none({**meta, "train_size": train_size}))
        self._pending_begin = True
        self.best_weights = self.restored_epoch = None

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """On ``fit``'s first epoch: start a fresh run, or resume from ``state_path``."""
        if not self._pending_begin:
            return
        self._pending_begin = False
        state = self._state.load() if self._state is not None and epoch > 0 else None
        if state is not None:
            self.monitor.load_state_dict(state)
        self.monitor.begin(*self._read, resume=state is not None)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record the epoch, log ``esp/*`` into ``logs``, stop if the monitor says so."""
        logs = {} if logs is None else logs
        if not self._validates(epoch + 1):
            return  # fit(validation_freq=n): no validation metrics this epoch
        try:
            decision = self.monitor.update(epoch + 1, scalar_metrics(logs))
        except Exception:
            self.monitor.end("failed")
            raise
        logs.update(self.monitor.log_items())
        if self.restore_best_weights and self.monitor.best_epoch == epoch + 1:
            self.best_weights = self.model.get_weights()
        if decision.stop:
            self.model.stop_training = True
            self._restore()
        if self._state is not None:
            self._state.save(self.monitor.state_dict(snapshot=False))

    def _validates(self, epoch: int) -> bool:
        freq = self._val_freq
        if freq is None or not self.monitor.metric.startswith("val"):
            return True
        return epoch % freq == 0 if isinstance(freq, int) else epoch in freq

    def _restore(self) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.restored_epoch = self.monitor.best_epoch
            self.monitor.note_restored(self.restored_epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Close the run in the ledger (final value, stop reason)."""
        self._pending_begin = False
        self.monitor.end()
