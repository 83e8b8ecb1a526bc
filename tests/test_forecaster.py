"""load_model, the LSTM/LightGBM choice and the forecast CLI, on the bundled models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from earlystop_predict import ForecastUnavailableError, ModelArtifactError, load_model
from earlystop_predict.cli import main
from earlystop_predict.forecast.artifacts import bundled_dir, read_manifest
from earlystop_predict.records.record import RunRecord, read_records, write_records


def rising(n: int, top: float = 0.8, metric: str = "val_accuracy", **meta) -> RunRecord:
    acc = top * (1 - np.exp(-np.arange(1, n + 1) / 6.0))
    rows = [{"epoch": i + 1, metric: float(a), "val_loss": float(2.0 - 2 * a)}
            for i, a in enumerate(acc)]
    return RunRecord(run_id=f"run-{n}-{metric}", metric=metric, epochs=rows,
                     hparams={"learning_rate": 0.01, "batch_size": 64, "optimizer": "sgd"},
                     meta={"max_epochs": 50, **meta})


@pytest.fixture(scope="module")
def auto():
    return load_model()


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(bundled_dir(), dst, ignore=shutil.ignore_patterns("__*"))
    return dst


def test_bundled_manifest_lists_checksummed_artifacts() -> None:
    m = read_manifest(bundled_dir())
    assert set(m["artifacts"]) == {"lstm", "lightgbm", "prior"}
    assert m["training_data"]["split"].startswith("LCBench by task")
    assert m["held_out"]["20%"]["lstm"]["mae"] > 0
    # Real families are cross-validated: every family held out by one fold.
    real = m["training_data"]["real"]
    held = sorted(f for fold in m["folds"] for f in fold["families"])
    assert held == sorted(real["families"]) and len(real["families"]) == 12
    assert set(m["held_out_families"]) == set(real["families"]) | {"all"}


def test_lstm_serves_and_quantiles_are_monotone(auto) -> None:
    fc = auto.forecast(rising(10), 50)
    assert fc.model == "lstm+lightgbm" and fc.reason == ""
    qs = [fc.quantiles[k] for k in ("0.1", "0.25", "0.5", "0.75", "0.9")]
    assert qs == sorted(qs) and 0.0 <= qs[0] and qs[-1] <= 1.0
    assert fc.observed_epochs == 10 and fc.target_epoch == 50
    # A run still climbing is forecast above where it is now.
    assert fc.mean > rising(10).final_value()


def test_forecast_many_matches_forecast(auto) -> None:
    recs = [rising(n) for n in (1, 3, 7, 20)]
    many = auto.forecast_many(recs, 50)
    for rec, fc in zip(recs, many, strict=True):
        one = auto.forecast(rec, 50)
        assert one.mean == pytest.approx(fc.mean, abs=1e-6)  # float32 inference
        assert one.quantiles == pytest.approx(fc.quantiles, abs=1e-6)


def test_large_batches_in_chunks_match_one_by_one(auto, monkeypatch) -> None:
    """The chunked, two-threaded batch path (one BLAS thread) answers as single calls:
    per-record targets, a missing value, a held target, a run only LightGBM serves."""
    import earlystop_predict.forecast.lstm as lstm

    monkeypatch.setattr(lstm, "CHUNK", 4)
    recs = [rising(n) for n in range(1, 15)]
    recs[5].epochs[2]["val_accuracy"] = None
    recs[6].meta["max_epochs"] = 30
    targets = [50 - n for n in range(len(recs))]
    targets[3] = 2          # already observed: the observation itself
    targets[7] = 500        # beyond the LSTM's range: LightGBM
    many = auto.forecast_many(recs, targets)
    assert [fc.model for fc in many].count("lstm+lightgbm") == len(recs) - 2
    assert many[3].model == "observed" and many[7].model == "lightgbm"
    for rec, t, fc in zip(recs, targets, many, strict=True):
        one = auto.forecast(rec, t)
        assert (one.model, one.target_epoch, one.observed_epochs) == \
            (fc.model, fc.target_epoch, fc.observed_epochs)
        assert one.mean == pytest.approx(fc.mean, abs=1e-6)
        assert one.quantiles == pytest.approx(fc.quantiles, abs=1e-6)


def test_quantile_tail_stays_within_the_metrics_range(auto) -> None:
    from earlystop_predict.forecast.base import Forecast

    rec = rising(6, top=1.0)  # close to the ceiling, still climbing
    for model in (auto, load_model("lightgbm")):
        fc = model.forecast(rec, 50)
        assert fc.bounds == (0.0, 1.0)
        assert 0.0 <= fc.quantile(0.001) <= fc.quantile(0.1)
        assert fc.quantile(0.9) <= fc.quantile(0.999) <= 1.0
    loss = rising(6, metric="val_loss")
    loss.mode = "min"
    for row in loss.epochs:
        row["val_loss"] = 2.0 - row["val_loss"] / 2
    fc = auto.forecast(loss, 50)
    assert fc.model == "lightgbm" and fc.bounds == (0.0, float("inf"))
    assert fc.quantile(1e-6) >= 0.0
    # Without bounds (a scripted forecast) the normal tail is not cut.
    free = Forecast(0.95, {"0.1": 0.9, "0.5": 0.95, "0.9": 0.99}, "scripted")
    assert free.quantile(0.999) > 1.0


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "50"])
def test_bad_target_epochs_are_config_errors(auto, bad) -> None:
    from earlystop_predict import ConfigError

    with pytest.raises(ConfigError, match="target_epoch"):
        auto.forecast_many([rising(4), rising(5)], [50, bad])
    with pytest.raises(ConfigError, match="target_epoch"):
        auto.forecast_many([rising(4)], [50, 50])  # one target per record


@pytest.mark.parametrize(("record", "target", "why"), [
    (rising(10, metric="val_loss"), 50, "unknown to lstm"),
    (rising(10), 500, "beyond lstm's trained range"),
])
def test_lightgbm_serves_where_lstm_cannot(auto, record, target, why) -> None:
    if record.metric == "val_loss":
        record.mode = "min"
        for row in record.epochs:
            row["val_loss"] = 2.0 - row["val_loss"] / 2
    fc = auto.forecast(record, target)
    assert fc.model == "lightgbm"
    assert why in fc.reason


def test_user_can_ask_for_either_model(auto) -> None:
    rec = rising(8)
    assert load_model("lightgbm").forecast(rec, 50).model == "lightgbm"
    strict = load_model("lstm")
    assert strict.forecast(rec, 50).model == "lstm"
    with pytest.raises(ForecastUnavailableError, match="trained range"):
        strict.forecast(rec, 500)


def test_missing_lstm_artifact_falls_back(model_copy: Path) -> None:
    (model_copy / "lstm.npz").unlink()
    fc = load_model(model_copy).forecast(rising(6), 50)
    assert fc.model == "lightgbm"
    assert "lstm unavailable" in fc.reason and "lstm.npz" in fc.reason


def test_corrupt_lstm_artifact_fails_checksum_and_falls_back(model_copy: Path) -> None:
    with open(model_copy / "lstm.npz", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    fc = load_model(model_copy).forecast(rising(6), 50)
    assert fc.model == "lightgbm" and "sha256 mismatch" in fc.reason
    with pytest.raises(ModelArtifactError, match="lstm.npz"):
        load_model(model_copy).primary  # noqa: B018 - auto keeps going
        from earlystop_predict.forecast.lstm import LSTMForecaster
        LSTMForecaster.from_dir(model_copy, read_manifest(model_copy))


def test_missing_lightgbm_is_an_error_naming_the_file(model_copy: Path) -> None:
    (model_copy / "lgbm.txt.gz").unlink()
    with pytest.raises(ModelArtifactError, match="lgbm.txt.gz"):
        load_model(model_copy)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError, match="manifest.json"):
        load_model(tmp_path)


def test_target_already_observed_returns_the_observation(auto) -> None:
    rec = rising(12)
    fc = auto.forecast(rec, 12)
    assert fc.model == "observed" and fc.mean == rec.final_value()


def test_diverged_record_without_finite_value_is_served_by_nothing(auto) -> None:
    rec = RunRecord("nan-run", epochs=[{"epoch": 1, "val_accuracy": float("nan")}])
    with pytest.raises(ForecastUnavailableError, match="no finite value"):
        auto.forecast(rec, 20)


# ----------------------------------------------------------------------------- CLI
def test_cli_forecast_writes_one_line_per_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    write_records(runs, [rising(5), rising(12)])
    out = tmp_path / "out.jsonl"
    assert main(["forecast", str(runs), "--target", "50", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["run_id"] for r in rows] == ["run-5-val_accuracy", "run-12-val_accuracy"]
    assert [r["observed_epochs"] for r in rows] == [5, 12]
    for r in rows:
        assert r["target_epoch"] == 50 and r["model"] == "lstm+lightgbm"
        assert {"0.1", "0.5", "0.9"} <= set(r["quantiles"])
        assert r["quantiles"]["0.1"] <= r["quantiles"]["0.5"] <= r["quantiles"]["0.9"]


def test_cli_forecast_prefixes(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    write_records(runs, [rising(12)])
    out = tmp_path / "out.jsonl"
    main(["forecast", str(runs), "--target", "50", "--output", str(out), "--observed", "3,6"])
    assert [json.loads(x)["observed_epochs"] for x in out.read_text().splitlines()] == [3, 6]


@pytest.mark.parametrize(("line", "needle"), [
    ('{"run_id": "a", "epochs": [{"epoch": 1, "val_accuracy": 55.0}]}', "divide percents"),
    ('{"run_id": "a", "epochs": []}', "empty"),
    ('{"run_id": "a", "epochs": [{"epoch": 2, "val_accuracy": 0.5}, '
     '{"epoch": 1, "val_accuracy": 0.6}]}', "strictly increase"),
    ('{"run_id": "a", "metric": "val_f1", "epochs": [{"epoch": 1, "val_accuracy": 0.5}]}',
     "'val_f1' is in no epoch row"),
    ('{"run_id": "a", "epochs": [{"epoch": 1, "val_accuracy": 0.5}', "not valid JSON"),
])
def test_cli_forecast_bad_input_exits_nonzero_without_output(tmp_path: Path, line: str,
                                                             needle: str) -> None:
    runs = tmp_path / "runs.jsonl"
    good = '{"run_id": "ok", "epochs": [{"epoch": 1, "val_accuracy": 0.5}]}'
    runs.write_text(good + "\n" + line + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "earlystop_predict.cli", "forecast", str(runs),
                           "--target", "50", "--output", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and needle in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [runs]


def test_read_back_forecast_input_is_untouched(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    write_records(runs, [rising(4)])
    before = runs.read_text()
    main(["forecast", str(runs), "--target", "30", "--output", str(tmp_path / "o.jsonl")])
    assert runs.read_text() == before and read_records(runs)[0].n_epochs == 4


def test_blend_averages_mean_and_quantiles_and_keeps_the_primary_on_failure() -> None:
    from earlystop_predict.errors import ConfigError
    from earlystop_predict.forecast.base import ScriptedForecaster
    from earlystop_predict.forecast.compose import BlendForecaster

    primary = ScriptedForecaster(lambda rec, m: (0.6, {0.1: 0.5, 0.5: 0.6, 0.9: 0.7}),
                                 name="lstm")
    history = ScriptedForecaster(lambda rec, m: (0.8, {0.1: 0.6, 0.5: 0.8, 0.9: 1.0}),
                                 name="history")
    rec = rising(5)
    blend = BlendForecaster(primary, history, 0.25)
    fc = blend.forecast(rec, 30)
    assert fc.model == "lstm+history" and fc.mean == pytest.approx(0.75)
    assert fc.quantiles == pytest.approx({"0.1": 0.575, "0.5": 0.75, "0.9": 0.925})

    def broken(rec, m):
        raise RuntimeError("boom")

    fc = BlendForecaster(primary, ScriptedForecaster(broken, name="history"), 0.25).forecast(
        rec, 30)
    assert (fc.model, fc.mean) == ("lstm", 0.6) and "history failed: RuntimeError" in fc.reason
    with pytest.raises(ConfigError):
        BlendForecaster(primary, history, 1.5)


def test_auto_serves_the_lstm_and_lightgbm_averaged(auto) -> None:
    """The bundled choice is the quantile average of the two models at the manifest's
    share; LightGBM's point in the mean is its median."""
    from earlystop_predict.forecast.compose import ensemble_weight

    rec = rising(10)
    fc = auto.forecast(rec, 50)
    lstm, lgbm = load_model("lstm").forecast(rec, 50), load_model("lightgbm").forecast(rec, 50)
    w = ensemble_weight(read_manifest(bundled_dir()))
    assert w == read_manifest(bundled_dir())["ensemble"]["lstm_weight"] == auto.lstm_weight
    assert fc.model == "lstm+lightgbm" and lstm.model == "lstm" and lgbm.model == "lightgbm"
    assert 0 < w < 1 and lstm.mean != pytest.approx(lgbm.quantile(0.5), abs=1e-4)
    assert fc.mean == pytest.approx(w * lstm.mean + (1 - w) * lgbm.quantile(0.5))
    for k in ("0.1", "0.5", "0.9"):
        assert fc.quantiles[k] == pytest.approx(w * lstm.quantiles[k] + (1 - w) * lgbm.quantiles[k])
    assert (fc.observed_epochs, fc.target_epoch, fc.bounds) == (10, 50, (0.0, 1.0))


def test_manifest_ensemble_weight_one_serves_the_lstm_alone_and_bad_weights_are_typed(
        model_copy: Path) -> None:
    m = json.loads((model_copy / "manifest.json").read_text())
    (model_copy / "manifest.json").write_text(json.dumps({**m, "ensemble": {"lstm_weight": 1.0}}))
    rec = rising(10)
    fc = load_model(model_copy).forecast(rec, 50)
    assert fc.model == "lstm" and fc.mean == load_model("lstm").forecast(rec, 50).mean
    for bad in ({"lstm_weight": 1.5}, {"lstm_weight": "0.5"}, {"lstm_weight": True}, {}, 0.5):
        (model_copy / "manifest.json").write_text(json.dumps({**m, "ensemble": bad}))
        with pytest.raises(ModelArtifactError, match="ensemble.lstm_weight"):
            load_model(model_copy)


def test_auto_keeps_the_lstm_forecast_with_why_when_lightgbm_fails() -> None:
    from earlystop_predict.forecast.base import ScriptedForecaster
    from earlystop_predict.forecast.compose import AutoForecaster

    lstm = ScriptedForecaster(lambda rec, m: (0.6, {0.1: 0.5, 0.5: 0.6, 0.9: 0.7}), name="lstm")
    lgbm = ScriptedForecaster(lambda rec, m: (0.9, {0.1: 0.7, 0.5: 0.8, 0.9: 0.9}),
                              name="lightgbm")
    fc = AutoForecaster(lstm, lgbm, lstm_weight=0.25).forecast(rising(5), 30)
    assert fc.model == "lstm+lightgbm" and fc.mean == pytest.approx(0.25 * 0.6 + 0.75 * 0.8)
    assert fc.quantiles == pytest.approx({"0.1": 0.65, "0.5": 0.75, "0.9": 0.85})

    def broken(rec, m):
        raise RuntimeError("boom")

    for other in (ScriptedForecaster(broken, name="lightgbm"),
                  ScriptedForecaster(lambda rec, m: float("nan"), name="lightgbm")):
        fc = AutoForecaster(lstm, other, lstm_weight=0.25).forecast(rising(5), 30)
        assert (fc.model, fc.mean) == ("lstm", 0.6) and "lightgbm" in fc.reason


def test_blend_serves_an_observed_target_as_observed() -> None:
    from earlystop_predict.forecast.base import ScriptedForecaster
    from earlystop_predict.forecast.compose import BlendForecaster

    history = ScriptedForecaster(lambda rec, m: 0.0, name="history")
    fc = BlendForecaster(load_model(), history, 0.5).forecast(rising(12), 10)
    assert fc.model == "observed" and history.calls == 0


@pytest.mark.parametrize(("runs", "history_value", "weight", "rule"), [
    (120, 0.70, 0.3, "fitted"),          # enough runs: the weight of least error
    (20, 0.70, 0.5, "equal"),            # too few to fit: an equal blend...
    (20, 0.10, 1.0, "primary alone"),    # ...unless it does worse than the primary
    (0, 0.70, 1.0, "primary alone: no completed"),
])
def test_blend_weight_rule(runs: int, history_value: float, weight: float, rule: str) -> None:
    from earlystop_predict.forecast.base import ScriptedForecaster
    from earlystop_predict.training.finetune import fit_blend_weight

    # Every run ends at 0.64; the primary says 0.5, the history model history_value:
    # 0.3 * 0.5 + 0.7 * 0.7 = 0.64 is the blend of least error.
    records = [RunRecord(f"r{i}", epochs=[{"epoch": e, "val_accuracy": 0.4 if e < 20 else 0.64}
                                          for e in range(1, 21)], meta={"max_epochs": 20})
               for i in range(runs)]
    got, info = fit_blend_weight(ScriptedForecaster(lambda rec, m: 0.5),
                                 ScriptedForecaster(lambda rec, m: history_value), records)
    assert got == pytest.approx(weight) and info["rule"].startswith(rule)
