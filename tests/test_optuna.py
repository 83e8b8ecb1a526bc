"""The Optuna adapter in real studies: trials pruned by forecast, recorded in the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT

optuna = pytest.importorskip("optuna")

from earlystop_predict.cli import main  # noqa: E402
from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.integrations.optuna import ForecastPruner  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402
from earlystop_predict.records.record import read_records  # noqa: E402

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
    assert rec.forecasts[-1]["model"] == "lstm+lightgbm" and rec.forecasts[-1]["stop"] is True
    with Ledger(ledger) as led:
        runs = {r.run_id: r for r in led.records()}
    assert set(runs) == {f"s-trial-{i}" for i in range(4)}
    assert runs["s-trial-0"].stopped is None and runs["s-trial-0"].n_epochs == EPOCHS
    assert runs["s-trial-2"].stopped["epoch"] == 3
    assert len(runs["s-trial-2"].forecasts) == 3


def test_a_trial_pruned_on_its_plateau_still_sets_the_bar() -> None:
    # Regression: with the gain rule on the good trial is pruned on its plateau (these
    # curves creep up to the end: the forecast alone judges, gain_patience=0); only
    # completed trials used to count, so no later trial had a bar.
    pruner = ForecastPruner(EPOCHS, min_epochs=3, gain_patience=0)
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
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):  # not at a trial
        ForecastPruner(EPOCHS, ledger="mysql://me@db/esp")


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


# ------------------------------------------------------------ many workers, one storage
def test_the_bar_comes_from_the_storage_not_from_what_this_process_saw(tmp_path) -> None:
    # Two "machines": two study objects and two pruners on one storage; the second pruner
    # never saw the first trial, yet prunes against what it reached.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = ForecastPruner(EPOCHS, min_epochs=3, min_delta=None)
    a = optuna.create_study(study_name="s", storage=url, direction="maximize", pruner=first)
    a.enqueue_trial({"top": 0.9, "learning_rate": 0.01})
    a.optimize(objective, n_trials=1, callbacks=[first])
    second = ForecastPruner(EPOCHS, min_epochs=3, min_delta=None)
    b = optuna.load_study(study_name="s", storage=url, pruner=second)
    b.enqueue_trial({"top": 0.3, "learning_rate": 0.01})
    b.optimize(objective, n_trials=1, callbacks=[second])
    assert [t.state for t in b.trials] == [optuna.trial.TrialState.COMPLETE,
                                          optuna.trial.TrialState.PRUNED]
    assert list(second.records) == [1]  # its own trial only
    assert f"incumbent {a.trials[0].value:.4g}" in second.records[1].stopped["reason"]


SHARED_EPOCHS = 12
_WORKER = textwrap.dedent("""
    import json, sys, time
    import optuna
    from earlystop_predict.integrations.optuna import ForecastPruner
    storage_url, ledger, worker, tops = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        json.loads(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from earlystop_predict.forecast.base import ScriptedForecaster

    def oracle(rec, target):  # the curve's own top, read back from its last value
        e = rec.last_epoch
        v = float(rec.series(rec.metric)[-1])
        top = 1.0 if e < 2 else (v - 0.1 * e ** -0.8) / (1 - e ** -0.8)
        return top, {0.1: top - 0.02, 0.5: top, 0.9: top + 0.02}

    kwargs = {"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=kwargs)
    pruner = ForecastPruner(%(epochs)d, min_epochs=3, min_delta=None, ledger=ledger,
                            model=ScriptedForecaster(oracle))
    study = optuna.load_study(study_name="shared", storage=storage, pruner=pruner)
    deadline = time.monotonic() + 60
    while worker > 0 and not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if time.monotonic() > deadline:  # worker 0's first trial sets the bar
            sys.exit("no completed trial after 60 s")
        time.sleep(0.05)
    queue = list(tops)

    def objective(trial):
        top = queue.pop(0)
        trial.set_user_attr("worker", worker)
        trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        for epoch in range(%(epochs)d):
            acc = top - (top - 0.1) * (epoch + 1) ** -0.8
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    study.optimize(objective, n_trials=len(tops), callbacks=[pruner])
""") % {"epochs": SHARED_EPOCHS}
PLAN = {0: [0.9, 0.3], 1: [0.3, 0.28], 2: [0.25, 0.35]}  # worker -> the tops of its trials


def _storage_and_ledger(backend: str, tmp_path, request) -> tuple[str, str]:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'runs.db'}"
    url = request.getfixturevalue("postgres_url")
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return url, url  # one database: Optuna's tables beside the ledger's


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_three_worker_processes_share_one_storage_one_ledger_and_one_bar(
        backend, tmp_path, request) -> None:
    storage, ledger = _storage_and_ledger(backend, tmp_path, request)
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, storage, ledger, str(w),
                               json.dumps(tops)], cwd=str(REPO_ROOT), env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w, tops in PLAN.items()]
    try:
        for p in procs:
            _, err = p.communicate(timeout=150)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    P = optuna.trial.TrialState
    assert len(trials) == 6 and {t.state for t in trials} <= {P.COMPLETE, P.PRUNED}
    out = tmp_path / "export.jsonl"
    assert main(["ledger", "export", "--ledger", ledger, "--output", str(out)]) == 0
    runs = {r.run_id: r for r in read_records(out)}
    assert set(runs) == {f"shared-trial-{t.number}" for t in trials}  # no trial lost
    for t in trials:
        rec = runs[f"shared-trial-{t.number}"]
        assert rec.n_epochs == len(t.intermediate_values) == len(rec.forecasts)
        if t.state == P.PRUNED:
            assert rec.stopped["epoch"] == rec.n_epochs and rec.extra["status"] == "stopped"
            assert rec.forecasts[-1]["stop"] is True
        else:
            assert rec.stopped is None and rec.extra["status"] == "completed"
    # Workers 1 and 2 pruned against the bar worker 0's first trial set, in another process.
    [best] = [t for t in trials if t.user_attrs["worker"] == 0 and t.state == P.COMPLETE]
    others = [t for t in trials if t.user_attrs["worker"] > 0]
    assert others and all(t.state == P.PRUNED for t in others)
    for t in others:
        reason = runs[f"shared-trial-{t.number}"].stopped["reason"]
        assert f"incumbent {best.value:.4g}" in reason, reason
        assert t.datetime_start > best.datetime_complete


def _last_value(rec, target):  # a forecaster that says: it stays where it is
    return float(rec.series(rec.metric)[-1])


def test_keep_top_without_a_ledger_judges_against_the_finished_trials() -> None:
    # Regression: keep_top read the study's curves from the ledger only; with the
    # pruner alone it was silently off. The third trial (top 0.85) is doomed by the
    # forecast at epoch 3 (0.54 < the incumbent 0.85), but its best is above the median
    # of the two finished trials' bests there (0.57 and 0.22): kept at epoch 3; at
    # epoch 4 the only trial that reached it is the first, above it: pruned.
    from earlystop_predict.forecast.base import ScriptedForecaster

    tops = [0.9, 0.3, 0.85]
    plain = ForecastPruner(EPOCHS, min_epochs=3, min_delta=None, keep_top=None,
                           model=ScriptedForecaster(_last_value))
    _study(plain, tops, "plain")
    assert plain.records[2].stopped["epoch"] == 3
    kept = ForecastPruner(EPOCHS, min_epochs=3, min_delta=None, keep_top=0.5,
                          model=ScriptedForecaster(_last_value))
    study = _study(kept, tops, "kept")
    assert [len(t.intermediate_values) for t in study.trials] == [EPOCHS, 3, 4]
    third = kept.records[2]
    assert "kept: best" in third.forecasts[2]["reason"] and not third.forecasts[2]["stop"]
    assert third.stopped["epoch"] == 4 and "incumbent" in third.stopped["reason"]


def test_a_flat_trial_is_judged_at_the_rung_against_the_finished_trials() -> None:
    """Without a ledger the pruner hands its finished trials' curves to the rung rule: a
    trial that sits at its start is pruned at rung 3 when below the top quarter there,
    whatever its (here optimistic) forecast says; with ``flat_delta=None`` it is not."""
    from earlystop_predict.forecast.base import ScriptedForecaster

    curves = {0: [min(0.5 + 0.1 * e, 0.9) for e in range(EPOCHS)], 1: [0.5] * EPOCHS}

    def flat_objective(trial: optuna.Trial) -> float:
        curve = curves[trial.number]
        for epoch, acc in enumerate(curve):
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve[-1]

    got = {}
    for flat_delta in (0.05, None):
        # keep_top=None: the curves are handed in for the rung rule alone.
        pruner = ForecastPruner(EPOCHS, min_epochs=3, min_delta=None, flat_delta=flat_delta,
                                keep_top=None, model=ScriptedForecaster(lambda rec, t: 0.95))
        study = optuna.create_study(direction="maximize", pruner=pruner)
        study.optimize(flat_objective, n_trials=2, callbacks=[pruner])
        got[flat_delta] = [t.state for t in study.trials], pruner.records[1]
    P = optuna.trial.TrialState
    states, rec = got[0.05]
    assert states == [P.COMPLETE, P.PRUNED] and rec.stopped["epoch"] == 3
    assert rec.stopped["reason"] == ("flat: best 0.5 within flat_delta 0.05 of its first "
                                     "value 0.5; rung 3: 0.5 below the study's top quarter at "
                                     "this epoch (cutoff 0.7)")
    states, rec = got[None]
    assert states == [P.COMPLETE, P.COMPLETE] and rec.stopped is None
