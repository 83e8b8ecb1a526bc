"""The LSTM accModel, inference in pure numpy.

The network reads the observed epochs (target metric, validation loss, train
accuracy and loss, each with a mask; epoch position absolute and relative to
the planned epochs), starts from a hidden state computed from the encoded
hyperparameters and meta, and a small head maps the last hidden state, the
static vector and the query (E, M, last/best values) to a mean and monotone
quantiles. Weights are trained with torch (:mod:`earlystop_predict.training`)
and shipped as ``lstm.npz``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from earlystop_predict.errors import ModelArtifactError
from earlystop_predict.forecast import calibration
from earlystop_predict.forecast.base import (
    Forecast,
    Forecaster,
    as_record,
    as_records,
    forecasts_from_arrays,
)
from earlystop_predict.records.features import (
    QUERY_DIM,
    QUERY_NAMES,
    SEQ_NAMES,
    STATIC_DIM,
    STATIC_NAMES,
    canonical_metric,
    encode_query,
    encode_sequence,
    forward_fill,
    prefix_stats,
    static_vector,
)
from earlystop_predict.records.record import RunRecord, finite_or_none

#: Metrics the LSTM was trained on (accuracy-like fractions).
KNOWN_METRICS = ("val_accuracy", "val_balanced_accuracy")
_WEIGHTS = ("W_s", "b_s", "W_ih", "W_hh", "b", "W1", "b1", "W2", "b2", "W3", "b3")
LAST = QUERY_NAMES.index("last")
CHUNK = 2048  # records per forward pass in forecast_many
OBSERVED_FRAC = QUERY_NAMES.index("observed_frac")


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def head_transform(out: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw head outputs ``(B, 6)`` -> mean ``(B,)`` and quantiles ``(B, 5)`` (0.1..0.9).

    Output 0 is the mean's and 1 the median's offset from the last observed value;
    2..5 are gaps (through softplus, so quantiles never cross).
    """
    mean = last + out[:, 0]
    q50 = last + out[:, 1]
    q25 = q50 - _softplus(out[:, 2])
    q10 = q25 - _softplus(out[:, 3])
    q75 = q50 + _softplus(out[:, 4])
    q90 = q75 + _softplus(out[:, 5])
    return mean, np.stack([q10, q25, q50, q75, q90], axis=1)


def _check_shapes(p: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the weights are finite and fit together."""
    hid = p["W_hh"].shape[-1] if p["W_hh"].ndim == 2 else -1
    d1 = p["W1"].shape[0] if p["W1"].ndim == 2 else -1
    d2 = p["W2"].shape[0] if p["W2"].ndim == 2 else -1
    want = {"W_s": (hid, STATIC_DIM), "b_s": (hid,), "W_ih": (4 * hid, len(SEQ_NAMES)),
            "W_hh": (4 * hid, hid), "b": (4 * hid,), "W1": (d1, hid + STATIC_DIM + QUERY_DIM),
            "b1": (d1,), "W2": (d2, d1), "b2": (d2,), "W3": (6, d2), "b3": (6,)}
    for k, shape in want.items():
        if p[k].shape != shape or min(shape) < 1:
            raise ValueError(f"array {k} has shape {p[k].shape}, expected {shape}")
        if not np.isfinite(p[k]).all():
            raise ValueError(f"array {k} holds values that are not finite")


def _count(arrays: dict[str, np.ndarray], key: str, default: int) -> int:
    """A positive integer stored as a 0-d array (ValueError otherwise)."""
    value = np.asarray(arrays.get(key, default))
    if value.shape != () or not np.isfinite(value) or int(value) < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


class LSTMWeights:
    """The numpy weights of the LSTM accModel and its trained range."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [k for k in _WEIGHTS if k not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        self.p = {k: np.asarray(arrays[k], dtype=np.float64) for k in _WEIGHTS}
        _check_shapes(self.p)
        self.hidden = self.p["W_hh"].shape[1]
        self.max_target = _count(arrays, "max_target_epoch", 120)
        self.max_observed = _count(arrays, "max_observed_epochs", self.max_target - 1)
        self.calib = calibration.as_table(arrays.get("calibration", (1.0, 1.0)))
        self.shrink = calibration.as_shrink(arrays.get("shrink"))
        if tuple(str(s) for s in arrays.get("seq_names", SEQ_NAMES)) != SEQ_NAMES or \
                tuple(str(s) for s in arrays.get("static_names", STATIC_NAMES)) != STATIC_NAMES:
            raise ValueError("feature layout differs from this version of earlystop_predict")
        # Hot-loop layout, float32: input and hidden weights stacked (one matmul per
        # step), gate columns reordered from torch's (i, f, g, o) to (i, f, o, g), and
        # the i, f, o columns scaled by 1/2 so that one tanh serves every gate:
        # sigmoid(x) = (tanh(x / 2) + 1) / 2.
        H = self.hidden
        perm = np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H),
                               np.arange(2 * H, 3 * H)])
        gate = np.full(4 * H, 0.5)
        gate[3 * H:] = 1.0
        f32 = np.float32
        W = np.concatenate([self.p["W_ih"].T, self.p["W_hh"].T], axis=0)[:, perm] * gate
        self._W = np.ascontiguousarray(W, dtype=f32)
        self._n_in = F = self.p["W_ih"].shape[1]
        self._W_x = np.ascontiguousarray(self._W[:F])  # single-sequence path
        self._W_h = np.ascontiguousarray(self._W[F:])
        self._b = (self.p["b"][perm] * gate).astype(f32)
        self._head = [(self.p[f"W{i}"].T.astype(f32), self.p[f"b{i}"].astype(f32))
                      for i in (1, 2, 3)]
        self._W_s = self.p["W_s"].T.astype(f32)
        self._b_s = self.p["b_s"].astype(f32)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMWeights:
        """Load ``lstm.npz`` (no pickle), checking every array's shape and values.

        Raises:
            ModelArtifactError: not an npz (truncated, damaged), an array missing, of
                the wrong shape or not finite (names the file).
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls({k: z[k] for k in z.files})
        except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib, EOF, shape, dtype...
            raise ModelArtifactError(path, f"not a valid LSTM weight file: "
                                           f"{type(exc).__name__}: {exc}") from None

    def forward(self, seq: np.ndarray, static: np.ndarray, query: np.ndarray,
                lengths: np.ndarray) -> np.ndarray:
        """Raw head outputs ``(B, 6)`` (float64) for padded sequences ``(B, L, F)``.

        Rows are run longest first so that each step computes only the sequences
        still going: the work is the sum of the lengths, not batch x longest.
        """
        f32 = np.float32
        static = static.astype(f32)
        if len(lengths) == 1:  # one forecast (the callbacks' case): fewest numpy calls
            h, _ = self.advance(self.initial_state(static[0]), seq[0, :int(lengths[0])])
            return self.head(h[None], static, query)
        order = np.argsort(-lengths, kind="stable")
        lens = lengths[order]
        h = np.tanh(static[order] @ self._W_s + self._b_s)
        L = int(lens[0])
        # Time-major inputs: step t reads a contiguous (B, F) block.
        xs = np.ascontiguousarray(seq[order, :L].transpose(1, 0, 2), dtype=f32)
        out = np.empty_like(h)
        out[order] = self._run(xs, h, lens)
        return self.head(out, static, query)

    def initial_state(self, static: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The recurrence's state ``(h, c)`` before the first epoch, from one encoded
        static vector ``(STATIC_DIM,)``."""
        h = np.tanh(static.astype(np.float32)[None] @ self._W_s + self._b_s)[0]
        return h, np.zeros(self.hidden, dtype=np.float32)

    def advance(self, state: tuple[np.ndarray, np.ndarray],
                xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step one sequence's state ``(h, c)`` over its next epochs' inputs ``(k, F)``
        (k >= 0); returns the new state. Stepping a prefix and then the rest gives
        the state of one pass over the whole sequence."""
        h, c = state
        if not len(xs):
            return h, c
        H = self.hidden
        W_h = self._W_h
        for x in np.asarray(xs, dtype=np.float32) @ self._W_x + self._b:
            g = np.tanh(h @ W_h + x)
            s = g[:3 * H] * 0.5 + 0.5  # i, f, o as sigmoids; g[3H:] is the cell input
            c = s[H:2 * H] * c + s[:H] * g[3 * H:]
            h = s[2 * H:] * np.tanh(c)
        return h, c

    def head(self, hidden: np.ndarray, static: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Raw outputs ``(B, 6)`` (float64) from last hidden states ``(B, H)``, encoded
        static vectors ``(B, STATIC_DIM)`` and queries ``(B, QUERY_DIM)``."""
        f32 = np.float32
        z = np.concatenate([hidden, static.astype(f32), query.astype(f32)], axis=1)
        (W1, b1), (W2, b2), (W3, b3) = self._head
        z = np.maximum(z @ W1 + b1, 0.0)
        z = np.maximum(z @ W2 + b2, 0.0)
        return (z @ W3 + b3).astype(np.float64)

    def _run(self, xs: np.ndarray, h: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The recurrence for rows sorted longest first; last hidden state of each row.

        Per step: one matmul of ``[x_t, h]`` with the stacked weights, one tanh for
        all gates (in place), then the cell update on the rows still going.
        """
        H, F = self.hidden, self._n_in
        B = len(lens)
        last = np.empty_like(h)
        # Rows still going at step t (lengths sorted longest first): the first active[t].
        active = B - np.searchsorted(lens[::-1], np.arange(xs.shape[0]), side="right")
        xh = np.empty((B, F + H), dtype=np.float32)
        xh[:, F:] = h
        c = np.zeros((B, H), dtype=np.float32)
        g_buf = np.empty((B, 4 * H), dtype=np.float32)
        for t in range(xs.shape[0]):
            n = int(active[t])
            xh_n = xh[:n]
            xh_n[:, :F] = xs[t, :n]
            g = g_buf[:n]
            np.matmul(xh_n, self._W, out=g)
            g += self._b
            np.tanh(g, out=g)
            s = g[:, :3 * H]
            s *= 0.5
            s += 0.5  # i, f, o as sigmoids; g[:, 3H:] is the cell input
            cn = c[:n]
            cn *= s[:, H:2 * H]
            cn += s[:, :H] * g[:, 3 * H:]
            np.multiply(s[:, 2 * H:], np.tanh(cn), out=xh_n[:, F:])
            done = lens[:n] == t + 1
            if done.any():
                last[:n][done] = xh_n[done, F:]
        return last


_COLUMNS = ("val_loss", "train_accuracy", "train_loss")
_NAN = float("nan")


def _values(records: Sequence[RunRecord]) -> np.ndarray:
    """Every epoch row of every record as ``(rows, 5)``: epoch, target metric and
    :data:`_COLUMNS`, NaN where missing or not finite (one pass, one array)."""
    nan = float("nan")
    flat: list[Any] = []
    for r in records:
        keys = ("epoch", r.metric) + _COLUMNS
        flat += [row.get(k, nan) for row in r.epochs for k in keys]
    try:  # numbers only (the usual case): one C loop, no per-item type dispatch
        vals = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(
            -1, 2 + len(_COLUMNS))
    except (TypeError, ValueError):  # a None or a stray string somewhere: per-record path
        vals = np.concatenate([r.matrix(("epoch", r.metric) + _COLUMNS) for r in records]
                              + [np.empty((0, 2 + len(_COLUMNS)))])
    vals[~np.isfinite(vals)] = np.nan
    return vals


def _planned(records: Sequence[RunRecord], targets: Sequence[int]) -> np.ndarray:
    """Planned epochs per record: ``meta["max_epochs"]`` where given, else the target."""
    max_ep = np.asarray(targets, dtype=np.float64).copy()
    for i, rec in enumerate(records):
        planned = rec.meta.get("max_epochs")
        if planned:
            try:
                max_ep[i] = float(planned)
            except (TypeError, ValueError):
                pass
    return max_ep


def _encode(cols: np.ndarray, epoch: np.ndarray, lengths: np.ndarray, targets: np.ndarray,
            max_ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seq, query) from padded ``(B, L, 4)`` metric columns and ``(B, L)`` epochs."""
    n = len(lengths)
    target = cols[:, :, 0]
    seq = encode_sequence(target, cols[:, :, 1], cols[:, :, 2], cols[:, :, 3], epoch, max_ep)
    last, best, mean3 = prefix_stats(target, lengths)
    observed = epoch[np.arange(n), lengths - 1]
    query = encode_query(observed, targets, max_ep, last, best, mean3)
    return seq, query


def prepare(records: Sequence[RunRecord], targets: Sequence[int]) -> dict[str, np.ndarray]:
    """Pad and encode records for the LSTM: seq, static, query and lengths."""
    n = len(records)
    counts = np.fromiter((len(r.epochs) for r in records), dtype=np.int64, count=n)
    lengths = np.maximum(counts, 1)
    L = int(lengths.max())
    vals = _values(records)
    rows = np.repeat(np.arange(n), counts)
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = np.full((n, L, 1 + len(_COLUMNS)), np.nan)
    cols[rows, pos] = vals[:, 1:]
    epoch = np.tile(np.arange(1, L + 1, dtype=np.float64), (n, 1))
    epoch[rows, pos] = vals[:, 0]
    max_ep = _planned(records, targets)
    static = np.array([static_vector(rec.hparams, rec.meta) for rec in records],
                      dtype=np.float64).reshape(n, STATIC_DIM)
    seq, query = _encode(cols, epoch, lengths, np.asarray(targets, dtype=np.float64), max_ep)
    return {"seq": seq, "static": static, "query": query, "lengths": lengths}


_DELTA, _DRAW = SEQ_NAMES.index("target_delta"), SEQ_NAMES.index("target_drawdown")


class _RunState:
    """What the LSTM keeps of one run between calls, for one encoding key (metric,
    planned epochs, static vector): how many epochs it has read, the first and last
    row as they were, the recurrence's state after them, and what the encoding of
    the next rows carries over (the last forward-filled target, the best raw and
    filled targets, the last three filled targets, the last epoch number)."""

    __slots__ = ("key", "n", "first", "last", "state", "filled", "best_raw", "best_filled",
                 "tail", "epoch")

    def __init__(self, key: tuple[Any, ...], state: tuple[np.ndarray, np.ndarray]) -> None:
        self.key, self.state = key, state
        self.n = 0
        self.first: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.filled, self.best_raw, self.best_filled = 0.0, -math.inf, -math.inf
        self.tail = np.empty(0)
        self.epoch = 1.0

    def copy(self) -> _RunState:
        """A shallow copy (its arrays are never written in place)."""
        new = _RunState.__new__(_RunState)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    def extended_by(self, key: tuple[Any, ...], epochs: list[dict[str, Any]]) -> bool:
        """Whether ``epochs`` continue what this state has read, under the same key."""
        n = self.n
        return (key == self.key and len(epochs) >= n
                and (n == 0 or (epochs[n - 1] == self.last and epochs[0] == self.first)))

    def read(self, vals: np.ndarray, max_ep: np.ndarray) -> np.ndarray:
        """Encode the next rows ``vals`` ``(k, 5)`` (k >= 1) as the whole sequence's
        encoding would (:func:`~earlystop_predict.records.features.encode_sequence`),
        update what is carried over, and return their inputs ``(k, SEQ_DIM)``."""
        target = vals[:, 1]
        seq = encode_sequence(target[None], vals[None, :, 2], vals[None, :, 3],
                              vals[None, :, 4], vals[None, :, 0], max_ep)[0]
        # The two inputs that look back: delta and drawdown, from the carried state.
        filled = forward_fill(np.concatenate([[self.filled], target])[None])[0]
        prev, filled = (filled[:-1] if self.n else np.concatenate([filled[1:2], filled[1:-1]]),
                        filled[1:])
        best = np.maximum.accumulate(np.concatenate(
            [[self.best_raw], np.where(np.isfinite(target), target, -np.inf)]))[1:]
        seq[:, _DELTA] = np.where(np.isfinite(target), filled - prev, 0.0) * 10.0
        seq[:, _DRAW] = np.where(np.isfinite(best), best - filled, 0.0) * 10.0
        self.n += len(vals)
        self.filled, self.best_raw = float(filled[-1]), float(best[-1])
        self.best_filled = max(self.best_filled, float(filled.max()))
        self.tail = np.concatenate([self.tail, filled])[-3:]
        self.epoch = float(vals[-1, 0])
        return seq

    def query(self, target: float, max_ep: np.ndarray) -> np.ndarray:
        """The query features ``(1, QUERY_DIM)`` after the rows read."""
        tail = np.zeros(3)
        tail[3 - len(self.tail):] = self.tail  # what prefix_stats sums: zeros, then values
        mean3 = np.array([tail.sum() / min(self.n, 3)])
        return encode_query(np.array([self.epoch]), np.array([target]), max_ep,
                            np.array([self.filled]), np.array([self.best_filled]), mean3)


class RunCache:
    """A bounded, thread-safe LRU of :class:`_RunState` by run id.

    Args:
        size: runs kept (the least recently forecast is dropped first); 0 keeps none.
    """

    def __init__(self, size: int) -> None:
        self.size = max(int(size), 0)
        self._runs: OrderedDict[str, _RunState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> _RunState | None:
        with self._lock:
            got = self._runs.get(run_id)
            if got is not None:
                self._runs.move_to_end(run_id)
            return got

    def put(self, run_id: str, state: _RunState) -> None:
        with self._lock:
            self._runs[run_id] = state
            self._runs.move_to_end(run_id)
            while len(self._runs) > self.size:
                self._runs.popitem(last=False)

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._runs)

    def __getstate__(self) -> dict[str, int]:
        """Pickled empty (a lock cannot be pickled; the states are a cache): a forecaster
        sent to another process, as Ray Tune does with its scheduler, starts afresh."""
        return {"size": self.size}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["size"])

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()


def _row_values(metric: str, rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Epoch rows as ``(len(rows), 5)`` (as :func:`_values` does for whole records)."""
    keys = ("epoch", metric) + _COLUMNS
    flat = [row.get(k, _NAN) for row in rows for k in keys]
    try:
        vals = np.fromiter(flat, dtype=np.float64, count=len(flat))
    except (TypeError, ValueError):  # a None or a stray string: one by one
        vals = np.array([v if (v := finite_or_none(x)) is not None else _NAN for x in flat],
                        dtype=np.float64)
    vals = vals.reshape(len(rows), len(keys))
    vals[~np.isfinite(vals)] = np.nan
    return vals


class LSTMForecaster(Forecaster):
    """The LSTM accModel (numpy inference). Use :func:`earlystop_predict.load_model`."""

    name = "lstm"
    #: Runs whose recurrence state is kept between calls (see :class:`RunCache`).
    CACHE_SIZE = 2048

    def __init__(self, weights: LSTMWeights, manifest: dict[str, Any] | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        """
        Args:
            weights: the network.
            manifest: the model directory's manifest. Default: empty.
            cache_size: runs whose state is kept between single-run forecasts, >= 0
                (0: every call runs the whole sequence). Default :attr:`CACHE_SIZE`.
        """
        self.weights = weights
        self.manifest = manifest or {}
        self.cache = RunCache(cache_size)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str],
                 manifest: dict[str, Any]) -> LSTMForecaster:
        """Load ``lstm`` from a model directory (checksum checked)."""
        from earlystop_predict.forecast.artifacts import artifact_path

        path = artifact_path(directory, manifest, "lstm")
        return cls(LSTMWeights.load(path), manifest)

    def cannot_serve(self, record: RunRecord, target_epoch: int) -> str:
        """Why this model cannot serve the query, or ``""`` if it can."""
        record = as_record(record)
        w = self.weights
        metric, eps = record.metric, record.epochs
        if canonical_metric(metric) not in KNOWN_METRICS or record.mode != "max":
            return f"metric {metric!r} unknown to lstm (knows {', '.join(KNOWN_METRICS)})"
        if not eps:
            return "no observed epochs"
        last = eps[-1].get(metric)  # usually finite: no need to scan every row
        if not (type(last) is float and math.isfinite(last)) and not record.has_finite(metric):
            return "no finite value of the target metric observed"
        if target_epoch > w.max_target:
            return f"target epoch {target_epoch} beyond lstm's trained range (<= {w.max_target})"
        if len(eps) > w.max_observed:
            return (f"{len(eps)} observed epochs beyond lstm's trained range "
                    f"(<= {w.max_observed})")
        if target_epoch <= record.last_epoch:
            return f"target epoch {target_epoch} not after last observed {record.last_epoch}"
        return ""

    def predict_arrays(self, records: Sequence[RunRecord],
                       targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean (B,), quantiles (B, 5)) for records the model can serve (one pass
        over each whole sequence; the run cache is neither read nor written)."""
        x = prepare(records, targets)
        out = self.weights.forward(x["seq"], x["static"], x["query"], x["lengths"])
        return self._finish(out, x["query"])

    def _finish(self, out: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head outputs -> shrunk, calibrated and clipped (mean, quantiles)."""
        last, frac = query[:, LAST], query[:, OBSERVED_FRAC]
        mean, q = head_transform(out, last)
        mean, q = calibration.shrink(mean, q, last, frac, self.weights.shrink)
        q = calibration.apply(q, frac, self.weights.calib)
        return np.minimum(np.maximum(mean, 0.0), 1.0), np.minimum(np.maximum(q, 0.0), 1.0)

    def predict_one(self, record: RunRecord, target: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_arrays` of one run, stepping the recurrence only over the
        epochs added since this run was last forecast.

        The run's state is kept by ``run_id`` while its epochs extend what was read
        (the first and last rows read are unchanged) under the same metric, planned
        epochs and hyperparameters; anything else (a resume that replays or trims
        epochs, changed hparams) reads the whole sequence again and keeps that.
        """
        eps = record.epochs
        if not eps:
            return self.predict_arrays([record], [target])
        w = self.weights
        max_ep = _planned([record], [target])
        static = static_vector(record.hparams, record.meta)
        key = (record.metric, float(max_ep[0]), static.tobytes())
        run = self.cache.get(record.run_id)
        if run is None or not run.extended_by(key, eps):
            run = _RunState(key, w.initial_state(static))
        if len(eps) > run.n:  # rows since the last call: converted, encoded, stepped once
            run = run.copy()  # the cached one stays as it was for any other caller
            xs = run.read(_row_values(record.metric, eps[run.n:]), max_ep)
            run.state = w.advance(run.state, xs)
            run.first, run.last = dict(eps[0]), dict(eps[-1])
            self.cache.put(record.run_id, run)
        query = run.query(float(target), max_ep)
        state = run.state
        out = w.head(state[0][None], static[None], query)
        return self._finish(out, query)

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        records = as_records(records)
        targets = self._targets(records, target_epoch)
        if len(records) == 1 and self.cache.size:  # the callbacks' case: incremental
            mean, q = self.predict_one(records[0], targets[0])
            return forecasts_from_arrays(records, targets, mean, q, self.name, (0.0, 1.0))
        chunks = [(records[i:i + CHUNK], targets[i:i + CHUNK])
                  for i in range(0, len(records), CHUNK)]  # bounded memory for huge batches

        def one(chunk: tuple[Sequence[RunRecord], list[int]]) -> list[Forecast]:
            mean, q = self.predict_arrays(*chunk)
            return forecasts_from_arrays(chunk[0], chunk[1], mean, q, self.name, (0.0, 1.0))

        if len(chunks) < 2:
            return [fc for c in chunks for fc in one(c)]
        # Large batches: two chunks in flight, so that one's numpy recurrence (which
        # releases the GIL) overlaps the other's Python-side encoding. BLAS runs on
        # one thread meanwhile: its idle threads would spin on the core the other
        # chunk's Python needs (1.6x the throughput on 2 cores).
        from concurrent.futures import ThreadPoolExecutor

        with _one_blas_thread(), _gc_paused(), \
                ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            return [fc for part in pool.map(one, chunks) for fc in part]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large batch builds its forecasts:
    tens of thousands of new objects would otherwise set off full collections that
    walk every record in memory (none of these objects form cycles)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_BLAS: list[Any] = []  # the threadpoolctl controller, made on first use


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread (threadpoolctl); a no-op if
    threadpoolctl cannot say which BLAS is loaded."""
    try:
        if not _BLAS:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        return _BLAS[0].limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001 - speed only: never fail a forecast over it
        return contextlib.nullcontext()
