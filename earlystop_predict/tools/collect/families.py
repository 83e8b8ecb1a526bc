"""The learning-curve families of ``earlystop-predict collect``: data and search space.

A *family* is a data set (shipped offline: scikit-learn's bundled sets or data
generated from a seed) and a model architecture. :func:`draw_config` draws one
run of a family the way people tune models: a random draw over the declared
ranges of :data:`SPACE` (optimizer, log-uniform learning rate, momentum, weight
decay, batch size, width, depth, dropout, schedule, warm-up, epochs) plus the
family's own data parameters (label noise, class imbalance, sequence length...).
:func:`load_data` builds the run's arrays. Nothing here imports a framework;
scikit-learn is imported when a scikit-learn family's data is loaded.

Example:
    >>> import numpy as np
    >>> cfg = draw_config("wine", np.random.default_rng(0), min_epochs=20, max_epochs=100)
    >>> cfg.hparams["optimizer"] in OPTIMIZERS, 20 <= cfg.max_epochs <= 100
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlystop_predict._imports import require
from earlystop_predict.errors import ConfigError
from earlystop_predict.tools.collect import userdata
from earlystop_predict.tools.collect.userdata import IMAGE_KINDS, TEXT_TASKS

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "linear")
TORCH_FRAMEWORKS = ("lightning", "keras")
VAL_FRACTION = 0.2

#: The declared ranges every family draws from (also printed in DATASHEET.md).
#: ``p0``: probability of exactly 0 (off); ranges are [low, high].
SPACE: dict[str, Any] = {
    "optimizer": {"choice": OPTIMIZERS},
    "learning_rate": {"log_uniform": {"sgd": (1e-4, 3.0), "adam": (1e-5, 0.3),
                                      "adamw": (1e-5, 0.3), "rmsprop": (1e-5, 0.1)}},
    "momentum": {"sgd": {"p0": 0.25, "uniform": (0.5, 0.99)},
                 "rmsprop": {"p0": 0.5, "uniform": (0.5, 0.95)},
                 "adam/adamw (beta_1)": {"uniform": (0.8, 0.95)}},
    "weight_decay": {"p0": 0.3, "log_uniform": (1e-6, 1e-2),
                     "adamw": {"p0": 0.0, "log_uniform": (1e-4, 0.1)}},
    "batch_size": {"choice": (16, 32, 64, 128, 256),
                   "note": "choices <= train_size / 2; sequence-gru 32..256, text-hf 16..128"},
    "dropout": {"p0": 0.3, "uniform": (0.0, 0.6)},
    "lr_schedule": {"choice": SCHEDULES,
                    "note": "per optimizer step; step: x0.1 at 50% and 75% of training"},
    "warmup_fraction": {"p0": 0.6, "uniform": (0.02, 0.2),
                        "note": "linear warm-up from 0 over this fraction of the steps"},
    "max_epochs": {"int_uniform": "[--min-epochs, --max-epochs]"},
    "data_fraction": {"uniform": "family range", "note": "fraction of the training split kept"},
}


# ----------------------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """One data set and architecture.

    Args:
        name: the family's name on the command line (``digits-mlp``...).
        task: the record's ``task`` (data set name).
        arch: ``"mlp"``, ``"cnn"``, ``"rnn"``, ``"bert"``, ``"transformer"`` (BERT or
            GPT-2, drawn) or ``"convnet"`` (images of any side).
        frameworks: the frameworks that can train it, first is the default.
        description: one line for DATASHEET.md.
        num_layers: [low, high] hidden layers (conv layers, recurrent layers, blocks).
        widths: choices of hidden width (units, channels, hidden size).
        data_fraction: [low, high] fraction of the training split kept.
        batch_sizes: choices of batch size (those <= train_size / 2 are drawn from).
        draw_data: ``rng -> data parameters`` (sizes, noise...), JSON-able.
        draw_hparams: ``(family, rng, train_size, data) -> hparams`` replacing the
            generic draw of :data:`SPACE` (a family with its own space), or None.
        epochs: the family's own [low, high] planned epochs (evaluations for a
            steps-mode family), clipped to ``--min-epochs``/``--max-epochs`` (those
            alone when the two ranges do not meet), or None: the command's range.
        space: the family's own declared ranges for DATASHEET.md (keys that differ
            from :data:`SPACE`).
        settle: ``hparams -> hparams`` after ``--set`` pins (keeps values that depend
            on a pinned one consistent), or None.
    """

    name: str
    task: str
    arch: str
    frameworks: tuple[str, ...]
    description: str
    num_layers: tuple[int, int]
    widths: tuple[int, ...]
    data_fraction: tuple[float, float] = (1.0, 1.0)
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    draw_data: Callable[[np.random.Generator], dict[str, Any]] = field(
        default=lambda rng: {}, repr=False)
    draw_hparams: Callable[..., dict[str, Any]] | None = field(default=None, repr=False)
    epochs: tuple[int, int] | None = None
    space: Mapping[str, Any] = field(default_factory=dict)
    settle: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, repr=False)


def _synthetic_data(rng: np.random.Generator) -> dict[str, Any]:
    n_classes = int(rng.integers(2, 7))
    majority = float(rng.uniform(1.0 / n_classes, 0.9))  # share of the largest class
    return {"n_samples": int(rng.integers(300, 3001)), "n_features": int(rng.integers(8, 65)),
            "informative_fraction": float(rng.uniform(0.2, 0.8)), "n_classes": n_classes,
            "flip_y": float(rng.uniform(0.0, 0.3)), "majority_share": majority,
            "class_sep": float(rng.uniform(0.5, 2.0))}


def _sequence_data(rng: np.random.Generator) -> dict[str, Any]:
    task = str(rng.choice(["sum-sign", "parity", "first-vs-last"]))
    lo, hi = (4, 10) if task == "parity" else (6, 20)
    return {"task": task, "seq_len": int(rng.integers(lo, hi + 1)),
            "n_samples": int(rng.integers(500, 1501)), "cell": str(rng.choice(["gru", "lstm"])),
            "flip_y": float(rng.choice([0.0, rng.uniform(0.0, 0.15)]))}


def _text_data(rng: np.random.Generator) -> dict[str, Any]:
    return {"vocab_size": int(rng.integers(50, 257)), "seq_len": int(rng.integers(12, 33)),
            "n_samples": int(rng.integers(400, 1201)), "n_classes": int(rng.integers(2, 5)),
            "keywords_per_class": int(rng.integers(2, 9)),
            "planted": int(rng.integers(1, 4)), "flip_y": float(rng.uniform(0.0, 0.15))}


# -------------------------------------------------------------- families of what users train
#: The Trainer's ``lr_scheduler_type`` choices of ``text-hf-steps`` ("constant" is
#: ``constant_with_warmup``).
HF_SCHEDULES = ("linear", "cosine", "constant")
#: torch.optim.lr_scheduler choices of ``lightning-sched``.
LIGHTNING_SCHEDULERS = ("onecycle", "plateau", "cosine-annealing", "cosine-restarts",
                        "exponential", "multistep")
#: Keras schedule choices of ``keras-mlp`` (``plateau``: the ReduceLROnPlateau callback).
KERAS_SCHEDULES = ("constant", "cosine-warmup", "exponential", "piecewise", "plateau")
#: A scheduler's canonical ``lr_schedule`` (RUN_RECORD.md); the name is ``scheduler_kind``.
SCHEDULER_CANON = {"onecycle": "other", "plateau": "other", "cosine-annealing": "cosine",
                   "cosine-restarts": "other", "exponential": "step", "multistep": "step",
                   "constant": "constant", "cosine-warmup": "cosine", "piecewise": "step"}


def _text_steps_data(rng: np.random.Generator) -> dict[str, Any]:
    return {"model": str(rng.choice(["bert", "gpt2"])), "task": str(rng.choice(TEXT_TASKS)),
            "vocab_size": int(rng.integers(24, 201)), "seq_len": int(rng.integers(12, 33)),
            "n_samples": int(rng.integers(300, 901)), "n_classes": int(rng.integers(2, 5)),
            "flip_y": _maybe(rng, 0.5, lambda: float(rng.uniform(0.0, 0.1))),
            "eval_steps": int(rng.choice([4, 5, 8, 10]))}


def _image_data(rng: np.random.Generator) -> dict[str, Any]:
    kind = str(rng.choice(IMAGE_KINDS))
    flip = bool(rng.uniform() < 0.5)
    return {"kind": kind, "side": int(rng.choice([16, 16, 24])),
            "n_samples": 1797 if kind == "digits" else int(rng.integers(500, 1501)),
            "n_classes": 10 if kind == "digits" else int(rng.integers(3, 9)),
            "noise": float(rng.uniform(0.0, 0.4)),
            "flip_y": _maybe(rng, 0.6, lambda: float(rng.uniform(0.0, 0.1))),
            "aug_shift": int(rng.integers(0, 3)), "aug_flip": kind == "shapes" and flip,
            "aug_noise": _maybe(rng, 0.5, lambda: float(rng.uniform(0.02, 0.2)))}


def _tabular_large_data(rng: np.random.Generator) -> dict[str, Any]:
    return {"n_samples": int(round(_log_uniform(rng, 1e4, 1e5))),
            "n_features": int(rng.integers(20, 101)),
            "informative_fraction": float(rng.uniform(0.3, 0.8)),
            "n_classes": int(rng.integers(10, 51)), "imbalance": float(rng.uniform(0.0, 1.5)),
            "flip_y": float(rng.uniform(0.0, 0.2)), "class_sep": float(rng.uniform(0.5, 2.0)),
            "rows_per_epoch": int(rng.choice([2048, 4096, 8192]))}


def _tabular_mid_data(rng: np.random.Generator) -> dict[str, Any]:
    return {"n_samples": int(rng.integers(1000, 6001)), "n_features": int(rng.integers(10, 61)),
            "informative_fraction": float(rng.uniform(0.3, 0.8)),
            "n_classes": int(rng.integers(2, 21)), "imbalance": float(rng.uniform(0.0, 1.5)),
            "flip_y": float(rng.uniform(0.0, 0.25)), "class_sep": float(rng.uniform(0.5, 2.0))}


def _batch_choice(fam: Family, rng: np.random.Generator, train_size: int) -> int:
    choices = [b for b in fam.batch_sizes if b <= max(fam.batch_sizes[0], train_size // 2)]
    return int(rng.choice(choices))


def _hf_steps_hparams(fam: Family, rng: np.random.Generator, train_size: int,
                      data: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer's own AdamW, warm-up and decay, learning rate log-uniform 1e-5..1e-3."""
    lo, hi = fam.num_layers
    return {
        "optimizer": "adamw", "learning_rate": _log_uniform(rng, 1e-5, 1e-3), "momentum": 0.9,
        "weight_decay": _maybe(rng, 0.5, lambda: _log_uniform(rng, 1e-4, 0.1)),
        "batch_size": _batch_choice(fam, rng, train_size),
        "num_layers": int(rng.integers(lo, hi + 1)), "width": int(rng.choice(fam.widths)),
        "dropout": _maybe(rng, 0.5, lambda: float(rng.uniform(0.0, 0.2))),
        "lr_schedule": str(rng.choice(HF_SCHEDULES)),
        "warmup_fraction": _maybe(rng, 0.25, lambda: float(rng.uniform(0.02, 0.2))),
        "arch": str(data["model"]),
    }


def _scheduler_hparams(kinds: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """The generic draw of :data:`SPACE`, then a framework scheduler out of ``kinds``
    with its own parameters (``sched_*``); ``warmup_fraction`` is OneCycle's
    ``pct_start`` or the Keras cosine's warm-up, else 0."""
    def draw(fam: Family, rng: np.random.Generator, train_size: int,
             data: Mapping[str, Any]) -> dict[str, Any]:
        hp = draw_hparams(fam, rng, train_size)
        kind = str(rng.choice(kinds))
        extra = {"onecycle": {"warmup_fraction": float(rng.uniform(0.1, 0.4))},
                 "plateau": {"sched_factor": float(rng.uniform(0.1, 0.5)),
                             "sched_patience": int(rng.integers(2, 7))},
                 "cosine-restarts": {"sched_cycles": int(rng.integers(2, 5))},
                 "exponential": {"sched_final_factor": _log_uniform(rng, 0.01, 0.3)},
                 "multistep": {"sched_factor": float(rng.uniform(0.1, 0.5))}}.get(kind, {})
        hp.update({"scheduler_kind": kind, "lr_schedule": SCHEDULER_CANON[kind],
                   "warmup_fraction": hp["warmup_fraction"] if kind == "cosine-warmup" else 0.0})
        hp.update(extra)
        return hp
    return draw


#: What a pinned ``scheduler_kind`` gets for parameters its draw did not make.
SCHED_DEFAULTS = {"onecycle": {"warmup_fraction": 0.3},
                  "plateau": {"sched_factor": 0.3, "sched_patience": 3},
                  "cosine-restarts": {"sched_cycles": 3},
                  "exponential": {"sched_final_factor": 0.1}, "multistep": {"sched_factor": 0.3}}


def settle_scheduler(hp: dict[str, Any]) -> dict[str, Any]:
    """After pins: ``lr_schedule`` from ``scheduler_kind``, the kind's parameters filled
    from :data:`SCHED_DEFAULTS` when missing, a warm-up only where the kind has one. A
    drawn (unpinned) configuration is left as it is."""
    kind = str(hp["scheduler_kind"])
    if kind not in SCHEDULER_CANON:
        raise ConfigError("scheduler_kind", " | ".join(SCHEDULER_CANON), kind)
    hp = {**hp, "lr_schedule": SCHEDULER_CANON[kind]}
    for key, value in SCHED_DEFAULTS.get(kind, {}).items():
        if key not in hp or (key == "warmup_fraction" and not hp[key] > 0):
            hp[key] = value
    if kind not in ("onecycle", "cosine-warmup"):
        hp["warmup_fraction"] = 0.0
    return hp


_HF_STEPS_SPACE = {
    "optimizer": "adamw (the Trainer's adamw_torch)", "learning_rate": {"log_uniform": (1e-5, 1e-3)},
    "weight_decay": {"p0": 0.5, "log_uniform": (1e-4, 0.1)},
    "dropout": {"p0": 0.5, "uniform": (0.0, 0.2)},
    "lr_schedule": {"choice": HF_SCHEDULES, "note": "lr_scheduler_type; constant = "
                    "constant_with_warmup"},
    "warmup_fraction": {"p0": 0.25, "uniform": (0.02, 0.2), "note": "warm-up steps / max_steps"},
    "eval_steps": {"choice": (4, 5, 8, 10)}, "max_steps": "max_epochs (evaluations) x "
    "eval_steps", "model": {"choice": ("bert", "gpt2")},
    "task": {"choice": TEXT_TASKS}}
_SCHED_NOTE = {"sched_factor": {"uniform": (0.1, 0.5), "note": "plateau factor / multistep "
                                "gamma"},
               "sched_patience": {"int_uniform": (2, 6)}, "sched_cycles": {"int_uniform": (2, 4)},
               "sched_final_factor": {"log_uniform": (0.01, 0.3), "note": "exponential: lr "
                                      "factor reached at the last epoch"}}


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("digits-mlp", "sklearn-digits", "mlp", TORCH_FRAMEWORKS,
           "scikit-learn load_digits (1797 8x8 images, 10 classes), flattened, MLP",
           (1, 4), (16, 32, 64, 128, 256), (0.25, 1.0)),
    Family("digits-cnn", "sklearn-digits", "cnn", TORCH_FRAMEWORKS,
           "scikit-learn load_digits as 1x8x8 images, small CNN (3x3 convs, max-pool)",
           (1, 3), (8, 16, 32, 64), (0.25, 1.0)),
    Family("breast-cancer", "sklearn-breast-cancer", "mlp", TORCH_FRAMEWORKS,
           "scikit-learn load_breast_cancer (569 rows, 30 features, 2 classes), MLP",
           (1, 4), (8, 16, 32, 64, 128), (0.4, 1.0)),
    Family("wine", "sklearn-wine", "mlp", TORCH_FRAMEWORKS,
           "scikit-learn load_wine (178 rows, 13 features, 3 classes), MLP",
           (1, 3), (8, 16, 32, 64), (0.6, 1.0)),
    Family("synthetic", "sklearn-make-classification", "mlp", TORCH_FRAMEWORKS,
           "make_classification: 300-3000 rows, 8-64 features, 2-6 classes, label noise "
           "flip_y in [0, 0.3], class imbalance (largest class share up to 0.9), MLP",
           (1, 4), (16, 32, 64, 128, 256), draw_data=_synthetic_data),
    Family("sequence-gru", "synthetic-sequence", "rnn", TORCH_FRAMEWORKS,
           "random sequences, label: sign of the sum, parity of bits or first vs last "
           "value; GRU or LSTM", (1, 2), (8, 16, 32, 48), batch_sizes=(32, 64, 128, 256),
           draw_data=_sequence_data),
    Family("text-hf", "synthetic-text", "bert", ("transformers",),
           "random token sequences with planted class keywords, 2-4 classes; BERT built "
           "from BertConfig (random init) through the Hugging Face Trainer",
           (1, 2), (16, 32, 64), batch_sizes=(16, 32, 64, 128), draw_data=_text_data),
    Family("text-hf-steps", "synthetic-text-steps", "transformer", ("transformers",),
           "token tasks (majority of planted keywords against a distractor, order of two "
           "markers, XOR of two markers, which token set is more frequent); tiny BERT or "
           "GPT-2 from BertConfig/GPT2Config (random init) + classification head through "
           "the HF Trainer: its AdamW, warm-up + linear/cosine/constant, evaluated every "
           "eval_steps steps (one row per evaluation)",
           (1, 2), (16, 32, 64), batch_sizes=(16, 32, 64), draw_data=_text_steps_data,
           draw_hparams=_hf_steps_hparams, epochs=(10, 40), space=_HF_STEPS_SPACE),
    Family("images-cnn", "synthetic-images", "convnet", TORCH_FRAMEWORKS,
           "16x16 or 24x24 images made offline: load_digits upsampled, shapes (3-8 "
           "classes, random position/size) or oriented gratings, pixel noise 0-0.4; "
           "CNN (3x3 conv + max-pool blocks) with random shift / flip / noise augmentation",
           (1, 3), (8, 16, 32), (0.3, 1.0), draw_data=_image_data, epochs=(10, 40),
           space={"augmentation": "aug_shift 0-2 px per batch, aug_flip (shapes) p=0.5, "
                  "aug_noise p0 0.5 else 0.02-0.2"}),
    Family("tabular-large", "synthetic-tabular-large", "mlp", TORCH_FRAMEWORKS,
           "make_classification: 10^4-10^5 rows (log-uniform), 20-100 features, 10-50 "
           "classes, Zipf-like imbalance (shares ~ (1+i)^-a, a 0-1.5), flip_y 0-0.2; "
           "MLP, each epoch a random subsample of 2048-8192 rows",
           (1, 3), (64, 128, 256, 512), batch_sizes=(128, 256, 512, 1024),
           draw_data=_tabular_large_data, epochs=(10, 30),
           space={"rows_per_epoch": {"choice": (2048, 4096, 8192)}}),
    Family("keras-mlp", "synthetic-tabular", "mlp", ("keras",),
           "make_classification: 1000-6000 rows, 10-60 features, 2-20 classes, imbalance, "
           "flip_y 0-0.25; Keras fit with Keras schedules (CosineDecay with warm-up, "
           "ExponentialDecay, PiecewiseConstantDecay) or the ReduceLROnPlateau callback",
           (1, 4), (16, 32, 64, 128, 256), batch_sizes=(32, 64, 128, 256),
           draw_data=_tabular_mid_data,
           draw_hparams=_scheduler_hparams(KERAS_SCHEDULES), epochs=(10, 50),
           settle=settle_scheduler,
           space={"scheduler_kind": {"choice": KERAS_SCHEDULES},
                  **{k: v for k, v in _SCHED_NOTE.items() if k != "sched_cycles"}}),
    Family("lightning-sched", "synthetic-tabular", "mlp", ("lightning",),
           "make_classification as keras-mlp; Lightning with torch schedulers: OneCycleLR, "
           "ReduceLROnPlateau (val_loss), CosineAnnealingLR, CosineAnnealingWarmRestarts, "
           "ExponentialLR, MultiStepLR",
           (1, 4), (16, 32, 64, 128, 256), batch_sizes=(32, 64, 128, 256),
           draw_data=_tabular_mid_data,
           draw_hparams=_scheduler_hparams(LIGHTNING_SCHEDULERS), epochs=(10, 50),
           settle=settle_scheduler,
           space={"scheduler_kind": {"choice": LIGHTNING_SCHEDULERS}, **_SCHED_NOTE}),
)}


def family(name: str) -> Family:
    """The family called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError("family", f"one of {', '.join(FAMILIES)}", name) from None


#: Rows of the bundled scikit-learn sets (train/val sizes are known without loading).
_SKLEARN_ROWS = {"sklearn-digits": 1797, "sklearn-breast-cancer": 569, "sklearn-wine": 178}


def split_sizes(task: str, data: Mapping[str, Any], data_fraction: float) -> tuple[int, int]:
    """``(train_size, val_size)`` of a run: 20 % validation, then a fraction of the rest."""
    n = _SKLEARN_ROWS.get(task) or int(data["n_samples"])
    n_val = int(round(VAL_FRACTION * n))
    return max(8, int(math.floor((n - n_val) * data_fraction))), n_val


# ----------------------------------------------------------------------------- configs
@dataclass
class RunConfig:
    """Everything one run needs; plain JSON so it crosses process boundaries.

    Args:
        family: the family's name.
        framework: ``"lightning"``, ``"keras"`` or ``"transformers"``.
        seed: the run's seed (model init, data split, shuffling), >= 0.
        max_epochs: planned epochs, the forecast target.
        hparams: canonical hyperparameters (RUN_RECORD.md) plus ``arch``.
        data: the family's data parameters (``data_fraction``, sizes, noise...).
    """

    family: str
    framework: str
    seed: int
    max_epochs: int
    hparams: dict[str, Any]
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {"family": self.family, "framework": self.framework, "seed": self.seed,
                "max_epochs": self.max_epochs, "hparams": dict(self.hparams),
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(str(data["family"]), str(data["framework"]), int(data["seed"]),
                   int(data["max_epochs"]), dict(data["hparams"]), dict(data["data"]))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _maybe(rng: np.random.Generator, p0: float, draw: Callable[[], float]) -> float:
    """0.0 with probability ``p0``, else ``draw()`` (the draw is always made: fixed stream)."""
    value = draw()
    return 0.0 if rng.uniform() < p0 else value


def draw_hparams(fam: Family, rng: np.random.Generator, train_size: int) -> dict[str, Any]:
    """One draw of :data:`SPACE` for ``fam`` (canonical keys, plus ``arch``)."""
    opt = str(rng.choice(OPTIMIZERS))
    lr = _log_uniform(rng, *SPACE["learning_rate"]["log_uniform"][opt])
    if opt == "sgd":
        momentum = _maybe(rng, 0.25, lambda: float(rng.uniform(0.5, 0.99)))
    elif opt == "rmsprop":
        momentum = _maybe(rng, 0.5, lambda: float(rng.uniform(0.5, 0.95)))
    else:
        momentum = float(rng.uniform(0.8, 0.95))
    if opt == "adamw":
        wd = _log_uniform(rng, 1e-4, 0.1)
    else:
        wd = _maybe(rng, 0.3, lambda: _log_uniform(rng, 1e-6, 1e-2))
    choices = [b for b in fam.batch_sizes if b <= max(fam.batch_sizes[0], train_size // 2)]
    batch = int(rng.choice(choices))
    lo, hi = fam.num_layers
    return {
        "optimizer": opt, "learning_rate": lr, "momentum": momentum, "weight_decay": wd,
        "batch_size": min(batch, train_size),
        "num_layers": int(rng.integers(lo, hi + 1)), "width": int(rng.choice(fam.widths)),
        "dropout": _maybe(rng, 0.3, lambda: float(rng.uniform(0.0, 0.6))),
        "lr_schedule": str(rng.choice(SCHEDULES)),
        "warmup_fraction": _maybe(rng, 0.6, lambda: float(rng.uniform(0.02, 0.2))),
        "arch": fam.arch,
    }


def _coerce(key: str, value: Any, like: Any) -> Any:
    """A pinned ``--set`` value in the type of the value it replaces."""
    if isinstance(like, bool) or like is None or isinstance(value, type(like)):
        return value
    try:
        if isinstance(like, int):
            return int(float(value))
        if isinstance(like, float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"a number like {like!r}", value) from None
    return str(value)


def _epoch_range(fam: Family, low: int, high: int) -> tuple[int, int]:
    """``[low, high + 1)`` of the planned epochs: the family's range clipped to the
    command's, or the command's when the two do not meet."""
    if fam.epochs is not None:
        lo, hi = max(low, fam.epochs[0]), min(high, fam.epochs[1])
        if lo <= hi:
            return lo, hi + 1
    return low, high + 1


def draw_config(name: str, rng: np.random.Generator, *, min_epochs: int = 20,
                max_epochs: int = 100, framework: str | None = None, seed: int = 0,
                pins: Mapping[str, Any] | None = None) -> RunConfig:
    """Draw one run of family ``name``.

    Args:
        name: the family.
        rng: the run's random generator (a fixed number of draws is made from it).
        min_epochs: fewest planned epochs, >= 2. Default 20.
        max_epochs: most planned epochs, >= min_epochs. Default 100.
        framework: the framework; None: the family's first one. Default None.
        seed: the run's seed, stored in the config. Default 0.
        pins: values that replace the drawn ones: any hparams key, data key or
            ``max_epochs`` (``{"learning_rate": 10.0}``). Default None.

    Raises:
        ConfigError: unknown family or pinned key, or bad epoch range.
    """
    fam = family(name)
    if not (isinstance(min_epochs, int) and min_epochs >= 2):
        raise ConfigError("min_epochs", "an integer >= 2", min_epochs)
    if not (isinstance(max_epochs, int) and max_epochs >= min_epochs):
        raise ConfigError("max_epochs", f"an integer >= min_epochs ({min_epochs})", max_epochs)
    data = dict(fam.draw_data(rng))
    data["data_fraction"] = float(rng.uniform(*fam.data_fraction))
    epochs = int(rng.integers(*_epoch_range(fam, min_epochs, max_epochs)))
    pins = dict(pins or {})
    for key in [k for k in pins if k in data]:
        data[key] = _coerce(key, pins.pop(key), data[key])
    train_size, _ = split_sizes(fam.task, data, data["data_fraction"])
    hp = (fam.draw_hparams(fam, rng, train_size, data) if fam.draw_hparams is not None
          else draw_hparams(fam, rng, train_size))
    if "max_epochs" in pins:
        epochs = _coerce("max_epochs", pins.pop("max_epochs"), epochs)
        if epochs < 2:
            raise ConfigError("max_epochs", "an integer >= 2", epochs)
    for key, value in pins.items():
        if key not in hp:
            raise ConfigError("--set key", "a hyperparameter ("
                              + ", ".join(sorted(hp)) + "), a data parameter ("
                              + ", ".join(sorted(data)) + ") or max_epochs", key)
        hp[key] = _coerce(key, value, hp[key])
    hp["batch_size"] = max(1, min(int(hp["batch_size"]), train_size))
    if fam.settle is not None:
        hp = fam.settle(hp)
    fw = framework if framework is not None else fam.frameworks[0]
    if fw not in fam.frameworks:
        raise ConfigError("framework", f"one of {', '.join(fam.frameworks)} for {name}", fw)
    return RunConfig(name, fw, int(seed), epochs, hp, data)


# ----------------------------------------------------------------------------- schedule
def lr_factor(step: int, total_steps: int, schedule: str, warmup_fraction: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ~0 over ``warmup_fraction`` of the steps, then the schedule
    over the remaining ones: constant 1; cosine and linear decay to 0; step: x0.1
    at 50 % and x0.01 at 75 %.

    Example:
        >>> lr_factor(50, 100, "step", 0.0), lr_factor(0, 100, "constant", 0.1)
        (0.1, 0.1)
    """
    warm = int(round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    if step < warm:
        return (step + 1) / warm
    span = max(1, total_steps - warm)
    p = min(1.0, max(0.0, (step - warm) / span))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - p
    if schedule == "step":
        return 0.1 ** ((p >= 0.5) + (p >= 0.75))
    return 1.0


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Dataset:
    """A run's arrays: ``x`` float32 (tokens: int64), ``y`` int64 labels.

    Shapes: tabular ``(n, features)``; image ``(n, 8, 8)``; sequence ``(n, T, 1)``;
    tokens ``(n, T)``. ``num_features`` is the input size per example.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    num_features: int
    extra_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def train_size(self) -> int:
        """Training rows."""
        return int(len(self.y_train))


def _sklearn() -> Any:
    return require("sklearn.datasets", extra="collect")


def _raw(cfg: RunConfig, fam: Family, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    d = cfg.data
    if fam.task == "sklearn-digits":
        b = _sklearn().load_digits()
        return b.data.astype(np.float32) / 16.0, b.target.astype(np.int64), 10
    if fam.task in ("sklearn-breast-cancer", "sklearn-wine"):
        ds = _sklearn()
        b = ds.load_breast_cancer() if fam.task == "sklearn-breast-cancer" else ds.load_wine()
        return b.data.astype(np.float32), b.target.astype(np.int64), int(b.target.max() + 1)
    if fam.task == "sklearn-make-classification":
        k = int(d["n_classes"])
        rest = (1.0 - d["majority_share"]) / (k - 1)
        n_inf = max(2, int(round(d["informative_fraction"] * d["n_features"])))
        while k * 2 > 2 ** n_inf:  # make_classification needs n_classes * clusters <= 2**inf
            n_inf += 1
        x, y = _sklearn().make_classification(
            n_samples=int(d["n_samples"]), n_features=int(d["n_features"]),
            n_informative=min(n_inf, int(d["n_features"])), n_redundant=0, n_classes=k,
            weights=[d["majority_share"]] + [rest] * (k - 1), flip_y=float(d["flip_y"]),
            class_sep=float(d["class_sep"]), random_state=int(rng.integers(2 ** 31)))
        return x.astype(np.float32), y.astype(np.int64), k
    if fam.task == "synthetic-sequence":
        return _sequences(d, rng)
    if fam.task == "synthetic-text":
        return _texts(d, rng)
    generate = {"synthetic-text-steps": userdata.texts, "synthetic-images": userdata.images,
                "synthetic-tabular-large": userdata.tabular,
                "synthetic-tabular": userdata.tabular}.get(fam.task)
    if generate is not None:
        return generate(d, rng)
    raise ConfigError("family task", "a known task", fam.task)  # pragma: no cover


def _sequences(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[Any, ...]:
    n, t = int(d["n_samples"]), int(d["seq_len"])
    if d["task"] == "parity":
        x = rng.integers(0, 2, size=(n, t)).astype(np.float32)
        y = (x.sum(1) % 2).astype(np.int64)
    elif d["task"] == "first-vs-last":
        x = rng.normal(size=(n, t)).astype(np.float32)
        y = (x[:, 0] > x[:, -1]).astype(np.int64)
    else:  # sum-sign
        x = (rng.normal(size=(n, t)) + rng.normal(0.0, 0.3, size=(n, 1))).astype(np.float32)
        y = (x.sum(1) > 0).astype(np.int64)
    return x[:, :, None], userdata.flip_labels(y, float(d["flip_y"]), 2, rng), 2


def _texts(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[Any, ...]:
    n, t, v, k = int(d["n_samples"]), int(d["seq_len"]), int(d["vocab_size"]), int(d["n_classes"])
    per = min(int(d["keywords_per_class"]), (v - 2) // k)
    keywords = rng.permutation(np.arange(2, v))[: per * k].reshape(k, per)  # 0 pad, 1 CLS
    y = rng.integers(0, k, size=n)
    x = rng.integers(2, v, size=(n, t))
    x[:, 0] = 1
    for i in range(n):
        pos = rng.choice(np.arange(1, t), size=min(int(d["planted"]), t - 1), replace=False)
        x[i, pos] = rng.choice(keywords[y[i]], size=len(pos))
    return x.astype(np.int64), userdata.flip_labels(y.astype(np.int64), float(d["flip_y"]), k, rng), k


def load_data(cfg: RunConfig) -> Dataset:
    """The run's train/validation arrays (deterministic in ``cfg.seed`` and ``cfg.data``).

    Tabular features are standardised with the training rows' statistics; digits
    are scaled to [0, 1]. The validation split is 20 % of the rows; the training
    split keeps ``data_fraction`` of the rest.
    """
    fam = family(cfg.family)
    rng = np.random.default_rng(cfg.seed)
    x, y, k = _raw(cfg, fam, rng)
    train_size, n_val = split_sizes(fam.task, cfg.data, float(cfg.data.get("data_fraction", 1)))
    order = rng.permutation(len(y))
    val, train = order[:n_val], order[n_val:][:train_size]
    xt, yt, xv, yv = x[train], y[train], x[val], y[val]
    if fam.arch == "mlp":
        mean, std = xt.mean(0), xt.std(0) + 1e-6
        xt, xv = (xt - mean) / std, (xv - mean) / std
    if fam.arch == "cnn":
        xt, xv = xt.reshape(-1, 8, 8), xv.reshape(-1, 8, 8)
    extra: dict[str, Any] = {}
    if fam.arch in ("rnn", "bert", "transformer"):
        extra["seq_len"] = int(x.shape[1])
    if fam.arch in ("bert", "transformer"):
        extra["vocab_size"] = int(cfg.data["vocab_size"])
    if fam.arch == "transformer":
        extra["eval_steps"] = int(cfg.data["eval_steps"])
    if fam.arch == "convnet":
        extra["image_side"] = int(x.shape[1])
    if "rows_per_epoch" in cfg.data:
        extra["rows_per_epoch"] = min(int(cfg.data["rows_per_epoch"]), len(yt))
    num_features = int(np.prod(x.shape[1:]))
    tokens = fam.arch in ("bert", "transformer")
    f32 = (lambda a: a) if tokens else (lambda a: a.astype(np.float32))
    return Dataset(f32(xt), yt, f32(xv), yv, int(k), num_features, extra)
