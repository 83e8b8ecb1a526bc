"""KerasForecastCallback on real (tiny) Keras 3 training: 64 random rows, 1-2 layers.

A scripted forecaster makes the stop epoch known: it forecasts 0.95 until the
run holds 3 epochs, then 0.2; with ``threshold=0.9`` and ``min_epochs=3`` the
run stops at epoch 3.
"""

from __future__ import annotations

import csv
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from conftest import by_epoch  # noqa: E402

from earlystop_predict.errors import MetricNotFoundError, RecordError  # noqa: E402
from earlystop_predict.integrations.keras import KerasForecastCallback  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.policy.stop import LOG_KEYS  # noqa: E402

EPOCHS = 6


def scripted():
    """0.95 for epochs 1-2, 0.2 from epoch 3 on."""
    return by_epoch({1: 0.95, 2: 0.95}, default=0.2)


def data(n: int = 64, nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = rng.integers(0, 3, size=n)
    if nan:
        x[:, 0] = np.nan
    return x, y


def build(optimizer=None, dropout: float = 0.25) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer or keras.optimizers.Adam(learning_rate=0.01),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(cb, *, epochs: int = EPOCHS, model=None, nan: bool = False, extra=(),
        validation: bool = True, **kwargs):
    x, y = data(nan=nan)
    model = model or build()
    kwargs.setdefault("validation_split", 0.25 if validation else 0.0)
    return model.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
                     callbacks=[cb, *extra], **kwargs)


def make(tmp_path=None, **kwargs) -> KerasForecastCallback:
    kwargs.setdefault("threshold", 0.9)
    kwargs.setdefault("min_epochs", 3)
    kwargs.setdefault("model", scripted())
    if tmp_path is not None:
        kwargs.setdefault("ledger", tmp_path / "l.db")
    return KerasForecastCallback(**kwargs)


def test_stops_at_scripted_epoch_and_logs_everywhere(tmp_path):
    cb = make(tmp_path, run_id="k1", study="unit")
    log = tmp_path / "log.csv"
    hist = fit(cb, extra=[keras.callbacks.CSVLogger(str(log))])

    assert len(hist.history["loss"]) == 3                      # stopped at epoch 3 of 6
    assert cb.monitor.stopped == {"epoch": 3,
                                  "reason": "forecast q0.95 0.2 < threshold 0.9"}
    for key in LOG_KEYS:
        assert len(hist.history[key]) == 3
    assert hist.history["esp/forecast_mean"] == pytest.approx([0.95, 0.95, 0.2])
    assert hist.history["esp/forecast_q90"] == pytest.approx([0.95, 0.95, 0.2])
    assert hist.history["esp/stop"] == [0.0, 0.0, 1.0]

    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert set(LOG_KEYS) <= set(rows[0])
    assert [float(r["esp/stop"]) for r in rows] == [0.0, 0.0, 1.0]

    (rec,) = Ledger(tmp_path / "l.db").records(study="unit")
    assert rec.run_id == "k1"
    assert [r["epoch"] for r in rec.epochs] == [1, 2, 3]
    assert rec.epochs[0]["val_accuracy"] == pytest.approx(hist.history["val_accuracy"][0])
    assert [f["at_epoch"] for f in rec.forecasts] == [1, 2, 3]
    assert [f["mean"] for f in rec.forecasts] == pytest.approx([0.95, 0.95, 0.2])
    assert [f["stop"] for f in rec.forecasts] == [False, False, True]
    assert rec.forecasts[0]["target_epoch"] == EPOCHS     # default target: fit's epochs
    assert rec.stopped["epoch"] == 3
    assert rec.extra["status"] == "stopped"


def test_dry_run_trains_to_the_end_with_the_same_forecasts(tmp_path):
    cb = make(tmp_path, dry_run=True, run_id="dry")
    hist = fit(cb)

    assert len(hist.history["loss"]) == EPOCHS
    assert cb.monitor.stopped is None
    observed = hist.history["val_accuracy"][-1]   # at the target: the observation, not NaN
    for key in ("esp/forecast_mean", "esp/forecast_q10", "esp/forecast_q90"):
        assert hist.history[key][-1] == pytest.approx(observed)
    assert hist.history["esp/forecast_mean"] == pytest.approx([0.95, 0.95] + [0.2] * 3
                                                             + [observed])
    assert hist.history["esp/stop"] == [0.0] * EPOCHS
    (rec,) = Ledger(tmp_path / "l.db").records()
    assert [r["epoch"] for r in rec.epochs] == list(range(1, EPOCHS + 1))
    assert [f.get("mean") for f in rec.forecasts[:5]] == pytest.approx([0.95, 0.95, 0.2,
                                                                        0.2, 0.2])
    assert "mean" not in rec.forecasts[5]          # the target epoch itself is observed
    assert rec.forecasts[2]["would_stop"] is True
    assert rec.stopped is None
    assert rec.extra["status"] == "completed"


def test_nan_loss_stops_as_diverged(tmp_path):
    # The loss is NaN by construction from epoch 2 on: cross-entropy plus a variable a
    # callback sets to NaN. x + NaN is NaN under every kernel (oneDNN on or off), unlike
    # a NaN input column, which oneDNN's fused kernels can turn into a finite loss.
    offset = keras.Variable(0.0, trainable=False, name="loss_offset")
    crossentropy = keras.losses.SparseCategoricalCrossentropy()

    def loss(y_true, y_pred):
        return crossentropy(y_true, y_pred) + offset

    def poison(epoch, logs=None):
        if epoch == 1:                                        # Keras counts from 0
            offset.assign(math.nan)

    model = build()
    model.compile(keras.optimizers.Adam(learning_rate=0.01), loss, metrics=["accuracy"])
    cb = make(tmp_path, model=by_epoch({}, default=0.99), run_id="nan")
    hist = fit(cb, model=model,
               extra=[keras.callbacks.LambdaCallback(on_epoch_begin=poison)])

    assert math.isfinite(hist.history["loss"][0]) and math.isnan(hist.history["loss"][1])
    assert len(hist.history["loss"]) == 2                    # before min_epochs, even
    assert cb.monitor.stopped == {"epoch": 2, "reason": "diverged"}
    assert hist.history["esp/stop"] == [0.0, 1.0]
    assert hist.history["esp/forecast_mean"][0] == pytest.approx(0.99)
    assert math.isnan(hist.history["esp/forecast_mean"][1])  # no forecast on a NaN epoch
    (rec,) = Ledger(tmp_path / "l.db").records()
    assert rec.stopped == {"epoch": 2, "reason": "diverged"}
    assert rec.epochs[1]["train_loss"] is None               # NaN is stored as missing
    assert rec.extra["status"] == "diverged"


def test_missing_metric_lists_the_keras_keys():
    cb = make()
    with pytest.raises(MetricNotFoundError) as info:
        fit(cb, validation=False)
    assert info.value.metric == "val_accuracy"
    assert {"accuracy", "loss"} <= set(info.value.available)
    assert "available keys: accuracy, loss" in str(info.value)


def test_hyperparameters_read_from_keras_user_values_win():
    cb = make(hparams={"weight_decay": 0.5}, meta={"num_classes": 7})
    model = build(keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8))
    fit(cb, model=model)

    hp, meta = cb.monitor.record.hparams, cb.monitor.record.meta
    assert hp["optimizer"] == "adam"
    assert hp["learning_rate"] == pytest.approx(0.01)
    assert hp["momentum"] == pytest.approx(0.8)
    assert hp["lr_schedule"] == "constant"
    assert hp["batch_size"] == 16
    assert hp["dropout"] == pytest.approx(0.25)
    assert (hp["num_layers"], hp["width"]) == (1, 16)
    assert hp["weight_decay"] == 0.5                         # the user's value
    assert meta["num_params"] == model.count_params() == 8 * 16 + 16 + 16 * 3 + 3
    assert meta["max_epochs"] == EPOCHS
    assert meta["train_size"] == 48                          # 64 rows less the 25 % split
    assert (meta["num_features"], meta["framework"]) == (8, "keras")
    assert meta["num_classes"] == 7                          # the user's value


def test_learning_rate_schedule_is_read():
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=100)
    cb = make(model=by_epoch({}, default=0.99))
    fit(cb, model=build(keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=1e-4)))

    hp = cb.monitor.record.hparams
    assert hp["optimizer"] == "sgd"
    assert hp["learning_rate"] == pytest.approx(0.05)
    assert hp["lr_schedule"] == "cosine"
    assert hp["momentum"] == pytest.approx(0.9)
    assert hp["weight_decay"] == pytest.approx(1e-4)


def test_one_instance_two_fits_start_fresh(tmp_path):
    cb = make(tmp_path)
    fit(cb)
    first = cb.monitor.record
    hist = fit(cb, model=build(), epochs=4)

    second = cb.monitor.record
    assert second is not first and second.run_id != first.run_id
    assert [r["epoch"] for r in second.epochs] == [1, 2, 3]
    assert len(hist.history["loss"]) == 3
    assert second.meta["max_epochs"] == 4
    assert [f["target_epoch"] for f in second.forecasts] == [4, 4, 4]
    runs = Ledger(tmp_path / "l.db").runs()
    assert sorted(r["run_id"] for r in runs) == sorted([first.run_id, second.run_id])
    assert all(r["n_epochs"] == 3 for r in runs)


def test_state_path_resumes_with_initial_epoch(tmp_path):
    state = tmp_path / "state.json"
    kwargs = dict(model=by_epoch({}, default=0.99), state_path=state, target_epoch=EPOCHS)
    model = build()
    cb = make(tmp_path, **kwargs)
    fit(cb, model=model, epochs=3)
    run_id = cb.monitor.record.run_id
    assert state.exists()

    resumed = make(tmp_path, **kwargs)                       # a fresh process, say
    fit(resumed, model=model, epochs=EPOCHS, initial_epoch=3)
    rec = resumed.monitor.record
    assert rec.run_id == run_id
    assert [r["epoch"] for r in rec.epochs] == list(range(1, EPOCHS + 1))
    (stored,) = Ledger(tmp_path / "l.db").records()
    assert [r["epoch"] for r in stored.epochs] == list(range(1, EPOCHS + 1))
    assert stored.extra["status"] == "completed"

    fresh = make(tmp_path, **kwargs)                         # initial_epoch=0: a new run
    fit(fresh, model=build(), epochs=2)
    assert fresh.monitor.record.run_id != run_id
    assert [r["epoch"] for r in fresh.monitor.record.epochs] == [1, 2]


def test_a_fine_tuned_directory_serves_its_blend_and_the_ledger_says_so(tmp_path):
    from conftest import blended_model_dir

    model_dir = blended_model_dir(tmp_path / "mine")
    cb = make(tmp_path, model=str(model_dir), dry_run=True, run_id="blend", study="b",
              target_epoch=20)
    hist = fit(cb)
    assert len(hist.history["loss"]) == EPOCHS
    (rec,) = Ledger(tmp_path / "l.db").records(study="b")
    assert len(rec.forecasts) == EPOCHS
    assert {f["model"] for f in rec.forecasts} == {"lstm+lightgbm+history"}
    for f in rec.forecasts:
        q = f["quantiles"]
        assert 0.0 <= q["0.1"] <= q["0.5"] <= q["0.9"] <= 1.0


def test_resume_from_an_earlier_epoch_stops_where_the_whole_run_does(tmp_path):
    # Regression (issue 12.2): poor from epoch 3, patience 3: the whole run stops at 5.
    kwargs = dict(model=scripted(), patience=3, min_epochs=1, target_epoch=EPOCHS)
    whole = make(**kwargs)
    fit(whole)
    assert whole.monitor.stopped["epoch"] == 5
    state = tmp_path / "state.json"
    model = build()
    first = make(state_path=state, **kwargs)
    fit(first, model=model, epochs=4)                          # saved at epoch 4, streak 2
    resumed = make(state_path=state, **kwargs)
    hist = fit(resumed, model=model, epochs=EPOCHS, initial_epoch=2)   # replays epoch 3
    assert resumed.monitor.stopped["epoch"] == 5
    assert len(hist.history["loss"]) == 3                      # epochs 3, 4, 5
    assert [r["epoch"] for r in resumed.monitor.record.epochs] == [1, 2, 3, 4, 5]


def test_epochs_without_validation_are_skipped(tmp_path):
    # Regression (issue 12.3): fit(validation_freq=2) validates at epochs 2, 4, 6 only.
    cb = make(tmp_path, run_id="freq")
    hist = fit(cb, validation_freq=2)
    assert [r["epoch"] for r in cb.monitor.record.epochs] == [2, 4]
    assert cb.monitor.stopped["epoch"] == 4 and len(hist.history["loss"]) == 4
    (rec,) = Ledger(tmp_path / "l.db").records()
    assert [f["at_epoch"] for f in rec.forecasts] == [2, 4]


def test_a_percent_valued_metric_fails_the_fit_and_records_nothing_out_of_range(tmp_path):
    class Percent(keras.callbacks.Callback):      # listed first: it rewrites the logs
        def on_epoch_end(self, epoch, logs=None):
            logs["val_accuracy"] *= 100

    cb = make(tmp_path, run_id="pct")
    with pytest.raises(RecordError, match="val_accuracy"):
        build().fit(*data(), epochs=3, batch_size=16, verbose=0, validation_split=0.25,
                    callbacks=[Percent(), cb])
    (run,) = Ledger(tmp_path / "l.db").runs()
    assert run["status"] == "failed" and run["final_value"] is None


class Scripted(keras.callbacks.Callback):
    """Listed first: writes a scripted ``val_accuracy`` into the logs and keeps each
    epoch's weights (before any callback after it changes them)."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = values, {}

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.values[epoch]
        self.weights[epoch + 1] = [w.copy() for w in self.model.get_weights()]


def test_restore_best_weights_sets_the_best_epoch_back_on_our_stop(tmp_path):
    script = Scripted([0.5, 0.7, 0.6, 0.55, 0.5, 0.5])       # best at epoch 2
    cb = make(tmp_path, restore_best_weights=True, min_delta=0.01, run_id="best")
    assert cb.monitor.policy.min_delta == 0.01
    model = build()
    model.fit(*data(), epochs=EPOCHS, batch_size=16, verbose=0, validation_split=0.25,
              callbacks=[script, cb])
    assert cb.monitor.stopped["epoch"] == 3 and cb.restored_epoch == 2
    assert cb.stopped is cb.monitor.stopped and cb.record is cb.monitor.record  # the views
    for got, best in zip(model.get_weights(), script.weights[2], strict=True):
        np.testing.assert_array_equal(got, best)
    assert any(not np.array_equal(b, la) for b, la in zip(script.weights[2], script.weights[3],
                                                          strict=True))
    assert cb.monitor.stopped["reason"].endswith("restored the weights of epoch 2")
    (run,) = Ledger(tmp_path / "l.db").runs()
    assert "restored the weights of epoch 2" in run["stopped"]["reason"]

    plain = make(restore_best_weights=False)                  # off: the last weights stay
    model = build()
    script = Scripted([0.5, 0.7, 0.6, 0.55, 0.5, 0.5])
    model.fit(*data(), epochs=EPOCHS, batch_size=16, verbose=0, validation_split=0.25,
              callbacks=[script, plain])
    assert plain.restored_epoch is None
    for got, last in zip(model.get_weights(), script.weights[3], strict=True):
        np.testing.assert_array_equal(got, last)


def test_a_deep_copy_shares_the_accmodel_and_the_ledger_not_the_run(tmp_path):
    # Keras Tuner deep-copies the callbacks for each trial: a Ledger object (an SQLite
    # connection) could not be copied, and a copied accModel is one more model per trial.
    import copy

    with Ledger(tmp_path / "l.db") as led:
        cb = make(ledger=led, run_id="orig", study="unit")
        fit(cb, model=build())
        twin = copy.deepcopy(cb)
        assert twin.monitor is not cb.monitor and twin.monitor.record is not cb.monitor.record
        assert twin.monitor.forecaster is cb.monitor.forecaster
        assert twin.monitor.ledger is led
        assert twin._model is None and cb.model is not None   # the model trained stays behind
        assert twin.record.epochs == cb.record.epochs
        twin.monitor.run_id_arg = "twin"
        fit(twin, model=build())
        assert twin.stopped["epoch"] == 3 and cb.record.run_id == "orig"
        assert {r["run_id"]: r["status"] for r in led.runs()} == {"orig": "stopped",
                                                                  "twin": "stopped"}
    path_cb = make(tmp_path / "p")                           # a path: each copy opens its own
    path_cb.monitor.ledger  # noqa: B018  (opened)
    assert copy.deepcopy(path_cb).monitor._ledger is None
    path_cb.monitor.ledger.close()
