"""Every model's forecast is one coherent distribution: quantiles non-decreasing,
the mean inside [q0.1, q0.9], the median the 0.5 quantile; for any record.

Properties over many generated records (hypothesis), one test per model: the LSTM,
LightGBM (accuracy- and loss-like targets), the fine-tuned blend and the zero-epoch
prior. Scripted forecasts are whatever a test makes them, and are excluded.
"""

from __future__ import annotations

import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from earlystop_predict import load_model  # noqa: E402
from earlystop_predict.forecast.prior import load_prior  # noqa: E402
from earlystop_predict.records.record import RunRecord  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
value = st.one_of(st.floats(0.0, 1.0), st.none())


@st.composite
def records(draw, metric: str = "val_accuracy", lo: float = 0.0, hi: float = 1.0):  # noqa: ANN001, ANN201
    n = draw(st.integers(1, 60))
    first = draw(st.floats(lo, hi))  # one finite target value at least
    vals = [first] + [draw(st.one_of(st.floats(lo, hi), st.none())) for _ in range(n - 1)]
    rows = [{"epoch": i + 1, metric: v} for i, v in enumerate(vals)]
    for row in rows[: draw(st.integers(0, n))]:
        row["val_loss" if metric != "val_loss" else "train_loss"] = draw(st.floats(0.0, 5.0))
        row["train_accuracy"] = draw(value)
    hparams = draw(st.dictionaries(st.sampled_from(["learning_rate", "batch_size", "dropout",
                                                    "momentum", "weight_decay"]),
                                   st.floats(1e-5, 256.0), max_size=4))
    hparams["optimizer"] = draw(st.sampled_from(["sgd", "adam", "rmsprop"]))
    meta = draw(st.fixed_dictionaries({}, optional={"max_epochs": st.integers(n + 1, 120),
                                                    "train_size": st.integers(10, 10**6)}))
    target = draw(st.integers(n + 1, 120))
    return RunRecord(run_id=f"h-{n}", metric=metric, hparams=hparams, meta=meta,
                     epochs=rows), target


def coherent(fc) -> None:  # noqa: ANN001
    qs = [fc.quantiles[k] for k in ("0.1", "0.25", "0.5", "0.75", "0.9")]
    assert all(math.isfinite(v) for v in [fc.mean, *qs]), fc
    assert qs == sorted(qs), fc
    assert qs[0] <= fc.mean <= qs[-1], fc
    assert fc.quantile(0.5) == qs[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    from conftest import blended_model_dir

    blend = load_model(blended_model_dir(tmp_path_factory.mktemp("b") / "mine"))
    return {"lstm": load_model("lstm"), "lightgbm": load_model("lightgbm"), "blend": blend}


@SETTINGS
@given(case=records())
def test_lstm_forecasts_are_coherent(models, case) -> None:
    rec, target = case
    model = models["lstm"]
    if model.cannot_serve(rec, target):
        return
    fc = model.forecast(rec, target)
    coherent(fc)
    coherent(model.forecast_many([rec, rec], target)[0])  # the batched path too


@SETTINGS
@given(case=records())
def test_lightgbm_forecasts_are_coherent(models, case) -> None:
    rec, target = case
    coherent(models["lightgbm"].forecast(rec, target))


@SETTINGS
@given(case=records(metric="val_loss", lo=0.01, hi=5.0))
def test_lightgbm_loss_forecasts_are_coherent(models, case) -> None:
    rec, target = case
    coherent(models["lightgbm"].forecast(rec, target))


@SETTINGS
@given(case=records())
def test_blend_forecasts_are_coherent(models, case) -> None:
    rec, target = case
    fc = models["blend"].forecast(rec, target)
    assert "+" in fc.model or fc.reason
    coherent(fc)


@SETTINGS
@given(configs=st.lists(st.fixed_dictionaries(
    {"hparams": st.fixed_dictionaries({"learning_rate": st.floats(1e-5, 1.0),
                                       "optimizer": st.sampled_from(["sgd", "adam"])},
                                      optional={"dropout": st.floats(0, 0.9),
                                                "batch_size": st.integers(8, 512)}),
     "meta": st.fixed_dictionaries({}, optional={"max_epochs": st.integers(2, 120)})}),
    min_size=1, max_size=8), target=st.integers(1, 120))
def test_prior_forecasts_are_coherent(prior, configs, target) -> None:
    for fc in prior.forecast_configs(configs, target):
        coherent(fc)


@pytest.fixture(scope="module")
def prior():
    return load_prior()


@pytest.mark.parametrize("n,top,tau,lr,planned,target", [
    (39, 0.9808, 3.837, 0.00049, 40, 40), (55, 0.7049, 9.532, 0.00011, 57, 56),
    (55, 0.9578, 6.839, 0.00019, 59, 56)])
def test_late_saturated_runs_read_right(models, n, top, tau, lr, planned, target) -> None:
    """Late, saturated runs (the issue's ``forecast@30 0.982 [0.983, 0.991]``): the
    LSTM's mean head put the mean below its own q0.1 here, and the blend with it."""
    import numpy as np

    vals = np.round(top * (1 - np.exp(-np.arange(1, n + 1) / tau)), 3)
    rec = RunRecord(run_id="late", epochs=[{"epoch": e + 1, "val_accuracy": float(v)}
                                           for e, v in enumerate(vals)],
                    hparams={"learning_rate": lr}, meta={"max_epochs": planned})
    for model in models.values():
        coherent(model.forecast(rec, target))
