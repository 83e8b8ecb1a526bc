"""Train the LSTM accModel with torch and export numpy weights (``lstm.npz``).

torch is needed here only (the ``train`` extra); inference is numpy
(:mod:`earlystop_predict.forecast.lstm`). One pass over a curve yields a training sample
at every observed prefix length E, each with its own target epoch M.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earlystop_predict._imports import require
from earlystop_predict.forecast.base import QUANTILES
from earlystop_predict.forecast.lstm import LAST, OBSERVED_FRAC, LSTMWeights
from earlystop_predict.records.features import (
    QUERY_DIM,
    SEQ_DIM,
    SEQ_NAMES,
    STATIC_DIM,
    STATIC_NAMES,
    encode_query,
    encode_sequence,
    forward_fill,
)
from earlystop_predict.training.data import (
    MAX_HORIZON,
    CurveBatch,
    ForecastRows,
    Part,
    Source,
    fit_post,
    slice_batch,
)

torch = require("torch", extra="train")
nn = torch.nn


class LSTMNet(nn.Module):
    """Torch twin of :class:`earlystop_predict.forecast.lstm.LSTMWeights` (same maths)."""

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

    @classmethod
    def from_weights(cls, w: LSTMWeights) -> LSTMNet:
        """The torch net holding numpy weights (to fine-tune a shipped model)."""
        a = w.p
        net = cls(hidden=a["W_hh"].shape[1], head=a["W1"].shape[0])

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(x, dtype=np.float32).copy())

        with torch.no_grad():
            net.init.weight.copy_(t(a["W_s"]))
            net.init.bias.copy_(t(a["b_s"]))
            net.lstm.weight_ih_l0.copy_(t(a["W_ih"]))
            net.lstm.weight_hh_l0.copy_(t(a["W_hh"]))
            net.lstm.bias_ih_l0.copy_(t(a["b"]))
            net.lstm.bias_hh_l0.zero_()
            for name in ("l1", "l2", "l3"):
                layer = getattr(net, name)
                layer.weight.copy_(t(a[f"W{name[1]}"]))
                layer.bias.copy_(t(a[f"b{name[1]}"]))
        return net

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
    """Torch version of :func:`earlystop_predict.forecast.lstm.head_transform`."""
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
    y: np.ndarray        # (B, L) value at the target epoch (clean for LCBench)
    valid: np.ndarray    # (B, L) bool


def positions(batch: CurveBatch, rng: np.random.Generator | None,
              fixed_target: int | str | None = None) -> PositionBatch:
    """Expand curves to (prefix, target) samples: random M, or ``fixed_target`` (an
    epoch, or ``"end"`` for each curve's planned last epoch)."""
    b, L = batch.target.shape
    T = batch.horizon
    L = int(min(L, T.max()))
    tgt = batch.target[:, :L]
    nan = np.full_like(tgt, np.nan)
    epoch = np.tile(np.arange(1, L + 1, dtype=np.float64), (b, 1))
    seq = encode_sequence(
        tgt, batch.val_loss[:, :L],
        nan if batch.train_acc is None else batch.train_acc[:, :L],
        nan if batch.train_loss is None else batch.train_loss[:, :L],
        epoch, T.astype(np.float64))
    E = epoch
    if fixed_target == "end":
        M = np.broadcast_to(T[:, None].astype(np.float64), E.shape)
    elif fixed_target is not None:
        M = np.full_like(E, float(fixed_target))
    else:
        assert rng is not None
        u = rng.random(E.shape)
        span = np.maximum(T[:, None] - E, 1)
        M = np.where(rng.random(E.shape) < 0.5, T[:, None].astype(np.float64),
                     E + 1 + np.floor(u * span))
        M = np.minimum(M, T[:, None])
    filled = np.nan_to_num(forward_fill(tgt))
    best = np.maximum.accumulate(filled, axis=1)
    csum = np.cumsum(filled, axis=1)
    prev3 = np.concatenate([np.zeros((b, 3)), csum[:, :-3]], axis=1)[:, :L]
    mean3 = (csum - prev3) / np.minimum(E, 3)
    q = encode_query(E, M, np.broadcast_to(T[:, None], E.shape), filled, best, mean3)
    Mi = np.clip(M.astype(np.int64) - 1, 0, batch.clean.shape[1] - 1)
    y = np.take_along_axis(batch.clean, Mi, axis=1)
    valid = ((E < T[:, None]) & (M > E) & (M <= T[:, None]) & np.isfinite(y)
             & (E <= batch.recorded[:, None]) & np.isfinite(tgt))
    return PositionBatch(seq=seq, static=batch.static.astype(np.float32), query=q,
                         y=np.nan_to_num(y).astype(np.float32), valid=valid)


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


def end_positions(source: Source, rows: np.ndarray,
                  chunk: int = 1024) -> Iterator[tuple[PositionBatch, np.ndarray]]:
    """Un-augmented curves of ``rows`` with every prefix aimed at the planned end."""
    for start in range(0, len(rows), chunk):
        batch = source.sample(rows[start:start + chunk], np.random.default_rng(1),
                              augment=False)
        yield positions(batch, None, fixed_target="end"), batch.horizon


def eval_mae(net: LSTMNet, parts: Sequence[Part],
             fractions: tuple[float, ...] = (0.1, 0.2, 0.4)) -> float:
    """MAE forecasting the planned end from 10, 20 and 40 % observed, averaged over
    ``parts`` (each source weighs the same, however many rows it has)."""
    maes = []
    for source, rows in parts:
        errs = []
        for pb, T in end_positions(source, rows):
            mean, _ = predict_positions(net, pb)
            for f in fractions:
                idx = np.maximum(np.round(f * T).astype(np.int64), 1) - 1
                r = np.arange(len(T))
                ok = pb.valid[r, idx]
                errs.append(np.abs(mean[r, idx] - pb.y[r, idx])[ok])
        maes.append(float(np.concatenate(errs).mean()))
    return float(np.mean(maes))


def calibration_rows(net: LSTMNet, source: Source, rows: np.ndarray) -> ForecastRows:
    """Raw forecasts of every prefix of ``rows`` aimed at the planned end, with the
    outcomes: what the interval factors and the shrinkage are fitted on."""
    out = []
    for pb, _ in end_positions(source, rows):
        mean, q = predict_positions(net, pb)
        v = pb.valid
        out.append(ForecastRows(q=q[v].astype(np.float64), mean=mean[v].astype(np.float64),
                                y=pb.y[v].astype(np.float64),
                                frac=pb.query[..., OBSERVED_FRAC][v].astype(np.float64),
                                last=pb.query[..., LAST][v].astype(np.float64)))
    return ForecastRows.concat(out)


def fit_calibration(net: LSTMNet, parts: Sequence[Part],
                    shrink: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(interval factors per bin, mean shrinkage per bin) fitted on curves held aside
    from training, every source weighing the same (see :func:`.data.fit_post`)."""
    return fit_post([calibration_rows(net, s, r) for s, r in parts], shrink=shrink)


def _chunks(parts: Sequence[Part], batch_size: int,
            rng: np.random.Generator) -> list[tuple[Source, np.ndarray]]:
    chunk = batch_size * 16
    out = []
    for source, rows in parts:
        perm = rng.permutation(rows)
        out += [(source, perm[i:i + chunk]) for i in range(0, len(perm), chunk)]
    return [out[j] for j in rng.permutation(len(out))]


def _sorted_batches(parts: Sequence[Part], batch_size: int,
                    rng: np.random.Generator) -> Iterator[PositionBatch]:
    """Augmented batches grouped by horizon, so each is padded only to its own longest;
    each batch is from one source, the sources interleaved at random."""
    for source, rows in _chunks(parts, batch_size, rng):
        cb = source.sample(rows, rng)
        order = np.argsort(cb.horizon, kind="stable")
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for j in rng.permutation(len(groups)):
            yield positions(slice_batch(cb, groups[j]), rng)


def n_batches(parts: Sequence[Part], batch_size: int) -> int:
    """Batches per epoch of :func:`_sorted_batches`."""
    chunk = batch_size * 16
    total = 0
    for _, rows in parts:
        full, rest = divmod(len(rows), chunk)
        total += full * 16 + int(np.ceil(rest / batch_size))
    return total


def train_lstm(parts: Sequence[Part], val: Sequence[Part], *, epochs: int = 30,
               batch_size: int = 128, lr: float = 3e-3, seed: int = 0, hidden: int = 64,
               init: LSTMNet | None = None, progress: Callable[[str], None] | None = None,
               threads: int | None = None) -> tuple[LSTMNet, dict[str, float]]:
    """Train on ``parts`` (augmented) and keep the best epoch on ``val`` (MAE).
    ``init`` starts from given weights (fine-tuning) instead of random ones, and
    is itself a candidate: the weights returned are never worse on ``val``."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2)))
    rng = np.random.default_rng(seed)
    net = init if init is not None else LSTMNet(hidden=hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * n_batches(parts, batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps + 1,
                                                pct_start=0.1)
    best: tuple[float, Any] = (np.inf, None)
    if init is not None:
        net.eval()
        best = (eval_mae(net, val), {k: v.clone() for k, v in net.state_dict().items()})
    bar = _progress_bar(steps)
    for ep in range(epochs):
        net.train()
        total = 0.0
        for pb in _sorted_batches(parts, batch_size, rng):
            loss = _loss(net, pb)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.update(1)
        net.eval()
        mae = eval_mae(net, val)
        if mae < best[0]:
            best = (mae, {k: v.clone() for k, v in net.state_dict().items()})
        msg = f"lstm epoch {ep + 1}/{epochs} loss {total:.3f} val MAE {mae:.4f}"
        bar.set_postfix_str(msg)
        if progress:
            progress(msg)
    bar.close()
    net.load_state_dict(best[1])
    return net, {"val_mae": best[0]}


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


def save_lstm(net: LSTMNet, calibration: np.ndarray, path: str | os.PathLike[str],
              shrink: np.ndarray | None = None) -> None:
    """Write ``lstm.npz``: weights, calibration, shrinkage, feature layout and range."""
    arrays = net.export()
    if shrink is not None:
        arrays["shrink"] = np.asarray(shrink, dtype=np.float64)
    np.savez_compressed(
        path, **arrays, calibration=np.asarray(calibration, dtype=np.float64),
        max_target_epoch=np.int64(MAX_HORIZON), max_observed_epochs=np.int64(MAX_HORIZON - 1),
        seq_names=np.array(SEQ_NAMES), static_names=np.array(STATIC_NAMES),
        quantiles=np.array(QUANTILES))
    LSTMWeights.load(path)  # round-trip check
