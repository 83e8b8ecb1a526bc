"""The Ray Tune adapter in real Tune searches: trials stopped by forecast, recorded
in the ledger and in Tune's own results."""

from __future__ import annotations

import math
import os
import sys
import time

import pytest

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

from earlystop_predict.errors import ConfigError  # noqa: E402
from earlystop_predict.forecast.base import ScriptedForecaster  # noqa: E402
from earlystop_predict.integrations.ray import ForecastScheduler, config_hparams  # noqa: E402
from earlystop_predict.ledger import Ledger  # noqa: E402

EPOCHS = 20
# Trials run in Ray worker processes, which cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def accuracy(top: float, epoch: int) -> float:
    """A saturating learning curve towards ``top`` (epoch 1-based)."""
    return top - (top - 0.1) * epoch ** -0.8


def trainable(config: dict) -> None:
    for epoch in range(1, EPOCHS + 1):
        tune.report({"val_accuracy": accuracy(config["top"], epoch),
                     "val_loss": 2.0 - config["top"] * math.log1p(epoch) / 3})


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _search(sched: ForecastScheduler, tops: list[float], tmp_path, **tune_kw) -> tune.ResultGrid:
    tuner = tune.Tuner(
        trainable,
        param_space={"top": tune.grid_search(tops), "learning_rate": 0.01,
                     "model": {"width": 64}},
        tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=1, **tune_kw),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0,
                                  callbacks=[sched.callback]))
    return tuner.fit()


def test_a_trial_stopped_on_its_plateau_still_sets_the_bar(tmp_path) -> None:
    # Regression: with the gain rule on, the good trial stops on its plateau before the
    # target (these curves creep up to the end: the forecast alone judges,
    # gain_patience=0); it used to count for nothing, so the hopeless trials after it
    # had no incumbent to be stopped against and trained on to their plateaus.
    sched = ForecastScheduler(EPOCHS, min_epochs=3, ledger=str(tmp_path / "runs.db"),
                              study="s", gain_patience=0)
    grid = _search(sched, [0.9, 0.3, 0.25], tmp_path, metric="val_accuracy", mode="max")
    iters = dict((r.config["top"], r.metrics["training_iteration"]) for r in grid)
    assert iters[0.25] == iters[0.3] == 3
    good = next(r for r in sched.records.values() if r.hparams["top"] == 0.9)
    assert good.stopped["reason"].startswith("gain:") and iters[0.9] < EPOCHS
    assert sched.incumbent == pytest.approx(accuracy(0.9, iters[0.9]))


def test_hopeless_trials_are_stopped_at_min_epochs_and_recorded(tmp_path) -> None:
    ledger = tmp_path / "runs.db"
    sched = ForecastScheduler(EPOCHS, min_epochs=3, ledger=str(ledger), study="s",
                              min_delta=None)  # the incumbent rule alone
    grid = _search(sched, [0.9, 0.3, 0.25], tmp_path, metric="val_accuracy", mode="max")
    iters = sorted((r.config["top"], r.metrics["training_iteration"]) for r in grid)
    assert iters == [(0.25, 3), (0.3, 3), (0.9, EPOCHS)]
    recs = {r.hparams["top"]: r for r in sched.records.values()}
    assert recs[0.3].hparams["learning_rate"] == 0.01 and recs[0.3].hparams["width"] == 64
    assert recs[0.3].meta["max_epochs"] == EPOCHS
    assert recs[0.3].stopped["epoch"] == 3 and "incumbent" in recs[0.3].stopped["reason"]
    assert recs[0.3].forecasts[-1]["model"] == "lstm+lightgbm"
    assert "val_loss" in recs[0.9].epochs[0]  # the other curve columns are fed too
    assert sched.incumbent == pytest.approx(accuracy(0.9, EPOCHS))
    # Tune's own results carry the forecast and the decision.
    last = {r.config["top"]: r.metrics for r in grid}
    assert last[0.3]["esp/stop"] == 1.0 and last[0.9]["esp/stop"] == 0.0
    assert 0.0 < last[0.3]["esp/forecast_mean"] < 0.9
    assert last[0.9]["esp/forecast_mean"] == pytest.approx(accuracy(0.9, EPOCHS))  # observed
    frame = next(r for r in grid if r.config["top"] == 0.3).metrics_dataframe
    assert list(frame["esp/stop"]) == [0.0, 0.0, 1.0]
    with Ledger(ledger) as led:
        runs = {r.run_id: r for r in led.records()}
    assert len(runs) == 3
    by_epochs = sorted(r.n_epochs for r in runs.values())
    assert by_epochs == [3, 3, EPOCHS]
    assert sum(1 for r in runs.values() if r.stopped) == 2


def test_threshold_without_incumbent_and_dry_run(tmp_path) -> None:
    sched = ForecastScheduler(EPOCHS, metric="val_accuracy", mode="max", min_epochs=2,
                              threshold=0.8)
    grid = _search(sched, [0.3], tmp_path / "a")
    assert next(iter(grid)).metrics["training_iteration"] == 2
    assert "threshold" in next(iter(sched.records.values())).stopped["reason"]
    dry = ForecastScheduler(EPOCHS, metric="val_accuracy", mode="max", min_epochs=2,
                            threshold=0.8, dry_run=True)
    grid = _search(dry, [0.3], tmp_path / "b")
    assert next(iter(grid)).metrics["training_iteration"] == EPOCHS
    rec = next(iter(dry.records.values()))
    assert rec.stopped is None and len(rec.forecasts) == EPOCHS
    assert any("threshold" in f["reason"] for f in rec.forecasts)


def test_metric_and_mode_must_be_known(tmp_path) -> None:
    with pytest.raises(ConfigError, match="target_epoch"):
        ForecastScheduler(1)
    with pytest.raises(ConfigError, match="mode"):
        ForecastScheduler(EPOCHS, mode="up")
    with pytest.raises(ConfigError, match="confidence"):
        ForecastScheduler(EPOCHS, confidence=1.5)
    with pytest.raises(ConfigError, match="batch"):
        ForecastScheduler(EPOCHS, batch=-1.0)
    assert ForecastScheduler(EPOCHS, min_delta=0.01)._options["min_delta"] == 0.01
    sched = ForecastScheduler(EPOCHS)  # neither here nor in TuneConfig
    with pytest.raises(Exception, match="metric and mode"):
        _search(sched, [0.5], tmp_path)


def test_config_hparams_keeps_scalars_by_leaf_name() -> None:
    got = config_hparams({"lr": 0.1, "opt": {"name": "adam", "lr": 9.0},
                          "layers": [64, 32], "fn": len})
    assert got == {"lr": 0.1, "name": "adam"}


def test_use_incumbent_false_with_a_ledger_never_stops_against_the_study(tmp_path) -> None:
    # Regression (issue 12.4): the ledger's incumbent used to stand in for the scheduler's.
    ledger = str(tmp_path / "runs.db")
    first = ForecastScheduler(EPOCHS, min_epochs=1, ledger=ledger, study="shared",
                              min_delta=None)
    _search(first, [0.9], tmp_path / "a", metric="val_accuracy", mode="max")
    off = ForecastScheduler(EPOCHS, min_epochs=1, ledger=ledger, study="shared",
                            use_incumbent=False, min_delta=None)
    grid = _search(off, [0.3], tmp_path / "b", metric="val_accuracy", mode="max")
    assert next(iter(grid)).metrics["training_iteration"] == EPOCHS
    (rec,) = off.records.values()
    assert rec.stopped is None and all("incumbent" not in f["reason"] for f in rec.forecasts)


# ----------------------------------------------------------------- batched forecasts
class _Sized(ScriptedForecaster):
    """A scripted forecast (the trial's ``top``, pushed down by its last value) that
    notes how many runs each call forecast."""

    def __init__(self) -> None:
        super().__init__(lambda rec, m: min(rec.hparams["top"], rec.epochs[-1]["val_accuracy"] + 0.4))
        self.sizes: list[int] = []

    def forecast_many(self, records, target_epoch):
        self.sizes.append(len(records))
        return super().forecast_many(records, target_epoch)


def together(config: dict) -> None:
    """``trainable``, once two trials have started (or after 30 s): side by side, they
    report together (an actor's start can outlast a whole trial of this one)."""
    open(os.path.join(config["sync"], str(config["top"])), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(config["sync"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    trainable(config)


def _concurrent_search(sched, tops, path) -> tune.ResultGrid:
    (path / "sync").mkdir(parents=True)
    tuner = tune.Tuner(
        tune.with_resources(together, {"cpu": 0.25}),
        param_space={"top": tune.grid_search(tops), "sync": str(path / "sync")},
        tune_config=tune.TuneConfig(scheduler=sched, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(path), verbose=0, callbacks=[sched.callback]))
    return tuner.fit()


def test_batch_holds_running_trials_and_decides_as_one_at_a_time(tmp_path) -> None:
    tops = [0.9, 0.45, 0.6, 0.3, 0.85, 0.5, 0.35, 0.95]
    got = {}
    for batch in (False, True):
        model = _Sized()
        sched = ForecastScheduler(EPOCHS, min_epochs=3, threshold=0.8, use_incumbent=False,
                                  model=model, batch=5.0 * batch, study="b",
                                  ledger=str(tmp_path / f"runs{batch}.db"))
        grid = _concurrent_search(sched, tops, tmp_path / f"tune{batch}")
        iters = {r.config["top"]: r.metrics["training_iteration"] for r in grid}
        recs = {r.hparams["top"]: (r.n_epochs, r.stopped, r.forecasts)
                for r in sched.records.values()}
        with Ledger(tmp_path / f"runs{batch}.db") as led:
            rows = sorted((r.hparams["top"], r.n_epochs, len(r.forecasts), bool(r.stopped))
                          for r in led.records())
        got[batch] = iters, recs, rows, model.sizes
    (iters, recs, rows, one), (b_iters, b_recs, b_rows, sizes) = got[False], got[True]
    assert set(one) == {1} and max(sizes) > 1  # one run a call, against many a call
    assert sum(sizes) == sum(one)  # every epoch forecast once either way
    assert b_recs == recs and b_rows == rows and b_iters == iters
    assert {t for t, n in iters.items() if n < EPOCHS} == {0.45, 0.6, 0.3, 0.5, 0.35}


def test_batched_decisions_with_the_lstm_equal_one_at_a_time() -> None:
    from earlystop_predict.forecast import load_model
    from earlystop_predict.integrations._trials import SearchSettings, TrialBook

    settings = SearchSettings(ForecastScheduler, EPOCHS, {"min_epochs": 3, "model": load_model()})

    def book() -> TrialBook:
        return TrialBook(lambda key, hp: settings.monitor("val_accuracy", "max", study="l",
                                                          run_id=key, hparams=hp))

    one, many = book(), book()
    tops = {f"t{i}": 0.3 + 0.02 * i for i in range(30)}
    decided: dict[str, list] = {"one": [], "many": []}
    for wave in (list(tops)[-4:], list(tops)[:-4]):  # the best four first: a bar to beat
        for epoch in range(1, EPOCHS + 1):
            live = [k for k in wave if not one.monitors.get(k) or not one.monitors[k].stopped]
            for key in live:
                metrics = {"val_accuracy": accuracy(tops[key], epoch)}
                decided["one"].append(one.update(key, {"top": tops[key]}, epoch, metrics))
                many.hold(key, {"top": tops[key]}, epoch, metrics, token=key)
            decided["many"] += [d for _, d in many.decide_held()]
            for key in live:
                if one.monitors[key].stopped or epoch == EPOCHS:
                    one.end(key, None, completed=True)
                    many.end(key, None, completed=True)
    assert len(decided["one"]) == len(decided["many"]) > 30
    for a, b in zip(decided["one"], decided["many"], strict=True):
        assert (a.epoch, a.stop, a.poor) == (b.epoch, b.stop, b.poor)
        if a.forecast is not None:
            assert b.forecast.mean == pytest.approx(a.forecast.mean, abs=1e-6)
            assert b.forecast.model == a.forecast.model == "lstm+lightgbm"
    assert sum(d.stop for d in decided["one"]) > 10 and one.finals == pytest.approx(many.finals)


# ----------------------------------------------------------------- Tuner.restore
def flaky(config: dict) -> None:
    """``trainable``, but a trial given a ``fail_once`` file fails at epoch 2 the first time."""
    for epoch in range(1, EPOCHS + 1):
        if epoch == 2 and config.get("fail_once") and not os.path.exists(config["fail_once"]):
            open(config["fail_once"], "w").close()
            raise RuntimeError("interrupted")
        tune.report({"val_accuracy": accuracy(config["top"], epoch)})


def test_scheduler_state_survives_tuner_restore(tmp_path) -> None:
    ledger = tmp_path / "runs.db"
    sched = ForecastScheduler(EPOCHS, min_epochs=3, ledger=str(ledger), study="r",
                              min_delta=None)  # the incumbent rule alone
    marker = str(tmp_path / "failed-once")
    space = {"top": tune.grid_search([0.9, 0.3]),
             "fail_once": tune.sample_from(lambda spec: marker if spec.config.top < 0.5 else "")}
    tuner = tune.Tuner(flaky, param_space=space,
                       tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=1,
                                                   metric="val_accuracy", mode="max"),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="x",
                                                 verbose=0, callbacks=[sched.callback]))
    assert tuner.fit().errors  # the poor trial was interrupted at epoch 2, before min_epochs
    restored = tune.Tuner.restore(str(tmp_path / "tune" / "x"), flaky, resume_errored=True)
    grid = restored.fit()
    assert not grid.errors
    again = restored._local_tuner._tune_config.scheduler  # the one Tune restored and ran
    assert again is not sched
    # It knew the first trial's record and bar: the poor trial, replayed from epoch 1,
    # was stopped by that incumbent at min_epochs (a fresh scheduler has none).
    assert again.incumbent == pytest.approx(accuracy(0.9, EPOCHS))
    recs = {r.hparams["top"]: r for r in again.records.values()}
    assert len(recs[0.9].forecasts) == EPOCHS and recs[0.9].stopped is None
    assert recs[0.3].stopped["epoch"] == 3 and "incumbent" in recs[0.3].stopped["reason"]
    assert [int(r["epoch"]) for r in recs[0.3].epochs] == [1, 2, 3]
    with Ledger(ledger) as led:
        runs = {r.hparams["top"]: r for r in led.records()}
    assert len(runs) == 2
    assert [int(r["epoch"]) for r in runs[0.9].epochs] == list(range(1, EPOCHS + 1))
    assert [int(r["epoch"]) for r in runs[0.3].epochs] == [1, 2, 3]  # no duplicate, none lost
    assert [int(f["at_epoch"]) for f in runs[0.3].forecasts] == [1, 2, 3]
    assert runs[0.3].stopped["epoch"] == 3


def test_keep_top_without_a_ledger_judges_against_the_ended_trials(tmp_path) -> None:
    # Regression: keep_top read the study's curves from the ledger only; with the
    # scheduler alone it was silently off. As in test_optuna: the third trial is doomed
    # by the forecast at epoch 3 but in the top half of the ended trials there: kept;
    # at epoch 4 only the first trial reached that far, above it: stopped.
    def last_value(rec, target):
        return float(rec.series(rec.metric)[-1])

    tops = [0.9, 0.3, 0.85]
    for keep, stop_epoch in ((None, 3), (0.5, 4)):
        sched = ForecastScheduler(EPOCHS, min_epochs=3, min_delta=None, keep_top=keep,
                                  model=ScriptedForecaster(last_value))
        grid = _search(sched, tops, tmp_path / str(keep), metric="val_accuracy",
                       mode="max")
        iters = {r.config["top"]: r.metrics["training_iteration"] for r in grid}
        assert iters == {0.9: EPOCHS, 0.3: 3, 0.85: stop_epoch}
        third = next(r for r in sched.records.values() if r.hparams["top"] == 0.85)
        assert third.stopped["epoch"] == stop_epoch
        assert ("kept: best" in third.forecasts[2]["reason"]) is (keep is not None)
