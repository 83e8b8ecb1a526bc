"""Fuzz the record parser and the CLI (issue 12): random bytes, random JSON and random,
mostly well-formed records. The parser either gives records or raises RecordError; the
CLI (``forecast``, ``replay``, in process) either succeeds (exit 0) or exits 2 with a
message; never a traceback, never an internal error (exit 1).

The suite runs a bounded number of examples; ``ESP_FUZZ_EXAMPLES=2000`` (see
``benchmarks/fuzz_cli.py``) runs a longer search.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from earlystop_predict.cli import main  # noqa: E402
from earlystop_predict.errors import RecordError  # noqa: E402
from earlystop_predict.records.record import (  # noqa: E402
    NUMERIC_RANGES,
    TEXT_KEYS,
    read_valid_records,
)

EXAMPLES = int(os.environ.get("ESP_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ESP_FUZZ_EXAMPLES" not in
                os.environ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                   HealthCheck.data_too_large])

# ------------------------------------------------------------------ strategies
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 10**20, 2**63, 1e-320]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
settings_ = st.dictionaries(
    st.sampled_from(sorted(NUMERIC_RANGES) + sorted(TEXT_KEYS) + ["lr", "optim", "x"]),
    st.one_of(scalars, json_values), max_size=6)
metric_names = st.sampled_from(["val_accuracy", "val_loss", "accuracy", "f1", "loss", "x"])


@st.composite
def epoch_rows(draw) -> list:
    n = draw(st.integers(0, 12))
    start = draw(st.sampled_from([1, 1, 1, 0, -1, 3, 10**6, 10**7]))
    step = draw(st.sampled_from([1, 1, 2, 0, -1]))
    rows = []
    for i in range(n):
        row = {"epoch": draw(st.one_of(st.just(start + i * step), json_values))
               if draw(st.integers(0, 9)) == 0 else start + i * step}
        for name in draw(st.lists(metric_names, max_size=3)):
            row[name] = draw(st.one_of(st.floats(0, 1), numbers, scalars))
        rows.append(row)
    return rows


@st.composite
def records(draw) -> dict:
    rec: dict = {"run_id": draw(st.one_of(st.text(min_size=1, max_size=8), scalars))}
    if draw(st.booleans()):
        rec["metric"] = draw(st.one_of(metric_names, scalars))
    if draw(st.integers(0, 3)) == 0:
        rec["mode"] = draw(st.one_of(st.sampled_from(["min", "max"]), scalars))
    for key in ("hparams", "meta"):
        if draw(st.booleans()):
            rec[key] = draw(st.one_of(settings_, json_values)) if draw(
                st.integers(0, 4)) == 0 else draw(settings_)
    rec["epochs"] = draw(epoch_rows()) if draw(st.integers(0, 9)) else draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        rec["task"] = draw(st.one_of(st.text(max_size=4), scalars))
    if draw(st.integers(0, 5)) == 0:
        rec[draw(st.sampled_from(["stopped", "forecasts", "extra"]))] = draw(json_values)
    return rec


@st.composite
def studies(draw) -> list:
    """Valid full runs of one task (what ``replay`` can simulate), one maybe broken."""
    n = draw(st.integers(3, 12))
    out = []
    for i in range(draw(st.integers(2, 6))):
        values = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
        out.append({"run_id": f"r{i}", "task": "t", "meta": {"max_epochs": n},
                    "hparams": {"learning_rate": draw(st.floats(1e-4, 1))},
                    "epochs": [{"epoch": e + 1, "val_accuracy": v}
                               for e, v in enumerate(values)]})
    if draw(st.booleans()):
        out.append(draw(records()))
    return out


def _lines(values) -> bytes:
    return "".join(json.dumps(v) + "\n" for v in values).encode()


contents = st.one_of(
    st.binary(max_size=300),
    st.lists(json_values, max_size=4).map(_lines),
    st.lists(records(), min_size=1, max_size=5).map(_lines),
    st.lists(records(), min_size=1, max_size=5).map(lambda v: gzip.compress(_lines(v))),
    studies().map(_lines),
    st.sampled_from([b"[" * 50_000, b'{"run_id": "a", "epochs": ' + b"9" * 5000 + b"}",
                     b"\xff\xfe{}", b"\x1f\x8b\x08broken", b"{}\n" * 3, b""]),
)


# ------------------------------------------------------------------ the model, loaded once
@pytest.fixture(scope="module")
def preloaded(request):
    """The bundled model, loaded once (the CLI would load it on every call)."""
    import earlystop_predict.forecast.compose as compose

    model = compose.load_model("auto")
    mp = pytest.MonkeyPatch()
    mp.setattr(compose, "load_model", lambda kind="auto": model)
    request.addfinalizer(mp.undo)
    return model


def _check_cli(argv: list[str], capsys) -> None:
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert rc in (0, 2), (rc, captured.err[-2000:])
    if rc == 2:
        assert "error" in captured.err and captured.err.strip()


# ------------------------------------------------------------------ the tests
@FUZZ
@given(data=contents)
def test_the_record_parser_gives_records_or_record_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.jsonl"
        path.write_bytes(data)
        good, bad = read_valid_records(path)
        assert all(isinstance(e, RecordError) and e.line is not None for e in bad)
        for line, rec in good:
            assert line >= 1 and rec.n_epochs >= 1
            rec.validate()  # a record given out stays valid


@FUZZ
@given(data=contents, target=st.sampled_from([2, 5, 30, 200, 10**6]),
       observed=st.sampled_from([None, "1,3", "5"]), skip=st.booleans())
def test_forecast_cli_succeeds_or_exits_2(preloaded, capsys, data, target, observed,
                                          skip) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.jsonl"
        path.write_bytes(data)
        argv = ["forecast", str(path), "--target", str(target),
                "--output", str(Path(tmp) / "out.jsonl")]
        argv += ["--observed", observed] if observed else []
        argv += ["--skip-invalid"] if skip else []
        _check_cli(argv, capsys)


@FUZZ
@given(data=contents, policy=st.sampled_from(["none", "median", "asha", "threshold"]),
       target=st.sampled_from([None, "3", "40"]))
def test_replay_cli_succeeds_or_exits_2(preloaded, capsys, data, policy, target) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.jsonl"
        path.write_bytes(data)
        argv = ["replay", str(path), "--policy", policy, "--orders", "2"]
        argv += ["--target", target] if target else []
        _check_cli(argv, capsys)
