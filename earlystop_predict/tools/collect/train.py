"""Train one drawn run of ``earlystop-predict collect`` through the project's callbacks.

:func:`train_run` builds the run's data and model and trains it with the
framework's forecast callback in ``dry_run`` mode (Lightning for the torch
families, Keras, or the Hugging Face Trainer for ``text-hf``), writing every
epoch to the ledger. A run whose loss or metric turns NaN/inf is stopped at that
epoch and kept, marked ``diverged``. The framework loads when a run of it is
trained, never at import.

Example:
    >>> from earlystop_predict.tools.collect.families import draw_config
    >>> cfg = draw_config("wine", np.random.default_rng(0), min_epochs=3, max_epochs=4,
    ...                   framework="lightning")
    >>> out = train_run(cfg, run_id="wine-0", ledger="ledger.db")   # doctest: +SKIP
    >>> out.status, out.record.last_epoch                           # doctest: +SKIP
    ('completed', 4)
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlystop_predict._imports import require
from earlystop_predict.forecast.base import Forecaster, ScriptedForecaster
from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.collect.families import (
    Dataset,
    RunConfig,
    family,
    load_data,
    lr_factor,
)

METRIC = "val_accuracy"
#: Values that mark a run as diverged when not finite (canonical names and as logged).
_WATCHED = ("loss", "train_loss", "val_loss", "val_accuracy", "eval_loss", "eval_accuracy")


def constant_forecast(record: RunRecord, target_epoch: int) -> float:
    """The scripted forecaster of a collection: always 0.5 (forecasts are not collected)."""
    return 0.5


def make_forecaster(spec: str) -> str | Forecaster:
    """``"scripted"``: a constant :class:`ScriptedForecaster`; anything else: a model spec."""
    return ScriptedForecaster(constant_forecast) if spec == "scripted" else spec


@dataclass
class RunOutcome:
    """What one training run produced.

    Attributes:
        record: the run's record from the callback's monitor (forecasts included).
        status: ``"completed"`` or ``"diverged"``.
        diverged_epoch: the 1-based epoch whose loss or metric was NaN/inf, or None.
        seconds: wall time of the run (data, model, training).
        device: ``"cpu"`` or ``"cuda"``.
    """

    record: RunRecord
    status: str
    diverged_epoch: int | None
    seconds: float
    device: str


def _not_finite(metrics: Mapping[str, Any]) -> bool:
    for key in _WATCHED:
        value = metrics.get(key)
        if value is None:
            continue
        try:
            f = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(f):
            return True
    return False


def _callback_kwargs(cfg: RunConfig, data: Dataset, run_id: str, ledger: str | None,
                     forecaster: str) -> dict[str, Any]:
    fam = family(cfg.family)
    meta = {"train_size": data.train_size, "num_classes": data.num_classes,
            "num_features": data.num_features, "max_epochs": cfg.max_epochs,
            **data.extra_meta}
    return dict(target_epoch=cfg.max_epochs, min_epochs=1, dry_run=True, ledger=ledger,
                hparams=dict(cfg.hparams), meta=meta, model=make_forecaster(forecaster),
                run_id=run_id, task=fam.task, study=f"collect/{cfg.family}")


def preload(framework: str) -> None:
    """Import ``framework``'s adapter (and the framework) now, not inside a timed run."""
    import importlib

    module = {"lightning": "lightning", "keras": "keras",
              "transformers": "transformers"}[framework]
    if framework == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    importlib.import_module(f"earlystop_predict.integrations.{module}")


def _torch_device() -> str:
    torch = require("torch", extra="lightning")
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_run(cfg: RunConfig, *, run_id: str, ledger: str | None = None,
              forecaster: str = "scripted") -> RunOutcome:
    """Train one run to its planned epochs (or to divergence) and return its record.

    Args:
        cfg: the drawn run.
        run_id: the run's id in the record and the ledger.
        ledger: path of the SQLite ledger, or None. Default None.
        forecaster: ``"scripted"`` (a constant; collection needs no forecasts) or a
            model spec for the callback (``"auto"``, ``"lstm"``...). Default ``"scripted"``.

    Raises:
        MissingExtraError: the run's framework is not installed.
    """
    t0 = time.perf_counter()
    data = load_data(cfg)
    kwargs = _callback_kwargs(cfg, data, run_id, ledger, forecaster)
    from earlystop_predict.tools.collect.train_more import trainer_for

    trainer = trainer_for(cfg, sys.modules[__name__]) or {"lightning": _train_lightning, "keras": _train_keras,
                                   "transformers": _train_hf}[cfg.framework]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record, diverged, device = trainer(cfg, data, kwargs)
    status = "diverged" if diverged is not None else "completed"
    if diverged is not None and ledger is not None:
        from earlystop_predict.ledger import Ledger

        with Ledger(ledger) as led:  # the monitor closed it as completed (dry_run)
            led.finish_run(run_id, final_value=record.final_value(),
                           final_epoch=record.last_epoch,
                           stopped={"epoch": diverged, "reason": "diverged"}, status=status)
    return RunOutcome(record, status, diverged, time.perf_counter() - t0, device)


# ----------------------------------------------------------------------------- torch
def _torch_optimizer(torch: Any, params: Any, hp: Mapping[str, Any]) -> Any:
    lr, wd, mom = float(hp["learning_rate"]), float(hp["weight_decay"]), float(hp["momentum"])
    opt = hp["optimizer"]
    if opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    if opt == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)
    cls = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=(mom, 0.999), weight_decay=wd)


def _torch_scheduler(torch: Any, opt: Any, hp: Mapping[str, Any], total: int) -> Any:
    schedule, warm = str(hp["lr_schedule"]), float(hp["warmup_fraction"])
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, total, schedule, warm))


def _torch_net(torch: Any, cfg: RunConfig, data: Dataset) -> Any:
    nn = torch.nn
    hp = cfg.hparams
    depth, width, p = int(hp["num_layers"]), int(hp["width"]), float(hp["dropout"])
    arch, k = hp.get("arch", family(cfg.family).arch), data.num_classes
    if arch == "mlp":
        mods: list[Any] = []
        n_in = data.num_features
        for _ in range(depth):
            mods += [nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(p)]
            n_in = width
        return nn.Sequential(*mods, nn.Linear(n_in, k))
    if arch == "cnn":
        mods, c_in, side = [nn.Unflatten(1, (1, 8))], 1, 8
        for i in range(depth):
            mods += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
            if i < 2:
                mods.append(nn.MaxPool2d(2))
                side //= 2
            c_in = width
        return nn.Sequential(*mods, nn.Flatten(), nn.Dropout(p), nn.Linear(width * side * side, k))
    if arch == "rnn":
        cell = nn.GRU if cfg.data.get("cell", "gru") == "gru" else nn.LSTM

        class Recurrent(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = cell(1, width, num_layers=depth, batch_first=True,
                                dropout=p if depth > 1 else 0.0)
                self.drop = nn.Dropout(p)
                self.head = nn.Linear(width, k)

            def forward(self, x: Any) -> Any:
                out, _ = self.rnn(x)
                return self.head(self.drop(out[:, -1]))

        return Recurrent()
    raise ValueError(f"no torch model for arch {arch!r}")  # pragma: no cover


def _train_lightning(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *,
                     net: Any = None, rows_per_epoch: int | None = None,
                     scheduler: Any = None) -> tuple[RunRecord, int | None, str]:
    """Lightning ``fit`` of the run (the callback plus a divergence guard).

    Args:
        net: ``(torch) -> nn.Module``; None: the family's default net. Default None.
        rows_per_epoch: an epoch is this many random training rows (a fresh draw each
            epoch), or None: all of them. Default None.
        scheduler: ``(torch, optimizer, total_steps, steps_per_epoch) -> the
            lr_scheduler dict of configure_optimizers``; None: :func:`lr_factor`
            per step. Default None.
    """
    import logging

    torch = require("torch", extra="lightning")
    from earlystop_predict.integrations.lightning import LightningForecastCallback, pl

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    pl.seed_everything(cfg.seed, verbose=False)
    hp = cfg.hparams
    batch = int(hp["batch_size"])
    rows = min(rows_per_epoch or data.train_size, data.train_size)
    steps_per_epoch = math.ceil(rows / batch)
    total = steps_per_epoch * cfg.max_epochs
    net = net(torch) if net is not None else _torch_net(torch, cfg, data)
    f = torch.nn.functional

    class Module(pl.LightningModule):
        """Logs epoch means of the training batches once per epoch: ``self.log`` per step
        costs more than a tiny model's step."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.sums: list[Any] = []

        def _sums(self, batch_: Any) -> tuple[Any, Any]:
            x, y = batch_
            out = self.net(x)
            loss = f.cross_entropy(out, y)
            return loss, (loss.detach() * len(y), (out.argmax(1) == y).sum(), len(y))

        def on_train_epoch_start(self) -> None:
            self.sums = []

        def training_step(self, batch_: Any, _: int) -> Any:
            loss, sums = self._sums(batch_)
            self.sums.append(sums)
            return loss

        def _log_means(self, prefix: str, sums: list[Any]) -> None:
            n = sum(s[2] for s in sums)
            self.log(f"{prefix}_loss", torch.stack([s[0] for s in sums]).sum() / n)
            self.log(f"{prefix}_accuracy", torch.stack([s[1] for s in sums]).sum().float() / n)

        def on_validation_epoch_start(self) -> None:
            self.val_sums: list[Any] = []

        def validation_step(self, batch_: Any, _: int) -> None:
            self.val_sums.append(self._sums(batch_)[1])

        def on_validation_epoch_end(self) -> None:
            # Validation runs at the end of each training epoch, before the callbacks'
            # on_train_epoch_end: both means are final when the forecast callback reads them.
            self._log_means("val", self.val_sums)
            if self.sums:
                self._log_means("train", self.sums)

        def configure_optimizers(self) -> Any:
            opt = _torch_optimizer(torch, self.parameters(), hp)
            if scheduler is not None:
                return {"optimizer": opt,
                        "lr_scheduler": scheduler(torch, opt, total, steps_per_epoch)}
            return {"optimizer": opt, "lr_scheduler": {
                "scheduler": _torch_scheduler(torch, opt, hp, total), "interval": "step"}}

    class StopOnDivergence(pl.Callback):
        epoch: int | None = None

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if _not_finite(trainer.callback_metrics):
                self.epoch = trainer.current_epoch + 1
                trainer.should_stop = True

    tensors = [torch.from_numpy(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val)]
    train = torch.utils.data.TensorDataset(tensors[0], tensors[1])
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(train, generator=gen,
                                       num_samples=rows if rows_per_epoch else None),
        batch, drop_last=False)
    # Whole batches by index (no per-row collate): tiny models are otherwise loader-bound.
    train_loader = torch.utils.data.DataLoader(train, sampler=sampler, batch_size=None)
    val = torch.utils.data.TensorDataset(tensors[2], tensors[3])
    val_loader = torch.utils.data.DataLoader(val, batch_size=1024)
    device = _torch_device()
    cb = LightningForecastCallback(METRIC, **kwargs)
    guard = StopOnDivergence()
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                         max_epochs=cfg.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[cb, guard])
    trainer.fit(Module(), train_loader, val_loader)
    return cb.monitor.record, guard.epoch, device


# ----------------------------------------------------------------------------- keras
def _keras_schedule(keras: Any, lr: float, total: int, schedule: str, warm_frac: float) -> Any:
    ops = keras.ops

    class CollectSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """:func:`~earlystop_predict.tools.collect.families.lr_factor` in ``keras.ops``."""

        def __call__(self, step: Any) -> Any:
            s = ops.cast(step, "float32")
            warm = float(int(round(warm_frac * total))) if warm_frac > 0 else 0.0
            span = float(max(1, total - warm))
            p = ops.clip((s - warm) / span, 0.0, 1.0)
            if schedule == "cosine":
                f = 0.5 * (1.0 + ops.cos(math.pi * p))
            elif schedule == "linear":
                f = 1.0 - p
            elif schedule == "step":
                f = ops.where(p >= 0.75, 0.01, ops.where(p >= 0.5, 0.1, 1.0))
            else:
                f = ops.ones_like(p)
            if warm > 0:
                f = ops.where(s < warm, (s + 1.0) / warm, f)
            return lr * f

        def get_config(self) -> dict[str, Any]:
            return {"initial_learning_rate": lr, "decay_steps": total, "schedule": schedule,
                    "warmup_fraction": warm_frac}

    return CollectSchedule()


def _keras_model(keras: Any, cfg: RunConfig, data: Dataset) -> Any:
    L = keras.layers
    hp = cfg.hparams
    depth, width, p = int(hp["num_layers"]), int(hp["width"]), float(hp["dropout"])
    arch, k = hp.get("arch", family(cfg.family).arch), data.num_classes
    if arch == "mlp":
        layers: list[Any] = [keras.Input((data.num_features,))]
        for _ in range(depth):
            layers += [L.Dense(width, activation="relu"), L.Dropout(p)]
    elif arch == "cnn":
        layers = [keras.Input((8, 8)), L.Reshape((8, 8, 1))]
        for i in range(depth):
            layers.append(L.Conv2D(width, 3, padding="same", activation="relu"))
            if i < 2:
                layers.append(L.MaxPooling2D(2))
        layers += [L.Flatten(), L.Dropout(p)]
    elif arch == "rnn":
        cell = L.GRU if cfg.data.get("cell", "gru") == "gru" else L.LSTM
        layers = [keras.Input(data.x_train.shape[1:])]
        for i in range(depth):
            layers += [cell(width, return_sequences=i < depth - 1), L.Dropout(p)]
    else:  # pragma: no cover
        raise ValueError(f"no keras model for arch {arch!r}")
    layers.append(L.Dense(k, activation="softmax"))
    return keras.Sequential(layers)


def _keras_optimizer(keras: Any, hp: Mapping[str, Any], schedule: Any) -> Any:
    opt, mom = hp["optimizer"], float(hp["momentum"])
    wd = float(hp["weight_decay"]) or None
    if opt == "sgd":
        return keras.optimizers.SGD(schedule, momentum=mom, weight_decay=wd)
    if opt == "rmsprop":
        return keras.optimizers.RMSprop(schedule, momentum=mom, weight_decay=wd)
    if opt == "adamw":
        return keras.optimizers.AdamW(schedule, beta_1=mom, weight_decay=wd or 0.0)
    return keras.optimizers.Adam(schedule, beta_1=mom, weight_decay=wd)


def _train_keras(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *,
                 model: Any = None, schedule: Any = None, callbacks: Any = None,
                 rows_per_epoch: int | None = None) -> tuple[RunRecord, int | None, str]:
    """Keras ``fit`` of the run (the callback plus a divergence guard).

    Args:
        model: ``(keras) -> uncompiled model``; None: the family's default. Default None.
        schedule: ``(keras, lr, total_steps, steps_per_epoch) -> a learning rate or
            schedule``; None: :func:`lr_factor` as a Keras schedule. Default None.
        callbacks: ``(keras) -> extra callbacks`` (ReduceLROnPlateau...). Default None.
        rows_per_epoch: an epoch is this many random training rows (a fresh draw each
            epoch, a ``keras.utils.PyDataset``), or None: all of them. Default None.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from earlystop_predict.integrations.keras import KerasForecastCallback, keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed % 2 ** 31)
    hp = cfg.hparams
    batch = int(hp["batch_size"])
    rows = min(rows_per_epoch or data.train_size, data.train_size)
    steps_per_epoch = math.ceil(rows / batch)
    total = steps_per_epoch * cfg.max_epochs
    if schedule is None:
        lr = _keras_schedule(keras, float(hp["learning_rate"]), total,
                             str(hp["lr_schedule"]), float(hp["warmup_fraction"]))
    else:
        lr = schedule(keras, float(hp["learning_rate"]), total, steps_per_epoch)
    model = model(keras) if model is not None else _keras_model(keras, cfg, data)
    model.compile(_keras_optimizer(keras, hp, lr), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    diverged: list[int] = []

    def guard(epoch: int, logs: Mapping[str, Any] | None) -> None:
        if _not_finite(logs or {}):
            diverged.append(epoch + 1)
            model.stop_training = True

    cb = KerasForecastCallback(METRIC, **kwargs)
    extra = list(callbacks(keras)) if callbacks is not None else []
    fit_kw: dict[str, Any] = {"batch_size": batch, "shuffle": True}
    train: Any = data.x_train
    if rows_per_epoch:
        from earlystop_predict.tools.collect.train_more import random_rows

        train, fit_kw = random_rows(keras, data, rows, batch, cfg.seed), {}
    model.fit(train, data.y_train if not rows_per_epoch else None,
              validation_data=(data.x_val, data.y_val), epochs=cfg.max_epochs, verbose=0,
              callbacks=[cb, *extra, keras.callbacks.LambdaCallback(on_epoch_end=guard)],
              **fit_kw)
    record = cb.monitor.record
    keras.backend.clear_session()
    return record, (diverged[0] if diverged else None), "cpu"


# ----------------------------------------------------------------------------- HF
def _train_hf(cfg: RunConfig, data: Dataset,
              kwargs: dict[str, Any]) -> tuple[RunRecord, int | None, str]:
    import logging

    torch = require("torch", extra="transformers")
    from earlystop_predict.integrations.transformers import HFForecastCallback, transformers
    from earlystop_predict.tools.collect.train_more import _token_dataset

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hp = cfg.hparams
    width, depth, p = int(hp["width"]), int(hp["num_layers"]), float(hp["dropout"])
    heads = 4 if width >= 32 else 2
    torch.manual_seed(cfg.seed)
    seq_len = int(data.extra_meta["seq_len"])
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=int(data.extra_meta["vocab_size"]), hidden_size=width,
        num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=2 * width,
        max_position_embeddings=seq_len + 2, hidden_dropout_prob=p,
        attention_probs_dropout_prob=p, num_labels=data.num_classes))

    class StopOnDivergence(transformers.TrainerCallback):
        epoch: int | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any,
                        metrics: Mapping[str, Any] | None = None, **kw: Any) -> None:
            history = state.log_history[-3:]
            if _not_finite(metrics or {}) or any(_not_finite(h) for h in history
                                                 if "loss" in h):
                self.epoch = self.epoch or int(round(state.epoch or 0))
                control.should_training_stop = True

    def accuracy(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return {"accuracy": float((np.asarray(logits).argmax(-1) == pred.label_ids).mean())}

    batch = int(hp["batch_size"])
    total = math.ceil(data.train_size / batch) * cfg.max_epochs
    device = _torch_device()
    model.to(device)  # before the optimizer is built on its parameters
    opt = _torch_optimizer(torch, model.parameters(), hp)
    sched = _torch_scheduler(torch, opt, hp, total)
    cb = HFForecastCallback("eval_accuracy", **kwargs)
    guard = StopOnDivergence()
    with tempfile.TemporaryDirectory(prefix="esp-collect-") as out:
        args = transformers.TrainingArguments(
            output_dir=out, use_cpu=device != "cuda", report_to=[], eval_strategy="epoch",
            save_strategy="no", logging_strategy="epoch", num_train_epochs=cfg.max_epochs,
            per_device_train_batch_size=batch, per_device_eval_batch_size=512,
            learning_rate=float(hp["learning_rate"]), weight_decay=float(hp["weight_decay"]),
            disable_tqdm=True, dataloader_num_workers=0, seed=cfg.seed % 2 ** 31,
            logging_nan_inf_filter=False, remove_unused_columns=False)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=_token_dataset(torch, data.x_train, data.y_train),
            eval_dataset=_token_dataset(torch, data.x_val, data.y_val), compute_metrics=accuracy,
            callbacks=[cb, guard], optimizers=(opt, sched))
        trainer.remove_callback(transformers.PrinterCallback)  # no log dicts on stdout
        trainer.train()
    return cb.record, guard.epoch, device
