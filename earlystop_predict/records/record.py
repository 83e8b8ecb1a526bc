"""Run records: the one data shape of earlystop_predict (see RUN_RECORD.md).

A :class:`RunRecord` is one training run: its hyperparameters, meta data and
per-epoch metrics, plus what was forecast and decided about it. Records are
read and written as JSON Lines; unknown keys are kept and written back.

Example:
    >>> rec = RunRecord(run_id="r1", epochs=[{"epoch": 1, "val_accuracy": 0.5}])
    >>> rec.series("val_accuracy").tolist()
    [0.5]
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlystop_predict.errors import RecordError

_KNOWN_KEYS = ("run_id", "task", "metric", "mode", "hparams", "meta", "epochs",
               "forecasts", "stopped")
_MODES = ("min", "max")


def is_accuracy_like(name: str) -> bool:
    """True for metric names that hold fractions in [0, 1] (accuracy, f1, auc...)."""
    n = name.lower()
    if "loss" in n or "error" in n:
        return False
    return any(tok in n for tok in ("acc", "f1", "auc", "precision", "recall", "iou"))


def default_mode(metric: str) -> str:
    """``"min"`` for loss/error-like metric names, ``"max"`` otherwise."""
    n = metric.lower()
    return "min" if ("loss" in n or "error" in n or "perplexity" in n) else "max"


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN or inf values (and bools)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class RunRecord:
    """One training run, as RUN_RECORD.md describes it.

    Args:
        run_id: unique id of the run.
        metric: the target metric, a key of every epoch row. Default ``"val_accuracy"``.
        mode: ``"max"`` for accuracy-like targets, ``"min"`` for losses.
            Default: from the metric name.
        task: the data set or task the run trains on, if known.
        hparams: hyperparameters (canonical keys in RUN_RECORD.md; aliases accepted).
        meta: meta data (train_size, num_classes, max_epochs...).
        epochs: per-epoch rows, ``epoch`` 1-based and strictly increasing.
        forecasts: forecasts made during the run (written by callbacks/ledger).
        stopped: ``{"epoch", "reason"}`` if the run was stopped early, else None.
        extra: unknown top-level keys, kept and written back.
    """

    run_id: str
    metric: str = "val_accuracy"
    mode: str | None = None
    task: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode is None:
            self.mode = default_mode(self.metric)

    # ------------------------------------------------------------------ access
    @property
    def n_epochs(self) -> int:
        """Number of epoch rows held."""
        return len(self.epochs)

    @property
    def last_epoch(self) -> int:
        """The 1-based index of the last epoch held, 0 if none."""
        return int(self.epochs[-1]["epoch"]) if self.epochs else 0

    def series(self, name: str) -> np.ndarray:
        """Values of metric ``name`` per epoch row, NaN where missing."""
        out = np.full(len(self.epochs), np.nan)
        for i, row in enumerate(self.epochs):
            v = finite_or_none(row.get(name))
            if v is not None:
                out[i] = v
        return out

    def matrix(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """Values of several metrics, ``(n_epochs, len(names))``, NaN where missing or
        not finite (one pass over the rows: the hot path of forecasting)."""
        nan = float("nan")
        flat = [row.get(k, nan) for row in self.epochs for k in names]
        try:
            out = np.array(flat, dtype=np.float64)
        except (TypeError, ValueError):  # None or a stray string somewhere: slow path
            out = np.array([v if (v := finite_or_none(x)) is not None else nan for x in flat],
                           dtype=np.float64)
        out = out.reshape(len(self.epochs), len(names))
        out[~np.isfinite(out)] = np.nan
        return out

    def has_finite(self, name: str) -> bool:
        """Whether any epoch row holds a finite value of ``name``."""
        return any(finite_or_none(row.get(name)) is not None for row in self.epochs)

    def epoch_numbers(self) -> np.ndarray:
        """The ``epoch`` field of each row, as int array."""
        return np.array([int(r["epoch"]) for r in self.epochs], dtype=np.int64)

    def truncated(self, n_epochs: int) -> RunRecord:
        """A copy that holds only the first ``n_epochs`` rows (no forecasts)."""
        return RunRecord(run_id=self.run_id, metric=self.metric, mode=self.mode,
                         task=self.task, hparams=dict(self.hparams), meta=dict(self.meta),
                         epochs=[dict(r) for r in self.epochs[:n_epochs]])

    def final_value(self) -> float | None:
        """The target metric at the last epoch held, None if missing."""
        return finite_or_none(self.epochs[-1].get(self.metric)) if self.epochs else None

    # --------------------------------------------------------------- validation
    def validate(self, *, line: int | None = None, source: str | None = None,
                 allow_empty: bool = False) -> RunRecord:
        """Check the record against RUN_RECORD.md; raise :class:`RecordError` if broken.

        Args:
            line: 1-based line number, for the error message.
            source: file name, for the error message.
            allow_empty: accept a record with no epochs (a run that has not started).
        """

        def fail(msg: str, fld: str, hint: str | None = None) -> RecordError:
            return RecordError(msg, line=line, field=fld, source=source, hint=hint)

        if not isinstance(self.run_id, str) or not self.run_id:
            raise fail("must be a non-empty string", "run_id")
        if not isinstance(self.metric, str) or not self.metric:
            raise fail("must be a non-empty string", "metric")
        if self.mode not in _MODES:
            raise fail(f"must be 'min' or 'max', got {self.mode!r}", "mode")
        for name in ("hparams", "meta"):
            if not isinstance(getattr(self, name), dict):
                raise fail("must be an object", name)
        if not isinstance(self.epochs, list):
            raise fail("must be a list of epoch rows", "epochs")
        if not self.epochs and not allow_empty:
            raise fail("is empty: a run record needs at least one epoch", "epochs")
        prev = 0
        seen_metric = False
        keys_seen: set[str] = set()
        acc_like = is_accuracy_like(self.metric)
        for i, row in enumerate(self.epochs):
            where = f"epochs[{i}]"
            if not isinstance(row, dict):
                raise fail("must be an object", where)
            keys_seen.update(row)
            ep = row.get("epoch")
            if isinstance(ep, float) and ep.is_integer():
                ep = int(ep)
                row["epoch"] = ep
            if not isinstance(ep, int) or isinstance(ep, bool) or ep < 1:
                raise fail(f"must be a 1-based integer, got {ep!r}", f"{where}.epoch")
            if ep <= prev:
                raise fail(f"epochs must strictly increase, got {ep} after {prev}",
                           f"{where}.epoch")
            prev = ep
            if self.metric in row:
                seen_metric = True
            for key, value in row.items():
                if key == "epoch" or value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise fail(f"must be a number or null, got {value!r}", f"{where}.{key}")
                if is_accuracy_like(key) and math.isfinite(value) and (value > 1 or value < 0):
                    hint = ("accuracies are fractions in [0, 1]; divide percents by 100"
                            if 1 < value <= 100 else None)
                    raise fail(f"{value!r} is outside [0, 1]", f"{where}.{key}", hint)
        if self.epochs and not seen_metric:
            raise fail(f"target metric {self.metric!r} is in no epoch row; "
                       f"keys present: {', '.join(sorted(keys_seen - {'epoch'})) or '(none)'}",
                       "metric")
        if acc_like and self.mode != "max":
            raise fail(f"accuracy-like metric {self.metric!r} needs mode 'max'", "mode")
        return self

    # ---------------------------------------------------------------- (de)serialise
    @classmethod
    def from_dict(cls, data: Any, *, line: int | None = None, source: str | None = None,
                  validate: bool = True, allow_empty: bool = False) -> RunRecord:
        """Build a record from a parsed JSON object (validated unless told not to)."""
        if not isinstance(data, dict):
            raise RecordError("a run record must be a JSON object", line=line, source=source)
        if "run_id" not in data:
            raise RecordError("is missing", line=line, field="run_id", source=source)
        metric = data.get("metric", "val_accuracy")
        stopped = data.get("stopped")
        forecasts = data.get("forecasts") or []
        if stopped is not None and not isinstance(stopped, dict):
            raise RecordError("must be an object or null", line=line, field="stopped",
                              source=source)
        if not isinstance(forecasts, list):
            raise RecordError("must be a list", line=line, field="forecasts", source=source)
        rec = cls(
            run_id=str(data["run_id"]) if data["run_id"] is not None else "",
            metric=metric,
            mode=data.get("mode") or (default_mode(metric) if isinstance(metric, str) else None),
            task=data.get("task"),
            hparams=data.get("hparams") if data.get("hparams") is not None else {},
            meta=data.get("meta") if data.get("meta") is not None else {},
            epochs=data.get("epochs") if data.get("epochs") is not None else [],
            forecasts=forecasts,
            stopped=stopped,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )
        if validate:
            rec.validate(line=line, source=source, allow_empty=allow_empty)
        return rec

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of RUN_RECORD.md (unknown keys included)."""
        out: dict[str, Any] = {"run_id": self.run_id}
        if self.task is not None:
            out["task"] = self.task
        out.update(metric=self.metric, mode=self.mode, hparams=self.hparams, meta=self.meta,
                   epochs=self.epochs)
        if self.forecasts:
            out["forecasts"] = self.forecasts
        if self.forecasts or self.stopped is not None:
            out["stopped"] = self.stopped
        out.update(self.extra)
        return out


def jsonable(obj: Any) -> Any:
    """Replace NaN/inf by None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj


def dumps(obj: Any) -> str:
    """One strict-JSON line (NaN/inf written as null)."""
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False)


def iter_records(path: str | os.PathLike[str], *, validate: bool = True,
                 allow_empty: bool = False) -> Iterator[RunRecord]:
    """Yield the records of a JSONL file; blank lines are skipped.

    Raises:
        RecordError: a line is not JSON or breaks the record contract (names the line).
        FileNotFoundError: the file does not exist.
    """
    source = str(path)
    for lineno, data in iter_json_lines(path):
        yield RunRecord.from_dict(data, line=lineno, source=source, validate=validate,
                                  allow_empty=allow_empty)


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSONL file.

    Raises:
        RecordError: a line is not JSON (names the line and the column).
        FileNotFoundError: the file does not exist.
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RecordError(f"not valid JSON ({exc.msg} at column {exc.colno})",
                                  line=lineno, source=str(path)) from None
            yield lineno, data


def read_records(path: str | os.PathLike[str], **kwargs: Any) -> list[RunRecord]:
    """All records of a JSONL file (see :func:`iter_records`)."""
    return list(iter_records(path, **kwargs))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write rows (dicts or records) to ``path`` atomically; return the count.

    The file appears whole or not at all: a failure leaves no partial output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(dumps(row.to_dict() if isinstance(row, RunRecord) else row))
                fh.write("\n")
                count += 1
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count


def write_records(path: str | os.PathLike[str], records: Iterable[RunRecord]) -> int:
    """Write records as JSONL atomically; return the count."""
    return write_jsonl(path, records)
