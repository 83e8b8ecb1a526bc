"""A plain mapping in the RUN_RECORD.md shape (a parsed JSONL line) is accepted
wherever a record is; a broken one is a RecordError naming the field."""

from __future__ import annotations

import json

import pytest

from earlystop_predict import load_model
from earlystop_predict.errors import RecordError
from earlystop_predict.forecast.base import ScriptedForecaster, observed_forecast
from earlystop_predict.records.record import RunRecord

LINE = json.dumps({"run_id": "from-json", "metric": "val_accuracy",
                   "hparams": {"learning_rate": 0.01, "optimizer": "sgd"},
                   "meta": {"max_epochs": 50},
                   "epochs": [{"epoch": e, "val_accuracy": 0.3 + 0.05 * e} for e in range(1, 7)]})


@pytest.fixture(scope="module")
def models() -> dict:
    return {"auto": load_model(), "lstm": load_model("lstm"), "lightgbm": load_model("lightgbm"),
            "scripted": ScriptedForecaster(lambda rec, t: 0.5)}


@pytest.mark.parametrize("kind", ["auto", "lstm", "lightgbm", "scripted"])
def test_a_dict_is_forecast_as_its_record(models, kind) -> None:
    model = models[kind]
    data = json.loads(LINE)
    rec = RunRecord.from_dict(json.loads(LINE))
    a, b = model.forecast(data, 50), model.forecast(rec, 50)
    assert a.mean == pytest.approx(b.mean, abs=1e-9) and a.model == b.model
    many = model.forecast_many([data, rec], [40, 50])
    assert many[1].mean == pytest.approx(b.mean, abs=1e-6)  # batched: float32 order and many[0].target_epoch == 40
    if hasattr(model, "cannot_serve"):
        assert model.cannot_serve(data, 50) == ""


def test_a_fine_tuned_blend_takes_a_dict(tmp_path) -> None:
    from conftest import blended_model_dir

    model = load_model(blended_model_dir(tmp_path / "mine"))
    fc = model.forecast(json.loads(LINE), 20)
    assert fc.model.endswith("+history")


def test_observed_target_from_a_dict(models) -> None:
    fc = models["auto"].forecast(json.loads(LINE), 6)
    assert fc.model == "observed" and observed_forecast(json.loads(LINE), 6).mean == fc.mean


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["epochs"][1].update(epoch=1), "epochs[1].epoch"),
    (lambda d: d.pop("run_id"), "run_id"),
    (lambda d: d["epochs"][0].update(val_accuracy=45.0), "epochs[0].val_accuracy"),
    (lambda d: d.update(hparams=[1]), "hparams"),
    (lambda d: d.update(metric="val_f1"), "metric"),
])
def test_a_broken_dict_is_a_record_error_naming_the_field(models, edit, field) -> None:
    data = json.loads(LINE)
    edit(data)
    for model in models.values():
        with pytest.raises(RecordError) as err:
            model.forecast(data, 50)
        assert err.value.field == field
    with pytest.raises(RecordError, match=r"records\[1\]"):
        models["auto"].forecast_many([json.loads(LINE), data], 50)


def test_neither_record_nor_mapping(models) -> None:
    with pytest.raises(RecordError, match="RunRecord or a mapping"):
        models["auto"].forecast("run-1", 50)
    with pytest.raises(RecordError, match="sequence of run records"):
        models["auto"].forecast_many(json.loads(LINE), 50)
