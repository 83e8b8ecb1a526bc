"""Run records: RUN_RECORD.md read, validated and written back."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
from conftest import curve, make_record, write_lines

from earlystop_predict.errors import EarlystopPredictError, RecordError
from earlystop_predict.records.record import (
    RunRecord,
    default_mode,
    dumps,
    is_accuracy_like,
    iter_records,
    read_records,
    write_jsonl,
    write_records,
)

FULL = {
    "run_id": "digits-mlp-0007",
    "task": "sklearn-digits",
    "metric": "val_accuracy",
    "mode": "max",
    "hparams": {"learning_rate": 0.01, "batch_size": 64, "optimizer": "sgd",
                "momentum": 0.9, "weight_decay": 0.0001, "dropout": 0.1,
                "num_layers": 2, "width": 256, "lr_schedule": "cosine"},
    "meta": {"train_size": 1437, "num_classes": 10, "num_params": 85000,
             "max_epochs": 50, "framework": "torch"},
    "epochs": [
        {"epoch": 1, "val_accuracy": 0.53, "val_loss": 1.21, "train_accuracy": 0.49,
         "train_loss": 1.40, "time": 0.81},
        {"epoch": 2, "val_accuracy": 0.61, "val_loss": 1.01, "train_accuracy": 0.58,
         "train_loss": 1.10, "time": 0.79},
    ],
    "forecasts": [{"at_epoch": 2, "target_epoch": 50, "mean": 0.61,
                   "quantiles": {"0.1": 0.55, "0.5": 0.61, "0.9": 0.66},
                   "model": "lstm", "stop": False, "reason": "min_epochs"}],
    "stopped": None,
}


def _validate(data: dict, **kwargs) -> RunRecord:
    return RunRecord.from_dict(data, **kwargs)


# ----------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_field(tmp_path):
    data = json.loads(json.dumps(FULL))
    data["notes"] = {"by": "hand"}                # unknown top-level key
    data["epochs"][0]["lr_now"] = 0.01            # unknown metric in a row
    data["hparams"]["my_knob"] = "x"              # unknown hparam
    path = tmp_path / "runs.jsonl"
    assert write_records(path, [RunRecord.from_dict(data)]) == 1
    (back,) = read_records(path)
    assert back.to_dict() == data
    assert back.extra == {"notes": {"by": "hand"}}
    assert back.epochs[0]["lr_now"] == 0.01
    assert back.hparams["my_knob"] == "x"


def test_round_trip_of_many_records_in_order(tmp_path):
    recs = [make_record(f"r{i}", [0.1 * i, 0.1 * i + 0.05]) for i in range(1, 6)]
    path = tmp_path / "many.jsonl"
    write_records(path, recs)
    back = list(iter_records(path))
    assert [r.run_id for r in back] == ["r1", "r2", "r3", "r4", "r5"]
    assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]


def test_written_file_is_one_strict_json_object_per_line(tmp_path):
    path = tmp_path / "a.jsonl"
    write_records(path, [make_record("a"), make_record("b")])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line in lines:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_minimal_record_gets_defaults():
    rec = RunRecord.from_dict({"run_id": 7, "epochs": [{"epoch": 1, "val_accuracy": 0.5}]})
    assert rec.run_id == "7"
    assert rec.metric == "val_accuracy" and rec.mode == "max"
    assert rec.hparams == {} and rec.meta == {} and rec.forecasts == []
    assert rec.stopped is None
    assert "stopped" not in rec.to_dict() and "forecasts" not in rec.to_dict()


def test_mode_defaults_from_metric_name():
    assert default_mode("val_loss") == "min"
    assert default_mode("eval_error_rate") == "min"
    assert default_mode("val_accuracy") == "max"
    rec = RunRecord.from_dict({"run_id": "r", "metric": "val_loss",
                               "epochs": [{"epoch": 1, "val_loss": 2.0}]})
    assert rec.mode == "min"


def test_blank_lines_are_skipped(tmp_path):
    path = write_lines(tmp_path / "b.jsonl",
                       ["", make_record("a").to_dict(), "   ", make_record("b").to_dict(), ""])
    assert [r.run_id for r in read_records(path)] == ["a", "b"]


def test_stopped_and_forecasts_round_trip():
    rec = make_record()
    rec.forecasts.append({"at_epoch": 3, "target_epoch": 20, "mean": 0.6, "stop": True,
                          "reason": "forecast below threshold"})
    rec.stopped = {"epoch": 3, "reason": "forecast below threshold"}
    back = RunRecord.from_dict(json.loads(dumps(rec.to_dict())))
    assert back.stopped == rec.stopped
    assert back.forecasts == rec.forecasts


# ----------------------------------------------------------------------------- accessors
def test_series_truncated_final_value():
    rec = make_record(values=[0.2, None, 0.5, 0.7])
    np.testing.assert_array_equal(rec.series("val_accuracy"), [0.2, np.nan, 0.5, 0.7])
    assert np.isnan(rec.series("val_loss")).all()
    assert rec.n_epochs == 4 and rec.last_epoch == 4
    assert rec.epoch_numbers().tolist() == [1, 2, 3, 4]
    assert rec.final_value() == 0.7
    short = rec.truncated(2)
    assert short.n_epochs == 2 and short.last_epoch == 2 and short.final_value() is None
    assert short.hparams == rec.hparams and short.hparams is not rec.hparams
    short.epochs[0]["val_accuracy"] = 0.0
    assert rec.epochs[0]["val_accuracy"] == 0.2     # a copy, not a view


def test_empty_record_accessors():
    rec = RunRecord("r")
    assert rec.last_epoch == 0 and rec.final_value() is None and rec.series("x").size == 0


@pytest.mark.parametrize(("name", "expected"), [
    ("val_accuracy", True), ("eval_f1", True), ("auc", True), ("val_iou", True),
    ("val_loss", False), ("top1_error", False), ("val_perplexity", False),
])
def test_is_accuracy_like(name, expected):
    assert is_accuracy_like(name) is expected


# ----------------------------------------------------------------------------- errors
def test_error_types_derive_from_base_and_builtin():
    assert issubclass(RecordError, EarlystopPredictError)
    assert issubclass(RecordError, ValueError)


def test_malformed_json_line_names_the_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl",
                       [make_record("a").to_dict(), "", '{"run_id": "b", "epochs": [}'])
    with pytest.raises(RecordError) as err:
        read_records(path)
    assert err.value.line == 3
    assert "line 3" in str(err.value)
    assert str(path) in str(err.value)
    assert "not valid JSON" in str(err.value)


def test_iter_records_yields_good_lines_before_the_bad_one(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [make_record("a").to_dict(), "nope"])
    it = iter_records(path)
    assert next(it).run_id == "a"
    with pytest.raises(RecordError, match="line 2"):
        next(it)


def test_contract_error_names_line_and_field(tmp_path):
    bad = make_record("b").to_dict()
    del bad["run_id"]
    path = write_lines(tmp_path / "bad.jsonl", [make_record("a").to_dict(), bad])
    with pytest.raises(RecordError) as err:
        read_records(path)
    assert (err.value.line, err.value.field) == (2, "run_id")


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3"])
def test_non_object_line_is_rejected(tmp_path, line):
    path = write_lines(tmp_path / "bad.jsonl", [line])
    with pytest.raises(RecordError, match="line 1.*JSON object"):
        read_records(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nope.jsonl")


def test_missing_target_metric_names_field_and_lists_keys():
    data = {"run_id": "r", "metric": "val_accuracy",
            "epochs": [{"epoch": 1, "val_loss": 1.0, "train_loss": 1.2},
                       {"epoch": 2, "val_loss": 0.9, "train_accuracy": 0.4}]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == "metric"
    msg = str(err.value)
    assert "'val_accuracy'" in msg
    assert "train_accuracy, train_loss, val_loss" in msg


def test_target_metric_may_be_missing_from_some_rows():
    rec = _validate({"run_id": "r", "epochs": [{"epoch": 1, "val_loss": 1.0},
                                               {"epoch": 2, "val_accuracy": 0.5}]})
    assert rec.series("val_accuracy").tolist()[1] == 0.5


def test_empty_epochs_rejected_unless_allowed():
    with pytest.raises(RecordError) as err:
        _validate({"run_id": "r", "epochs": []})
    assert err.value.field == "epochs"
    assert "empty" in str(err.value)
    rec = _validate({"run_id": "r", "epochs": []}, allow_empty=True)
    assert rec.n_epochs == 0


def test_empty_epochs_allowed_when_reading_a_file(tmp_path):
    path = write_lines(tmp_path / "e.jsonl", [{"run_id": "r"}])
    with pytest.raises(RecordError, match="line 1"):
        read_records(path)
    assert read_records(path, allow_empty=True)[0].epochs == []


@pytest.mark.parametrize(("epochs", "where"), [
    ([1, 2, 2], "epochs[2].epoch"),
    ([1, 3, 2], "epochs[2].epoch"),
    ([2, 1], "epochs[1].epoch"),
])
def test_non_increasing_epochs_rejected(epochs, where):
    data = {"run_id": "r", "epochs": [{"epoch": e, "val_accuracy": 0.5} for e in epochs]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == where
    assert "strictly increase" in str(err.value)


@pytest.mark.parametrize("epoch", [0, -1, "1", 1.5, None, True])
def test_epoch_must_be_one_based_integer(epoch):
    data = {"run_id": "r", "epochs": [{"epoch": epoch, "val_accuracy": 0.5}]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == "epochs[0].epoch"


def test_integral_float_epoch_becomes_int():
    rec = _validate({"run_id": "r", "epochs": [{"epoch": 1.0, "val_accuracy": 0.5}]})
    assert rec.epochs[0]["epoch"] == 1 and isinstance(rec.epochs[0]["epoch"], int)


def test_epochs_may_skip_numbers():
    rec = _validate({"run_id": "r", "epochs": curve([0.1, 0.2])[:1]
                     + [{"epoch": 5, "val_accuracy": 0.3}]})
    assert rec.epoch_numbers().tolist() == [1, 5]


def test_percent_accuracy_gets_a_hint():
    data = {"run_id": "r", "epochs": [{"epoch": 1, "val_accuracy": 0.5},
                                      {"epoch": 2, "val_accuracy": 53.0}]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == "epochs[1].val_accuracy"
    assert err.value.hint and "divide percents by 100" in err.value.hint
    assert "hint:" in str(err.value) and "outside [0, 1]" in str(err.value)


def test_percent_in_other_accuracy_like_column_gets_hint():
    data = {"run_id": "r", "epochs": [{"epoch": 1, "val_accuracy": 0.5,
                                       "train_accuracy": 71}]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == "epochs[0].train_accuracy" and err.value.hint


@pytest.mark.parametrize("value", [-0.1, 250.0])
def test_accuracy_out_of_range_without_percent_hint(value):
    data = {"run_id": "r", "epochs": [{"epoch": 1, "val_accuracy": value}]}
    with pytest.raises(RecordError, match="outside") as err:
        _validate(data)
    assert err.value.hint is None


def test_losses_above_one_are_fine():
    rec = _validate({"run_id": "r", "metric": "val_loss",
                     "epochs": [{"epoch": 1, "val_loss": 12.5, "train_loss": 40.0}]})
    assert rec.final_value() == 12.5


@pytest.mark.parametrize("value", ["0.5", [0.5], {"v": 1}, True])
def test_non_numeric_metric_value_rejected(value):
    data = {"run_id": "r", "epochs": [{"epoch": 1, "val_accuracy": 0.5, "val_loss": value}]}
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == "epochs[0].val_loss"


@pytest.mark.parametrize(("data", "field"), [
    ({"run_id": "", "epochs": curve([0.5])}, "run_id"),
    ({"run_id": "r", "metric": "", "epochs": curve([0.5])}, "metric"),
    ({"run_id": "r", "mode": "up", "epochs": curve([0.5])}, "mode"),
    ({"run_id": "r", "mode": "min", "epochs": curve([0.5])}, "mode"),
    ({"run_id": "r", "hparams": [1], "epochs": curve([0.5])}, "hparams"),
    ({"run_id": "r", "meta": "m", "epochs": curve([0.5])}, "meta"),
    ({"run_id": "r", "epochs": {"1": 0.5}}, "epochs"),
    ({"run_id": "r", "epochs": [0.5]}, "epochs[0]"),
    ({"run_id": "r", "epochs": curve([0.5]), "stopped": "yes"}, "stopped"),
    ({"run_id": "r", "epochs": curve([0.5]), "forecasts": {"a": 1}}, "forecasts"),
])
def test_broken_fields_are_named(data, field):
    with pytest.raises(RecordError) as err:
        _validate(data)
    assert err.value.field == field
    assert f"field {field!r}" in str(err.value)


def test_validate_false_skips_checks():
    rec = _validate({"run_id": "r", "epochs": [{"epoch": 2}, {"epoch": 1}]}, validate=False)
    assert rec.n_epochs == 2


# ----------------------------------------------------------------------------- NaN / inf
def test_nan_and_inf_in_json_are_kept_as_missing(tmp_path):
    path = write_lines(tmp_path / "nan.jsonl", [
        '{"run_id": "r", "epochs": [{"epoch": 1, "val_accuracy": 0.4, "val_loss": 1.0},'
        ' {"epoch": 2, "val_accuracy": NaN, "val_loss": Infinity},'
        ' {"epoch": 3, "val_accuracy": null, "val_loss": -Infinity}]}'])
    (rec,) = read_records(path)
    assert rec.n_epochs == 3
    acc = rec.series("val_accuracy")
    assert acc[0] == 0.4 and np.isnan(acc[1:]).all()
    assert np.isnan(rec.series("val_loss")[1:]).all()
    assert rec.final_value() is None
    out = tmp_path / "out.jsonl"
    write_records(out, [rec])
    text = out.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    (back,) = read_records(out)
    assert back.epochs[1] == {"epoch": 2, "val_accuracy": None, "val_loss": None}


def test_python_nan_inf_values_do_not_crash_validation():
    rec = RunRecord("r", epochs=[{"epoch": 1, "val_accuracy": float("nan")},
                                 {"epoch": 2, "val_accuracy": 0.5, "val_loss": float("inf")}])
    assert rec.validate() is rec
    assert json.loads(dumps(rec.to_dict()))["epochs"][1]["val_loss"] is None


def test_dumps_is_strict_and_handles_numpy():
    text = dumps({"a": float("nan"), "b": np.float32(0.5), "c": [np.int64(3), -math.inf],
                  "d": (1, 2)})
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [3, None], "d": [1, 2]}
    assert "\n" not in text


# ----------------------------------------------------------------------------- atomic write
def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_write_leaves_no_file(tmp_path):
    def rows():
        yield make_record("a")
        raise RuntimeError("producer failed")

    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="producer failed"):
        write_records(target, rows())
    assert _leftovers(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.jsonl"
    write_records(target, [make_record("old")])
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl(target, [{"run_id": "new"}, {"bad": object()}])
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == ["out.jsonl"]


def test_write_creates_parent_dirs_and_counts(tmp_path):
    target = tmp_path / "a" / "b" / "out.jsonl"
    assert write_jsonl(target, [{"x": 1}, make_record("r")]) == 2
    first, second = (json.loads(line) for line in target.read_text().splitlines())
    assert first == {"x": 1} and second["run_id"] == "r"


def test_written_file_honours_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "perm.jsonl"
        write_records(target, [make_record()])
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize(("section", "key", "value"), [
    ("hparams", "learning_rate", "fast"), ("hparams", "learning_rate", 0),
    ("hparams", "weight_decay", -1e308), ("hparams", "dropout", 1.5),
    ("hparams", "batch_size", True), ("hparams", "momentum", float("nan")),
    ("hparams", "optimizer", 3), ("meta", "max_epochs", "fifty"),
    ("meta", "max_epochs", 10**9), ("meta", "max_epochs", 12.5),
    ("meta", "num_params", float("inf")), ("meta", "framework", ["torch"]),
])
def test_bad_settings_are_refused_naming_the_field(section, key, value):
    data = json.loads(json.dumps(FULL))
    data[section][key] = value
    with pytest.raises(RecordError, match=f"field '{section}.{key}'") as exc:
        RunRecord.from_dict(data, line=7, source="runs.jsonl")
    assert exc.value.line == 7 and exc.value.source == "runs.jsonl"


def test_null_aliases_and_unknown_settings_are_accepted():
    data = json.loads(json.dumps(FULL))
    data["hparams"].update(learning_rate=None, lr="fast", my_knob=[1, {"a": 2}])
    data["meta"].update(max_epochs=None, seed="abc")
    assert RunRecord.from_dict(data).hparams["my_knob"] == [1, {"a": 2}]


@pytest.mark.parametrize("epochs", [
    [{"epoch": 1, "val_accuracy": 10**400}],
    [{"epoch": 10**400, "val_accuracy": 0.5}],
    [{"epoch": 2e6, "val_accuracy": 0.5}],
])
def test_numbers_beyond_range_are_record_errors(epochs):
    with pytest.raises(RecordError, match="epochs"):
        RunRecord.from_dict({"run_id": "a", "epochs": epochs})


def test_a_non_string_metric_or_task_is_a_record_error():
    with pytest.raises(RecordError, match="'metric'"):
        RunRecord.from_dict({"run_id": "a", "metric": {"x": 1}, "epochs": []})
    with pytest.raises(RecordError, match="'task'"):
        RunRecord.from_dict({"run_id": "a", "task": [1], "epochs": [
            {"epoch": 1, "val_accuracy": 0.5}]})
