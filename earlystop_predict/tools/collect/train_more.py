"""Trainers of the collector's "what users train" families (frameworks load on use).

- ``text-hf-steps``: the Hugging Face ``Trainer`` with its own AdamW and scheduler
  (``lr_scheduler_type``, warm-up steps), ``eval_strategy="steps"``: each evaluation
  is one row (``epoch`` = evaluation index, ``step`` = its optimizer step); the model
  is a BERT or GPT-2 built from its config (random init) with a classification head.
- ``images-cnn``: a 3x3-conv + max-pool CNN on ``(side, side)`` images with random
  augmentation in training only (torch: one shift per batch, per-image flips and
  noise; Keras: ``RandomTranslation``, ``RandomFlip``, ``GaussianNoise``).
- ``tabular-large``: the MLP, each epoch a fresh random subsample of the rows.
- ``keras-mlp``: Keras schedules or ``ReduceLROnPlateau``; ``lightning-sched``:
  torch's OneCycleLR, ReduceLROnPlateau, CosineAnnealing(WarmRestarts), ExponentialLR
  or MultiStepLR.

:func:`trainer_for` tells :func:`~earlystop_predict.tools.collect.train.train_run`
which of these trains a run (None: the original families' trainers).
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from earlystop_predict._imports import require
from earlystop_predict.records.record import RunRecord
from earlystop_predict.tools.collect.families import Dataset, RunConfig

Trained = tuple[RunRecord, "int | None", str]


def trainer_for(cfg: RunConfig, base: Any
                ) -> Callable[[RunConfig, Dataset, dict[str, Any]], Any] | None:
    """The trainer of ``cfg``'s family and framework, or None (an original family).

    ``base`` is :mod:`~earlystop_predict.tools.collect.train`, handed in by its
    ``train_run`` (whose Keras and Lightning loops these trainers reuse), so that
    imports run one way: ``train`` -> ``train_more``.
    """
    fn = {("text-hf-steps", "transformers"): train_hf_steps,
            ("images-cnn", "lightning"): train_images_lightning,
            ("images-cnn", "keras"): train_images_keras,
            ("tabular-large", "lightning"): train_rows_lightning,
            ("tabular-large", "keras"): train_rows_keras,
            ("keras-mlp", "keras"): train_keras_scheduled,
            ("lightning-sched", "lightning"): train_lightning_scheduled,
            }.get((cfg.family, cfg.framework))
    return None if fn is None else functools.partial(fn, base=base)


# ----------------------------------------------------------------------------- HF steps
def _hf_model(transformers: Any, cfg: RunConfig, data: Dataset) -> Any:
    hp = cfg.hparams
    width, depth, p = int(hp["width"]), int(hp["num_layers"]), float(hp["dropout"])
    heads, seq_len = (4 if width >= 32 else 2), int(data.extra_meta["seq_len"])
    vocab, k = int(data.extra_meta["vocab_size"]), data.num_classes
    if hp["arch"] == "gpt2":
        return transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
            vocab_size=vocab, n_embd=width, n_layer=depth, n_head=heads, n_inner=2 * width,
            n_positions=seq_len, resid_pdrop=p, embd_pdrop=p, attn_pdrop=p, num_labels=k,
            pad_token_id=0, bos_token_id=1, eos_token_id=1))
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=depth,
        num_attention_heads=heads, intermediate_size=2 * width,
        max_position_embeddings=seq_len + 2, hidden_dropout_prob=p,
        attention_probs_dropout_prob=p, num_labels=k))


def _token_dataset(torch: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Token ids and labels as the HF Trainer reads them (also the text-hf family's)."""
    class Tokens(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
            self.mask = torch.ones(x.shape[1], dtype=torch.long)

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.x[i], "attention_mask": self.mask, "labels": self.y[i]}

    return Tokens()


def _hf_guard(transformers: Any, base: Any) -> Any:
    class StopOnDivergence(transformers.TrainerCallback):
        """Stops at the first evaluation whose metrics or latest loss are NaN/inf."""

        epoch: int | None = None
        evals = 0

        def on_evaluate(self, args: Any, state: Any, control: Any,
                        metrics: Mapping[str, Any] | None = None, **kw: Any) -> None:
            self.evals += 1
            recent = [h for h in state.log_history[-3:] if "loss" in h]
            if self.epoch is None and (base._not_finite(metrics or {})
                                       or any(base._not_finite(h) for h in recent)):
                self.epoch = self.evals
                control.should_training_stop = True

    return StopOnDivergence()


def _accuracy(pred: Any) -> dict[str, float]:
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == pred.label_ids).mean())}


def train_hf_steps(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """``Trainer.train()`` for ``cfg.max_epochs`` evaluations of ``eval_steps`` steps."""
    import logging

    torch = require("torch", extra="transformers")
    from earlystop_predict.integrations.transformers import HFForecastCallback, transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hp, every = cfg.hparams, int(data.extra_meta["eval_steps"])
    torch.manual_seed(cfg.seed)
    model = _hf_model(transformers, cfg, data)
    max_steps = every * cfg.max_epochs
    warm = float(hp["warmup_fraction"])
    sched = {"constant": "constant_with_warmup"}.get(str(hp["lr_schedule"]),
                                                    str(hp["lr_schedule"]))
    device = base._torch_device()
    cb, guard = HFForecastCallback("eval_accuracy", **kwargs), _hf_guard(transformers, base)
    with tempfile.TemporaryDirectory(prefix="esp-collect-") as out:
        args = transformers.TrainingArguments(
            output_dir=out, use_cpu=device != "cuda", report_to=[], eval_strategy="steps",
            eval_steps=every, logging_strategy="steps", logging_steps=every,
            save_strategy="no", max_steps=max_steps,
            per_device_train_batch_size=int(hp["batch_size"]), per_device_eval_batch_size=512,
            learning_rate=float(hp["learning_rate"]), weight_decay=float(hp["weight_decay"]),
            lr_scheduler_type=sched, warmup_steps=int(round(warm * max_steps)),
            optim="adamw_torch", disable_tqdm=True, dataloader_num_workers=0,
            seed=cfg.seed % 2 ** 31, logging_nan_inf_filter=False, remove_unused_columns=False)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=_token_dataset(torch, data.x_train, data.y_train),
            eval_dataset=_token_dataset(torch, data.x_val, data.y_val), compute_metrics=_accuracy,
            callbacks=[cb, guard])
        trainer.remove_callback(transformers.PrinterCallback)  # no log dicts on stdout
        trainer.train()
    record = cb.record
    for row in record.epochs:
        row["step"] = int(row["epoch"]) * every
    return record, guard.epoch, device


# ----------------------------------------------------------------------------- images
def _torch_convnet(torch: Any, cfg: RunConfig, data: Dataset) -> Any:
    nn, d, hp = torch.nn, cfg.data, cfg.hparams
    shift, flip, noise = int(d.get("aug_shift", 0)), bool(d.get("aug_flip")), float(
        d.get("aug_noise", 0.0))

    class Augment(nn.Module):
        """Training-time augmentation of ``(n, side, side)`` images."""

        def forward(self, x: Any) -> Any:
            if not self.training:
                return x
            if shift:
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,)))
                x = torch.roll(x, (dy, dx), dims=(1, 2))
            if flip:
                mask = torch.rand(x.shape[0], 1, 1, device=x.device) < 0.5
                x = torch.where(mask, x.flip(2), x)
            return x + noise * torch.randn_like(x) if noise else x

    side = int(data.extra_meta["image_side"])
    width, depth, p = int(hp["width"]), int(hp["num_layers"]), float(hp["dropout"])
    mods: list[Any] = [Augment(), nn.Unflatten(1, (1, side))]
    c_in = 1
    for _ in range(depth):
        mods += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = width, side // 2
    return nn.Sequential(*mods, nn.Flatten(), nn.Dropout(p),
                         nn.Linear(width * side * side, data.num_classes))


def _keras_convnet(keras: Any, cfg: RunConfig, data: Dataset) -> Any:
    L, d, hp = keras.layers, cfg.data, cfg.hparams
    side = int(data.extra_meta["image_side"])
    layers: list[Any] = [keras.Input((side, side)), L.Reshape((side, side, 1))]
    if int(d.get("aug_shift", 0)):
        f = int(d["aug_shift"]) / side
        layers.append(L.RandomTranslation(f, f, fill_mode="constant", seed=cfg.seed % 2 ** 31))
    if d.get("aug_flip"):
        layers.append(L.RandomFlip("horizontal", seed=cfg.seed % 2 ** 31))
    if float(d.get("aug_noise", 0.0)):
        layers.append(L.GaussianNoise(float(d["aug_noise"]), seed=cfg.seed % 2 ** 31))
    for _ in range(int(hp["num_layers"])):
        layers += [L.Conv2D(int(hp["width"]), 3, padding="same", activation="relu"),
                   L.MaxPooling2D(2)]
    layers += [L.Flatten(), L.Dropout(float(hp["dropout"])),
               L.Dense(data.num_classes, activation="softmax")]
    return keras.Sequential(layers)


def train_images_lightning(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Lightning ``fit`` of the augmented CNN."""
    return base._train_lightning(cfg, data, kwargs,
                                 net=lambda torch: _torch_convnet(torch, cfg, data))


def train_images_keras(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Keras ``fit`` of the augmented CNN."""
    return base._train_keras(cfg, data, kwargs,
                             model=lambda keras: _keras_convnet(keras, cfg, data))


# ----------------------------------------------------------------------------- big tables
def random_rows(keras: Any, data: Dataset, rows: int, batch: int, seed: int) -> Any:
    """A ``keras.utils.PyDataset`` whose epoch is ``rows`` random training rows (drawn
    afresh each epoch) in batches of ``batch``."""
    class RandomRows(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(rows / batch)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * batch:(i + 1) * batch]
            return data.x_train[idx], data.y_train[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.choice(data.train_size, size=rows, replace=False)

    return RandomRows()


def train_rows_lightning(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Lightning ``fit``, each epoch ``rows_per_epoch`` random rows."""
    return base._train_lightning(cfg, data, kwargs,
                                 rows_per_epoch=int(data.extra_meta["rows_per_epoch"]))


def train_rows_keras(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Keras ``fit``, each epoch ``rows_per_epoch`` random rows."""
    return base._train_keras(cfg, data, kwargs,
                             rows_per_epoch=int(data.extra_meta["rows_per_epoch"]))


# ----------------------------------------------------------------------------- schedulers
def _torch_scheduler(hp: Mapping[str, Any], epochs: int) -> Callable[..., dict[str, Any]]:
    kind = str(hp["scheduler_kind"])

    def make(torch: Any, opt: Any, total: int, steps_per_epoch: int) -> dict[str, Any]:
        s = torch.optim.lr_scheduler
        if kind == "onecycle":
            return {"scheduler": s.OneCycleLR(
                opt, max_lr=float(hp["learning_rate"]), total_steps=total,
                pct_start=float(hp["warmup_fraction"]), cycle_momentum=False),
                "interval": "step"}
        if kind == "plateau":
            return {"scheduler": s.ReduceLROnPlateau(
                opt, factor=float(hp["sched_factor"]), patience=int(hp["sched_patience"])),
                "interval": "epoch", "monitor": "val_loss"}
        if kind == "cosine-annealing":
            sched = s.CosineAnnealingLR(opt, T_max=epochs)
        elif kind == "cosine-restarts":
            sched = s.CosineAnnealingWarmRestarts(
                opt, T_0=max(1, epochs // int(hp["sched_cycles"])))
        elif kind == "exponential":
            sched = s.ExponentialLR(opt, gamma=float(hp["sched_final_factor"]) ** (1 / epochs))
        else:  # multistep
            sched = s.MultiStepLR(opt, milestones=[epochs // 2, (3 * epochs) // 4],
                                  gamma=float(hp["sched_factor"]))
        return {"scheduler": sched, "interval": "epoch"}

    return make


def train_lightning_scheduled(cfg: RunConfig, data: Dataset,
                              kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Lightning ``fit`` with the drawn torch scheduler."""
    return base._train_lightning(cfg, data, kwargs,
                                 scheduler=_torch_scheduler(cfg.hparams, cfg.max_epochs))


def _keras_lr(hp: Mapping[str, Any]) -> Callable[..., Any]:
    kind = str(hp["scheduler_kind"])

    def make(keras: Any, lr: float, total: int, steps_per_epoch: int) -> Any:
        sch = keras.optimizers.schedules
        if kind == "cosine-warmup":
            warm = int(round(float(hp["warmup_fraction"]) * total))
            if warm <= 0:
                return sch.CosineDecay(lr, decay_steps=total)
            return sch.CosineDecay(0.0, decay_steps=max(1, total - warm), warmup_target=lr,
                                   warmup_steps=warm)
        if kind == "exponential":
            epochs = total / steps_per_epoch
            return sch.ExponentialDecay(lr, decay_steps=steps_per_epoch,
                                        decay_rate=float(hp["sched_final_factor"]) ** (1 / epochs))
        if kind == "piecewise":
            return sch.PiecewiseConstantDecay([total // 2, (3 * total) // 4],
                                              [lr, 0.1 * lr, 0.01 * lr])
        return lr  # constant, plateau

    return make


def train_keras_scheduled(cfg: RunConfig, data: Dataset, kwargs: dict[str, Any], *, base: Any) -> Trained:
    """Keras ``fit`` with the drawn Keras schedule or ReduceLROnPlateau."""
    hp = cfg.hparams

    def callbacks(keras: Any) -> list[Any]:
        if hp["scheduler_kind"] != "plateau":
            return []
        return [keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=float(hp["sched_factor"]),
            patience=int(hp["sched_patience"]), verbose=0)]

    return base._train_keras(cfg, data, kwargs, schedule=_keras_lr(hp), callbacks=callbacks)
