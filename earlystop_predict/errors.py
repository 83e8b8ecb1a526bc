"""Typed errors of earlystop_predict.

Every error the package raises on bad input derives from
:class:`EarlystopPredictError`, so a caller can catch them all at once, and
from the matching builtin (``ValueError``, ``KeyError``, ``ImportError``), so
code that already catches those keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class EarlystopPredictError(Exception):
    """Base class of every error raised by earlystop_predict."""


class ConfigError(EarlystopPredictError, ValueError):
    """An argument is out of its range: names the argument, the range and the value."""

    def __init__(self, arg: str, expected: str, value: object) -> None:
        self.arg = arg
        self.expected = expected
        self.value = value
        super().__init__(f"{arg} must be {expected}, got {value!r}")


class RecordError(EarlystopPredictError, ValueError):
    """A run record breaks RUN_RECORD.md: names the line, the field and the problem."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None,
                 source: str | None = None, hint: str | None = None) -> None:
        self.line = line
        self.field = field
        self.source = source
        self.hint = hint
        where = []
        if source:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field {field!r}")
        text = (", ".join(where) + ": " if where else "") + message
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)


class MetricNotFoundError(EarlystopPredictError, KeyError):
    """The monitored metric is not among the logged ones: lists the keys seen."""

    def __init__(self, metric: str, available: Iterable[str]) -> None:
        self.metric = metric
        self.available = sorted(available)
        super().__init__(metric)

    def __str__(self) -> str:
        keys = ", ".join(self.available) if self.available else "(none)"
        return f"metric {self.metric!r} was not logged; available keys: {keys}"


class ModelArtifactError(EarlystopPredictError, OSError):
    """A model artifact is missing, corrupt or fails its checksum: names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ForecastUnavailableError(EarlystopPredictError, ValueError):
    """A model cannot serve this query (outside its trained range, unknown metric...)."""


class MissingExtraError(EarlystopPredictError, ImportError):
    """An optional framework is not installed: names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"needs {module}: pip install 'earlystop_predict[{extra}]'", name=module
        )
