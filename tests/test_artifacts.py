"""Model directories whose checksums match but whose content is damaged.

Each damaged copy of the bundled directory has its manifest's sha256 rewritten, so
the damage passes the checksum and reaches the loader. Every case must end in the
documented fallback (auto: LightGBM serves, every forecast's reason says why) or a
ModelArtifactError naming the file; never an abort, a raw exception, or a NaN
forecast served as a model's.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from earlystop_predict import ForecastUnavailableError, ModelArtifactError, load_model
from earlystop_predict.forecast.artifacts import (
    LightGBMTextError,
    bundled_dir,
    check_lightgbm_text,
    sha256_file,
)
from earlystop_predict.forecast.base import ScriptedForecaster
from earlystop_predict.forecast.compose import AutoForecaster, StrictForecaster
from earlystop_predict.records.record import RunRecord

SEP = "### earlystop_predict booster "


def record(n: int = 8) -> RunRecord:
    acc = 0.8 * (1 - np.exp(-np.arange(1, n + 1) / 6.0))
    return RunRecord(run_id="r", epochs=[{"epoch": i + 1, "val_accuracy": float(a)}
                                         for i, a in enumerate(acc)],
                     hparams={"learning_rate": 0.01}, meta={"max_epochs": 50})


def copy_model(dst: Path) -> Path:
    shutil.copytree(bundled_dir(), dst, ignore=shutil.ignore_patterns("__*", "corpus"))
    return dst


def reseal(directory: Path) -> None:
    """Rewrite the manifest's checksums so that the damage passes them."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["artifacts"].values():
        if (directory / entry["file"]).is_file():
            entry["sha256"] = sha256_file(directory / entry["file"])
    path.write_text(json.dumps(manifest))


def damage_lgbm(directory: Path, fn) -> Path:  # noqa: ANN001
    """Apply ``fn`` to the first booster's model text of lgbm.txt.gz, then reseal."""
    path = directory / "lgbm.txt.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    head, first, rest = text.split(SEP, 2)
    name, _, model = first.partition("\n")
    path.write_bytes(gzip.compress(f"{head}{SEP}{name}\n{fn(model)}{SEP}{rest}".encode(),
                                   compresslevel=1))
    reseal(directory)
    return directory


def sub(pattern: str, repl: str):  # noqa: ANN201
    return lambda m: re.sub(pattern, repl, m, count=1)


LGBM_DAMAGE = {  # each of these aborted (SIGABRT), crashed (SIGSEGV) or loaded a wrong model
    "num_leaves": lambda m: m.replace("num_leaves=63", "num_leaves=64", 1),
    "not_a_number": sub(r"leaf_value=\S+", "leaf_value=abc"),
    "nan_leaf": sub(r"leaf_value=\S+", "leaf_value=nan"),
    "line_dropped": sub(r"\nright_child=[^\n]*", ""),
    "child_out_of_range": sub(r"left_child=-?\d+", "left_child=9999"),
    "feature_out_of_range": sub(r"split_feature=\d+", "split_feature=999"),
    "tree_sizes": sub(r"tree_sizes=\d+ ", "tree_sizes="),
    "parameters": lambda m: m.replace("[num_leaves:", "num_leaves=7\n[num_leaves:", 1),
    "truncated": lambda m: m[: m.index("Tree=1") - 300],
    "decision_type": sub(r"decision_type=\d+", "decision_type=255"),
}


def test_damaged_lightgbm_trees_never_abort_and_name_the_file(tmp_path: Path) -> None:
    """In a subprocess, so that an abort fails this test instead of killing the suite."""
    base = copy_model(tmp_path / "base")
    dirs = {}
    for case, fn in LGBM_DAMAGE.items():
        d = tmp_path / case
        d.mkdir()
        for f in base.iterdir():  # share the big unchanged files
            os.symlink(f, d / f.name) if f.name not in ("lgbm.txt.gz", "manifest.json") \
                else shutil.copy(f, d / f.name)
        dirs[case] = str(damage_lgbm(d, fn))
    script = (
        "import json, sys\n"
        "from earlystop_predict import load_model, ModelArtifactError\n"
        "out = {}\n"
        "for case, d in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        load_model(d); out[case] = ['loaded', '']\n"
        "    except ModelArtifactError as exc:\n"
        "        out[case] = ['ModelArtifactError', str(exc)]\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(dirs)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in LGBM_DAMAGE:
        if case == "parameters":  # after the trees: not given to LightGBM, loads
            assert got[case][0] == "loaded", got[case]
            continue
        kind, msg = got[case]
        assert kind == "ModelArtifactError", (case, got[case])
        assert "lgbm.txt.gz" in msg and "booster 'mean'" in msg, (case, msg)


def tiny_booster_text() -> str:
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = x[:, 0] - 2 * x[:, 3] + rng.normal(0, 0.1, 300)
    return lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1,
                      "min_data_in_leaf": 5}, lgb.Dataset(x, y),
                     num_boost_round=12).model_to_string()


def test_random_damage_to_a_tree_text_loads_or_is_refused_never_aborts(tmp_path: Path) -> None:
    """A fuzz of the checker and LightGBM's parser: random token swaps, dropped or
    repeated lines, truncations; in a subprocess, which must exit 0."""
    text = tiny_booster_text()
    rng = random.Random(0)
    tokens = ["", "nan", "abc", "-1", "99999", "1e400", "0.5", "3", "-7", "1 2"]
    variants = []
    for _ in range(300):
        lines = text.split("\n")
        i = rng.randrange(len(lines))
        how = rng.randrange(4)
        if how == 0 and "=" in lines[i]:
            key, _, val = lines[i].partition("=")
            vals = val.split(" ")
            vals[rng.randrange(len(vals))] = rng.choice(tokens)
            lines[i] = key + "=" + " ".join(vals)
        elif how == 1:
            del lines[i]
        elif how == 2:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            lines = "\n".join(lines)[: rng.randrange(len(text))].split("\n")
        variants.append("\n".join(lines))
    (tmp_path / "variants.json").write_text(json.dumps(variants))
    script = (
        "import json, sys, numpy as np\n"
        "from earlystop_predict.errors import ModelArtifactError\n"
        "from earlystop_predict.forecast.lgbm import _booster\n"
        "counts = {'loaded': 0, 'refused': 0}\n"
        "x = np.random.default_rng(1).normal(size=(64, 6)) * 3\n"
        "for text in json.load(open(sys.argv[1])):\n"
        "    try:\n"
        "        b = _booster(text, 6, 'fuzz')\n"
        "    except ModelArtifactError:\n"
        "        counts['refused'] += 1\n"
        "        continue\n"
        "    assert np.isfinite(b.predict(x, num_threads=1)).all()\n"
        "    counts['loaded'] += 1\n"
        "print(json.dumps(counts))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "variants.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["refused"] > 50 and counts["loaded"] + counts["refused"] == 300


def test_checker_passes_the_bundled_texts_and_strips_tree_sizes() -> None:
    text = gzip.decompress((bundled_dir() / "lgbm.txt.gz").read_bytes()).decode()
    model = text.split(SEP)[1].partition("\n")[2]
    checked, n = check_lightgbm_text(model)
    assert n == model.count("\nTree=") and "tree_sizes=" not in checked
    with pytest.raises(LightGBMTextError, match="end of trees"):
        check_lightgbm_text(model[: len(model) // 2])


# ----------------------------------------------------------------- the LSTM's npz
def rewrite_npz(path: Path, fn) -> None:  # noqa: ANN001
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def nan_weight(a: dict) -> None:
    a["W1"] = a["W1"].copy()
    a["W1"][0, 0] = np.nan


def wrong_shape(a: dict) -> None:
    a["W_hh"] = a["W_hh"][:, :-1]


def bad_count(a: dict) -> None:
    a["max_target_epoch"] = np.array([1, 2, 3])


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


LSTM_DAMAGE = {
    "truncated": truncate,
    "nan_weights": lambda p: rewrite_npz(p, nan_weight),
    "wrong_shape": lambda p: rewrite_npz(p, wrong_shape),
    "bad_count": lambda p: rewrite_npz(p, bad_count),
    "not_a_zip": lambda p: p.write_bytes(b"PK\x03\x04 garbage" * 100),
}


@pytest.mark.parametrize("case", sorted(LSTM_DAMAGE))
def test_damaged_lstm_falls_back_with_the_reason_or_names_the_file(tmp_path: Path,
                                                                    case: str) -> None:
    d = copy_model(tmp_path / "m")
    LSTM_DAMAGE[case](d / "lstm.npz")
    reseal(d)
    model = load_model(d)
    for n in (3, 8):
        fc = model.forecast(record(n), 50)
        assert fc.model == "lightgbm" and math.isfinite(fc.mean)
        assert fc.reason.startswith("lstm unavailable:") and "lstm.npz" in fc.reason
    with pytest.raises(ModelArtifactError, match="lstm.npz"):
        StrictForecaster_from(d)


def StrictForecaster_from(d: Path):  # noqa: ANN201, N802
    from earlystop_predict.forecast.artifacts import read_manifest
    from earlystop_predict.forecast.lstm import LSTMForecaster

    return LSTMForecaster.from_dir(d, read_manifest(d))


def test_bundled_lstm_alone_names_the_file(tmp_path: Path, monkeypatch) -> None:
    d = copy_model(tmp_path / "m")
    truncate(d / "lstm.npz")
    reseal(d)
    monkeypatch.setattr("earlystop_predict.forecast.compose.bundled_dir", lambda: d)
    with pytest.raises(ModelArtifactError, match="lstm.npz") as err:
        load_model("lstm")
    assert isinstance(err.value.__cause__, type(None))  # no raw BadZipFile chained
    assert not isinstance(err.value, zipfile.BadZipFile)


# ------------------------------------------------------------------ the manifest
def edit_manifest(d: Path, fn) -> None:  # noqa: ANN001
    path = d / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps(fn(m)))


MANIFEST_DAMAGE = {
    "not_utf8": lambda d: (d / "manifest.json").write_bytes(b'{"schema": 1, "x": "\xff\xfe"}'),
    "a_list": lambda d: (d / "manifest.json").write_text("[1, 2]"),
    "deep": lambda d: (d / "manifest.json").write_text("[" * 100000 + "]" * 100000),
    "artifacts_a_list": lambda d: edit_manifest(d, lambda m: {**m, "artifacts": [1]}),
    "entry_a_string": lambda d: edit_manifest(
        d, lambda m: {**m, "artifacts": {**m["artifacts"], "lightgbm": "lgbm.txt.gz"}}),
    "file_an_int": lambda d: edit_manifest(
        d, lambda m: {**m, "artifacts": {**m["artifacts"],
                                         "lstm": {**m["artifacts"]["lstm"], "file": 7}}}),
    "parent_path": lambda d: edit_manifest(
        d, lambda m: {**m, "artifacts": {**m["artifacts"], "lightgbm": {
            **m["artifacts"]["lightgbm"], "file": "../base/lgbm.txt.gz"}}}),
    "absolute_path": lambda d: edit_manifest(
        d, lambda m: {**m, "artifacts": {**m["artifacts"], "lightgbm": {
            **m["artifacts"]["lightgbm"], "file": str(bundled_dir() / "lgbm.txt.gz")}}}),
    "blend_weight": lambda d: edit_manifest(d, lambda m: {**m, "blend": {"weight": "half"}}),
    "blend_a_list": lambda d: edit_manifest(d, lambda m: {**m, "blend": [0.5]}),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_DAMAGE))
def test_malformed_manifest_is_an_error_naming_it(tmp_path: Path, case: str) -> None:
    d = copy_model(tmp_path / "m")
    MANIFEST_DAMAGE[case](d)
    with pytest.raises(ModelArtifactError, match="manifest.json"):
        load_model(d)


def test_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    """The LightGBM file a symlink to a (valid, same-content) file elsewhere: refused,
    although its checksum matches; the LSTM one likewise makes LightGBM serve."""
    d = copy_model(tmp_path / "m")
    outside = tmp_path / "elsewhere.npz"
    shutil.move(d / "lstm.npz", outside)
    os.symlink(outside, d / "lstm.npz")
    fc = load_model(d).forecast(record(), 50)
    assert fc.model == "lightgbm" and "outside the model directory" in fc.reason
    (d / "lgbm.txt.gz").unlink()
    os.symlink(bundled_dir() / "lgbm.txt.gz", d / "lgbm.txt.gz")
    with pytest.raises(ModelArtifactError, match="outside the model directory"):
        load_model(d)


# --------------------------------------------------------- forecasts that are NaN
def test_a_nan_forecast_is_never_served_as_the_models() -> None:
    nan = float("nan")
    broken = ScriptedForecaster(lambda rec, t: (0.5, {0.1: nan, 0.5: 0.5, 0.9: 0.6}),
                                name="lstm")
    auto = AutoForecaster(broken, load_model("lightgbm"))
    fc = auto.forecast(record(), 50)
    assert fc.model == "lightgbm" and fc.reason == "lstm forecast is not finite"
    with pytest.raises(ForecastUnavailableError, match="not finite"):
        StrictForecaster(broken).forecast(record(), 50)
    both = AutoForecaster(broken, ScriptedForecaster(lambda rec, t: nan, name="lightgbm"))
    with pytest.raises(ForecastUnavailableError, match="lightgbm forecast is not finite"):
        both.forecast(record(), 50)


def test_a_keras_fit_with_a_damaged_model_directory_completes(tmp_path: Path) -> None:
    """A real (tiny) Keras fit whose model directory has a truncated LSTM file that
    passes its checksum: the fit runs to its end, LightGBM serves every forecast and
    each says why."""
    keras = pytest.importorskip("keras")
    from earlystop_predict.integrations.keras import KerasForecastCallback
    from earlystop_predict.ledger import Ledger

    d = copy_model(tmp_path / "m")
    truncate(d / "lstm.npz")
    reseal(d)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, size=64)
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3, activation="softmax")])
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = KerasForecastCallback(model=str(d), threshold=0.9, min_epochs=2, dry_run=True,
                               target_epoch=20, ledger=tmp_path / "l.db", run_id="dmg",
                               study="s")
    hist = net.fit(x, y, epochs=4, batch_size=16, verbose=0, validation_split=0.25,
                   callbacks=[cb])
    assert len(hist.history["loss"]) == 4
    (rec,) = Ledger(tmp_path / "l.db").records(study="s")
    assert len(rec.forecasts) == 4
    for f in rec.forecasts:
        assert f["model"] == "lightgbm" and "lstm.npz" in f["model_reason"]
        assert math.isfinite(f["mean"])


def test_checker_accepts_single_leaf_trees() -> None:
    """A booster that found no split writes stumps with empty split fields."""
    lgb = pytest.importorskip("lightgbm")
    x = np.random.default_rng(0).normal(size=(50, 3))
    text = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 100},
                     lgb.Dataset(x, np.full(50, 0.3)), num_boost_round=3).model_to_string()
    assert "\nnum_leaves=1\n" in text
    checked, n = check_lightgbm_text(text)
    assert lgb.Booster(model_str=checked).num_trees() == n
    with pytest.raises(LightGBMTextError, match="threshold"):
        check_lightgbm_text(text.replace("threshold=\n", "threshold=0.5\n", 1))
