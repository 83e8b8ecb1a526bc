"""HFForecastCallback inside a real ``Trainer.hyperparameter_search`` (Optuna backend).

The Trainer keeps one callback object for the whole search and calls
``train(trial=...)`` once a trial, re-initialising the model through ``model_init``:
each trial must be a run of its own in one study, with its trial's parameters, and
be held against what the earlier trials reached. A 1-layer BERT built from a config
(nothing downloaded), 64 rows, CPU; a :class:`ScriptedForecaster` makes trial 1
hopeless and a scripted Optuna pruner prunes trial 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
optuna = pytest.importorskip("optuna")

from test_transformers import TinyDataset, accuracy, tiny_bert, train_args  # noqa: E402
from transformers import Trainer  # noqa: E402

from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.transformers import HFForecastCallback  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 4


class PruneTrial(optuna.pruners.BasePruner):
    """Optuna's side: prunes one trial at its second report (its 2nd evaluation)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == self.number and len(trial.intermediate_values) >= 2


def hp_space(trial: optuna.Trial) -> dict[str, Any]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 0.01])}


def hopeless_trial_1() -> ScriptedForecaster:
    return ScriptedForecaster(lambda rec, target: 0.2 if rec.run_id.endswith("-trial-1")
                              else 0.95)


def search(tmp_path: Path, cb: HFForecastCallback, n_trials: int = 4,
           **study_kw: Any) -> optuna.Study:
    """Run ``hyperparameter_search`` with ``cb``; the Optuna study it ran."""
    storage = optuna.storages.InMemoryStorage()
    trainer = Trainer(model_init=tiny_bert, args=train_args(tmp_path, num_train_epochs=EPOCHS),
                      train_dataset=TinyDataset(64, 0), eval_dataset=TinyDataset(32, 1),
                      compute_metrics=accuracy, callbacks=[cb])
    trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda m: m["eval_accuracy"], n_trials=n_trials,
        direction="maximize", backend="optuna", study_name="hf-search", storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0), **study_kw)
    return optuna.load_study(study_name="hf-search", storage=storage)


def incumbent_in(reason: str) -> float | None:
    found = re.search(r"incumbent (\S+)", reason)
    return float(found.group(1).rstrip(";")) if found else None


def test_each_trial_is_a_run_of_one_study_and_hopeless_ones_stop(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    # flat_delta=None: the script and Optuna's pruner decide, not the rung rule on the
    # tiny model's flat curves.
    cb = HFForecastCallback(threshold=0.9, min_epochs=2, model=hopeless_trial_1(),
                            ledger=ledger, flat_delta=None)
    study = search(tmp_path, cb, pruner=PruneTrial(2))
    trials = {t.number: t for t in study.trials}
    with Ledger(ledger) as led:
        runs = {r["run_id"]: r for r in led.runs(study="hf-search")}
        records = {r.run_id: r for r in led.records(study="hf-search")}
    ids = [f"hf-search-trial-{n}" for n in range(4)]
    assert sorted(runs) == ids and sorted(records) == ids  # one study, a run a trial
    for n, run_id in enumerate(ids):  # the trial's own parameters are its hparams
        hp = records[run_id].hparams
        assert hp["learning_rate"] == pytest.approx(trials[n].params["learning_rate"])
        assert hp["weight_decay"] == pytest.approx(trials[n].params["weight_decay"])
        assert [f["at_epoch"] for f in records[run_id].forecasts] == \
            list(range(1, len(records[run_id].epochs) + 1))  # a fresh record each trial

    # Trial 1 is hopeless: stopped at min_epochs by the forecast, a completed Optuna
    # trial with the value it reached.
    assert runs[ids[1]]["status"] == "stopped" and runs[ids[1]]["final_epoch"] == 2
    assert records[ids[1]].stopped == {"epoch": 2,
                                       "reason": "forecast q0.95 0.2 < threshold 0.9"}
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert trials[1].value == pytest.approx(records[ids[1]].epochs[-1]["val_accuracy"])
    # Trial 2 is Optuna's pruner's: the run is closed as stopped, saying so.
    assert trials[2].state == optuna.trial.TrialState.PRUNED
    assert runs[ids[2]]["status"] == "stopped" and runs[ids[2]]["final_epoch"] == 2
    assert records[ids[2]].stopped == {"epoch": 2, "reason": "pruned by the search"}
    # The others trained to the end.
    for n in (0, 3):
        assert runs[ids[n]]["status"] == "completed"
        assert [r["epoch"] for r in records[ids[n]].epochs] == list(range(1, EPOCHS + 1))
        assert trials[n].state == optuna.trial.TrialState.COMPLETE

    # Each trial is held against the best value the earlier ones reached (stopped and
    # pruned ones included); the first has none. (Trial 1's reasons name only the
    # threshold it fell short of.)
    best = [max(r["val_accuracy"] for r in records[i].epochs) for i in ids]
    assert incumbent_in(records[ids[0]].forecasts[0]["reason"]) is None
    for n in (2, 3):
        assert incumbent_in(records[ids[n]].forecasts[0]["reason"]) == \
            pytest.approx(max(best[:n]), abs=5e-5)


def test_the_incumbent_without_a_ledger_and_a_named_study(tmp_path: Path) -> None:
    # No ledger: the callback hands what its earlier trials reached to the monitor, whose
    # incumbent rule (no threshold here) stops trial 1, forecast at 0.
    forecaster = ScriptedForecaster(lambda rec, t: 0.0 if rec.run_id.endswith("-trial-1")
                                    else 0.95)
    cb = HFForecastCallback(min_epochs=2, model=forecaster, study="bert-sweep",
                            run_id="sweep")
    search(tmp_path, cb, n_trials=2, pruner=optuna.pruners.NopPruner())
    record = cb.record  # the last trial's
    assert record.run_id == "sweep-trial-1" and cb.monitor.study == "bert-sweep"
    assert [r["epoch"] for r in record.epochs] == [1, 2]
    incumbent = cb.monitor.incumbent
    assert incumbent is not None and 0.0 < incumbent <= 1.0
    assert cb.stopped == {"epoch": 2, "reason": f"forecast q0.95 0 < incumbent {incumbent:.4g}"}


def test_ray_backend_each_trial_a_run_held_against_the_ledger(tmp_path: Path) -> None:
    # Ray Tune runs each trial in a worker process with its own copy of the callback:
    # the ledger (a path every worker opens) is what carries the incumbent across.
    ray = pytest.importorskip("ray")
    tune = pytest.importorskip("ray.tune")
    from accelerate.state import GradientState

    # accelerate keeps (dead) weak references to the dataloaders of any earlier training
    # in this process in its shared GradientState, which the Trainer holds and Ray must
    # pickle: start from a clean one, as a fresh process would.
    GradientState._reset_state()
    ledger = str(tmp_path / "l.db")
    forecaster = ScriptedForecaster(lambda rec, t: 0.2 if rec.hparams["learning_rate"] > 5e-4
                                    else 0.95)
    cb = HFForecastCallback(threshold=0.9, min_epochs=2, model=forecaster, ledger=ledger,
                            flat_delta=None)  # the script decides, not the rung rule
    trainer = Trainer(model_init=tiny_bert, args=train_args(tmp_path, num_train_epochs=EPOCHS),
                      train_dataset=TinyDataset(64, 0), eval_dataset=TinyDataset(32, 1),
                      compute_metrics=accuracy, callbacks=[cb])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    try:
        trainer.hyperparameter_search(
            hp_space=lambda _: {"learning_rate": tune.grid_search([1e-3, 1e-4])},
            compute_objective=lambda m: m["eval_accuracy"], n_trials=1, direction="maximize",
            backend="ray", resources_per_trial={"cpu": 1}, max_concurrent_trials=1,
            storage_path=str(tmp_path / "ray"), name="hf-ray", verbose=0)
    finally:
        ray.shutdown()
    with Ledger(ledger) as led:
        runs = sorted(led.runs(study="hf-ray"), key=lambda r: r["run_id"])
        records = {r.run_id: r for r in led.records(study="hf-ray")}
    assert len(runs) == 2 and all(re.fullmatch(r"hf-ray-trial-\w+_0000[01]", r["run_id"])
                                  for r in runs)
    hopeless, good = runs  # trial ids end _00000, _00001: the grid's order
    assert records[hopeless["run_id"]].hparams["learning_rate"] == pytest.approx(1e-3)
    assert hopeless["status"] == "stopped" and hopeless["final_epoch"] == 2
    assert hopeless["stopped"]["reason"] == "forecast q0.95 0.2 < threshold 0.9"
    assert good["status"] == "completed" and good["final_epoch"] == EPOCHS
    first = max(r["val_accuracy"] for r in records[hopeless["run_id"]].epochs)
    assert incumbent_in(records[good["run_id"]].forecasts[0]["reason"]) == \
        pytest.approx(first, abs=5e-5)
