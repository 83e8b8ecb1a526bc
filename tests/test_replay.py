"""Replay: single runs (gain, patience, default), censored runs, bounds, inputs."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest
from conftest import by_epoch, constant

from earlystop_predict.cli import main
from earlystop_predict.errors import ConfigError
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.ledger import Ledger
from earlystop_predict.policy.monitor import ForecastMonitor
from earlystop_predict.policy.stop import DEFAULT_GAIN_PATIENCE, DEFAULT_MIN_DELTA
from earlystop_predict.records.record import RunRecord, write_records
from earlystop_predict.tools import replay as replay_mod
from earlystop_predict.tools.replay import _NO_STOP, parse_policy, patience_stop, replay


def _run(run_id: str, values: list[float], task: str = "t", **kw) -> RunRecord:
    return RunRecord(run_id, task=task, meta={"max_epochs": len(values)},
                     epochs=[{"epoch": e, "val_accuracy": v} for e, v in enumerate(values, 1)],
                     **kw)


# A plateau, a dip and a late jump: patience gets each wrong in its own way.
PLATEAU = [0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
LATE = [0.3, 0.3, 0.3, 0.3, 0.3, 0.6, 0.7, 0.8, 0.85, 0.9]
NOISY = [0.5, 0.6, 0.58, 0.62, 0.61, 0.6, 0.63, 0.62, 0.61, 0.64]


# --------------------------------------------------------------------- patience
def test_patience_stop_counts_as_keras_does():
    v = np.array(PLATEAU)
    assert patience_stop(v, 10, 1) == 4  # epoch 4 does not beat 0.8 (strictly)
    assert patience_stop(v, 10, 0) == 4  # Keras: patience 0 stops like patience 1
    assert patience_stop(v, 10, 3) == 6
    assert patience_stop(v, 10, 7) == _NO_STOP  # would stop at 10: the run's end
    assert patience_stop(np.array(LATE), 10, 3) == 4
    loss = np.array([1.0, 0.8, 0.9, 0.85, 0.7, 0.9, 0.95])
    assert patience_stop(loss, 7, 2, mode="min") == 4
    assert patience_stop(np.array([0.5, np.nan, np.nan, 0.9]), 4, 2) == 3  # NaN never improves


def test_patience_stop_matches_real_keras_early_stopping():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    for values in (PLATEAU, LATE, NOISY):
        for patience in (0, 1, 2, 3, 5):
            class Script(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None, values=values):
                    logs["val_accuracy"] = values[epoch]

            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            es = keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=patience,
                                               restore_best_weights=True)
            hist = model.fit(x, y, epochs=len(values), verbose=0, callbacks=[Script(), es])
            trained = len(hist.history["loss"])
            got = patience_stop(np.array(values), len(values), patience)
            assert trained == (len(values) if got == _NO_STOP else got), (values, patience)
            if got != _NO_STOP:
                assert es.best == max(values[:got])  # what restore_best_weights keeps


# ------------------------------------------------------------------- single run
def test_single_run_by_hand():
    runs = [_run("plateau", PLATEAU), _run("late", LATE)]
    # The forecast: the run's last value + 0.05 while it is below 0.8, else the last value.
    fc = ScriptedForecaster(lambda rec, m: rec.epochs[-1]["val_accuracy"]
                            + (0.05 if rec.epochs[-1]["val_accuracy"] < 0.8 else 0.0))
    res = replay(runs, ["gain-0.01-0", "gain-0.01", "patience-3", "none"], fc,
                 single_run=True, min_epochs=3, details=True)
    d = res.details["t"]
    # gain, the forecast alone (gain_patience 0): plateau at epoch 3 (0.8 < 0.8 + 0.01);
    # late once it reaches 0.8 at epoch 8 (forecast 0.8 < 0.81), losing its last 0.1.
    assert [r["stop"] for r in d["gain-0.01-0"]] == [3, 8]
    assert [r["regret"] for r in d["gain-0.01-0"]] == pytest.approx([0.0, 10.0])
    # gain with the default gain_patience 3: the plateau once its best (epoch 3) has
    # stood 3 epochs; the late run improves every epoch from 6 on: it trains to its end.
    assert DEFAULT_GAIN_PATIENCE == 3
    assert [r["stop"] for r in d["gain-0.01"]] == [6, None]
    assert [r["regret"] for r in d["gain-0.01"]] == pytest.approx([0.0, 0.0])
    # patience 3: plateau at 6 (regret 0), late at 4: best 0.3 against 0.9: 60 points.
    assert [r["stop"] for r in d["patience-3"]] == [6, 4]
    assert [r["regret"] for r in d["patience-3"]] == pytest.approx([0.0, 60.0])
    s = res.summary["gain-0.01-0"]
    assert s["epochs_saved_pct"] == pytest.approx(100 * (1 - 11 / 20))
    assert s["mean_regret"] == pytest.approx(5) and s["max_regret"] == pytest.approx(10)
    assert s["p90_regret"] == pytest.approx(9) and s["runs"] == 2
    assert res.summary["none"]["epochs_saved_pct"] == 0
    assert res.info["mode"] == "single-run" and res.info["orders"] == 0


def test_default_replays_the_callbacks_defaults():
    runs = [_run("plateau", PLATEAU), _run("late", LATE), _run("noisy", NOISY)]
    fc = constant(0.8)
    res = replay(runs, ["default", f"gain-{DEFAULT_MIN_DELTA}"], fc, single_run=True,
                 details=True)
    assert res.details["t"]["default"] == res.details["t"][f"gain-{DEFAULT_MIN_DELTA}"]
    # 0.8 < best 0.8 + min_delta from epoch 3, and the best has stood 3 epochs at 6.
    assert res.details["t"]["default"][0]["stop"] == 3 + DEFAULT_GAIN_PATIENCE
    # The StopPolicy replayed is the one a monitor builds with its defaults.
    tasks, _ = replay_mod.build_tasks(runs)
    cfg = replay_mod._config(["default"], fc, orders=1, runs_per_order=None, seed=0,
                             confidence=0.95, min_epochs=3, patience=1, threshold=None,
                             n_startup_trials=5, batch_size=8, target=None,
                             min_delta=DEFAULT_MIN_DELTA, single_run=False)
    assert replay_mod._stop_policy(parse_policy("default"), tasks[0], cfg) == \
        ForecastMonitor(model=fc).policy
    # In a study, default is the incumbent rule with the gain rule beside it.
    search = replay(runs, ["default", "gain", "incumbent"], constant(0.8, width=0.02),
                    orders=3)
    assert search.summary["default"]["stopped_pct"] >= \
        search.summary["incumbent"]["stopped_pct"] > 0


def test_default_single_run_stops_where_the_monitor_does():
    # The monitor's since_best (its best_epoch) and replay's agree epoch for epoch, ties
    # included (a tie does not improve the best).
    for values in (PLATEAU, NOISY, LATE, [0.5, 0.6, 0.6, 0.6, 0.61, 0.61, 0.61, 0.61]):
        fc = ScriptedForecaster(lambda rec, m: float(np.nanmax(rec.series("val_accuracy"))))
        res = replay([_run("r", values)], ["default"], fc, single_run=True, details=True)
        mon = ForecastMonitor(model=fc, target_epoch=len(values))
        mon.begin()
        stop = None
        for e, v in enumerate(values, 1):
            if mon.update(e, {"val_accuracy": v}).stop:
                stop = e
                break
        assert res.details["t"]["default"][0]["stop"] == stop, values


def test_gain_patience_in_policy_names():
    assert parse_policy("gain-0.03-5").gain_patience == 5
    assert parse_policy("gain-0.03-5").param == 0.03
    assert parse_policy("gain-1e-05").param == 1e-05  # one number, not a patience
    assert parse_policy("gain-1e-05-2").gain_patience == 2
    assert parse_policy("gain-0.03").gain_patience is None  # StopPolicy's default
    for bad in ("gain-0.03--1", "gain-0.03-x", "gain-x-3", "patience-3-1"):
        with pytest.raises(ConfigError, match="policy"):
            parse_policy(bad)


def test_task_since_best_counts_strict_improvements():
    runs = [_run("a", [0.5, 0.5, 0.6, float("nan"), 0.55, 0.7]),
            _run("b", [float("nan"), 0.4, 0.4, 0.3, 0.3, 0.3])]
    tasks, _ = replay_mod.build_tasks(runs)
    assert tasks[0].since_best.tolist() == [[0, 1, 0, 1, 2, 0], [-1, 0, 1, 2, 3, 4]]


def test_single_run_refuses_study_policies_and_bad_names():
    with pytest.raises(ConfigError, match="single"):
        replay([_run("a", PLATEAU)], ["median"], single_run=True)
    for bad in ("patience-x", "gain--1", "patience-", "gain-nan", "oracle"):
        with pytest.raises(ConfigError, match="policy"):
            parse_policy(bad)
    assert parse_policy("patience-10").param == 10
    assert parse_policy("gain-0.005").param == 0.005


def test_single_run_cli_json(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    write_records(path, [_run("plateau", PLATEAU), _run("late", LATE)])
    args = ["replay", str(path), "--single-run", "--policy", "patience-3", "--policy",
            "patience-5", "--policy", "patience-10", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["summary"]) == ["patience-3", "patience-5", "patience-10"]
    for row in out["summary"].values():
        assert {"epochs_saved_pct", "mean_regret", "max_regret", "p90_regret"} <= set(row)
    assert out["summary"]["patience-10"]["epochs_saved_pct"] == 0
    with pytest.raises(SystemExit) as exc:  # argparse: usage and exit 2
        main(["replay", str(path), "--single-run", "--policy", "patience-x"])
    assert exc.value.code == 2 and "invalid policy" in capsys.readouterr().err


# ------------------------------------------------------------------------ inputs
def test_replay_reads_a_gzip_corpus(tmp_path, capsys):
    path = tmp_path / "runs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in (_run("a", PLATEAU), _run("b", LATE)):
            fh.write(json.dumps(rec.to_dict()) + "\n")
    assert main(["replay", str(path), "--policy", "patience-3", "--single-run"]) == 0
    assert "2 runs in 1 tasks" in capsys.readouterr().out


def test_huge_max_epochs_fails_fast(tmp_path, capsys):
    huge = RunRecord("huge", task="t", meta={"max_epochs": 10 ** 13},
                     epochs=[{"epoch": e, "val_accuracy": 0.5} for e in range(1, 4)])
    t0 = time.perf_counter()
    res = replay([huge, _run("a", PLATEAU)], ["none"], orders=1)
    assert time.perf_counter() - t0 < 30  # not a timing claim: it used to raise MemoryError
    assert res.info["skipped"] == ["huge: target epoch 100001 > 100000"]
    path = tmp_path / "runs.jsonl"
    write_records(path, [huge])
    assert main(["replay", str(path), "--policy", "none"]) == 2
    assert "max_epochs" in capsys.readouterr().err   # refused where the record is read
    write_records(path, [_run("a", PLATEAU)])
    assert main(["replay", str(path), "--policy", "none", "--target", "1000000000"]) == 2
    assert "target" in capsys.readouterr().err


def test_replay_refuses_a_task_too_large(monkeypatch):
    monkeypatch.setattr(replay_mod, "MAX_CELLS", 1000)
    with pytest.raises(ConfigError, match="replay cells"):
        replay([_run(f"r{i}", PLATEAU) for i in range(20)], ["none"], orders=1)


def test_percent_threshold_is_refused(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    write_records(path, [_run("a", PLATEAU), _run("b", LATE)])
    assert main(["replay", str(path), "--policy", "threshold", "--threshold", "85",
                 "--model", "lightgbm"]) == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "0.85, not 85" in err
    with pytest.raises(ConfigError, match="threshold"):
        replay([_run("a", PLATEAU)], ["threshold"], constant(0.5), threshold=85.0)


# ---------------------------------------------------------------- censored runs
def _ledger(path, metric_key: str = "val_accuracy") -> None:
    """A study of three runs; the second is stopped at epoch 3 by a threshold."""
    runs = [("best", PLATEAU, None), ("cut", [0.2, 0.25, 0.3] + [0.9] * 7, 0.95),
            ("third", NOISY, None)]
    for run_id, values, threshold in runs:
        mon = ForecastMonitor(metric_key, target_epoch=10, threshold=threshold, min_epochs=3,
                              dry_run=threshold is None,
                              model=by_epoch({}, default=0.5), ledger=str(path),
                              run_id=run_id, study="s", task="t")
        for e, v in enumerate(values, 1):
            if mon.update(e, {metric_key: v}).stop:
                break
        mon.end()
        mon.ledger.close()


def test_ledger_replay_keeps_stopped_runs_as_censored(tmp_path, capsys):
    db = tmp_path / "runs.db"
    _ledger(db)
    recs = Ledger(db, create=False).records()
    assert [r.stopped is not None for r in recs] == [False, True, False]
    res = replay(recs, ["none", "patience-1"], orders=[[1, 0, 2]], details=True)
    assert res.info["skipped"] == [] and res.info["censored"] == ["cut"]
    assert res.info["runs"] == 3
    # The censored run trained 3 epochs: that is its whole (no 0.9 is assumed after).
    assert res.summary["none"]["epochs_saved_pct"] == 0
    assert res.details["t"]["none"][0]["total"] == 10 + 3 + 10
    assert main(["replay", str(db), "--policy", "none", "--orders", "2"]) == 0
    assert "1 stopped runs replayed as censored" in capsys.readouterr().out


def test_censored_run_counts_in_the_incumbent():
    done = _run("done", [0.1, 0.2, 0.3, 0.4, 0.45])
    cut = RunRecord("cut", task="t", meta={"max_epochs": 5}, stopped={"epoch": 3, "reason": "x"},
                    epochs=[{"epoch": e, "val_accuracy": v} for e, v in
                            enumerate([0.5, 0.7, 0.8], 1)])
    # Forecast 0.6 for every run: below the censored run's 0.8, above done's 0.45.
    fc = constant(0.6)
    res = replay([cut, done], ["incumbent"], fc, orders=[[0, 1]], details=True, min_epochs=2)
    # cut first: it yields 0.8, the incumbent; done is forecast 0.6 < 0.8: stopped at 2.
    assert res.details["t"]["incumbent"][0]["stops"] == {1: 2}
    assert res.summary["incumbent"]["mean_regret"] == 0


def test_ledger_metric_alias_val_acc_is_followed(tmp_path):
    recs = [RunRecord(f"r{i}", task="t", metric="val_accuracy", meta={"max_epochs": 10},
                      epochs=[{"epoch": e, "val_acc": v} for e, v in enumerate(vals, 1)])
            for i, vals in enumerate((PLATEAU, LATE))]
    res = replay(recs, ["none", "patience-3"], single_run=True)
    assert res.info["skipped"] == [] and res.info["runs"] == 2
    assert res.summary["patience-3"]["mean_regret"] == pytest.approx(30.0)


# ----------------------------------------------------------------------- keep_top
def test_keep_top_keeps_a_run_that_is_where_the_study_best_was():
    # Two slow starters: the first trains to its end and becomes the incumbent (0.9);
    # the forecast (last value + 0.05) dooms the second at epoch 3 by the incumbent rule.
    runs = [_run("first", LATE), _run("second", LATE), _run("flat", [0.2] * 10)]
    fc = ScriptedForecaster(lambda rec, m: rec.epochs[-1]["val_accuracy"] + 0.05)
    res = replay(runs, ["incumbent", "default", "keep-top-0.25", "keep-top-1"], fc,
                 orders=[[0, 1, 2]], details=True)
    d = res.details["t"]
    assert d["incumbent"][0]["stops"] == {1: 3, 2: 3}
    # keep_top: the second is never below the first at the same epoch: it trains on and
    # yields 0.9 too; the flat run is below the study's top quarter: stopped as before.
    # The default keeps the top 15 %: the same here.
    assert d["keep-top-0.25"][0]["stops"] == d["default"][0]["stops"] == {2: 3}
    # keep_top 1: the flat run is below every earlier run at epoch 3: stopped too.
    assert d["keep-top-1"][0]["stops"] == {2: 3}
    assert res.summary["keep-top-0.25"]["epochs_saved_pct"] < \
        res.summary["incumbent"]["epochs_saved_pct"]
    pol = replay_mod._stop_policy(parse_policy("keep-top-0.25"),
                                  replay_mod.build_tasks(runs)[0][0],
                                  replay_mod._config(["default"], fc, orders=1,
                                                     runs_per_order=None, seed=0,
                                                     confidence=0.95, min_epochs=3,
                                                     patience=1, threshold=None,
                                                     n_startup_trials=5, batch_size=8,
                                                     target=None, min_delta=0.03,
                                                     single_run=False))
    assert pol == ForecastMonitor(model=fc, keep_top=0.25).policy


def test_keep_top_cutoffs_match_top_cutoff():
    from earlystop_predict.policy.stop import top_cutoff

    x = np.array([[0.5, np.nan, 0.3], [0.7, np.nan, np.nan], [0.6, 0.2, 0.9], [0.1, 0.4, 0.8]])
    for q in (0.75, 0.85):
        got = replay_mod._nan_quantile(x, q)
        for col in range(3):
            assert got[col] == pytest.approx(top_cutoff(x[:, col].tolist(), 1 - q))
    assert np.isnan(replay_mod._nan_quantile(np.full((2, 1), np.nan), 0.75)[0])
    with pytest.raises(ConfigError, match="single"):
        replay([_run("a", PLATEAU)], ["keep-top-0.25"], fc_dummy(), single_run=True)
    for bad in ("keep-top--0.1", "keep-top-2", "keep-top-x"):
        with pytest.raises(ConfigError, match="policy"):
            parse_policy(bad)


def test_keep_top_0_replays_the_default_without_keep_top():
    # The runs of test_keep_top_keeps_a_run_that_is_where_the_study_best_was: without
    # keep_top the second slow starter is still flat at epoch 3, level with the first
    # there, so the rung rule keeps it; once it leaves its start (epoch 6) its forecast
    # is short of the incumbent. The flat run is below the first at rung 3.
    runs = [_run("first", LATE), _run("second", LATE), _run("flat", [0.2] * 10)]
    fc = ScriptedForecaster(lambda rec, m: rec.epochs[-1]["val_accuracy"] + 0.05)
    res = replay(runs, ["default", "keep-top-0", "previous"], fc, orders=[[0, 1, 2]],
                 details=True)
    assert res.details["t"]["keep-top-0"][0]["stops"] == {1: 6, 2: 3}
    assert res.details["t"]["default"][0]["stops"] == {2: 3}
    assert res.details["t"]["previous"][0]["stops"] == {2: 3}


def fc_dummy() -> ScriptedForecaster:
    return ScriptedForecaster(lambda rec, m: 0.5)


# -------------------------------------------------------------------- hyperband
def _noisy(n: int, width: int = 60, seed: int = 0) -> list[RunRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        top, rate = rng.uniform(0.5, 0.95), rng.uniform(0.02, 0.3)
        vals = top * (1 - np.exp(-rate * np.arange(1, width + 1))) + rng.normal(0, 0.01, width)
        out.append(_run(f"r{i}", [float(v) for v in vals], task="n"))
    return out


def test_hyperband_brackets_are_ray_tunes():
    ahb = pytest.importorskip("ray.tune.schedulers.async_hyperband")
    for max_t, grace in ((100, 3), (52, 3), (60, 2), (10, 1)):
        sched = ahb.AsyncHyperBandScheduler(max_t=max_t, grace_period=grace,
                                            reduction_factor=4, brackets=3, metric="m",
                                            mode="max")
        rungs, probs = replay_mod.hyperband_brackets(max_t, grace)
        assert rungs == [sorted(m for m, _ in b._rungs) for b in sched._brackets]
        sizes = np.array([len(b._rungs) for b in sched._brackets])
        want = np.e ** (sizes - sizes.max())
        assert probs == pytest.approx(want / want.sum())


def test_hyperband_stops_where_ray_tunes_brackets_do():
    """Each run, in its bracket, stops where Ray Tune's own ``_Bracket.on_result`` stops
    it when fed the run's values epoch by epoch (the same bracket per run)."""
    ahb = pytest.importorskip("ray.tune.schedulers.async_hyperband")

    class Trial:
        def __init__(self, trial_id: str) -> None:
            self.trial_id = trial_id

    runs = _noisy(40, seed=2)
    for seed in range(3):
        order = list(np.random.default_rng(seed).permutation(40))
        res = replay(runs, ["hyperband", "asha"], orders=[order], min_epochs=2, details=True)
        [got] = res.details["n"]["hyperband"]
        sched = ahb.AsyncHyperBandScheduler(max_t=60, grace_period=2, reduction_factor=4,
                                            brackets=3, metric="m", mode="max")
        _, probs = replay_mod.hyperband_brackets(60, 2)
        rng = np.random.default_rng([int(x) for x in order[:32]])  # replay's draw
        want = {}
        for r in order:
            bracket = sched._brackets[int(rng.choice(3, p=probs))]
            values = runs[r].series("val_accuracy")
            for e, v in enumerate(values, 1):
                if bracket.on_result(Trial(str(r)), e, float(v)) == "STOP" and e < 60:
                    want[int(r)] = e
                    break
        assert got["stops"] == want
        assert 0 < len(want) < 40
    # Later brackets start later: HyperBand stops fewer runs than ASHA, and later.
    assert res.summary["hyperband"]["epochs_saved_pct"] < res.summary["asha"]["epochs_saved_pct"]


def test_default_study_replays_a_study_of_monitors_with_a_ledger(tmp_path):
    """``default-study`` is what the callbacks do in a study with a ledger: each run's
    forecasts corrected by the runs that finished before it. A model 0.3 above flat
    curves never stops a run; corrected by 5 finished runs, it stops the lower ones."""
    def over(rec, m):
        v = rec.series(rec.metric)[-1] + 0.3
        return v, {0.1: v - 0.05, 0.5: v, 0.9: v + 0.05}

    levels = [0.6, 0.5, 0.55, 0.7, 0.65, 0.4, 0.8, 0.45, 0.3, 0.75]
    # Each run climbs to its level at epoch 2 (it has left its start: no rung rule).
    runs = [_run(f"r{i}", [lv - 0.1] + [lv] * 9) for i, lv in enumerate(levels)]
    fc = ScriptedForecaster(over)
    res = replay(runs, ["default", "default-study"], fc, orders=[list(range(10))],
                 details=True)
    plain = res.details["t"]["default"][0]["stops"]
    study = res.details["t"]["default-study"][0]["stops"]
    assert plain == {8: 3}  # the one run 0.3 + its spread below the incumbent (0.8)
    # Below the incumbent, once 5 runs have finished; r9 (0.75) is in the best 15 % of
    # what the earlier runs reached (the default keep_top): kept.
    assert set(study) == {5, 7, 8}
    ledger = tmp_path / "l.db"
    for i, rec in enumerate(runs):
        mon = ForecastMonitor(target_epoch=10, study="t", ledger=ledger, model=fc,
                              run_id=rec.run_id)
        mon.begin()
        for e, row in enumerate(rec.epochs, 1):
            if mon.update(e, row).stop:
                break
        mon.end()
        assert (mon.stopped or {}).get("epoch") == study.get(i), i
