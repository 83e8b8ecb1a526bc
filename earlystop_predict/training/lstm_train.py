"""Train the LSTM accModel with torch and export numpy weights (``lstm.npz``).

torch is needed here only (the ``train`` extra); inference is numpy
(:mod:`earlystop_predict.lstm`). One pass over a curve yields a training sample
at every observed prefix length E, each with its own target epoch M.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import calibration
from .._imports import require
from ..features import (
    QUERY_DIM,
    SEQ_DIM,
    SEQ_NAMES,
    STATIC_DIM,
    STATIC_NAMES,
    encode_query,
    encode_sequence,
)
from ..forecaster import QUANTILES
from ..lstm import LAST, OBSERVED_FRAC, LSTMWeights
from .data import MAX_HORIZON, CurveBatch, sample_batch
from .lcbench import LCBench

torch = require("torch", extra="train")
nn = torch.nn


class LSTMNet(nn.Module):
    """Torch twin of :class:`earlystop_predict.lstm.LSTMWeights` (same maths)."""

    def __init__(self, hidden: int = 64, head: int = 128) -> None:
        super().__init__()
        self.init = nn.Linear(STATIC_DIM, hidden)
        self.lstm = nn.LSTM(SEQ_DIM, hidden, batch_first=True)
        self.l1 = nn.Linear(hidden + STATIC_DIM + QUERY_DIM, head)
        self.l2 = nn.Linear(head, head)
        self.l3 = nn.Linear(head, 6)
        with torch.no_grad():
            self.l3.weight.mul_(0.1)
            self.l3.bias.copy_(torch.tensor([0.0, 0.0, -3.0, -3.0, -3.0, -3.0]))

    def hidden_states(self, seq: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.init(static)).unsqueeze(0)
        out, _ = self.lstm(seq, (h0, torch.zeros_like(h0)))
        return out  # (B, L, H)

    def head(self, h: torch.Tensor, static: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        z = torch.cat([h, static, query], dim=-1)
        z = torch.relu(self.l1(z))
        z = torch.relu(self.l2(z))
        return self.l3(z)

    def export(self) -> dict[str, np.ndarray]:
        """Weights in the numpy layout of ``LSTMWeights``."""
        def a(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        return {
            "W_s": a(self.init.weight), "b_s": a(self.init.bias),
            "W_ih": a(self.lstm.weight_ih_l0), "W_hh": a(self.lstm.weight_hh_l0),
            "b": a(self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0),
            "W1": a(self.l1.weight), "b1": a(self.l1.bias), "W2": a(self.l2.weight),
            "b2": a(self.l2.bias), "W3": a(self.l3.weight), "b3": a(self.l3.bias),
        }


def torch_head_transform(out: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch version of :func:`earlystop_predict.lstm.head_transform`."""
    sp = torch.nn.functional.softplus
    mean = last + out[..., 0]
    q50 = last + out[..., 1]
    q25 = q50 - sp(out[..., 2])
    q10 = q25 - sp(out[..., 3])
    q75 = q50 + sp(out[..., 4])
    q90 = q75 + sp(out[..., 5])
    return mean, torch.stack([q10, q25, q50, q75, q90], dim=-1)


@dataclass
class PositionBatch:
    """Every prefix of a batch of curves as a training sample."""

    seq: np.ndarray      # (B, L, SEQ_DIM)
    static: np.ndarray   # (B, STATIC_DIM)
    query: np.ndarray    # (B, L, QUERY_DIM), position t = E of t+1 epochs
    y: np.ndarray        # (B, L) clean value at the target epoch
    valid: np.ndarray    # (B, L) bool


def positions(batch: CurveBatch, rng: np.random.Generator | None,
              fixed_target: int | None = None) -> PositionBatch:
    """Expand curves to (prefix, target) samples; random M unless ``fixed_target``."""
    b, L = batch.target.shape
    T = batch.horizon
    L = int(min(L, T.max()))
    tgt = batch.target[:, :L]
    epoch = np.tile(np.arange(1, L + 1, dtype=np.float64), (b, 1))
    seq = encode_sequence(tgt, batch.val_loss[:, :L], np.full_like(tgt, np.nan),
                          np.full_like(tgt, np.nan), epoch, T.astype(np.float64))
    E = epoch
    if fixed_target is not None:
        M = np.full_like(E, float(fixed_target))
    else:
        assert rng is not None
        u = rng.random(E.shape)
        span = np.maximum(T[:, None] - E, 1)
        M = np.where(rng.random(E.shape) < 0.5, T[:, None].astype(np.float64),
                     E + 1 + np.floor(u * span))
        M = np.minimum(M, T[:, None])
    valid = (E < T[:, None]) & (M > E) & (M <= T[:, None])
    filled = np.nan_to_num(tgt)
    best = np.maximum.accumulate(filled, axis=1)
    csum = np.cumsum(filled, axis=1)
    prev3 = np.concatenate([np.zeros((b, 3)), csum[:, :-3]], axis=1)[:, :L]
    mean3 = (csum - prev3) / np.minimum(E, 3)
    q = encode_query(E, M, np.broadcast_to(T[:, None], E.shape), filled, best, mean3)
    Mi = np.clip(M.astype(np.int64) - 1, 0, batch.clean.shape[1] - 1)
    y = np.take_along_axis(np.nan_to_num(batch.clean), Mi, axis=1)
    return PositionBatch(seq=seq, static=batch.static.astype(np.float32), query=q,
                         y=y.astype(np.float32), valid=valid)


def _tensors(pb: PositionBatch) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(pb.seq), torch.from_numpy(pb.static), torch.from_numpy(pb.query),
            torch.from_numpy(pb.y), torch.from_numpy(pb.valid))


def _loss(net: LSTMNet, pb: PositionBatch) -> torch.Tensor:
    seq, static, query, y, valid = _tensors(pb)
    h = net.hidden_states(seq, static)
    st = static.unsqueeze(1).expand(-1, h.shape[1], -1)
    out = net.head(h, st, query)
    mean, q = torch_head_transform(out, query[..., LAST])
    levels = torch.tensor(QUANTILES, dtype=q.dtype)
    diff = y.unsqueeze(-1) - q
    pinball = torch.maximum(levels * diff, (levels - 1) * diff).mean(-1)
    mse = (mean - y) ** 2
    per = pinball + 5.0 * mse
    w = valid.float()
    return (per * w).sum() / w.sum().clamp_min(1.0)


def predict_positions(net: LSTMNet, pb: PositionBatch) -> tuple[np.ndarray, np.ndarray]:
    """(mean (B, L), quantiles (B, L, 5)) from the torch net, uncalibrated."""
    with torch.no_grad():
        seq, static, query, _, _ = _tensors(pb)
        h = net.hidden_states(seq, static)
        st = static.unsqueeze(1).expand(-1, h.shape[1], -1)
        out = net.head(h, st, query)
        mean, q = torch_head_transform(out, query[..., LAST])
    return mean.numpy(), q.numpy()


def _eval_mae(net: LSTMNet, data: LCBench, static: np.ndarray, rows: np.ndarray,
              at: tuple[int, ...] = (5, 10, 21), target: int = 52) -> float:
    batch = sample_batch(data, static, rows, np.random.default_rng(0), augment=False)
    pb = positions(batch, None, fixed_target=target)
    mean, _ = predict_positions(net, pb)
    idx = [e - 1 for e in at]
    return float(np.abs(mean[:, idx] - pb.y[:, idx]).mean())


def fit_calibration(net: LSTMNet, data: LCBench, static: np.ndarray, rows: np.ndarray,
                    target: int = 52) -> np.ndarray:
    """Per-bin interval factors (see :mod:`earlystop_predict.calibration`) fitted on
    held-aside tasks: every prefix of their clean curves, forecasting the last epoch."""
    batch = sample_batch(data, static, rows, np.random.default_rng(1), augment=False)
    pb = positions(batch, None, fixed_target=target)
    _, q = predict_positions(net, pb)
    sel = np.arange(q.shape[1]) < target - 1
    qq = q[:, sel].reshape(-1, 5).astype(np.float64)
    y = pb.y[:, sel].reshape(-1).astype(np.float64)
    frac = pb.query[:, sel, OBSERVED_FRAC].reshape(-1)
    return calibration.fit(np.clip(qq, 0.0, 1.0), y, frac)


def _slice(batch: CurveBatch, idx: np.ndarray) -> CurveBatch:
    return CurveBatch(**{k: getattr(batch, k)[idx] for k in batch.__dataclass_fields__})


def _sorted_batches(data: LCBench, static: np.ndarray, rows: np.ndarray, batch_size: int,
                    rng: np.random.Generator):  # noqa: ANN202 - generator of PositionBatch
    """Augmented batches grouped by horizon, so each is padded only to its own longest."""
    chunk = batch_size * 16
    for start in range(0, len(rows), chunk):
        cb = sample_batch(data, static, rows[start:start + chunk], rng)
        order = np.argsort(cb.horizon, kind="stable")
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for j in rng.permutation(len(groups)):
            yield positions(_slice(cb, groups[j]), rng)


def train_lstm(data: LCBench, static: np.ndarray, train_rows: np.ndarray,
               val_rows: np.ndarray | None, *, epochs: int = 30, batch_size: int = 128,
               lr: float = 3e-3, seed: int = 0, hidden: int = 64,
               progress: Callable[[str], None] | None = None,
               threads: int | None = None) -> tuple[LSTMNet, dict[str, float]]:
    """Train on ``train_rows`` (augmented), keep the best on ``val_rows`` (MAE); with
    ``val_rows=None`` (a refit on every task) keep the last epoch's weights."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2)))
    rng = np.random.default_rng(seed)
    net = LSTMNet(hidden=hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * int(np.ceil(len(train_rows) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    best = (np.inf, None)
    bar = _progress_bar(steps)
    history: dict[str, float] = {}
    for ep in range(epochs):
        perm = rng.permutation(train_rows)
        net.train()
        total = 0.0
        for pb in _sorted_batches(data, static, perm, batch_size, rng):
            loss = _loss(net, pb)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.update(1)
        net.eval()
        mae = _eval_mae(net, data, static, val_rows) if val_rows is not None else -float(ep)
        history[f"epoch{ep + 1}_val_mae"] = mae
        if mae < best[0]:
            best = (mae, {k: v.clone() for k, v in net.state_dict().items()})
        msg = f"lstm epoch {ep + 1}/{epochs} loss {total:.3f}" + (
            f" val MAE {mae:.4f}" if val_rows is not None else "")
        bar.set_postfix_str(msg)
        if progress:
            progress(msg)
    bar.close()
    net.load_state_dict(best[1])
    return net, {"val_mae": best[0] if val_rows is not None else float("nan")}


def _progress_bar(total: int):  # noqa: ANN202 - tqdm or a silent stand-in
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="lstm", unit="batch", leave=False,
                    disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, n: int) -> None: ...
            def set_postfix_str(self, s: str) -> None: ...
            def close(self) -> None: ...
        return _Null()


def save_lstm(net: LSTMNet, calibration: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``lstm.npz``: weights, calibration, feature layout and trained range."""
    arrays = net.export()
    np.savez_compressed(
        path, **arrays, calibration=np.asarray(calibration, dtype=np.float64),
        max_target_epoch=np.int64(MAX_HORIZON), max_observed_epochs=np.int64(MAX_HORIZON - 1),
        seq_names=np.array(SEQ_NAMES), static_names=np.array(STATIC_NAMES),
        quantiles=np.array(QUANTILES))
    LSTMWeights.load(path)  # round-trip check
