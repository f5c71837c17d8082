"""Helpers of the ingest tests: small real corpora cut from the shipped sample, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import ingest
from ingest.index import DB_NAME, VISIBLE_AT

ROOT = Path(__file__).resolve().parents[2]
THREADS = 2
QUERIES = ("fever in children", "screening for cancer", "dose of the vaccine")


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


def run_cli(
    *args: str, timeout: float = 600, env_extra: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """``python -m ingest ...`` in a subprocess from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def observe(folder: Path, embedder) -> dict:
    """What a user of the index can see: stats, every chunk, dense, lexical and hybrid results."""
    idx = ingest.open_index(folder, embedder=embedder)
    try:
        st = idx.stats()
        with idx.store.snapshot() as (conn, gen):  # the published chunks (not a build's staged)
            ids = [r[0] for r in conn.execute(
                f"SELECT chunk_id FROM chunks WHERE {VISIBLE_AT} ORDER BY rid", (gen, gen))]
        out = {
            "stats": (st["documents"], st["chunks"], st["generation"], st["per_source"]),
            "chunks": [(c.id, c.text, c.metadata) for c in idx.store.get(ids)],
            "vectors": idx.store.get_vectors(ids).tobytes(),
        }
        for mode in ("dense", "lexical", "hybrid"):
            out[mode] = [
                [(h.chunk_id, round(h.score, 5)) for h in idx.search(q, k=5, mode=mode)]
                for q in QUERIES
            ]
        return out
    finally:
        idx.close()


def staged_chunks(index: Path) -> int:
    """Chunks committed by an unfinished build (read from the side, like any reader)."""
    try:
        conn = sqlite3.connect(f"file:{index / DB_NAME}?mode=ro", uri=True, timeout=30)
        row = conn.execute("SELECT value FROM meta WHERE key = 'staging_gen'").fetchone()
        n = (
            0
            if row is None
            else conn.execute(
                "SELECT count(*) FROM chunks WHERE gen_added = ?", (int(row[0]),)
            ).fetchone()[0]
        )
        conn.close()
        return n
    except sqlite3.Error:
        return 0
