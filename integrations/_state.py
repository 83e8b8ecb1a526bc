"""A state file written atomically, and only when what it holds changed."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from earlystop_predict.records.record import dumps


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
        text = dumps(state)
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
