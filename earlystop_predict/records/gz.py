"""Reading multi-member gzip files (the corpus format): intact members only.

Imports nothing of the package, so :mod:`.record` and :mod:`.corpus` can both use it.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path


def _members(path: str | os.PathLike[str]) -> tuple[list[bytes], int, int]:
    """``(decompressed members, end of the last complete member, file size)``.

    Reading stops at the first member that is torn (a kill while appending) or
    not gzip; everything before it is returned.
    """
    data = Path(path).read_bytes()
    view = memoryview(data)
    out: list[bytes] = []
    pos = good = 0
    chunk = 1 << 16
    while pos < len(data):
        dec = zlib.decompressobj(31)
        parts: list[bytes] = []
        p = pos
        try:
            while not dec.eof and p < len(data):
                piece = view[p:p + chunk]
                parts.append(dec.decompress(piece))
                p += len(piece)
        except zlib.error:
            break
        if not dec.eof:
            break
        pos = p - len(dec.unused_data)
        out.append(b"".join(parts))
        good = pos
    return out, good, len(data)


def gzip_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a gzip corpus, intact members only (a torn last
    member is skipped with a note on stderr)."""
    members, good, size = _members(path)
    if good < size:
        print(f"earlystop-predict: {path}: ignoring {size - good} bytes of a torn last "
              "record", file=sys.stderr)
    yield from enumerate(b"".join(members).splitlines(), start=1)


