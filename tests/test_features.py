"""Canonical keys and static feature encoding (missing values masked, never zero-filled)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_record

from earlystop_predict.records.features import (
    FRAMEWORKS,
    HPARAM_KEYS,
    META_KEYS,
    OPTIMIZERS,
    SCHEDULES,
    STATIC_DIM,
    STATIC_NAMES,
    canonical_hparams,
    canonical_meta,
    canonical_metric,
    canonical_metrics,
    canonical_optimizer,
    canonical_schedule,
    encode_static,
    record_static,
)


def _slot(name: str) -> tuple[int, int]:
    return STATIC_NAMES.index(name), STATIC_NAMES.index(f"{name}_mask")


def _onehot(vec: np.ndarray, prefix: str) -> dict[str, float]:
    return {n.split("=", 1)[1]: float(vec[i]) for i, n in enumerate(STATIC_NAMES)
            if n.startswith(prefix + "=")}


# ----------------------------------------------------------------------------- aliases
@pytest.mark.parametrize(("alias", "canon"), [
    ("lr", "learning_rate"), ("learning-rate", "learning_rate"), ("LR", "learning_rate"),
    ("learning_rate_init", "learning_rate"), ("base_lr", "learning_rate"),
    ("bs", "batch_size"), ("batch-size", "batch_size"), ("train_batch_size", "batch_size"),
    ("per_device_train_batch_size", "batch_size"),
    ("wd", "weight_decay"), ("weight-decay", "weight_decay"), ("l2", "weight_decay"),
    ("beta1", "momentum"), ("dropout_rate", "dropout"),
    ("n_layers", "num_layers"), ("num_hidden_layers", "num_layers"),
    ("hidden_size", "width"), ("units", "width"),
    ("warmup_ratio", "warmup_fraction"),
])
def test_hparam_aliases(alias, canon):
    assert canonical_hparams({alias: 3}) == {canon: 3}


def test_canonical_keys_map_to_themselves():
    hp = {k: 1 for k in HPARAM_KEYS if k not in ("optimizer", "lr_schedule")}
    assert canonical_hparams(hp) == hp
    meta = {k: 1 for k in META_KEYS}
    assert canonical_meta(meta) == meta


@pytest.mark.parametrize("items", [
    [("lr", 0.1), ("learning_rate", 0.2)],
    [("learning_rate", 0.2), ("lr", 0.1)],
])
def test_explicit_canonical_key_wins_over_alias(items):
    assert canonical_hparams(dict(items)) == {"learning_rate": 0.2}


def test_unknown_hparams_are_kept():
    assert canonical_hparams({"my_knob": "x", "lr": 1e-3}) == {"my_knob": "x",
                                                               "learning_rate": 1e-3}
    assert canonical_hparams(None) == {}


@pytest.mark.parametrize(("alias", "canon"), [
    ("n_train", "train_size"), ("num_samples", "train_size"),
    ("num_labels", "num_classes"), ("n_classes", "num_classes"),
    ("input_dim", "num_features"), ("n_params", "num_params"),
    ("epochs", "max_epochs"), ("num_train_epochs", "max_epochs"),
])
def test_meta_aliases(alias, canon):
    assert canonical_meta({alias: 5, "other": 1}) == {canon: 5, "other": 1}


@pytest.mark.parametrize(("alias", "canon"), [
    ("val_acc", "val_accuracy"), ("eval_accuracy", "val_accuracy"),
    ("val_sparse_categorical_accuracy", "val_accuracy"), ("val/acc", "val_accuracy"),
    ("eval_loss", "val_loss"), ("valid_loss", "val_loss"),
    ("accuracy", "train_accuracy"), ("acc", "train_accuracy"), ("loss", "train_loss"),
    ("epoch_time", "time"), ("val_f1", "val_f1"),
])
def test_metric_aliases(alias, canon):
    assert canonical_metric(alias) == canon


def test_canonical_metrics_prefers_explicit_name():
    got = canonical_metrics({"val_acc": 0.1, "val_accuracy": 0.2, "loss": 1.5, "lr": 0.1})
    assert got == {"val_accuracy": 0.2, "train_loss": 1.5, "lr": 0.1}


# ----------------------------------------------------------------------------- categoricals
@pytest.mark.parametrize(("raw", "canon"), [
    ("sgd", "sgd"), ("SGD", "sgd"), ("momentum", "sgd"),
    ("adam", "adam"), ("Adam", "adam"), ("nadam", "adam"),
    ("AdamW", "adamw"), ("adamw_torch", "adamw"), ("adamw_hf", "adamw"),
    ("AdamWeightDecay", "adamw"),
    ("RMSprop", "rmsprop"), ("rmsprop", "rmsprop"),
    ("torch.optim.AdamW", "adamw"), ("torch.optim.SGD", "sgd"),
    ("keras.optimizers.RMSprop", "rmsprop"), ("<class 'torch.optim.adam.Adam'>", "adam"),
    ("adafactor", "other"), ("lion", "other"), ("", "other"),
])
def test_optimizer_normalisation(raw, canon):
    assert canonical_optimizer(raw) == canon
    assert canon in OPTIMIZERS


@pytest.mark.parametrize(("raw", "canon"), [
    (None, "constant"), ("", "constant"), ("none", "constant"), ("ConstantLR", "constant"),
    ("constant_with_warmup", "constant"),
    ("cosine", "cosine"), ("CosineAnnealingLR", "cosine"), ("cosine_with_restarts", "cosine"),
    ("CosineDecay", "cosine"),
    ("linear", "linear"), ("LinearLR", "linear"), ("polynomial", "linear"),
    ("StepLR", "step"), ("MultiStepLR", "step"), ("ExponentialDecay", "step"),
    ("PiecewiseConstantDecay", "step"),
    ("OneCycleLR", "other"), ("reduce_lr_on_plateau", "other"),
])
def test_schedule_normalisation(raw, canon):
    assert canonical_schedule(raw) == canon
    assert canon in SCHEDULES


def test_canonical_hparams_normalises_categoricals():
    got = canonical_hparams({"optim": "AdamW", "lr_scheduler_type": "cosine_with_restarts",
                             "lr": 3e-4})
    assert got == {"optimizer": "adamw", "lr_schedule": "cosine", "learning_rate": 3e-4}


# ----------------------------------------------------------------------------- encode_static
def test_static_vector_shape_and_names():
    vec = encode_static({}, {})
    assert vec.shape == (STATIC_DIM,) and vec.dtype == np.float32
    assert len(set(STATIC_NAMES)) == STATIC_DIM


def test_everything_missing_is_all_masked():
    vec = encode_static({}, {})
    assert not vec.any()
    for name in STATIC_NAMES:
        if name.endswith("_mask"):
            assert vec[STATIC_NAMES.index(name)] == 0.0


def test_present_value_sets_mask_and_missing_stays_masked():
    vec = encode_static({"learning_rate": 1e-3}, {})
    v, m = _slot("learning_rate")
    assert vec[m] == 1.0
    assert vec[v] == pytest.approx((math.log(1e-3) + 5.0) / 2.0, rel=1e-5)
    bv, bm = _slot("batch_size")
    assert vec[bv] == 0.0 and vec[bm] == 0.0


def test_missing_is_masked_not_zero_filled():
    # momentum 0.5 encodes to exactly 0.0: only the mask tells it from a missing value.
    present = encode_static({"momentum": 0.5}, {})
    missing = encode_static({}, {})
    v, m = _slot("momentum")
    assert present[v] == missing[v] == 0.0
    assert present[m] == 1.0 and missing[m] == 0.0
    assert not np.array_equal(present, missing)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "fast", True, 0.0, -1e-3])
def test_unusable_values_are_masked(bad):
    vec = encode_static({"learning_rate": bad}, {})
    v, m = _slot("learning_rate")
    assert vec[v] == 0.0 and vec[m] == 0.0


def test_zero_is_present_on_linear_features():
    vec = encode_static({"dropout": 0.0, "weight_decay": 0.0}, {})
    assert vec[_slot("dropout")[1]] == 1.0
    # weight decay is logged: 0 has no log and is masked, not encoded as a huge negative.
    assert vec[_slot("weight_decay")[1]] == 0.0


def test_every_numeric_feature_has_a_mask():
    hp = {"learning_rate": 0.01, "batch_size": 64, "momentum": 0.9, "weight_decay": 1e-4,
          "dropout": 0.1, "num_layers": 2, "width": 256, "warmup_fraction": 0.1}
    meta = {"train_size": 1437, "num_classes": 10, "num_features": 64, "num_params": 85000,
            "max_epochs": 50}
    vec = encode_static(hp, meta)
    for name in [*hp, *meta]:
        v, m = _slot(name)
        assert vec[m] == 1.0, name
        assert -5.0 <= vec[v] <= 5.0, name


def test_values_are_clipped():
    vec = encode_static({"learning_rate": 1e30}, {})
    assert vec[_slot("learning_rate")[0]] == 5.0


def test_aliases_encode_like_canonical_keys():
    a = encode_static({"lr": 0.01, "bs": 32, "wd": 1e-4, "optim": "AdamW"},
                      {"n_train": 1000, "num_labels": 10, "num_train_epochs": 30})
    b = encode_static({"learning_rate": 0.01, "batch_size": 32, "weight_decay": 1e-4,
                       "optimizer": "adamw"},
                      {"train_size": 1000, "num_classes": 10, "max_epochs": 30})
    np.testing.assert_array_equal(a, b)


def test_hparam_in_meta_is_not_read_and_vice_versa():
    vec = encode_static({"train_size": 1000}, {"learning_rate": 0.1})
    assert vec[_slot("train_size")[1]] == 0.0 and vec[_slot("learning_rate")[1]] == 0.0


def test_optimizer_one_hot():
    assert _onehot(encode_static({"optimizer": "AdamW"}, {}), "optimizer") == {
        o: float(o == "adamw") for o in OPTIMIZERS}
    assert _onehot(encode_static({"optimizer": "lion"}, {}), "optimizer")["other"] == 1.0
    assert sum(_onehot(encode_static({}, {}), "optimizer").values()) == 0.0


def test_schedule_one_hot():
    vec = encode_static({"scheduler": "CosineAnnealingLR"}, {})
    assert _onehot(vec, "lr_schedule") == {s: float(s == "cosine") for s in SCHEDULES}
    assert sum(_onehot(encode_static({}, {}), "lr_schedule").values()) == 0.0


@pytest.mark.parametrize(("raw", "canon"), [
    ("torch", "torch"), ("PyTorch", "torch"), ("lightning", "torch"), ("transformers", "torch"),
    ("keras", "keras"), ("jax", "other"),
])
def test_framework_one_hot(raw, canon):
    got = _onehot(encode_static({}, {"framework": raw}), "framework")
    assert got == {f: float(f == canon) for f in FRAMEWORKS}


def test_record_static_matches_encode_static():
    rec = make_record()
    np.testing.assert_array_equal(record_static(rec), encode_static(rec.hparams, rec.meta))
