"""Lightning adapter: :class:`LightningForecastCallback`.

It translates: the run's hyperparameters from the trainer (:mod:`._hparams`), each
epoch's ``callback_metrics`` to the :class:`~earlystop_predict.policy.monitor.ForecastMonitor`,
``esp/*`` through ``pl_module.log`` (every logger), the stop through
``trainer.should_stop``. In DDP rank 0 decides and every rank follows. Progress is
saved in checkpoints (``fit(ckpt_path=...)`` resumes). Every rule lives in the monitor.

Example:
    >>> from earlystop_predict.integrations.lightning import LightningForecastCallback
    >>> cb = LightningForecastCallback("val_acc", threshold=0.9, ledger="runs.db")
    >>> trainer = lightning.pytorch.Trainer(max_epochs=50, callbacks=[cb])  # doctest: +SKIP
    >>> trainer.fit(module, datamodule)                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from earlystop_predict._imports import require

pl = require("lightning.pytorch", extra="lightning")

from earlystop_predict.integrations._config import MonitorViews, monitor_arguments  # noqa: E402
from earlystop_predict.integrations._distributed import lightning_rank_zero  # noqa: E402
from earlystop_predict.integrations._hparams import (  # noqa: E402
    lightning_hparams,
    scalar_metrics,
)
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402

__all__ = ["LightningForecastCallback", "lightning_hparams"]


@monitor_arguments()
class LightningForecastCallback(MonitorViews, pl.Callback):
    """Forecast the monitored metric at ``target_epoch`` and stop doomed runs.

    Acts in ``on_train_epoch_end`` (validation metrics of the epoch are final
    there; train metrics logged in the module's own ``on_train_epoch_end`` are
    not yet). Logs ``esp/forecast_mean``, ``esp/forecast_q10``, ``esp/forecast_q90``
    and ``esp/stop`` every epoch (NaN before the first forecast, the observed value
    at the target epoch). For a ``val_*`` metric, epochs in which validation did not
    run (``check_val_every_n_epoch > 1``) are skipped. ``target_epoch`` defaults to
    ``trainer.max_epochs``; the ledger is written by rank 0 only. One instance may
    serve several ``fit()`` calls: each starts a fresh run unless a checkpoint
    restored its progress.

    Args:
        monitor: metric to forecast, as logged with ``self.log``. Default ``"val_accuracy"``.
        restore_best_weights: keep the module's ``state_dict`` of the best epoch so far
            in CPU memory (every rank) and load it back at the end of a run this
            callback stopped. Default False.

    Attributes:
        monitor: the :class:`~earlystop_predict.policy.monitor.ForecastMonitor` (on rank 0;
            its ``record``, ``last_decision`` and ``stopped`` are the callback's too).
        restored_epoch: the epoch whose weights were loaded back, None if none.
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None, *,
                 restore_best_weights: bool = False, **options: Any) -> None:
        super().__init__()
        self.monitor = ForecastMonitor(monitor, mode, **options)
        self.restore_best_weights = bool(restore_best_weights)
        self.best_state: dict[str, Any] | None = None
        self.restored_epoch: int | None = None
        self._best: tuple[int, bool] | None = None  # (epoch, stopped) from rank 0
        self._restored = False
        self._validated = False
        self._trainer: Any = None

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints: class, monitor and target epoch."""
        return self._generate_state_key(monitor=self.monitor.monitor,
                                        target_epoch=self.monitor.target_epoch_arg)

    # --------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the run (rank 0), resuming the progress a checkpoint restored."""
        resume, self._restored = self._restored, False
        self.best_state = self.restored_epoch = None
        self._trainer = trainer

        def begin() -> None:
            hparams, meta = lightning_hparams(trainer, pl_module, self.monitor.metric)
            self.monitor.begin(hparams, meta, resume=resume)  # target: meta["max_epochs"]

        lightning_rank_zero(trainer, begin)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Note that this epoch validated (its ``val_*`` metrics are fresh)."""
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Record the epoch (rank 0), log ``esp/*``, stop every rank if rank 0 says so."""
        validated, self._validated = self._validated, False
        if trainer.sanity_checking or (self.monitor.metric.startswith("val") and not validated):
            return
        epoch = trainer.current_epoch + 1
        metrics = scalar_metrics(trainer.callback_metrics)

        def decide() -> tuple[dict[str, float], bool, bool]:
            decision = self.monitor.update(epoch, metrics)
            return self.monitor.log_items(), decision.stop, self.monitor.best_epoch == epoch

        items, stop, best = lightning_rank_zero(trainer, decide)
        pl_module.log_dict(items, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)
        if best and self.restore_best_weights:
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in pl_module.state_dict().items()}
            self._best = (epoch, False)
        if stop:
            trainer.should_stop = True
            if self._best is not None:
                self._best = (self._best[0], True)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Load back the best weights after our stop; close the run in the ledger (rank 0)."""
        if self.best_state is not None and self._best is not None and self._best[1]:
            pl_module.load_state_dict(self.best_state)
            self.restored_epoch = self._best[0]
        self._best = None
        self._trainer = None
        if trainer.is_global_zero:
            if self.restored_epoch is not None:
                self.monitor.note_restored(self.restored_epoch)
            self.monitor.end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Mark the run failed in the ledger (rank 0)."""
        if trainer.is_global_zero:
            self.monitor.end("failed")

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The monitor's progress (versioned plain JSON), saved in checkpoints; an epoch
        saved as validation ends (before ``on_train_epoch_end``) is held first."""
        trainer = self._trainer
        if self._validated and trainer is not None and trainer.is_global_zero:
            self.monitor.update(trainer.current_epoch + 1, scalar_metrics(trainer.callback_metrics))
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress from a checkpoint; the next ``on_train_start`` resumes it."""
        self.monitor.load_state_dict(state_dict)
        self._restored = True
