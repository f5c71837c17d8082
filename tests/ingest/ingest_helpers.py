"""Helpers of the ingest tests: small real corpora cut from the shipped sample, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ingest

ROOT = Path(__file__).resolve().parents[2]
THREADS = 2


def sample_docs() -> list[dict]:
    with open(ingest.SAMPLE_CORPUS, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def shortest(n_per_source: int) -> list[dict]:
    """The shortest documents of each source of the sample (real text, few chunks)."""
    by_source: dict[str, list[dict]] = {}
    for d in sample_docs():
        by_source.setdefault(d["source"], []).append(d)
    out = []
    for docs in by_source.values():
        out += sorted(docs, key=lambda d: len(d["clean_text"]))[:n_per_source]
    return out


def write_jsonl(path: Path, docs: list[dict], extra_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False).encode("utf-8") + b"\n")
        for line in extra_lines:
            f.write(line.rstrip(b"\n") + b"\n")
    return path


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ingest ...`` in a subprocess from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
