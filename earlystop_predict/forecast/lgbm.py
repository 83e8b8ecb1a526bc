"""The LightGBM fallback accModel: quantile boosters on engineered curve features.

It serves whenever the LSTM cannot: its artifact is missing or corrupt, E or M
lie outside the LSTM's trained range, the metric is one the LSTM does not know,
or the user asks for it. It knows accuracy-like metrics (fractions, ``mode="max"``)
and loss-like ones (``mode="min"``, modelled in log space).

Features: last, best, first, mean of the last three, slopes over 1/3/5
epochs, curvature, recent noise, E, M, planned epochs and their ratios, and
the encoded hyperparameters (NaN where missing: LightGBM routes missing values
itself, nothing is zero-filled).
"""

from __future__ import annotations

import ctypes
import gzip
import json
import math
import os
import threading
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from earlystop_predict.errors import ForecastUnavailableError, ModelArtifactError
from earlystop_predict.forecast import calibration as calib
from earlystop_predict.forecast.base import (
    QUANTILES,
    Forecast,
    Forecaster,
    as_record,
    as_records,
    forecasts_from_arrays,
    qkey,
)
from earlystop_predict.records.features import STATIC_DIM, STATIC_NAMES, forward_fill, record_static
from earlystop_predict.records.record import RunRecord, is_accuracy_like

HEADER = "# earlystop_predict-lgbm "
SEPARATOR = "### earlystop_predict booster "
BOOSTERS = ("mean",) + tuple(qkey(q) for q in QUANTILES)
CURVE_NAMES = ("kind", "last", "best_max", "best_min", "first", "mean_last3", "slope1",
               "slope3", "slope5", "curvature", "noise", "observed", "target", "planned",
               "observed_frac", "target_frac", "gap_frac", "log_ratio", "n_rows")
N_NUMERIC_STATIC = STATIC_NAMES.index("optimizer=sgd") // 2
FEATURE_NAMES = CURVE_NAMES + STATIC_NAMES[:N_NUMERIC_STATIC] + STATIC_NAMES[2 * N_NUMERIC_STATIC:]
#: Features of a run's other curves (validation loss, training accuracy and loss, NaN
#: where not recorded). The history model of a fine-tuned directory uses them; the
#: bundled fallback does not, as most of its training curves (LCBench) lack them.
AUX_NAMES = ("val_loss_last", "val_loss_slope3", "val_loss_best", "train_acc_last",
             "train_val_gap", "train_loss_last", "train_loss_slope3")


def metric_kind(record: RunRecord) -> int | None:
    """0 for accuracy-like (max, fractions), 1 for loss-like (min, positive), else None."""
    if record.mode == "min":
        return 1
    if is_accuracy_like(record.metric):
        return 0
    ys = record.series(record.metric)
    ys = ys[np.isfinite(ys)]
    return 0 if ys.size and ys.min() >= 0 and ys.max() <= 1 else None


def to_space(y: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Accuracy as is; loss as log(loss)."""
    k = np.asarray(kind).reshape(-1, *([1] * (np.ndim(y) - 1)))
    return np.where(k == 1, np.log(np.clip(y, 1e-6, None)), y)


#: Log-losses are clipped to +-this before :func:`from_space` exponentiates them.
LOG_CLIP = 30.0


def from_space(v: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_space`, accuracies clipped to [0, 1]."""
    k = np.asarray(kind).reshape(-1, *([1] * (np.ndim(v) - 1)))
    return np.where(k == 1, np.exp(np.clip(v, -LOG_CLIP, LOG_CLIP)), np.clip(v, 0.0, 1.0))


def from_space_one(v: float, kind: int) -> float:
    """:func:`from_space` of one value (a callback's forecast: no arrays)."""
    if kind == 1:
        return math.exp(min(max(v, -LOG_CLIP), LOG_CLIP))
    return min(max(v, 0.0), 1.0)


def _at(filled: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # minimum/maximum, not np.clip: the same indices, at a fraction of the cost on the
    # one-row matrices of a callback's forecast
    return filled[np.arange(filled.shape[0]), np.minimum(np.maximum(idx, 0), filled.shape[1] - 1)]


def curve_features(y: np.ndarray, n_obs: np.ndarray, last_epoch: np.ndarray,
                   target: np.ndarray, planned: np.ndarray, static: np.ndarray,
                   kind: np.ndarray) -> np.ndarray:
    """Feature matrix ``(B, len(FEATURE_NAMES))`` from padded curves ``y`` (B, L).

    ``y`` is already in model space (:func:`to_space`), NaN where missing; row b
    holds ``n_obs[b]`` observed rows. ``static`` is :func:`encode_static` output.
    """
    b, L = y.shape
    cols = np.arange(L)[None, :]
    inside = cols < n_obs[:, None]
    yy = np.where(inside, y, np.nan)
    finite = np.isfinite(yy)
    filled = forward_fill(yy, leading=np.nan)
    first_idx = np.argmax(finite, axis=1)
    first = _at(np.where(finite, yy, np.nan), first_idx)
    n = n_obs
    last = _at(filled, n - 1)

    def back(k: int) -> np.ndarray:
        prev = _at(filled, np.maximum(n - 1 - k, 0))
        steps = np.minimum(k, np.maximum(n - 1, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(steps > 0, (last - prev) / np.maximum(steps, 1), 0.0)

    s1, s3, s5 = back(1), back(3), back(5)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: one epoch seen
        best_max = np.nanmax(np.where(finite, yy, -np.inf), axis=1)
        best_min = np.nanmin(np.where(finite, yy, np.inf), axis=1)
        last3 = np.where(inside & (cols >= (n - 3)[:, None]), filled, np.nan)
        mean3 = np.nanmean(last3, axis=1)
        d = np.diff(np.where(inside & (cols >= (n - 6)[:, None]), filled, np.nan), axis=1)
        noise = np.nan_to_num(np.nanstd(d, axis=1))
    t = target.astype(np.float64)
    e = last_epoch.astype(np.float64)
    p = planned.astype(np.float64)
    curve = np.stack([kind.astype(np.float64), last, best_max, best_min, first, mean3, s1, s3,
                      s5, s1 - s3, noise, e, t, p, e / p, t / p, (t - e) / p,
                      np.log(t / np.maximum(e, 1)), n.astype(np.float64)], axis=1)
    num = static[:, :N_NUMERIC_STATIC].astype(np.float64)
    mask = static[:, N_NUMERIC_STATIC:2 * N_NUMERIC_STATIC]
    num = np.where(mask > 0, num, np.nan)
    return np.concatenate([curve, num, static[:, 2 * N_NUMERIC_STATIC:]], axis=1)


def aux_features(val_loss: np.ndarray, train_acc: np.ndarray | None,
                 train_loss: np.ndarray | None, n_obs: np.ndarray,
                 target_last: np.ndarray) -> np.ndarray:
    """:data:`AUX_NAMES` features ``(B, 7)`` from padded ``(B, L)`` curves of which
    row b holds ``n_obs[b]`` observed epochs (NaN where missing; losses as log1p).
    ``target_last`` is the target metric's last value (for the train-val gap)."""
    b, L = val_loss.shape
    cols = np.arange(L)[None, :]
    inside = cols < n_obs[:, None]
    n = np.asarray(n_obs)

    def last_and_slope(x: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if x is None:
            return np.full(b, np.nan), np.full(b, np.nan)
        filled = forward_fill(np.where(inside, x, np.nan), leading=np.nan)
        last = _at(filled, n - 1)
        prev = _at(filled, np.maximum(n - 4, 0))
        steps = np.minimum(3, np.maximum(n - 1, 0))
        return last, np.where(steps > 0, (last - prev) / np.maximum(steps, 1), 0.0)

    with np.errstate(invalid="ignore"):
        vl = np.log1p(np.maximum(val_loss, 0.0))
        tl = None if train_loss is None else np.log1p(np.maximum(train_loss, 0.0))
    vl_last, vl_slope = last_and_slope(vl)
    ta_last, _ = last_and_slope(train_acc)
    tl_last, tl_slope = last_and_slope(tl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no loss recorded: NaN
        vl_best = np.nanmin(np.where(inside, vl, np.nan), axis=1)
    return np.stack([vl_last, vl_slope, vl_best, ta_last, ta_last - target_last, tl_last,
                     tl_slope], axis=1)


def _filled_at(x: Sequence[float], i: int) -> float:
    """``forward_fill(x, leading=nan)[i]``: the last non-NaN value at or before ``i``."""
    while i >= 0 and x[i] != x[i]:
        i -= 1
    return float(x[i]) if i >= 0 else math.nan


def _slope(x: Sequence[float], last: float, n: int, k: int) -> float:
    """What :func:`curve_features`'s slopes compute for one row: over ``k`` epochs back."""
    steps = min(k, n - 1)
    return (last - _filled_at(x, max(n - 1 - k, 0))) / steps if steps > 0 else 0.0


def _log1p_pos(x: list[float]) -> list[float]:
    """``log1p(max(x, 0))`` of each value (NaN stays NaN), as the batch path takes a loss."""
    return [math.log1p(v) if v > 0.0 else (0.0 if v == v else v) for v in x]


def _one_row(rec: RunRecord, target: float, kind: int, planned: float,
             aux: bool) -> np.ndarray:
    """:func:`record_matrix` of one record of n >= 1 rows, as a ``(1, F)`` matrix: the
    same values (``tests/test_lgbm_features.py`` checks them against the batch path)
    at about a sixth of its cost, in Python floats over lists (a numpy call on a few
    values costs more than its arithmetic), reading only the rows each feature needs.
    A callback forecasts one run an epoch: this is its hot path (the study model's,
    the fallback's). Values come from :meth:`RunRecord.matrix`: NaN or finite, never
    inf.
    """
    names = (rec.metric, "val_loss", "train_accuracy", "train_loss") if aux else (rec.metric,)
    cols = rec.matrix(names).T.tolist()
    y = cols[0]
    n = len(y)
    if kind == 1:  # to_space; NaN stays NaN
        y = [math.log(v if v > 1e-6 else 1e-6) if v == v else v for v in y]
    fin = [v for v in y if v == v]
    last = _filled_at(y, n - 1)
    if fin:
        best_max, best_min, first = max(fin), min(fin), fin[0]
    else:
        best_max, best_min, first = -math.inf, math.inf, math.nan
    tail3 = [v for i in range(max(n - 3, 0), n) if (v := _filled_at(y, i)) == v]
    mean3 = sum(tail3) / len(tail3) if tail3 else math.nan
    tail6 = [_filled_at(y, i) for i in range(max(n - 6, 0), n)]
    d = [b - a for a, b in zip(tail6[:-1], tail6[1:], strict=True) if a == a and b == b]
    if d:  # numpy's std (ddof 0)
        mu = sum(d) / len(d)
        noise = math.sqrt(sum((x - mu) ** 2 for x in d) / len(d))
    else:
        noise = 0.0
    s1, s3, s5 = (_slope(y, last, n, k) for k in (1, 3, 5))
    t, e, p = float(target), float(rec.last_epoch), float(planned)
    static = record_static(rec)
    num = static[:N_NUMERIC_STATIC].astype(np.float64)
    num[~(static[N_NUMERIC_STATIC:2 * N_NUMERIC_STATIC] > 0)] = math.nan
    ratio = t / max(e, 1.0)
    log_ratio = math.log(ratio) if ratio > 0 else (-math.inf if ratio == 0 else math.nan)
    row = [float(kind), last, best_max, best_min, first, mean3, s1, s3, s5, s1 - s3, noise,
           e, t, p, e / p, t / p, (t - e) / p, log_ratio, float(n)]
    parts = [np.array(row), num, static[2 * N_NUMERIC_STATIC:].astype(np.float64)]
    if aux:
        vl, ta, tl = _log1p_pos(cols[1]), cols[2], _log1p_pos(cols[3])
        vl_last = _filled_at(vl, n - 1)
        tl_last = _filled_at(tl, n - 1)
        ta_last = _filled_at(ta, n - 1)
        vfin = [v for v in vl if v == v]
        parts.append(np.array([vl_last, _slope(vl, vl_last, n, 3),
                               min(vfin) if vfin else math.nan, ta_last,
                               ta_last - last if kind == 0 else math.nan, tl_last,
                               _slope(tl, tl_last, n, 3)]))
    return np.concatenate(parts)[None, :]


def _planned(rec: RunRecord, target: float) -> float:
    """The run's planned epochs: ``meta.max_epochs``, else the target epoch."""
    try:
        return float(rec.meta.get("max_epochs") or target)
    except (TypeError, ValueError):
        return float(target)


def record_matrix(records: Sequence[RunRecord], targets: Sequence[int],
                  kinds: Sequence[int], aux: bool = False) -> np.ndarray:
    """:func:`curve_features` for records (padded to the longest), followed by
    :func:`aux_features` when ``aux``."""
    n = len(records)
    if n == 1 and records[0].n_epochs:  # one run's forecast: the hot path
        rec, m = records[0], targets[0]
        planned = _planned(rec, m)
        if planned != 0:  # (0: the batch path's inf/NaN ratios)
            return _one_row(rec, float(m), int(np.asarray(kinds).reshape(-1)[0]), planned,
                            aux)
    L = max(max(r.n_epochs for r in records), 1)
    y = np.full((n, L), np.nan)
    static = np.empty((n, STATIC_DIM))
    planned = np.empty(n)
    others = np.full((3, n, L), np.nan) if aux else None
    for i, (rec, m) in enumerate(zip(records, targets, strict=False)):
        if others is None:
            y[i, :rec.n_epochs] = rec.series(rec.metric)
        else:
            both = rec.matrix((rec.metric, "val_loss", "train_accuracy", "train_loss"))
            y[i, :rec.n_epochs] = both[:, 0]
            others[:, i, :rec.n_epochs] = both[:, 1:].T
        static[i] = record_static(rec)
        planned[i] = _planned(rec, m)
    kind = np.asarray(kinds)
    n_obs = np.array([r.n_epochs for r in records])
    x = curve_features(to_space(y, kind), n_obs, np.array([r.last_epoch for r in records]),
                       np.asarray(targets), planned, static, kind)
    if others is None:
        return x
    last = x[:, CURVE_NAMES.index("last")]
    return np.concatenate([x, aux_features(others[0], others[1], others[2], n_obs,
                                           np.where(kind == 0, last, np.nan))], axis=1)


def _header(text: str, source: str) -> dict[str, Any]:
    """The JSON object of a model file's first line."""
    try:
        info = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelArtifactError(source, f"bad header: {exc}") from None
    if not isinstance(info, dict):
        raise ModelArtifactError(source, "bad header: not a JSON object")
    return info


def _booster(model: str, n_features: int, source: str) -> Any:
    """A LightGBM booster from its text, checked first where a damaged tree would abort
    the process (:func:`~earlystop_predict.forecast.artifacts.check_lightgbm_text`).

    Raises:
        ModelArtifactError: the text is damaged (names the booster and the problem).
    """
    import lightgbm as lgb  # deferred: only the fallback needs it

    from earlystop_predict.forecast.artifacts import LightGBMTextError, check_lightgbm_text

    try:
        text, n_trees = check_lightgbm_text(model)
    except LightGBMTextError as exc:
        raise ModelArtifactError(source, f"damaged model text: {exc}") from None
    try:
        booster = lgb.Booster(model_str=text)
    except Exception as exc:  # noqa: BLE001 - LightGBMError, or its Python-side parsing
        raise ModelArtifactError(source, f"{type(exc).__name__}: {exc}") from None
    if booster.num_trees() != n_trees or booster.num_feature() != n_features:
        raise ModelArtifactError(source, f"holds {booster.num_trees()} trees of "
                                         f"{booster.num_feature()} features, expected "
                                         f"{n_trees} of {n_features}")
    return booster


class RowPredictor:
    """A booster's predictions, one row at a time through LightGBM's fast single-row C
    API (``LGBM_BoosterPredictForMatSingleRowFast``: its configuration is set up once,
    not at each call as ``Booster.predict`` does; about a third of the cost a row, the
    hot path of a callback's forecast). Several rows, or a LightGBM without that API,
    go through ``Booster.predict``. One thread at a time uses the fast path (its
    buffers are shared); pickled and copied as its booster.

    Example:
        >>> import lightgbm as lgb
        >>> x = np.arange(40.0).reshape(20, 2)
        >>> b = lgb.train({"verbose": -1, "min_data_in_leaf": 1}, lgb.Dataset(x, x[:, 0]), 5)
        >>> bool(np.allclose(RowPredictor(b)(x[:1]), b.predict(x[:1])))
        True
    """

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self._lock = threading.Lock()
        self._config: ctypes.c_void_p | None = None
        self._out = np.zeros(1)
        self._len = ctypes.c_int64()
        self._ncol = -1
        try:
            from lightgbm.basic import _LIB, _c_str

            self._ncol = int(booster.num_feature())
            # one output a row (regression, quantile): a multi-output booster would write
            # past the one-value buffer
            single = int(booster.num_model_per_iteration()) == 1
            config = ctypes.c_void_p()
            ok = single and _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),
                ctypes.c_int(1), ctypes.c_int32(self._ncol), _c_str("num_threads=1"),
                ctypes.byref(config)) == 0  # C_API_PREDICT_NORMAL, C_API_DTYPE_FLOAT64
        except Exception:  # noqa: BLE001 - no such API (or no LightGBM booster): predict()
            ok = False
        if ok and config.value:
            self._lib, self._config = _LIB, config

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The booster's predictions of the rows of ``x`` (B, F)."""
        if self._config is None or x.shape[0] != 1 or x.shape[1] != self._ncol:
            return self.booster.predict(x, num_threads=1)
        row = np.ascontiguousarray(x[0], dtype=np.float64)
        with self._lock:
            status = self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._config, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._len),
                self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
            got = self._out.copy()
        return got if status == 0 else self.booster.predict(x, num_threads=1)

    def __del__(self) -> None:
        config, self._config = getattr(self, "_config", None), None
        if config is not None:
            try:
                self._lib.LGBM_FastConfigFree(config)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __getstate__(self) -> dict[str, Any]:
        return {"booster": self.booster}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["booster"])


class LGBMForecaster(Forecaster):
    """LightGBM quantile boosters. Use :func:`earlystop_predict.load_model`."""

    name = "lightgbm"
    #: Key of the artifact in the manifest, first line of its file, feature names,
    #: and whether the features include :data:`AUX_NAMES`.
    artifact = "lightgbm"
    header = HEADER
    feature_names: tuple[str, ...] = FEATURE_NAMES
    aux = False

    def __init__(self, boosters: dict[str, Any], calibration: Any = (1.0, 1.0),
                 manifest: dict[str, Any] | None = None, shrink: Any = None) -> None:
        self.boosters = boosters
        self._rows: dict[str, RowPredictor] | None = None
        self.calibration = calib.as_table(calibration)
        self.shrink = calib.as_shrink(shrink)
        self.manifest = manifest or {}

    @classmethod
    def from_text(cls, text: str, source: str = "<string>",
                  manifest: dict[str, Any] | None = None) -> LGBMForecaster:
        """Parse the ``lgbm.txt`` format (a header line, then LightGBM model texts).

        Raises:
            ModelArtifactError: not this model's format, or damaged (names ``source``).
        """
        if not text.startswith(cls.header):
            raise ModelArtifactError(source, f"not an earlystop_predict {cls.name} file")
        head, _, body = text.partition("\n")
        info = _header(head[len(cls.header):], source)
        if list(info.get("features", [])) != list(cls.feature_names):
            raise ModelArtifactError(source, "feature layout differs from this version")
        boosters: dict[str, Any] = {}
        for chunk in body.split(SEPARATOR)[1:]:
            name, _, model = chunk.partition("\n")
            boosters[name.strip()] = _booster(model, len(cls.feature_names),
                                              f"{source}: booster {name.strip()!r}")
        missing = [b for b in BOOSTERS if b not in boosters]
        if missing:
            raise ModelArtifactError(source, f"missing boosters {missing}")
        try:
            return cls(boosters, info.get("calibration", (1.0, 1.0)), manifest,
                       info.get("shrink"))
        except (ValueError, TypeError) as exc:
            raise ModelArtifactError(source, str(exc)) from None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str],
                 manifest: dict[str, Any]) -> LGBMForecaster:
        """Load this model's artifact from a model directory (checksum checked)."""
        from earlystop_predict.forecast.artifacts import artifact_path

        path = artifact_path(directory, manifest, cls.artifact)
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip, utf-8
            raise ModelArtifactError(path, f"unreadable: {exc}") from None
        return cls.from_text(text, str(path), manifest)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the text format, gzip-compressed when ``path`` ends in ``.gz``."""
        data = self.to_text().encode("utf-8")
        if str(path).endswith(".gz"):
            data = gzip.compress(data, compresslevel=9, mtime=0)
        with open(path, "wb") as fh:
            fh.write(data)

    def to_text(self) -> str:
        """Serialise to the ``lgbm.txt`` format."""
        head = self.header + json.dumps({"features": list(self.feature_names),
                                    "calibration": self.calibration.tolist(),
                                    "shrink": self.shrink.tolist()})
        parts = [head]
        for name in BOOSTERS:
            parts.append(f"{SEPARATOR}{name}\n{self.boosters[name].model_to_string()}")
        return "\n".join(parts)

    def cannot_serve(self, record: RunRecord, target_epoch: int) -> str:
        """Why this model cannot serve the query, or ``""``."""
        record = as_record(record)
        if record.n_epochs < 1 or not record.has_finite(record.metric):
            return "no finite value of the target metric observed"
        if metric_kind(record) is None:
            return (f"metric {record.metric!r} is neither accuracy-like (max, in [0, 1]) "
                    "nor loss-like (min)")
        if target_epoch <= record.last_epoch:
            return f"target epoch {target_epoch} not after last observed {record.last_epoch}"
        return ""

    def predict_matrix(self, x: np.ndarray, kind: np.ndarray,
                       last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, quantiles (B, 5)) in metric units from a feature matrix."""
        rows = getattr(self, "_rows", None)  # one RowPredictor a booster, made once
        if rows is None or rows.keys() != self.boosters.keys() or \
                any(rows[k].booster is not b for k, b in self.boosters.items()):
            rows = self._rows = {k: RowPredictor(b) for k, b in self.boosters.items()}
        mean = last + rows["mean"](x)
        q = np.stack([last + rows[qkey(lv)](x) for lv in QUANTILES], axis=1)
        q = np.sort(q, axis=1)
        frac = x[:, CURVE_NAMES.index("observed_frac")]
        acc = np.asarray(kind) == 0  # shrinkage is fitted on accuracy-like targets
        if acc.any() and not np.all(self.shrink == 1.0):
            m_s, q_s = calib.shrink(mean, q, last, frac, self.shrink)
            mean, q = np.where(acc, m_s, mean), np.where(acc[:, None], q_s, q)
        q = calib.apply(q, frac, self.calibration)
        return from_space(mean, kind), from_space(q, kind)

    def forecast_many(self, records: Sequence[RunRecord],
                      target_epoch: int | Sequence[int]) -> list[Forecast]:
        records = as_records(records)
        targets = self._targets(records, target_epoch)
        if not records:
            return []
        for rec, t in zip(records, targets, strict=False):
            why = self.cannot_serve(rec, t)
            if why:
                raise ForecastUnavailableError(f"run {rec.run_id!r}: {why}")
        kinds = np.array([metric_kind(r) for r in records])
        x = record_matrix(records, targets, kinds, aux=self.aux)
        mean, q = self.predict_matrix(x, kinds, x[:, CURVE_NAMES.index("last")])
        bad = ~(np.isfinite(mean) & np.isfinite(q).all(axis=1))
        if bad.any():
            raise ForecastUnavailableError(f"run {records[int(np.argmax(bad))].run_id!r}: "
                                           f"{self.name} forecast is not finite")
        return forecasts_from_arrays(records, targets, mean, q, self.name,
                                     [(0.0, 1.0) if k == 0 else (0.0, math.inf)
                                      for k in kinds])


class HistoryForecaster(LGBMForecaster):
    """Quantile boosters grown on one user's tuning history alone (``history.txt.gz``
    of a fine-tuned model directory), with the curves' own features and those of the
    run's other curves (:data:`AUX_NAMES`). A fine-tuned directory serves a blend of
    its LSTM and this model (:class:`~earlystop_predict.forecast.base.BlendForecaster`)."""

    name = "history"
    artifact = "history"
    header = "# earlystop_predict-history "
    feature_names = FEATURE_NAMES + AUX_NAMES
    aux = True
