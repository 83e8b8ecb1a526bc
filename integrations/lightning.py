"""Lightning adapter: :class:`LightningForecastCallback`.

A thin wrapper around :class:`~earlystop_predict.policy.monitor.ForecastMonitor`: it
reads the run's hyperparameters from the trainer, its optimizer, scheduler,
module and train dataloader, feeds each epoch's ``callback_metrics`` to the
monitor at ``on_train_epoch_end``, logs ``esp/*`` through ``pl_module.log`` (every
logger sees them) and stops through ``trainer.should_stop``. In DDP, rank 0
forecasts and writes the ledger, then broadcasts its decision so every rank stops
at the same epoch. Its progress is saved in checkpoints, so ``fit(ckpt_path=...)``
resumes the run. All policy lives in the monitor.

Example:
    >>> from earlystop_predict.integrations.lightning import LightningForecastCallback
    >>> cb = LightningForecastCallback("val_acc", threshold=0.9, ledger="runs.db")
    >>> trainer = lightning.pytorch.Trainer(max_epochs=50, callbacks=[cb])  # doctest: +SKIP
    >>> trainer.fit(module, datamodule)                                     # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from earlystop_predict._imports import require

pl = require("lightning.pytorch", extra="lightning")

from earlystop_predict.errors import EarlystopPredictError  # noqa: E402
from earlystop_predict.integrations._common import (  # noqa: E402
    drop_none,
    positive_int,
    scalar_metrics,
    torch_module_hparams,
    torch_optimizer_hparams,
)
from earlystop_predict.policy.monitor import ForecastMonitor  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from earlystop_predict.forecast.base import Forecaster
    from earlystop_predict.ledger import Ledger
    from earlystop_predict.policy.stop import Decision

__all__ = ["LightningForecastCallback", "lightning_hparams"]

_T = TypeVar("_T")


def _first_loader(loaders: Any) -> Any:
    """The first dataloader of what ``trainer.train_dataloader`` holds (one, a list or a dict)."""
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


def _length(obj: Any) -> int | None:
    try:
        return positive_int(len(obj))
    except TypeError:
        return None


def lightning_hparams(trainer: Any, pl_module: Any,
                      metric: str = "val_accuracy") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, meta)`` read from a Trainer whose training has started.

    Args:
        trainer: the ``lightning.pytorch.Trainer`` (optimizers and dataloaders set up).
        pl_module: the ``LightningModule`` being trained.
        metric: the monitored metric (``num_classes`` is only read for accuracies).

    Returns:
        hparams: optimizer, learning_rate (the scheduler's ``initial_lr`` if any),
        momentum (``betas[0]`` for Adam), weight_decay, lr_schedule (the first
        scheduler's class, ``"constant"`` without one), batch_size (per-device batch
        x devices x gradient accumulation), dropout, num_layers, width. meta: framework,
        max_epochs, num_params, num_features, num_classes, train_size.
    """
    optimizers = getattr(trainer, "optimizers", None) or [None]
    hparams = torch_optimizer_hparams(optimizers[0])
    configs = getattr(trainer, "lr_scheduler_configs", None) or []
    hparams["lr_schedule"] = type(configs[0].scheduler).__name__ if configs else "constant"
    module_hp, module_meta = torch_module_hparams(pl_module, metric)
    hparams.update(module_hp)
    loader = _first_loader(getattr(trainer, "train_dataloader", None))
    batch = positive_int(getattr(loader, "batch_size", None)
                         or getattr(getattr(loader, "batch_sampler", None), "batch_size", None))
    if batch is not None:
        batch *= max(1, int(getattr(trainer, "world_size", 1) or 1))
        batch *= max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    hparams["batch_size"] = batch
    meta = {
        "framework": "lightning",
        "max_epochs": positive_int(getattr(trainer, "max_epochs", None)),
        "train_size": _length(getattr(loader, "dataset", None)),
        **module_meta,
    }
    return drop_none(hparams), drop_none(meta)


class LightningForecastCallback(pl.Callback):
    """Forecast the monitored metric at ``target_epoch`` and stop doomed runs.

    Acts in ``on_train_epoch_end`` (validation metrics of the epoch are final
    there; train metrics logged in the module's own ``on_train_epoch_end`` are
    not yet). Logs ``esp/forecast_mean``, ``esp/forecast_q10``, ``esp/forecast_q90``
    and ``esp/stop`` every epoch (NaN before the first forecast). With
    ``check_val_every_n_epoch > 1``, epochs without validation are skipped for a
    ``val_*`` metric. One instance may serve several ``fit()`` calls: each starts a
    fresh run unless a checkpoint restored its progress.

    Args:
        monitor: metric to forecast, as logged with ``self.log``. Default ``"val_accuracy"``.
        mode: ``"max"`` or ``"min"``. Default: from the metric name.
        target_epoch: 1-based epoch to forecast, >= max(2, min_epochs).
            Default: ``trainer.max_epochs``.
        threshold: value the run must be likely to reach (fraction for accuracies);
            None: incumbent rule only. Default None.
        confidence: quantile level that must clear the bar, in (0.5, 1). Default 0.95.
        min_epochs: first 1-based epoch at which a stop may happen, >= 1. Default 3.
        patience: consecutive poor forecasts before stopping, >= 1. Default 1.
        study: name grouping comparable runs for the incumbent rule. Default None.
        ledger: SQLite ledger path or :class:`~earlystop_predict.ledger.store.Ledger`
            (written by rank 0 only); None: none. Default None.
        hparams: hyperparameters, merged over the ones read. Default None.
        meta: meta data, merged over the ones read. Default None.
        model: the forecaster: ``"auto"``, ``"lstm"``, ``"lightgbm"``, a model
            directory or a :class:`~earlystop_predict.forecast.base.Forecaster`.
            Default ``"auto"``.
        dry_run: forecast, decide and record, never stop. Default False.
        run_id: id of the run in records and the ledger. Default: random per fit.
        task: data set or task name for the record. Default None.
        stop_on_divergence: stop at a NaN/inf metric or loss. Default True.

    Attributes:
        monitor: the :class:`~earlystop_predict.policy.monitor.ForecastMonitor` (on rank 0:
            ``monitor.record``, ``monitor.last_decision``, ``monitor.stopped``).

    Example:
        >>> cb = LightningForecastCallback("val_acc", threshold=0.8)
        >>> trainer = Trainer(max_epochs=30, callbacks=[cb])           # doctest: +SKIP
        >>> trainer.fit(module, train_loader, val_loader)              # doctest: +SKIP
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None, *,
                 target_epoch: int | None = None, threshold: float | None = None,
                 confidence: float = 0.95, min_epochs: int = 3, patience: int = 1,
                 study: str | None = None, ledger: str | os.PathLike[str] | Ledger | None = None,
                 hparams: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                 model: str | os.PathLike[str] | Forecaster = "auto", dry_run: bool = False,
                 run_id: str | None = None, task: str | None = None,
                 stop_on_divergence: bool = True) -> None:
        super().__init__()
        self.monitor = ForecastMonitor(
            monitor, mode, target_epoch=target_epoch, threshold=threshold,
            confidence=confidence, min_epochs=min_epochs, patience=patience, study=study,
            ledger=ledger, hparams=hparams, meta=meta, model=model, dry_run=dry_run,
            run_id=run_id, task=task, stop_on_divergence=stop_on_divergence)
        self._restored = False

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints: class, monitor and target epoch."""
        return self._generate_state_key(monitor=self.monitor.monitor,
                                        target_epoch=self.monitor.target_epoch_arg)

    # --------------------------------------------------------------- rank 0 work
    @staticmethod
    def _on_rank_zero(trainer: Any, work: Callable[[], _T]) -> _T:
        """Run ``work`` on rank 0 and broadcast its result (or its failure) to every rank."""
        payload: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        if trainer.is_global_zero:
            try:
                payload = ("ok", work())
            except Exception as exc:  # re-raised below, on every rank
                error = exc
                payload = ("error", f"{type(exc).__name__}: {exc}")
        payload = trainer.strategy.broadcast(payload, src=0)
        if error is not None:
            raise error
        if payload[0] == "error":
            raise EarlystopPredictError(f"rank 0 failed: {payload[1]}")
        return payload[1]

    # --------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the run (rank 0), resuming the progress a checkpoint restored."""
        resume, self._restored = self._restored, False

        def begin() -> None:
            hparams, meta = lightning_hparams(trainer, pl_module, self.monitor.metric)
            self.monitor.begin(hparams, meta, resume=resume)  # target: meta["max_epochs"]

        self._on_rank_zero(trainer, begin)

    def _validated_this_epoch(self, trainer: Any) -> bool:
        every = getattr(trainer, "check_val_every_n_epoch", 1)
        if not isinstance(every, int) or every <= 1 or not self.monitor.metric.startswith("val"):
            return True
        return (trainer.current_epoch + 1) % every == 0

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Record the epoch (rank 0), log ``esp/*``, stop every rank if rank 0 says so."""
        if trainer.sanity_checking or not self._validated_this_epoch(trainer):
            return
        epoch = trainer.current_epoch + 1
        metrics = scalar_metrics(trainer.callback_metrics)
        decision: Decision = self._on_rank_zero(
            trainer, lambda: self.monitor.update(epoch, metrics))
        pl_module.log_dict(decision.log_items(), on_step=False, on_epoch=True,
                           sync_dist=trainer.world_size > 1)
        if decision.stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the run in the ledger (rank 0)."""
        if trainer.is_global_zero:
            self.monitor.end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Mark the run failed in the ledger (rank 0)."""
        if trainer.is_global_zero:
            self.monitor.end("failed")

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The monitor's progress (versioned plain JSON), saved in checkpoints."""
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress from a checkpoint; the next ``on_train_start`` resumes it."""
        self.monitor.load_state_dict(state_dict)
        self._restored = True
