"""A state file written atomically, and only when what it holds changed.

The state of a monitor grows by one epoch row and one forecast entry an epoch; rows
already written are not encoded again (each is kept as JSON text, by identity: a row
is never changed in place once recorded), so an epoch's cost does not grow with the
run's length but for the bytes written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from earlystop_predict.records.record import dumps

_ROWS = ("epochs", "forecasts")


class StateFile:
    """One JSON object on disk (a monitor's progress), for callbacks that resume from a file.

    :meth:`save` writes through a temporary file beside it and ``os.replace``, so a
    crash leaves the old state or the new one, never a torn file; a state equal to the
    one last written is not written again.

    Args:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._written: str | None = None
        self._rows: dict[int, tuple[Any, str]] = {}  # id(row) -> (row, its JSON)

    def _row(self, row: Any, seen: dict[int, tuple[Any, str]]) -> str:
        got = self._rows.get(id(row))
        if got is None or got[0] is not row:
            got = (row, dumps(row))
        seen[id(row)] = got
        return got[1]

    def _encode(self, state: Mapping[str, Any]) -> str:
        """``dumps(state)``, with the record's rows from the cache."""
        record = state.get("record")
        if not isinstance(record, Mapping):
            return dumps(state)
        seen: dict[int, tuple[Any, str]] = {}
        parts = [dumps(k) + ":" + (dumps(v) if k not in _ROWS or not isinstance(v, list) else
                                   "[" + ",".join(self._row(r, seen) for r in v) + "]")
                 for k, v in record.items()]
        self._rows = seen
        rest = {k: v for k, v in state.items() if k != "record"}
        return ("{" + ",".join([dumps("record") + ":{" + ",".join(parts) + "}",
                                *(dumps(k) + ":" + dumps(v) for k, v in rest.items())]) + "}")

    def load(self) -> dict[str, Any] | None:
        """The state in the file, None if there is no file."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return None
        self._written = text.rstrip("\n")
        return json.loads(text)

    def save(self, state: Mapping[str, Any]) -> bool:
        """Write ``state`` if it differs from the last one written; True if written."""
        text = self._encode(state)
        if text == self._written:
            return False
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._written = text
        return True
