"""A state file whose per-epoch write does not grow with the run: a journal.

The state of a monitor grows by one epoch row and one forecast entry an epoch. The file
holds the full state on its first line (written through a temporary file and
``os.replace``: the old file or the new one, never a torn one), then one line per save
with only what changed: the rows appended to the record's ``epochs`` and ``forecasts``
and to the state's ``streaks``, and the other fields that changed. A save appends one
short line, so an epoch costs the same at epoch 95 as at epoch 15; a torn last line (a
crash while appending) is ignored on load, which gives the state before it. Rows must
not be changed in place once saved (the monitor replaces, never edits, them); a list
that is not an extension of what was written (a replay trimmed it) rewrites the file.
A state written by an older version (one JSON object) loads as a journal of one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from earlystop_predict.records.record import dumps

_RECORD_ROWS = ("epochs", "forecasts")
_STATE_ROWS = ("streaks",)
_COMPACT_LINES = 1000   # rewrite the journal as one line past this many lines


def _split(state: Mapping[str, Any]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``(append-only lists by dotted key, every other field by dotted key)``."""
    rows: dict[str, list[Any]] = {}
    rest: dict[str, Any] = {}
    for key, value in state.items():
        if key == "record" and isinstance(value, Mapping):
            for rkey, rvalue in value.items():
                if rkey in _RECORD_ROWS and isinstance(rvalue, list):
                    rows[f"record.{rkey}"] = rvalue
                else:
                    rest[f"record.{rkey}"] = rvalue
        elif key in _STATE_ROWS and isinstance(value, list):
            rows[key] = value
        else:
            rest[key] = value
    return rows, rest


def _apply(state: dict[str, Any], delta: Mapping[str, Any]) -> None:
    """Apply one journal line (``{"+": {key: rows}, "=": {key: value}}``) to ``state``."""
    for key, new_rows in delta.get("+", {}).items():
        holder, name = _slot(state, key)
        holder.setdefault(name, []).extend(new_rows)
    for key, value in delta.get("=", {}).items():
        holder, name = _slot(state, key)
        holder[name] = value


def _slot(state: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    head, _, name = key.rpartition(".")
    return (state.setdefault(head, {}) if head else state), name


class StateFile:
    """A monitor's progress on disk, for callbacks that resume from a file.

    Args:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._rows: dict[str, tuple[int, Any]] | None = None  # per list: (length, last row)
        self._rest: dict[str, str] = {}                  # the other fields' JSON, as written
        self._lines = 0

    def load(self) -> dict[str, Any] | None:
        """The state in the file, None if there is no file (a torn last line is ignored)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except FileNotFoundError:
            return None
        state = json.loads(lines[0])
        for line in lines[1:]:
            if not line:
                continue
            try:
                delta = json.loads(line)
            except json.JSONDecodeError:
                break  # torn by a crash while appending: the state before it
            _apply(state, delta)
        return state

    def save(self, state: Mapping[str, Any]) -> bool:
        """Write ``state`` if it differs from the last one written; True if written."""
        rows, rest = _split(state)
        rest_json = {k: dumps(v) for k, v in rest.items()}
        if self._rows is None or self._lines >= _COMPACT_LINES or not self._extends(rows):
            self._rewrite(state, rows, rest_json)
            return True
        delta: dict[str, Any] = {}
        added = {k: v[self._rows[k][0] if k in self._rows else 0:] for k, v in rows.items()}
        added = {k: v for k, v in added.items() if v}
        changed = {k: v for k, v in rest_json.items() if self._rest.get(k) != v}
        if not added and not changed and set(rest_json) == set(self._rest):
            return False
        if set(self._rest) - set(rest_json):      # a field removed: no delta says that
            self._rewrite(state, rows, rest_json)
            return True
        if added:
            delta["+"] = added
        if changed:
            delta["="] = {k: rest[k] for k in changed}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(dumps(delta) + "\n")
        self._remember(rows, rest_json)
        self._lines += 1
        return True

    def _extends(self, rows: Mapping[str, list[Any]]) -> bool:
        """Every list holds what was written and maybe more: as long, and its last
        written item the same object (a replay that trimmed a list and grew it again
        puts new objects there; the monitor never edits a row in place). O(1) a list,
        so an epoch's write does not grow with the run."""
        assert self._rows is not None
        for key, (n, last) in self._rows.items():
            new = rows.get(key)
            if new is None or len(new) < n or (n and new[n - 1] is not last):
                return False
        return True

    def _rewrite(self, state: Mapping[str, Any], rows: Mapping[str, list[Any]],
                 rest_json: Mapping[str, str]) -> None:
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(dumps(state) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._remember(rows, rest_json)
        self._lines = 1

    def _remember(self, rows: Mapping[str, list[Any]], rest_json: Mapping[str, str]) -> None:
        self._rows = {k: (len(v), v[-1] if v else None) for k, v in rows.items()}
        self._rest = dict(rest_json)
