"""Canonical keys and feature encoding shared by every accModel.

Hyperparameters and meta data arrive under many names (``lr``,
``learning-rate``, ``train_batch_size``...) and in many spellings
(``"AdamW"``, ``"CosineAnnealingLR"``). This module maps them to the canonical
keys of RUN_RECORD.md and encodes them as fixed-length vectors with a mask per
value: a missing value is masked, never zero-filled.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from earlystop_predict.records.record import RunRecord, finite_or_none

# --------------------------------------------------------------------------- aliases
HPARAM_ALIASES: dict[str, str] = {
    "lr": "learning_rate", "learning-rate": "learning_rate", "learningrate": "learning_rate",
    "learning_rate_init": "learning_rate", "base_lr": "learning_rate", "eta": "learning_rate",
    "bs": "batch_size", "batch-size": "batch_size", "batchsize": "batch_size",
    "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
    "wd": "weight_decay", "weight-decay": "weight_decay", "l2": "weight_decay",
    "optim": "optimizer", "opt": "optimizer", "optimiser": "optimizer",
    "beta1": "momentum", "beta_1": "momentum", "adam_beta1": "momentum",
    "drop": "dropout", "dropout_rate": "dropout", "max_dropout": "dropout", "p_dropout": "dropout",
    "layers": "num_layers", "n_layers": "num_layers", "depth": "num_layers",
    "num_hidden_layers": "num_layers",
    "units": "width", "hidden_size": "width", "max_units": "width", "hidden_units": "width",
    "n_units": "width",
    "schedule": "lr_schedule", "scheduler": "lr_schedule", "lr_scheduler": "lr_schedule",
    "lr_scheduler_type": "lr_schedule",
    "warmup": "warmup_fraction", "warmup_ratio": "warmup_fraction",
}
META_ALIASES: dict[str, str] = {
    "n_train": "train_size", "num_train": "train_size", "num_samples": "train_size",
    "n_classes": "num_classes", "classes": "num_classes", "num_labels": "num_classes",
    "n_features": "num_features", "input_dim": "num_features",
    "n_params": "num_params", "params": "num_params", "parameters": "num_params",
    "epochs": "max_epochs", "num_epochs": "max_epochs", "num_train_epochs": "max_epochs",
    "n_epochs": "max_epochs",
}
METRIC_ALIASES: dict[str, str] = {
    "val_acc": "val_accuracy", "valid_accuracy": "val_accuracy", "valid_acc": "val_accuracy",
    "eval_accuracy": "val_accuracy", "eval_acc": "val_accuracy",
    "validation_accuracy": "val_accuracy", "val/acc": "val_accuracy",
    "val/accuracy": "val_accuracy", "val_sparse_categorical_accuracy": "val_accuracy",
    "val_categorical_accuracy": "val_accuracy", "val_binary_accuracy": "val_accuracy",
    "eval_loss": "val_loss", "valid_loss": "val_loss", "validation_loss": "val_loss",
    "val/loss": "val_loss",
    "accuracy": "train_accuracy", "acc": "train_accuracy", "train_acc": "train_accuracy",
    "sparse_categorical_accuracy": "train_accuracy", "categorical_accuracy": "train_accuracy",
    "binary_accuracy": "train_accuracy", "train/acc": "train_accuracy",
    "loss": "train_loss", "train/loss": "train_loss",
    "epoch_time": "time",
}
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "other")
SCHEDULES = ("constant", "cosine", "linear", "step", "other")
FRAMEWORKS = ("torch", "keras", "other")
HPARAM_KEYS = ("learning_rate", "batch_size", "optimizer", "momentum", "weight_decay",
               "dropout", "num_layers", "width", "lr_schedule", "warmup_fraction")
META_KEYS = ("train_size", "num_classes", "num_features", "num_params", "max_epochs",
             "framework")


def _norm_key(key: str) -> str:
    return str(key).strip().lower()


@functools.lru_cache(maxsize=256)
def canonical_metric(name: str) -> str:
    """Canonical metric name: ``eval_accuracy -> val_accuracy``, ``loss -> train_loss``."""
    return METRIC_ALIASES.get(_norm_key(name), name)


def canonical_optimizer(value: Any) -> str:
    """Map an optimizer name or class name to sgd | adam | adamw | rmsprop | other.

    A dotted path (``"torch.optim.AdamW"``) is read by its last component.
    """
    n = re.sub(r"[^a-z]", "", str(value).rsplit(".", 1)[-1].lower())
    if n.startswith("adamw") or n == "adamweightdecay":
        return "adamw"
    if n.startswith("adam") or n == "nadam" or n == "lazyadam":
        return "adam"
    if n.startswith("rmsprop"):
        return "rmsprop"
    if n.startswith("sgd") or n == "momentum":
        return "sgd"
    return "other"


def canonical_schedule(value: Any) -> str:
    """Map a schedule or scheduler class name to constant | cosine | linear | step | other."""
    if value is None:
        return "constant"
    n = re.sub(r"[^a-z]", "", str(value).lower())
    if not n or n in ("none", "fixed") or n.startswith("constant"):  # constant_with_warmup
        return "constant"
    if "cos" in n:
        return "cosine"
    if "linear" in n or "polynomial" in n:
        return "linear"
    if "step" in n or "exponential" in n or "piecewise" in n or "multiplicative" in n:
        return "step"
    return "other"


def canonical_hparams(hparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rename aliases to canonical keys and normalise categorical values.

    Unknown keys are kept as they are. Example:
        >>> canonical_hparams({"lr": 0.1, "optim": "AdamW"})
        {'learning_rate': 0.1, 'optimizer': 'adamw'}
    """
    out: dict[str, Any] = {}
    for key, value in (hparams or {}).items():
        canon = HPARAM_ALIASES.get(_norm_key(key), key)
        if canon in out and canon != key:
            continue  # an explicit canonical key wins over an alias
        out[canon] = value
    if "optimizer" in out and out["optimizer"] is not None:
        out["optimizer"] = canonical_optimizer(out["optimizer"])
    if "lr_schedule" in out:
        out["lr_schedule"] = canonical_schedule(out["lr_schedule"])
    return out


def canonical_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rename meta aliases to canonical keys (unknown keys kept)."""
    out: dict[str, Any] = {}
    for key, value in (meta or {}).items():
        canon = META_ALIASES.get(_norm_key(key), key)
        if canon in out and canon != key:
            continue
        out[canon] = value
    return out


def canonical_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Rename metric aliases (``eval_loss``, ``val_acc``, ``loss``...) to canonical names."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        canon = canonical_metric(key)
        if canon in out and canon != key:
            continue
        out[canon] = value
    return out


# --------------------------------------------------------------------------- encoding
def _log(value: Any, floor: float = 1e-12) -> float | None:
    f = finite_or_none(value)
    return None if f is None or f <= 0 else math.log(max(f, floor))


# (name, transform) of every numeric static feature; each gets a value and a mask slot.
_NUMERIC: tuple[tuple[str, str], ...] = (
    ("learning_rate", "log"), ("batch_size", "log"), ("momentum", "lin"),
    ("weight_decay", "log"), ("dropout", "lin"), ("num_layers", "lin"), ("width", "log"),
    ("warmup_fraction", "lin"),
    ("train_size", "log"), ("num_classes", "log"), ("num_features", "log"),
    ("num_params", "log"), ("max_epochs", "log"),
)
_META_NUMERIC = {"train_size", "num_classes", "num_features", "num_params", "max_epochs"}
# Rough centring so raw features sit near [-2, 2].
_CENTER = {"learning_rate": (-5.0, 2.0), "batch_size": (4.5, 1.0), "momentum": (0.5, 0.3),
           "weight_decay": (-6.0, 3.0), "dropout": (0.3, 0.3), "num_layers": (3.0, 1.5),
           "width": (5.5, 1.0), "warmup_fraction": (0.05, 0.1), "train_size": (8.0, 2.0),
           "num_classes": (1.5, 1.0), "num_features": (4.0, 2.0), "num_params": (11.0, 3.0),
           "max_epochs": (3.5, 0.7)}
STATIC_NAMES: tuple[str, ...] = tuple(
    [n for n, _ in _NUMERIC] + [f"{n}_mask" for n, _ in _NUMERIC]
    + [f"optimizer={o}" for o in OPTIMIZERS] + [f"lr_schedule={s}" for s in SCHEDULES]
    + [f"framework={f}" for f in FRAMEWORKS]
)
STATIC_DIM = len(STATIC_NAMES)


def encode_static(hparams: Mapping[str, Any], meta: Mapping[str, Any]) -> np.ndarray:
    """Hyperparameters and meta as a float32 vector of ``STATIC_DIM`` with masks.

    Numeric values are logged where their scale is multiplicative and roughly
    centred; a missing value is 0 with its mask 0 (present: mask 1). Categorical
    values are one-hot, all-zero when missing. Results are cached by value, so
    forecasting a run epoch after epoch encodes its hyperparameters once.
    """
    return static_vector(hparams, meta).copy()


def static_vector(hparams: Mapping[str, Any], meta: Mapping[str, Any]) -> np.ndarray:
    """:func:`encode_static` without the copy: a cached, read-only array (the batch
    encoders stack these rows; never write to it)."""
    try:
        key = (tuple(sorted(hparams.items())), tuple(sorted(meta.items())))
        return _encode_static_cached(key)
    except TypeError:  # unhashable or unsortable values: no caching
        return _encode_static(hparams, meta)


@functools.lru_cache(maxsize=4096)
def _encode_static_cached(key: tuple[tuple[tuple[Any, Any], ...], ...]) -> np.ndarray:
    vec = _encode_static(dict(key[0]), dict(key[1]))
    vec.flags.writeable = False
    return vec


def _encode_static(hparams: Mapping[str, Any], meta: Mapping[str, Any]) -> np.ndarray:
    hp = canonical_hparams(hparams)
    mt = canonical_meta(meta)
    n = len(_NUMERIC)
    vec = np.zeros(STATIC_DIM, dtype=np.float32)
    for i, (name, how) in enumerate(_NUMERIC):
        raw = mt.get(name) if name in _META_NUMERIC else hp.get(name)
        v = _log(raw) if how == "log" else finite_or_none(raw)
        if v is not None:
            c, s = _CENTER[name]
            vec[i] = min(max((v - c) / s, -5.0), 5.0)
            vec[n + i] = 1.0
    off = 2 * n
    opt = hp.get("optimizer")
    if opt is not None:
        vec[off + OPTIMIZERS.index(canonical_optimizer(opt))] = 1.0
    off += len(OPTIMIZERS)
    if "lr_schedule" in hp:
        vec[off + SCHEDULES.index(canonical_schedule(hp["lr_schedule"]))] = 1.0
    off += len(SCHEDULES)
    fw = mt.get("framework")
    if fw is not None:
        f = str(fw).lower()
        f = "torch" if f in ("torch", "pytorch", "lightning", "transformers", "hf") else f
        vec[off + (FRAMEWORKS.index(f) if f in FRAMEWORKS else FRAMEWORKS.index("other"))] = 1.0
    return vec


def encode_static_numeric(name: str, raw: np.ndarray) -> np.ndarray:
    """Vectorised encoding of one numeric static feature (as :func:`encode_static` does)."""
    how = dict(_NUMERIC)[name]
    v = np.log(np.maximum(np.asarray(raw, dtype=np.float64), 1e-12)) if how == "log" \
        else np.asarray(raw, dtype=np.float64)
    c, s = _CENTER[name]
    return np.clip((v - c) / s, -5.0, 5.0).astype(np.float32)


def static_slot(name: str) -> tuple[int, int]:
    """(value index, mask index) of a numeric static feature in the encoded vector."""
    i = [n for n, _ in _NUMERIC].index(name)
    return i, len(_NUMERIC) + i


def record_static(record: RunRecord) -> np.ndarray:
    """:func:`encode_static` of a record's hparams and meta."""
    return encode_static(record.hparams, record.meta)


# --------------------------------------------------------------------------- curves
SEQ_NAMES: tuple[str, ...] = (
    "target", "target_mask", "val_loss", "val_loss_mask", "train_accuracy",
    "train_accuracy_mask", "train_loss", "train_loss_mask", "epoch_frac", "log_epoch",
    "target_delta", "target_drawdown",
)
SEQ_DIM = len(SEQ_NAMES)
QUERY_NAMES: tuple[str, ...] = (
    "observed_frac", "target_frac", "gap_frac", "log_target", "log_gap", "last", "best",
    "mean_last3",
)
QUERY_DIM = len(QUERY_NAMES)


def forward_fill(x: np.ndarray, leading: float = 0.0) -> np.ndarray:
    """Forward-fill non-finite values along the last axis; leading ones become ``leading``."""
    mask = np.isfinite(x)
    idx = np.where(mask, np.arange(x.shape[-1]), 0)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(np.where(mask, x, leading), idx, axis=-1)


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """np.clip without its Python-level overhead (hot path of single forecasts)."""
    return np.minimum(np.maximum(x, lo), hi)


def _masked(x: np.ndarray, fn: Any = None) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isfinite(x)
    v = np.where(mask, x, 0.0)
    if fn is not None:
        v = np.where(mask, fn(np.maximum(v, 0.0)), 0.0)
    return v, mask.astype(np.float32)


def encode_sequence(target: np.ndarray, val_loss: np.ndarray, train_acc: np.ndarray,
                    train_loss: np.ndarray, epoch: np.ndarray,
                    max_epochs: np.ndarray) -> np.ndarray:
    """Per-epoch LSTM inputs, ``(B, L, SEQ_DIM)`` float32, from ``(B, L)`` arrays.

    NaN marks a missing value (masked, never zero-filled as data). ``epoch`` is
    the 1-based epoch of each row and ``max_epochs`` (B,) the planned epochs, so
    the position is given both absolutely and relative to the schedule's end.
    """
    tv, tm = _masked(target)
    lv, lm = _masked(val_loss, np.log1p)
    av, am = _masked(train_acc)
    sv, sm = _masked(train_loss, np.log1p)
    filled = forward_fill(target)
    prev = np.concatenate([filled[:, :1], filled[:, :-1]], axis=1)
    delta = np.where(tm > 0, filled - prev, 0.0)
    best = np.maximum.accumulate(np.where(np.isfinite(target), target, -np.inf), axis=1)
    draw = np.where(np.isfinite(best), best - filled, 0.0)
    ep = np.asarray(epoch, dtype=np.float64)
    t = np.asarray(max_epochs, dtype=np.float64).reshape(-1, 1)
    parts = (tv, tm, _clip(lv, 0, 5), lm, av, am, _clip(sv, 0, 5), sm,
             _clip(ep / t, 0, 2), np.log(np.maximum(ep, 1)) / 4.0, delta * 10.0, draw * 10.0)
    out = np.empty(tv.shape + (len(parts),), dtype=np.float32)
    for k, part in enumerate(parts):
        out[..., k] = part
    return out


def encode_query(observed: np.ndarray, target_epoch: np.ndarray, max_epochs: np.ndarray,
                 last: np.ndarray, best: np.ndarray, mean_last3: np.ndarray) -> np.ndarray:
    """Query features ``(B, QUERY_DIM)``: where the forecast starts and where it aims."""
    e = np.asarray(observed, dtype=np.float64)
    m = np.asarray(target_epoch, dtype=np.float64)
    t = np.asarray(max_epochs, dtype=np.float64)
    out = np.stack([_clip(e / t, 0, 2), _clip(m / t, 0, 2), _clip((m - e) / t, 0, 2),
                    np.log(np.maximum(m, 1.0)) / 4.0, np.log(np.maximum(m - e, 0.0) + 1.0) / 4.0,
                    last, best, mean_last3],
                   axis=-1)
    return out.astype(np.float32)


def prefix_stats(target: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    """(last, best, mean of the last three) of each padded row's first ``lengths`` values.

    Missing values are forward-filled first (leading ones count as 0), exactly as
    the training pipeline computes them; rows with no finite value give zeros.
    """
    b, L = target.shape
    cols = np.arange(L)[None, :]
    inside = cols < lengths[:, None]
    x = np.where(inside, target, np.nan)
    filled = forward_fill(x)
    rows = np.arange(b)
    last = filled[rows, lengths - 1]
    best = np.where(inside, filled, -np.inf).max(axis=1)
    win = inside & (cols >= (lengths - 3)[:, None])
    mean3 = np.where(win, filled, 0.0).sum(axis=1) / np.minimum(lengths, 3)
    return last, best, mean3
