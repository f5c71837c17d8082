"""``python -m assistant ask`` on a damaged index: one error line naming the file and the fix,
then the notice; no traceback, no model loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from assistant.notice import ADVISORY_NOTICE
from ingest import manifest as mf
from ingest.index import DB_NAME, IndexStore

ROOT = Path(__file__).resolve().parents[2]


def test_ask_on_a_truncated_index_names_the_file_and_the_rebuild(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    store = IndexStore.create(index, 8, "sentence-transformers/all-MiniLM-L6-v2",
                              kind=mf.KIND_CORPUS)
    store.add([f"c{i}" for i in range(300)], np.random.default_rng(0).normal(size=(300, 8)),
              ["a guideline passage about fever " * 20] * 300)
    store.close()
    with open(index / DB_NAME, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    done = subprocess.run([sys.executable, "-m", "assistant", "ask", "What dose?", "--index",
                           str(index), "--model", "/nowhere/model.gguf"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: index {index}: {DB_NAME} "), done.stderr
    assert f"mv {index} {index}.damaged && python -m ingest build" in done.stderr
    assert "/nowhere/model.gguf" not in done.stderr  # refused before any model is looked for
    assert done.stderr.rstrip().endswith(ADVISORY_NOTICE)
