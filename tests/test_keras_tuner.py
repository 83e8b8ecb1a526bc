"""Keras Tuner searches (real ``tuner.search``, tiny Dense models on 64 random rows) with
a KerasForecastCallback: each trial is a run of one study, stopped trials end STOPPED.

A scripted forecaster picks the hopeless trials by the trial id the tuner handed the
run (``meta["trial_id"]``): a forecast below any accuracy for them (below the
threshold where one is set), 1.0 (never beaten) for the others. Which trials stop, and
when, follows from the rules, not from the numbers Keras computes.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
kt = pytest.importorskip("keras_tuner")
pytest.importorskip("tensorboard", reason="keras-tuner's search imports tensorboard on the "
                    "TensorFlow backend: pip install 'earlystop_predict[keras_tuner]'")

from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.keras import KerasForecastCallback  # noqa: E402
from earlystop_predict.integrations.keras_tuner import (  # noqa: E402
    ForecastBayesianOptimization,
    ForecastHyperband,
    ForecastRandomSearch,
)
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.records.features import canonical_hparams  # noqa: E402

STOPPED, COMPLETED = kt.engine.trial.TrialStatus.STOPPED, kt.engine.trial.TrialStatus.COMPLETED


def hopeless(*trial_ids: str, low: float = -1.0) -> ScriptedForecaster:
    """``low`` for the runs of ``trial_ids``, 1.0 for every other run."""
    return ScriptedForecaster(lambda rec, target: low if rec.meta.get("trial_id") in trial_ids
                              else 1.0)


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, size=64)


def build(hp: kt.HyperParameters) -> keras.Model:
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(hp.Choice("units", [4, 8, 16]),
                           activation=hp.Choice("activation", ["relu", "tanh"])),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")),
                  "sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True)   # no graph to trace for 3 batches an epoch
    return model


def search(tuner: kt.Tuner, cb: KerasForecastCallback, epochs: int) -> kt.Tuner:
    x, y = data()
    tuner.search(x, y, validation_split=0.25, epochs=epochs, batch_size=32, verbose=0,
                 callbacks=[cb])
    return tuner


def best_reached(rec) -> float:
    return max(row["val_accuracy"] for row in rec.epochs)


def test_random_search_stops_hopeless_trials_and_tells_the_oracle(tmp_path):
    keras.utils.set_random_seed(0)
    model = hopeless("0", "1", "4")
    # keep_top=None, flat_delta=None: which trials stop follows from the script alone, not
    # from how the trials' accuracies compare (keep_top would keep one as good as the
    # trials before; the rung rule would judge these tiny, flat curves by their rank).
    cb = KerasForecastCallback("val_accuracy", min_epochs=2, min_delta=None, model=model,
                               keep_top=None, flat_delta=None, ledger=tmp_path / "runs.db")
    tuner = search(ForecastRandomSearch(build, objective="val_accuracy", max_trials=6, seed=1,
                                        directory=tmp_path, project_name="mlp"), cb, epochs=3)
    trials = tuner.oracle.trials
    assert sorted(trials) == ["0", "1", "2", "3", "4", "5"]
    # Trial 0 had the same hopeless forecast, but no trial had ended: no incumbent to miss;
    # trials 1 and 4 miss the best value a finished trial reached (the oracle's).
    assert {t: trials[t].status for t in trials} == {
        "0": COMPLETED, "1": STOPPED, "2": COMPLETED, "3": COMPLETED, "4": STOPPED,
        "5": COMPLETED}
    records = tuner.forecast_records
    assert all(len(recs) == 1 for recs in records.values())
    for tid, (rec,) in records.items():
        trial = trials[tid]
        assert rec.run_id == f"mlp-trial-{tid}"
        assert canonical_hparams(trial.hyperparameters.values).items() <= rec.hparams.items()
        assert rec.hparams["activation"] == trial.hyperparameters.values["activation"]
        assert trial.score == pytest.approx(best_reached(rec))   # what it reached, stopped or not
        if trial.status == STOPPED:
            assert rec.stopped["epoch"] == 2 and rec.n_epochs == 2
            assert "incumbent" in rec.stopped["reason"]
            assert trial.message.startswith("earlystop_predict stopped it at epoch 2: ")
        else:
            assert rec.stopped is None and rec.n_epochs == 3
    # The best trials: completed and stopped ones by the best value each reached.
    ranked = tuner.oracle.get_best_trials(6)
    assert sorted(t.trial_id for t in ranked) == sorted(trials)
    assert [t.score for t in ranked] == sorted((t.score for t in ranked), reverse=True)
    assert tuner.get_best_hyperparameters()[0].values == ranked[0].hyperparameters.values
    # One study in the ledger; each trial its run, with its forecasts and stop.
    with Ledger(tmp_path / "runs.db") as led:
        runs = {r["run_id"]: r for r in led.runs()}
        stored = {r.run_id: r for r in led.records("mlp")}
    assert {r["study"] for r in runs.values()} == {"mlp"}
    assert sorted(runs) == [f"mlp-trial-{t}" for t in sorted(trials)]
    for tid, (rec,) in records.items():
        run, back = runs[rec.run_id], stored[rec.run_id]
        assert run["status"] == ("stopped" if trials[tid].status == STOPPED else "completed")
        assert run["stopped"] == rec.stopped and run["n_epochs"] == rec.n_epochs
        assert back.hparams == rec.hparams and back.meta["trial_id"] == tid
        assert [f["at_epoch"] for f in back.forecasts] == list(range(1, rec.n_epochs + 1))
    # The copies share the accModel; the callback handed to search() ran no fit itself.
    assert model.calls == sum(1 for recs in records.values() for f in recs[0].forecasts
                              if "mean" in f)
    assert cb.monitor.record.epochs == []


def test_the_best_trials_count_stopped_ones_by_what_they_reached(tmp_path):
    tuner = ForecastRandomSearch(build, objective="val_accuracy", max_trials=4,
                                 directory=tmp_path, project_name="rank")
    hp = kt.HyperParameters()
    for tid, status, score in (("0", STOPPED, 0.6), ("1", STOPPED, 0.8),
                               ("2", kt.engine.trial.TrialStatus.FAILED, None)):
        tuner.oracle.trials[tid] = kt.engine.trial.Trial(hp, trial_id=tid, status=status)
        tuner.oracle.trials[tid].score = score
    # Every trial stopped: Keras Tuner alone would hand back the first, not the best.
    assert [t.trial_id for t in tuner.oracle.get_best_trials(3)] == ["1", "0", "2"]
    tuner.oracle.trials["3"] = kt.engine.trial.Trial(hp, trial_id="3", status=COMPLETED)
    tuner.oracle.trials["3"].score = 0.7
    assert [t.trial_id for t in tuner.oracle.get_best_trials(2)] == ["1", "3"]
    assert isinstance(tuner.oracle, kt.oracles.RandomSearchOracle)   # its class, extended


def test_a_stopped_trial_shows_completed_to_the_gaussian_process_only_within_the_fit():
    from types import SimpleNamespace

    from earlystop_predict.integrations._tuner_trials import stopped_as_completed

    trials = [SimpleNamespace(status=STOPPED, score=0.5),
              SimpleNamespace(status=STOPPED, score=float("nan")),
              SimpleNamespace(status=COMPLETED, score=0.7)]
    with pytest.raises(RuntimeError), stopped_as_completed(trials):
        assert [t.status for t in trials] == [COMPLETED, "FAILED", COMPLETED]
        raise RuntimeError("the fit failed")
    assert [t.status for t in trials] == [STOPPED, STOPPED, COMPLETED]


def test_bayesian_optimization_fits_its_process_after_a_stopped_trial(tmp_path):
    keras.utils.set_random_seed(0)
    with Ledger(tmp_path / "runs.db") as led:   # a Ledger object: shared by the copies
        # flat_delta=None: the script alone decides (not the rung rule on flat curves).
        cb = KerasForecastCallback("val_accuracy", threshold=0.5, min_epochs=2, min_delta=None,
                                   model=hopeless("0", low=0.1), ledger=led, study="bo",
                                   flat_delta=None)
        tuner = search(ForecastBayesianOptimization(
            build, objective="val_accuracy", max_trials=3, num_initial_points=1, seed=1,
            directory=tmp_path, project_name="bo"), cb, epochs=3)
        runs = {r["run_id"]: r["status"] for r in led.runs("bo")}
    trials = tuner.oracle.trials
    # Trial 2 is the Gaussian process's pick, fitted on a stopped trial and a completed one.
    assert [trials[t].status for t in sorted(trials)] == [STOPPED, COMPLETED, COMPLETED]
    assert runs == {"bo-trial-0": "stopped", "bo-trial-1": "completed",
                    "bo-trial-2": "completed"}
    assert trials["0"].status == STOPPED and trials["0"].score is not None


def test_hyperband_forecasts_its_budget_and_never_promotes_a_stopped_trial(tmp_path):
    keras.utils.set_random_seed(0)
    # No ledger, no threshold: trial 1 can miss only the incumbent the oracle hands it.
    # A state file for each run: the promoted trial, starting past epoch 0, resumes from
    # its own (none), not from the file the trial before it left.
    cb = KerasForecastCallback("val_accuracy", min_epochs=1, min_delta=None,
                               model=hopeless("1"), state_path=tmp_path / "state.json")
    # max_epochs=4, factor=2: the first bracket trains 4 trials for 1 epoch, then
    # promotes the best of them to 2 epochs: trial 4 (the oracle stops at 5 trials).
    tuner = ForecastHyperband(build, objective="val_accuracy", max_epochs=4, factor=2, seed=1,
                              directory=tmp_path, project_name="hb")
    tuner.oracle.max_trials = 5
    search(tuner, cb, epochs=4)
    trials = tuner.oracle.trials
    values = {t: trials[t].hyperparameters.values for t in trials}
    first_round = [t for t in sorted(trials) if values[t]["tuner/round"] == 0
                   and values[t]["tuner/bracket"] == values["0"]["tuner/bracket"]]
    assert first_round == ["0", "1", "2", "3"]
    assert trials["1"].status == STOPPED
    assert all(trials[t].status == COMPLETED for t in ("0", "2", "3"))
    promoted = [t for t in trials if "tuner/trial_id" in values[t]]
    assert promoted, "Hyperband promoted no trial"
    parents = {values[t]["tuner/trial_id"] for t in promoted}
    assert "1" not in parents
    best = max(("0", "2", "3"), key=lambda t: trials[t].score)
    assert trials[best].score in {trials[p].score for p in parents}
    for tid, (rec,) in tuner.forecast_records.items():
        assert {f["target_epoch"] for f in rec.forecasts if "target_epoch" in f} <= {4}
        if tid in promoted:   # the run goes on from the parent's epoch
            assert rec.meta["parent_trial"] == values[tid]["tuner/trial_id"]
            assert rec.epochs[0]["epoch"] == values[tid]["tuner/initial_epoch"] + 1
        assert (tmp_path / f"state.{rec.run_id}.json").exists()
    stopped = tuner.forecast_records["1"][0].stopped
    assert stopped["epoch"] == 1 and "incumbent" in stopped["reason"]


def test_each_execution_of_a_trial_is_its_own_run_and_one_stop_stops_the_trial(tmp_path):
    keras.utils.set_random_seed(0)
    second = ScriptedForecaster(lambda rec, target: 0.1 if rec.run_id.endswith("-1") else 1.0)
    cb = KerasForecastCallback("val_accuracy", threshold=0.5, min_epochs=2, min_delta=None,
                               model=second, run_id="rep", ledger=tmp_path / "runs.db")
    tuner = search(ForecastRandomSearch(build, objective="val_accuracy", max_trials=1, seed=1,
                                        executions_per_trial=2, directory=tmp_path,
                                        project_name="rep"), cb, epochs=3)
    first, again = tuner.forecast_records["0"]
    assert (first.run_id, again.run_id) == ("rep-trial-0", "rep-trial-0-1")
    assert first.stopped is None and again.stopped["epoch"] == 2
    assert tuner.oracle.trials["0"].status == STOPPED
    with Ledger(tmp_path / "runs.db") as led:
        assert {r["run_id"]: r["status"] for r in led.runs("rep")} == {
            "rep-trial-0": "completed", "rep-trial-0-1": "stopped"}
