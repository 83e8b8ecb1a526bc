"""The long mode of ``tests/test_fuzz.py``: many random inputs into the record parser
and the CLI, with a table of outcomes.

Each example is a file of random bytes, random JSON lines, random (mostly well-formed)
records, their gzip, or one of the known hostile inputs; ``forecast`` and ``replay``
run on it in process. Allowed outcomes: exit 0, or exit 2 with a message. Anything
else (exit 1, a traceback, an exception escaping ``main``) is counted and shown.

Usage:
    .venv/bin/python benchmarks/fuzz_cli.py [EXAMPLES]     # default 2000 per command
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("ESP_FUZZ_EXAMPLES", "1")  # test_fuzz reads it at import

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import contents  # noqa: E402

import earlystop_predict.forecast.compose as compose  # noqa: E402
from earlystop_predict.cli import main  # noqa: E402


def _argv(command: str, path: Path, draw: st.DataObject) -> list[str]:
    if command == "forecast":
        argv = ["forecast", str(path), "--output", str(path.with_suffix(".out")),
                "--target", str(draw.draw(st.sampled_from([2, 5, 30, 200, 10**6])))]
        if draw.draw(st.booleans()):
            argv.append("--skip-invalid")
        return argv
    return ["replay", str(path), "--orders", "2", "--policy",
            draw.draw(st.sampled_from(["none", "median", "asha", "threshold", "incumbent"]))]


def run(command: str, examples: int) -> tuple[collections.Counter, list[str], float]:
    """Outcome counts, the first bad outcomes, seconds."""
    counts: collections.Counter = collections.Counter()
    bad: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=contents, draw=st.data())
    def one(data: bytes, draw: st.DataObject) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "runs.jsonl"
            path.write_bytes(data)
            err = io.StringIO()
            argv = _argv(command, path, draw)
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = main(argv)
            except BaseException as exc:  # noqa: BLE001 - counted as a failure
                rc = f"raised {type(exc).__name__}"
            text = err.getvalue()
            ok = rc == 0 or (rc == 2 and "error" in text)
            counts["exit 0" if rc == 0 else "exit 2" if ok else "BAD"] += 1
            if not ok or "Traceback" in text:
                bad.append(f"{argv[0]} rc={rc}: {text.strip()[-300:]}")

    t0 = time.time()
    one()
    return counts, bad, time.time() - t0


def main_() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    model = compose.load_model("auto")
    compose.load_model = lambda kind="auto": model  # load the bundled model once
    print("| command | examples | exit 0 | exit 2 (message) | other (must be 0) | s |")
    print("|---|---|---|---|---|---|")
    failures = []
    for command in ("forecast", "replay"):
        counts, bad, secs = run(command, examples)
        failures += bad
        print(f"| {command} | {sum(counts.values())} | {counts['exit 0']} | "
              f"{counts['exit 2']} | {counts['BAD']} | {secs:.0f} |")
    for line in failures[:10]:
        print("BAD:", line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main_()
