"""Every Python block of the README runs as written (none needs the network).

Each block runs in a fresh interpreter in its own empty folder (files a block writes,
such as ``runs.db``, stay there). A block may end with assertions: they are part of what
a user reads, and what this test checks.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT, run_python

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = [m.group(1) for m in re.finditer(r"```python\n(.*?)```", README, flags=re.S)]
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _title(block: str) -> str:
    first = next((ln for ln in block.splitlines() if ln.strip()), "")
    return re.sub(r"\W+", "-", first.strip("# ").lower())[:40]


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[_title(b) for b in BLOCKS])
def test_readme_block_runs(block, tmp_path):
    proc = run_python(block, cwd=tmp_path, env=ENV, timeout=400)
    assert proc.returncode == 0, f"--- block\n{block}\n--- stderr\n{proc.stderr[-4000:]}"
