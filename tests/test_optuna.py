"""The Optuna adapter in real studies: trials pruned by forecast, recorded in the ledger."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.integrations.optuna import ForecastPruner  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402

EPOCHS = 30
optuna.logging.set_verbosity(optuna.logging.WARNING)


def accuracy(top: float, epoch: int) -> float:
    """A saturating learning curve towards ``top`` (epoch 0-based)."""
    return top - (top - 0.1) * (epoch + 1) ** -0.8


def objective(trial: optuna.Trial) -> float:
    top = trial.suggest_float("top", 0.2, 0.95)
    trial.suggest_float("learning_rate", 1e-4, 1.0, log=True)
    acc = 0.0
    for epoch in range(EPOCHS):
        acc = accuracy(top, epoch)
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return acc


def _study(pruner: ForecastPruner, tops: list[float], name: str = "s") -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name=name)
    for top in tops:
        study.enqueue_trial({"top": top, "learning_rate": 0.01})
    study.optimize(objective, n_trials=len(tops), callbacks=[pruner])
    return study


def test_hopeless_trials_are_pruned_at_min_epochs_and_recorded(tmp_path) -> None:
    ledger = tmp_path / "runs.db"
    pruner = ForecastPruner(EPOCHS, min_epochs=3, ledger=str(ledger), min_delta=None)
    study = _study(pruner, [0.9, 0.3, 0.3, 0.25])
    states = [t.state for t in study.trials]
    P = optuna.trial.TrialState
    assert states == [P.COMPLETE, P.PRUNED, P.PRUNED, P.PRUNED]
    assert [len(t.intermediate_values) for t in study.trials[1:]] == [3, 3, 3]
    rec = pruner.records[1]
    assert rec.hparams["learning_rate"] == 0.01 and rec.meta["max_epochs"] == EPOCHS
    assert rec.stopped["epoch"] == 3 and "incumbent" in rec.stopped["reason"]
    assert rec.forecasts[-1]["model"] == "lstm" and rec.forecasts[-1]["stop"] is True
    with Ledger(ledger) as led:
        runs = {r.run_id: r for r in led.records()}
    assert set(runs) == {f"s-trial-{i}" for i in range(4)}
    assert runs["s-trial-0"].stopped is None and runs["s-trial-0"].n_epochs == EPOCHS
    assert runs["s-trial-2"].stopped["epoch"] == 3
    assert len(runs["s-trial-2"].forecasts) == 3


def test_a_trial_pruned_on_its_plateau_still_sets_the_bar() -> None:
    # Regression: with the gain rule on (the default) the good trial is pruned on its
    # plateau; only completed trials used to count, so no later trial had a bar.
    pruner = ForecastPruner(EPOCHS, min_epochs=3)
    study = _study(pruner, [0.9, 0.3, 0.25], "plateau")
    first = pruner.records[0]
    assert first.stopped["reason"].startswith("gain:")
    assert [len(t.intermediate_values) for t in study.trials[1:]] == [3, 3]
    assert all("incumbent" in pruner.records[i].stopped["reason"] for i in (1, 2))


def test_without_a_completed_trial_only_the_threshold_prunes() -> None:
    pruner = ForecastPruner(EPOCHS, min_epochs=2, threshold=0.8, min_delta=None)
    study = _study(pruner, [0.3])
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert "threshold" in pruner.records[0].stopped["reason"]
    quiet = ForecastPruner(EPOCHS, min_epochs=2, min_delta=None)  # no bar at all
    assert _study(quiet, [0.3], "q").trials[0].state == optuna.trial.TrialState.COMPLETE


def test_dry_run_never_prunes_but_keeps_every_forecast() -> None:
    pruner = ForecastPruner(EPOCHS, min_epochs=3, dry_run=True)
    study = _study(pruner, [0.9, 0.3])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    forecasts = pruner.records[1].forecasts
    assert len(forecasts) == EPOCHS
    assert any("incumbent" in f["reason"] for f in forecasts)


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ConfigError):
        ForecastPruner(1)
    with pytest.raises(ConfigError):
        ForecastPruner(EPOCHS, confidence=1.5)
    with pytest.raises(ConfigError):
        ForecastPruner(EPOCHS, step_offset=-1)


def test_use_incumbent_false_with_a_ledger_never_prunes_against_the_study(tmp_path) -> None:
    # Regression (issue 12.4): the ledger's incumbent used to stand in for the pruner's.
    ledger = str(tmp_path / "runs.db")
    _study(ForecastPruner(EPOCHS, min_epochs=1, ledger=ledger, min_delta=None), [0.9], "shared")
    pruner = ForecastPruner(EPOCHS, min_epochs=1, ledger=ledger, use_incumbent=False,
                            min_delta=None)
    study = _study(pruner, [0.9, 0.3], "shared")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("incumbent" not in f["reason"] for rec in pruner.records.values()
               for f in rec.forecasts)


def test_shared_arguments_are_in_the_signature_and_unknown_ones_fail() -> None:
    import inspect

    params = inspect.signature(ForecastPruner).parameters
    assert {"threshold", "min_delta", "use_incumbent", "ledger", "dry_run"} <= set(params)
    assert "run_id" not in params and "min_delta:" in ForecastPruner.__doc__
    with pytest.raises(TypeError, match="run_id"):
        ForecastPruner(EPOCHS, run_id="x")
    pruner = ForecastPruner(EPOCHS, min_delta=0.01)
    _study(pruner, [0.5], "delta")
    assert pruner._monitors[("delta", 0)].policy.min_delta == 0.01
