"""The study model: grown in the background on a study's finished runs, guarded, served.

A fit is held on an event where a test needs one in progress (never a sleep): an
``update()`` that waited for the fit would find it finished, and the test fails.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_study import _study_run as _run
from test_study import flat, over

from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast import study_model
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.forecast.study_model import (
    StudyModel,
    StudyModelGrower,
    fit_study_model,
)
from earlystop_predict.ledger import Ledger
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.records.record import RunRecord


class ConstantGain:
    """A stand-in booster: every forecast ``gain`` above the run's last value."""

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def predict(self, x, num_threads=1):
        return np.full(len(x), self.gain)


def _models(forecasts: list[dict]) -> set[str]:
    return {f["model"] for f in forecasts if "model" in f}


@pytest.fixture
def held(monkeypatch):
    """``fit_study_model`` replaced by one that waits for ``release`` (30 s at most)
    and then returns ``result`` (or raises it)."""
    state = {"release": threading.Event(), "started": threading.Event(), "calls": [],
             "result": (StudyModel(ConstantGain(0.0), 0.5, 0, 0.8), "")}

    def fit(base, runs):
        state["calls"].append(len(runs))
        state["started"].set()
        state["release"].wait(30)
        if isinstance(state["result"], Exception):
            raise state["result"]
        model, why = state["result"]
        return (StudyModel(model.booster, model.weight, len(runs), model.error_ratio)
                if model is not None else None), why

    monkeypatch.setattr(study_model, "fit_study_model", fit)
    return state


def test_an_epoch_never_waits_for_the_fit_and_the_model_serves_once_ready(tmp_path, held):
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=tmp_path / "l.db", model=over(),
                          study_model_runs=8, use_incumbent=False, min_delta=None)
    for i in range(8):
        assert _models(_run(mon, 0.3 + 0.01 * i)) <= {"over", "over+study"}
    assert held["calls"] == []  # 7 finished runs when the 8th began: no fit yet
    mon.begin()  # 8 finished runs: the fit starts, held
    assert held["started"].wait(30)
    grower = mon.study_model
    for e in range(1, 5):
        decision = mon.update(e, {"val_accuracy": 0.35})
        assert decision.forecast.model == "over+study"  # the last good model serves
    assert grower.busy  # every update() returned while the fit was held
    held["release"].set()
    assert grower.wait(30)
    decision = mon.update(5, {"val_accuracy": 0.35})
    fc = decision.forecast
    assert fc.model == "over+study+study-model"
    assert "study model: 8 finished runs, weight 0.5" in fc.reason
    # the blend: half the corrected forecast, half the study model's (gain 0: 0.35)
    corrected = mon.study_context.apply(mon.record, 8, over().forecast(mon.record, 8))
    assert fc.mean == pytest.approx(0.5 * corrected.mean + 0.5 * 0.35)
    qs = [fc.quantiles[k] for k in sorted(fc.quantiles, key=float)]
    assert qs == sorted(qs) and qs[0] <= fc.mean <= qs[-1]
    mon.end()
    with Ledger(tmp_path / "l.db") as led:
        rec = [r for r in led.records("s") if r.run_id == mon.record.run_id][0]
    assert [f["model"] for f in rec.forecasts[3:5]] == ["over+study", "over+study+study-model"]
    assert "8 finished runs" in rec.forecasts[4]["model_reason"]
    assert held["calls"] == [8]  # one fit; the next waits for 10 finished runs


def test_a_failed_fit_falls_back_with_a_reason_and_training_goes_on(tmp_path, held):
    held["result"] = RuntimeError("boom")
    held["release"].set()
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=tmp_path / "l.db", model=over(),
                          study_model_runs=8, use_incumbent=False, min_delta=None)
    for i in range(9):
        _run(mon, 0.3 + 0.01 * i)
    assert mon.study_model.wait(30) and held["calls"] == [8]
    forecasts = _run(mon, 0.35)
    assert _models(forecasts) == {"over+study"}
    assert "study model: the fit on 8 finished runs failed (RuntimeError: boom); not served" \
        in forecasts[0]["model_reason"]


def test_a_refused_fit_says_why_and_serves_what_served(tmp_path, held):
    held["result"] = (None, "8 finished runs, held-out error 1.10 x what serves now")
    held["release"].set()
    mon = ForecastMonitor(target_epoch=8, study="s", ledger=tmp_path / "l.db", model=over(),
                          study_model_runs=8, use_incumbent=False, min_delta=None)
    for i in range(9):
        _run(mon, 0.3 + 0.01 * i)
    mon.study_model.wait(30)
    forecasts = _run(mon, 0.35)
    assert _models(forecasts) == {"over+study"}
    assert "study model not served: 8 finished runs, held-out error 1.10" in \
        forecasts[0]["model_reason"]


def test_a_search_without_a_ledger_grows_it_from_the_trials_handed_in(held):
    held["release"].set()
    mon = ForecastMonitor(target_epoch=8, study="no-ledger", model=over(), study_model_runs=8,
                          use_incumbent=False, min_delta=None)
    mon.begin()
    assert mon.observe_study_runs([flat(f"t{i}", 0.3 + 0.01 * i, 8) for i in range(8)]) == 8
    assert mon.study_model.wait(30) and held["calls"] == [8]
    assert mon.update(1, {"val_accuracy": 0.3}).forecast.model == "over+study+study-model"


def test_one_fit_at_a_time_and_a_new_one_only_with_enough_new_runs():
    gate = threading.Event()
    calls = []

    def fit(base, runs):
        calls.append(len(runs))
        gate.wait(30)
        return None, "no"

    grower = StudyModelGrower(8, fit=fit)
    runs = [RunRecord(f"r{i}", epochs=[{"epoch": e, "val_accuracy": 0.5} for e in range(1, 6)])
            for i in range(12)]
    assert not grower.offer(over(), runs[:7])           # too few
    assert grower.offer(over(), runs[:8])                # starts
    assert not grower.offer(over(), runs)               # one runs already
    gate.set()
    assert grower.wait(30)
    assert not grower.offer(over(), runs[:9])            # 9 < 8 * 1.25
    assert grower.offer(over(), runs[:10])
    assert grower.wait(30) and calls == [8, 10]
    with pytest.raises(ConfigError, match="study_model_runs"):
        ForecastMonitor(study_model_runs=3)


def _study(n: int, seed: int = 0) -> list[RunRecord]:
    """Runs that climb from 0.3 to a level their learning rate sets; after 20 % of the
    run the climb so far shows a part of where each one ends."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        lr = float(rng.uniform(0.0, 1.0))
        top = 0.3 + 0.6 * lr ** 2
        curve = top - (top - 0.3) * np.exp(-np.arange(1, 21) / 6.0)
        curve = curve + rng.normal(0, 0.003, 20)
        runs.append(RunRecord(f"r{i}", epochs=[{"epoch": e + 1, "val_accuracy": float(v)}
                                               for e, v in enumerate(curve)],
                              hparams={"learning_rate": lr}, meta={"max_epochs": 20}))
    return runs


def test_the_guard_serves_a_study_model_that_beats_the_base_and_refuses_one_that_does_not():
    runs = _study(40)
    model, why = fit_study_model(over(), runs)  # the base is far off: +0.3 on every run
    assert model is not None and why == "" and model.runs == 40
    assert model.error_ratio < 0.95 and model.weight < 1.0

    def oracle_fn(rec, m):  # knows where each run ends: nothing can beat it
        lr = rec.hparams["learning_rate"]
        return 0.3 + 0.6 * lr ** 2 - 0.6 * lr ** 2 * np.exp(-m / 6.0)
    oracle = ScriptedForecaster(oracle_fn, name="oracle")
    model, why = fit_study_model(oracle, runs)
    assert model is None and "held-out error" in why and "x what serves now" in why
    model, why = fit_study_model(oracle, runs[:5])
    assert model is None and "too few" in why


def test_one_record_s_point_is_the_batch_s_point_for_accuracies_and_losses():
    """``point`` (a callback's epoch) is ``points`` of a batch of one, to the last bit:
    accuracies clipped to [0, 1], losses back from log space, NaN where nothing is seen."""
    model, why = fit_study_model(over(), _study(40))
    assert model is not None, why
    rng = np.random.default_rng(1)
    losses = [RunRecord(f"l{i}", metric="val_loss",
                        epochs=[{"epoch": e, "val_loss": float(v)}
                                for e, v in enumerate(rng.uniform(0.1, 3.0, n), 1)],
                        hparams={"learning_rate": 0.5}, meta={"max_epochs": 20})
              for i, n in enumerate((1, 4, 12))]
    unseen = RunRecord("none", epochs=[{"epoch": 1, "val_accuracy": float("nan")}])
    for rec in _study(6, seed=3) + losses + [unseen]:
        for target in (5, 20, 60):
            batch = model.points([rec], [target])[0]
            np.testing.assert_array_equal(model.point(rec, target), batch)
    assert np.isnan(model.point(unseen, 20))
    assert all(model.point(rec, 20) > 0 for rec in losses)


def test_a_real_keras_search_is_served_by_the_study_model_after_enough_finished_runs(tmp_path):
    """30 short Keras runs of a learnable task at learning rates from 0 (flat) to fast:
    the scripted base forecaster knows nothing of the learning rate; from the 10th run
    on (a fit on the first 8, started by the 9th) the ledger shows the study model."""
    keras = pytest.importorskip("keras")
    from earlystop_predict.integrations.keras import KerasForecastCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    rates = np.resize([0.0, 0.3, 0.01, 0.1, 0.003, 0.03], 30)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = model.get_weights()  # one model, compiled once: each run starts it afresh
    growers, base = [], over()
    for i, lr in enumerate(rates):
        model.set_weights([w + 0.01 * i for w in start])
        model.optimizer.learning_rate.assign(float(lr))
        cb = KerasForecastCallback(study="lr", ledger=tmp_path / "l.db", model=base,
                                   run_id=f"cfg{i:02d}", min_delta=None, use_incumbent=False,
                                   study_model_runs=8)
        model.fit(x, y, epochs=6, validation_split=0.25, batch_size=8, verbose=0,
                  callbacks=[cb])
        assert cb.monitor.record.hparams["learning_rate"] == pytest.approx(lr)
        grower = cb.monitor.study_model
        if grower is not None:  # the test, not the callback, waits for the background fit
            grower.wait(60)
            growers.append(grower)
    assert len({id(g) for g in growers}) == 1  # the runs share the study's grower
    with Ledger(tmp_path / "l.db") as led:
        records = sorted(led.records("lr"), key=lambda r: r.run_id)
    served = [_models(r.forecasts) for r in records]
    # the first 8 ran before any fit; the 9th started it (served once ready, or not)
    assert all(not any("study-model" in m for m in s) for s in served[:8])
    late = [s for s in served[9:] if any("study-model" in m for m in s)]
    assert len(late) >= 15, served
    reasons = [f.get("model_reason", "") for r in records[9:] for f in r.forecasts
               if "study-model" in f.get("model", "")]
    assert all("finished runs, weight" in why for why in reasons)


def test_a_grower_is_shared_by_deep_copies_and_pickles_without_its_lock():
    # Regression: Keras Tuner deep-copies each trial's callbacks; a monitor holding its
    # study's grower could not be copied ("cannot pickle '_thread.lock' object").
    import copy
    import pickle

    grower = StudyModelGrower(8)
    assert copy.deepcopy(grower) is grower
    back = pickle.loads(pickle.dumps(grower))
    assert back is not grower and back.min_runs == 8 and not back.busy
    assert back.offer(None, []) is False  # usable: too few runs, nothing starts
