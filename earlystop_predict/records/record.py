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

import errno
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
from earlystop_predict.records.gz import gzip_lines

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


#: Largest 1-based epoch a record may hold.
MAX_EPOCH = 1_000_000
#: Canonical numeric ``hparams``/``meta`` keys (RUN_RECORD.md) and their accepted range
#: ``(low, high, low_open)``: a value outside it, or one that is not a finite number,
#: breaks the record.
NUMERIC_RANGES: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.0, 1e6, True), "batch_size": (1.0, 1e8, False),
    "momentum": (0.0, 1.0, False), "weight_decay": (0.0, 100.0, False),
    "dropout": (0.0, 1.0, False), "num_layers": (0.0, 1e4, False),
    "width": (1.0, 1e8, False), "warmup_fraction": (0.0, 1.0, False),
    "train_size": (0.0, 1e13, False), "num_classes": (0.0, 1e8, False),
    "num_features": (0.0, 1e9, False), "num_params": (0.0, 1e13, False),
    "max_epochs": (1.0, float(MAX_EPOCH), False),
}
#: Canonical keys that hold a name (a string, or null).
TEXT_KEYS = frozenset({"optimizer", "lr_schedule", "framework"})


def _as_float(value: Any) -> float | None:
    """``float(value)`` for a number (not a bool), None otherwise or if it overflows."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        return None


def in_range(key: str, value: Any) -> bool:
    """Whether ``value`` is a finite number in the range of canonical key ``key``."""
    low, high, low_open = NUMERIC_RANGES[key]
    f = _as_float(value)
    if f is None or not math.isfinite(f):
        return False
    return (f > low if low_open else f >= low) and f <= high


def check_setting(key: str, value: Any) -> str | None:
    """The problem with one ``hparams``/``meta`` value, or None if it is fine."""
    if value is None:
        return None
    if key in TEXT_KEYS:
        return None if isinstance(value, str) else f"must be a name (a string), got {value!r:.60}"
    if key not in NUMERIC_RANGES:
        return None
    if not in_range(key, value):
        low, high, low_open = NUMERIC_RANGES[key]
        return (f"must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}], "
                f"got {value!r:.60}")
    if key == "max_epochs" and float(value) != int(value):
        return f"must be a whole number of epochs, got {value!r}"
    return None


class _Where:
    """Where a record came from, to build its :class:`RecordError`s."""

    def __init__(self, line: int | None, source: str | None) -> None:
        self.line = line
        self.source = source

    def fail(self, msg: str, fld: str, hint: str | None = None) -> RecordError:
        return RecordError(msg, line=self.line, field=fld, source=self.source, hint=hint)


def _check_epoch(row: dict[str, Any], prev: int, where: _Where, at: str) -> int:
    """The row's epoch (a float like 3.0 becomes 3), checked to follow ``prev``."""
    ep = row.get("epoch")
    if isinstance(ep, float) and ep.is_integer() and abs(ep) <= MAX_EPOCH:
        ep = int(ep)
        row["epoch"] = ep
    if not isinstance(ep, int) or isinstance(ep, bool) or not 1 <= ep <= MAX_EPOCH:
        raise where.fail(f"must be a 1-based integer <= {MAX_EPOCH}, got {ep!r:.60}",
                         f"{at}.epoch")
    if ep <= prev:
        raise where.fail(f"epochs must strictly increase, got {ep} after {prev}",
                         f"{at}.epoch")
    return ep


def _check_value(key: str, value: Any, where: _Where, at: str) -> None:
    """A metric value: a number (NaN and inf allowed: a diverged run), in [0, 1] when
    accuracy-like."""
    f = _as_float(value)
    if f is None:
        raise where.fail(f"must be a number or null, got {value!r:.60}", at)
    if is_accuracy_like(key) and math.isfinite(f) and (f > 1 or f < 0):
        hint = ("accuracies are fractions in [0, 1]; divide percents by 100"
                if 1 < f <= 100 else None)
        raise where.fail(f"{value!r:.60} is outside [0, 1]", at, hint)


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
        if self.mode is None and isinstance(self.metric, str):
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

        Beyond the shape (ids, mode, epoch rows), the canonical ``hparams`` and ``meta``
        keys are checked against :data:`NUMERIC_RANGES` and :data:`TEXT_KEYS`: a string
        where a number belongs (``"fast"``), a bool, a non-finite or an out-of-range value
        (``-1e308``) is an error; null means missing. Aliases and unknown keys are not
        checked (a model masks an alias's value outside the range).

        Args:
            line: 1-based line number, for the error message.
            source: file name, for the error message.
            allow_empty: accept a record with no epochs (a run that has not started).
        """
        where = _Where(line, source)
        self._validate_header(where, allow_empty)
        keys_seen = self._validate_rows(where)
        if self.epochs and not any(self.metric in row for row in self.epochs):
            raise where.fail(f"target metric {self.metric!r} is in no epoch row; keys "
                             f"present: {', '.join(sorted(keys_seen - {'epoch'})) or '(none)'}",
                             "metric")
        if is_accuracy_like(self.metric) and self.mode != "max":
            raise where.fail(f"accuracy-like metric {self.metric!r} needs mode 'max'", "mode")
        return self

    def _validate_header(self, where: _Where, allow_empty: bool) -> None:
        """run_id, metric, mode, hparams, meta and the epochs list itself."""
        if not isinstance(self.run_id, str) or not self.run_id:
            raise where.fail("must be a non-empty string", "run_id")
        if not isinstance(self.metric, str) or not self.metric:
            raise where.fail("must be a non-empty string", "metric")
        if self.mode not in _MODES:
            raise where.fail(f"must be 'min' or 'max', got {self.mode!r:.60}", "mode")
        if self.task is not None and not isinstance(self.task, str):
            raise where.fail(f"must be a string or null, got {self.task!r:.60}", "task")
        for name in ("hparams", "meta"):
            values = getattr(self, name)
            if not isinstance(values, dict):
                raise where.fail("must be an object", name)
            for key, value in values.items():
                problem = check_setting(key, value)
                if problem:
                    raise where.fail(problem, f"{name}.{key}")
        if not isinstance(self.epochs, list):
            raise where.fail("must be a list of epoch rows", "epochs")
        if not self.epochs and not allow_empty:
            raise where.fail("is empty: a run record needs at least one epoch", "epochs")

    def _validate_rows(self, where: _Where) -> set[str]:
        """Each epoch row: an object, a strictly increasing 1-based epoch, numbers."""
        prev = 0
        keys_seen: set[str] = set()
        for i, row in enumerate(self.epochs):
            at = f"epochs[{i}]"
            if not isinstance(row, dict):
                raise where.fail("must be an object", at)
            keys_seen.update(row)
            prev = _check_epoch(row, prev, where, at)
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    _check_value(key, value, where, f"{at}.{key}")
        return keys_seen

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
    """Yield the records of a JSONL file (plain or gzip); blank lines are skipped.

    Raises:
        RecordError: a line is not UTF-8 JSON or breaks the record contract (names the
            file and the line).
        FileNotFoundError: the file does not exist.
    """
    source = str(path)
    for lineno, data in iter_json_lines(path):
        yield RunRecord.from_dict(data, line=lineno, source=source, validate=validate,
                                  allow_empty=allow_empty)


def read_valid_records(path: str | os.PathLike[str], *, allow_empty: bool = False
                       ) -> tuple[list[tuple[int, RunRecord]], list[RecordError]]:
    """The valid records of a JSONL file with their line numbers, and the errors of the
    lines left out (not UTF-8, not JSON, not a valid record): one bad line does not
    lose the others.

    Raises:
        OSError: the file cannot be read (missing, a directory...).
    """
    source = str(path)
    good: list[tuple[int, RunRecord]] = []
    bad: list[RecordError] = []
    for lineno, data in iter_json_lines(path, errors=bad):
        try:
            good.append((lineno, RunRecord.from_dict(data, line=lineno, source=source,
                                                     allow_empty=allow_empty)))
        except RecordError as exc:
            bad.append(exc)
    return good, bad


def parse_json_line(text: str | bytes, *, line: int | None = None,
                    source: str | None = None) -> Any:
    """One JSON value from one line; any failure is a :class:`RecordError` naming it.

    Not UTF-8, not JSON, nested too deeply for the parser, or an integer too long for
    Python to convert (over 4300 digits): each is an error of the line, not a crash.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"not UTF-8 text (byte 0x{text[exc.start]:02x} at column "
                              f"{exc.start + 1}); save the file as UTF-8", line=line,
                              source=source) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON ({exc.msg} at column {exc.colno})",
                          line=line, source=source) from None
    except RecursionError:
        raise RecordError("not usable JSON (nested too deeply)", line=line,
                          source=source) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise RecordError(f"not usable JSON ({exc})", line=line, source=source) from None


def _raw_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a plain or gzip (corpus) JSONL file."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        if head.startswith(b"SQLite format 3"):
            raise RecordError("an SQLite file (a ledger?), not JSON Lines; write its runs "
                              "out with 'earlystop-predict ledger export'", source=str(path))
        gz = head[:2] == b"\x1f\x8b"
        if not gz:
            fh.seek(0)
            yield from enumerate(fh, start=1)
            return
    yield from gzip_lines(path)


def iter_json_lines(path: str | os.PathLike[str], *, errors: list[RecordError] | None = None
                    ) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSONL file (plain,
    or gzip as the corpus is).

    Args:
        path: the file.
        errors: if given, a bad line's :class:`RecordError` is appended here and the
            line skipped; else it is raised. Default None.

    Raises:
        RecordError: a line is not UTF-8 JSON (names the file, the line, the column).
        FileNotFoundError: the file does not exist.
    """
    source = str(path)
    for lineno, raw in _raw_lines(path):
        if not raw.strip():
            continue
        try:
            yield lineno, parse_json_line(raw, line=lineno, source=source)
        except RecordError as exc:
            if errors is None:
                raise
            errors.append(exc)


def read_records(path: str | os.PathLike[str], **kwargs: Any) -> list[RunRecord]:
    """All records of a JSONL file (see :func:`iter_records`)."""
    return list(iter_records(path, **kwargs))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write rows (dicts or records) to ``path`` atomically; return the count.

    The file appears whole or not at all: a failure leaves no partial output. A
    symlink is written through (its target is replaced); an existing path that is not
    a regular file (a directory, a device, a FIFO) is never replaced.

    Raises:
        OSError: ``path`` exists and is not a regular file, or cannot be written.
    """
    target = Path(os.path.realpath(path))  # through a symlink: the link stays a link
    if target.exists() and not target.is_file():
        raise OSError(errno.EEXIST, "exists and is not a regular file; not replaced",
                      str(path))
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
