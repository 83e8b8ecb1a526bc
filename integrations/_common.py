"""Framework-free helpers shared by the adapters.

Everything here works by duck typing: nothing imports a framework, so the
Keras, Lightning and Hugging Face adapters (and their tests) can share it.
The adapters collect what the framework exposes (an optimizer, a module, the
epoch's logs) and these helpers turn it into canonical ``hparams``/``meta``
(RUN_RECORD.md) and plain float metrics.

Example:
    >>> scalar_metrics({"loss": 0.5, "lr_name": "cosine", "val_acc": float("nan")})
    {'loss': 0.5, 'val_acc': nan}
    >>> layer_hparams([64, 64, 10], [0.1, 0.3])
    {'num_layers': 2, 'width': 64, 'dropout': 0.3}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from earlystop_predict.errors import ConfigError
from earlystop_predict.policy.stop import StopPolicy
from earlystop_predict.records.record import write_jsonl

#: Prefix of the keys the adapters log; never fed back to the monitor.
LOG_PREFIX = "esp/"


def to_float(value: Any) -> float | None:
    """A Python float from a number, a numpy scalar or a 0-d/1-element tensor.

    NaN and inf are kept (the monitor treats them as divergence); values that
    are not numbers (strings, lists, None, bools) give None.
    """
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    for attr in ("item", "numpy"):  # numpy scalars and torch tensors; TF eager tensors
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                got = fn()
                if attr == "numpy":
                    got = got.item() if getattr(got, "size", 1) == 1 else None
                return None if got is None or isinstance(got, bool) else float(got)
            except (TypeError, ValueError, RuntimeError, AttributeError):
                return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def scalar_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric entries of a framework's epoch logs, as floats (NaN kept).

    Keys starting with ``esp/`` (ours, logged back into the framework) are dropped.
    """
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        if str(key).startswith(LOG_PREFIX):
            continue
        f = to_float(value)
        if f is not None:
            out[str(key)] = f
    return out


def positive(value: Any) -> float | None:
    """``value`` as a finite float, None when missing, non-finite or negative."""
    f = to_float(value)
    return f if f is not None and math.isfinite(f) and f >= 0 else None


def positive_int(value: Any) -> int | None:
    """``value`` as an int > 0, None otherwise (``max_epochs=-1`` means unknown)."""
    f = positive(value)
    return int(f) if f is not None and f >= 1 else None


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without the None values (missing stays missing, never zero)."""
    return {k: v for k, v in values.items() if v is not None}


def layer_hparams(weight_widths: Sequence[int], dropout_rates: Iterable[float]) -> dict[str, Any]:
    """``num_layers``, ``width`` and ``dropout`` of a feed-forward stack.

    Args:
        weight_widths: output width of each weight layer (Dense/Linear) in order;
            the last one is taken as the output layer.
        dropout_rates: rates of the model's dropout layers, each in [0, 1).

    Returns:
        ``num_layers``: hidden weight layers (all but the output one), ``width``:
        widest hidden layer, ``dropout``: highest rate (0.0 if the model has none).
        Keys are left out where the model gives no answer.
    """
    out: dict[str, Any] = {}
    widths = [int(w) for w in weight_widths if w]
    if widths:
        out["num_layers"] = len(widths) - 1
        if len(widths) > 1:
            out["width"] = max(widths[:-1])
    rates = [r for r in (positive(x) for x in dropout_rates) if r is not None]
    out["dropout"] = max(rates) if rates else 0.0
    return out


def output_meta(widths: Sequence[int], metric: str, num_features: int | None) -> dict[str, Any]:
    """``num_classes`` (output width, for accuracy-like targets only) and ``num_features``."""
    from earlystop_predict.records.record import is_accuracy_like

    out: dict[str, Any] = {}
    if widths and int(widths[-1]) > 1 and is_accuracy_like(metric):
        out["num_classes"] = int(widths[-1])
    if num_features:
        out["num_features"] = int(num_features)
    return out


# ----------------------------------------------------------------------------- torch
def torch_optimizer_hparams(optimizer: Any) -> dict[str, Any]:
    """Hyperparameters of a ``torch.optim`` optimizer (duck-typed, no import).

    Reads the first param group: ``initial_lr`` (set by an LR scheduler) or
    ``lr``, ``momentum`` or ``betas[0]``, and ``weight_decay``.

    Example:
        >>> class Adam:
        ...     param_groups = [{"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0}]
        >>> torch_optimizer_hparams(Adam())
        {'optimizer': 'Adam', 'learning_rate': 0.01, 'momentum': 0.9, 'weight_decay': 0.0}
    """
    if optimizer is None:
        return {}
    inner = getattr(optimizer, "optimizer", None)  # Lightning's LightningOptimizer wrapper
    if inner is not None and hasattr(inner, "param_groups"):
        optimizer = inner
    groups = getattr(optimizer, "param_groups", None) or [{}]
    group = groups[0]
    momentum = group.get("momentum")
    betas = group.get("betas")
    if momentum is None and isinstance(betas, (tuple, list)) and betas:
        momentum = betas[0]
    return drop_none({
        "optimizer": type(optimizer).__name__,
        "learning_rate": positive(group.get("initial_lr", group.get("lr"))),
        "momentum": positive(momentum),
        "weight_decay": positive(group.get("weight_decay")),
    })


def torch_module_hparams(module: Any,
                         metric: str = "val_accuracy") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, meta)`` read from a ``torch.nn.Module`` (duck-typed, no import).

    hparams: ``num_layers``, ``width`` (from the ``Linear`` layers), ``dropout``
    (highest ``Dropout`` rate). meta: ``num_params`` (all parameters),
    ``num_features`` (first ``Linear`` input), ``num_classes`` (last ``Linear``
    output, for accuracy-like metrics).
    """
    hparams: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    parameters = getattr(module, "parameters", None)
    if callable(parameters):
        meta["num_params"] = int(sum(p.numel() for p in parameters()))
    modules = getattr(module, "modules", None)
    if not callable(modules):
        return hparams, meta
    widths: list[int] = []
    rates: list[float] = []
    first_in: int | None = None
    for sub in modules():
        name = type(sub).__name__
        if name == "Linear" and hasattr(sub, "out_features"):
            if first_in is None:
                first_in = int(sub.in_features)
            widths.append(int(sub.out_features))
        elif "Dropout" in name and hasattr(sub, "p"):
            rates.append(float(sub.p))
    hparams.update(layer_hparams(widths, rates))
    meta.update(output_meta(widths, metric, first_in))
    return hparams, meta


# ----------------------------------------------------------------------------- state
def search_policy_kwargs(target_epoch: Any, *, threshold: float | None, confidence: float,
                         min_epochs: int, patience: int, dry_run: bool) -> dict[str, Any]:
    """The :class:`~earlystop_predict.policy.monitor.ForecastMonitor` policy arguments of a
    search-engine adapter (Optuna, Ray Tune), checked when the adapter is built
    rather than mid-search.

    Raises:
        ConfigError: ``target_epoch`` not an integer >= 2, or a bad policy argument.
    """
    if isinstance(target_epoch, bool) or not isinstance(target_epoch, int) or target_epoch < 2:
        raise ConfigError("target_epoch", "an integer >= 2", target_epoch)
    StopPolicy(threshold=threshold, confidence=confidence, min_epochs=min_epochs,
               patience=patience)
    return {"threshold": threshold, "confidence": confidence, "min_epochs": min_epochs,
            "patience": patience, "dry_run": dry_run}


def write_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write a JSON state atomically (temporary file + ``os.replace``)."""
    write_jsonl(path, [dict(state)])


def read_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON state at ``path``, None if there is no file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
