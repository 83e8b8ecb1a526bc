"""Reading a run's hyperparameters and metrics from framework objects.

Everything here works by duck typing: nothing imports a framework, so every
adapter (and its tests) can share it. The adapters hand over what the framework
exposes (a model, an optimizer, a trainer, the epoch's logs) and these functions
turn it into canonical ``hparams``/``meta`` (RUN_RECORD.md) and plain float metrics.

Example:
    >>> scalar_metrics({"loss": 0.5, "lr_name": "cosine", "val_acc": float("nan")})
    {'loss': 0.5, 'val_acc': nan}
    >>> layer_hparams([64, 64, 10], [0.1, 0.3])
    {'num_layers': 2, 'width': 64, 'dropout': 0.3}
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from earlystop_predict.records.features import canonical_optimizer
from earlystop_predict.records.record import is_accuracy_like

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


def _is_a(obj: Any, class_name: str) -> bool:
    """``obj`` is an instance of a class named ``class_name`` (or of a subclass)."""
    return any(c.__name__ == class_name for c in type(obj).__mro__)


# ----------------------------------------------------------------------------- keras
def _keras_optimizer_hparams(optimizer: Any) -> dict[str, Any]:
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
    schedule, lr = "constant", lr_cfg
    if isinstance(lr_cfg, Mapping):  # a serialised LearningRateSchedule
        schedule = str(lr_cfg.get("class_name", "other"))
        lr = (lr_cfg.get("config") or {}).get("initial_learning_rate")
    if lr is None:  # the schedule's value now (its start when training starts)
        lr = to_float(getattr(optimizer, "learning_rate", None))
    return drop_none({
        "optimizer": type(optimizer).__name__,
        "learning_rate": positive(lr),
        "lr_schedule": schedule,
        "momentum": positive(config.get("beta_1", config.get("momentum"))),
        "weight_decay": positive(config.get("weight_decay")),
    })


def _keras_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models flattened, in order."""
    out: list[Any] = []
    for layer in getattr(model, "layers", None) or []:
        out.extend(_keras_layers(layer) if getattr(layer, "layers", None) else [layer])
    return out


def keras_fit_info() -> tuple[int | None, int | None, Any]:
    """``(batch_size, train_size, validation_freq)`` of the running Keras ``fit()``.

    Keras does not hand callbacks the batch size nor the validation schedule, so
    this looks up ``fit``'s frame (the one holding ``epoch_iterator``) on the call
    stack, once per ``fit``, and asks its data adapter. ``validation_freq`` is None
    when ``fit`` validates nothing. ``(None, None, None)`` when it cannot tell (pass
    the sizes in ``hparams``).
    """
    frame = inspect.currentframe()
    f = frame.f_back if frame is not None else None
    try:
        for _ in range(8):
            if f is None:
                break
            adapter = getattr(f.f_locals.get("epoch_iterator"), "data_adapter", None)
            if adapter is not None:
                has_val = f.f_locals.get("validation_data") is not None
                return (*_adapter_sizes(adapter),
                        f.f_locals.get("validation_freq", 1) if has_val else None)
            f = f.f_back
    finally:
        del frame, f  # no reference cycle through the frames
    return None, None, None


def _adapter_sizes(adapter: Any) -> tuple[int | None, int | None]:
    batch = positive_int(getattr(adapter, "batch_size", None))
    steps = positive_int(getattr(adapter, "num_batches", None))
    if batch is None or steps is None:
        return batch, None
    partial = positive_int(getattr(adapter, "partial_batch_size", None))
    has_partial = bool(getattr(adapter, "has_partial_batch", False)) and partial
    return batch, (steps - 1) * batch + partial if has_partial else steps * batch


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
    hparams = _keras_optimizer_hparams(getattr(model, "optimizer", None))
    layers = _keras_layers(model)
    dense = [layer for layer in layers if _is_a(layer, "Dense")]
    rates = [getattr(layer, "rate", None) for layer in layers
             if "Dropout" in type(layer).__name__]
    widths = [int(d.units) for d in dense]
    hparams.update(layer_hparams(widths, rates))
    kernel = getattr(dense[0], "kernel", None) if dense else None
    try:
        num_params: int | None = int(model.count_params())
    except (ValueError, AttributeError):  # an unbuilt model
        num_params = None
    meta = drop_none({
        "framework": "keras",
        "max_epochs": positive_int((params or {}).get("epochs")),
        "num_params": num_params,
        **output_meta(widths, metric, int(kernel.shape[0]) if kernel is not None else None),
    })
    return drop_none(hparams), meta


# ----------------------------------------------------------------------------- lightning
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
    """``(hparams, meta)`` read from a Lightning Trainer whose training has started.

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


# ----------------------------------------------------------------------------- transformers
#: Model config attributes read as hparams, first present wins (BERT, GPT-2, T5/BART...).
_HF_CONFIG_KEYS = {
    "dropout": ("hidden_dropout_prob", "dropout", "resid_pdrop", "dropout_rate"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "width": ("hidden_size", "n_embd", "d_model"),
}


def enum_value(value: Any) -> Any:
    """The ``.value`` of an enum member, anything else as it is."""
    return getattr(value, "value", value)


def _hf_schedule(value: Any) -> str | None:
    name = enum_value(value)
    if name is None:
        return None
    name = str(name)
    return "constant" if name.startswith("constant") else name  # constant_with_warmup


def _hf_warmup(args: Any, max_steps: int) -> float | None:
    ratio = positive(getattr(args, "warmup_ratio", None))
    if ratio:
        return ratio
    steps = positive(getattr(args, "warmup_steps", None))
    if steps is None:
        return None
    if steps < 1:  # transformers >= 5: a float < 1 is a fraction of the training steps
        return steps
    return min(1.0, steps / max_steps) if max_steps > 0 else None


def _hf_args_hparams(args: Any, max_steps: int) -> dict[str, Any]:
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    accum = max(1, int(getattr(args, "gradient_accumulation_steps", 1) or 1))
    per_device = getattr(args, "per_device_train_batch_size", None)
    optim = enum_value(getattr(args, "optim", None))
    hp: dict[str, Any] = {
        "learning_rate": positive(getattr(args, "learning_rate", None)),
        "batch_size": int(per_device) * world * accum if per_device else None,
        "weight_decay": positive(getattr(args, "weight_decay", None)),
        "optimizer": optim,
        "lr_schedule": _hf_schedule(getattr(args, "lr_scheduler_type", None)),
        "warmup_fraction": _hf_warmup(args, max_steps),
    }
    if optim is not None and canonical_optimizer(optim) in ("adam", "adamw"):
        hp["momentum"] = positive(getattr(args, "adam_beta1", None))
    return hp


def hf_hparams(args: Any, max_steps: int, model: Any, train_dataloader: Any, optimizer: Any,
               metric: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, meta)`` read from a ``TrainingArguments``, the model and the data.

    hparams: learning rate, global batch size, weight decay, ``adam_beta1`` as momentum,
    optimizer (the one built wins over the arguments), schedule, warmup, dropout,
    layers, width. meta: framework, parameter count, labels, train set size.
    """
    hp = _hf_args_hparams(args, max_steps)
    hp.update(torch_optimizer_hparams(optimizer))  # Trainer(optimizers=...) wins
    config = getattr(model, "config", None)
    for key, names in _HF_CONFIG_KEYS.items():
        value = next((getattr(config, n) for n in names
                      if positive(getattr(config, n, None)) is not None), None)
        hp[key] = None if value is None else (float(value) if key == "dropout" else int(value))
    meta: dict[str, Any] = {"framework": "transformers"}
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        meta["num_params"] = int(sum(p.numel() for p in parameters()))
    labels = getattr(config, "num_labels", None)
    if isinstance(labels, int) and labels >= 2 and is_accuracy_like(metric) \
            and "Classification" in type(model).__name__:
        meta["num_classes"] = labels
    meta["train_size"] = _length(getattr(train_dataloader, "dataset", None))
    return drop_none(hp), drop_none(meta)


# ----------------------------------------------------------------------------- search
def config_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a trial's config (nested dicts by their leaf names,
    the first one kept on a clash): what the accModel reads as hyperparameters."""
    out: dict[str, Any] = {}

    def walk(d: Mapping[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, Mapping):
                walk(value)
            elif isinstance(value, (bool, int, float, str)) and str(key) not in out:
                out[str(key)] = value

    walk(config or {})
    return out
