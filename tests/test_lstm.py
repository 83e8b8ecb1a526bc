"""The numpy LSTM matches its torch twin, and its inputs are what training feeds."""

from __future__ import annotations

import numpy as np
import pytest

from earlystop_predict.forecast.lstm import LAST, LSTMWeights, head_transform, prepare
from earlystop_predict.records.features import SEQ_NAMES, STATIC_NAMES
from earlystop_predict.records.record import RunRecord

torch = pytest.importorskip("torch")
lstm_train = pytest.importorskip("earlystop_predict.training.lstm_train")


def _records() -> list[RunRecord]:
    rng = np.random.default_rng(0)
    recs = []
    for i, n in enumerate((1, 4, 9, 17)):
        acc = np.clip(0.3 + 0.4 * (1 - np.exp(-np.arange(1, n + 1) / 5)) +
                      rng.normal(0, 0.01, n), 0, 1)
        rows = [{"epoch": e + 1, "val_accuracy": float(a), "val_loss": float(2 - a),
                 "train_loss": float(2.2 - a)} for e, a in enumerate(acc)]
        if i == 2:
            rows[3]["val_accuracy"] = None  # a missing value stays masked
        recs.append(RunRecord(run_id=f"r{i}", epochs=rows,
                              hparams={"lr": 0.01 * (i + 1), "optimizer": "adam"},
                              meta={"max_epochs": 30} if i % 2 else {}))
    return recs


def test_numpy_forward_matches_torch_to_1e5() -> None:
    torch.manual_seed(0)
    net = lstm_train.LSTMNet(hidden=32).double()
    arrays = net.export()
    weights = LSTMWeights({**arrays, "seq_names": np.array(SEQ_NAMES),
                           "static_names": np.array(STATIC_NAMES)})
    recs = _records()
    targets = [30, 30, 40, 50]
    x = prepare(recs, targets)
    ours = weights.forward(x["seq"], x["static"], x["query"], x["lengths"])
    with torch.no_grad():
        h = net.hidden_states(torch.from_numpy(x["seq"]).double(), torch.from_numpy(x["static"]))
        last = h[torch.arange(len(recs)), torch.from_numpy(x["lengths"] - 1)]
        theirs = net.head(last, torch.from_numpy(x["static"]), torch.from_numpy(x["query"]).double())
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5, rtol=0)
    # Single-record path (no padding bookkeeping) gives the same answer.
    one = prepare(recs[3:], targets[3:])
    np.testing.assert_allclose(
        weights.forward(one["seq"], one["static"], one["query"], one["lengths"]), ours[3:],
        atol=1e-6)
    # The output transform matches too, and quantiles never cross.
    mean_np, q_np = head_transform(ours, x["query"][:, LAST])
    mean_t, q_t = lstm_train.torch_head_transform(theirs, torch.from_numpy(x["query"][:, LAST]).double())
    np.testing.assert_allclose(mean_np, mean_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(q_np, q_t.numpy(), atol=1e-5)
    assert (np.diff(q_np, axis=1) >= 0).all()


def test_saved_weights_round_trip(tmp_path) -> None:
    net = lstm_train.LSTMNet(hidden=16)
    path = tmp_path / "lstm.npz"
    lstm_train.save_lstm(net, np.array([1.1, 0.9]), path)
    w = LSTMWeights.load(path)
    assert w.hidden == 16 and w.calib.tolist() == [[1.1, 0.9]] * 4  # one pair per bin
    with np.load(path, allow_pickle=False) as z:  # loads without pickle
        assert "W_ih" in z.files


def test_prepare_masks_missing_and_positions() -> None:
    recs = _records()
    x = prepare(recs, [30, 30, 40, 50])
    seq = x["seq"]
    mask = SEQ_NAMES.index("target_mask")
    assert seq[2, 3, mask] == 0.0 and seq[2, 2, mask] == 1.0
    # train_accuracy was never logged: masked everywhere.
    assert seq[..., SEQ_NAMES.index("train_accuracy_mask")].max() == 0.0
    frac = SEQ_NAMES.index("epoch_frac")
    assert seq[1, 3, frac] == pytest.approx(4 / 30)      # relative to meta max_epochs
    assert seq[0, 0, frac] == pytest.approx(1 / 30)      # no max_epochs: the target epoch
