"""The index manifest: what an index folder holds and how it was made, as plain JSON.

The authoritative copy lives in the index database (``meta`` table, written in the same transaction
as the data it describes); ``manifest.json`` beside it is the same text, replaced atomically after
each published change, for people and tools.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "guidelines-index"
# 2: chunks carry part (sentence) vectors; an index of version 1 must be rebuilt.
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
KIND_CORPUS = "corpus"  # built by `python -m ingest build`: documents and chunks
KIND_STORE = "store"  # a plain vector store (e.g. under the LangChain adapter)
MAX_DIM = 65536  # larger embedding dimensions are refused as implausible
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of the libraries that shape an index (recorded, never enforced)."""
    import sqlite3
    from importlib import metadata

    out = {"sqlite": sqlite3.sqlite_version}
    for dist in (
        "guidelines-assistant",
        "faiss-cpu",
        "sentence-transformers",
        "torch",
        "transformers",
        "tokenizers",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def new_manifest(
    kind: str, dim: int, embedding_model: str, chunking: dict | None, extra: dict | None = None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "embedding": {
            "model": embedding_model,
            "dim": int(dim),
            "normalized": kind == KIND_CORPUS,
            **(extra or {}),
        },
        "chunking": chunking,
        "ann": {"type": "flat"},
        "generation": 0,
        "counts": {"documents": 0, "chunks": 0, "per_source": {}},
        "sources": [],
        "inputs": [],
        "checksums": {},
        "versions": versions(),
        "created": now(),
        "updated": now(),
        "last_build": None,
    }


def check_manifest(data: Any, where: str) -> str | None:
    """Why ``data`` is not a manifest this code can read, or None when it is."""
    if not isinstance(data, dict):
        return f"{where} is not a JSON object"
    if data.get("format") != FORMAT:
        return f"{where} is not a {FORMAT} manifest (format {data.get('format')!r})"
    if data.get("format_version") != FORMAT_VERSION:
        got = data.get("format_version")
        older = isinstance(got, int) and got < FORMAT_VERSION
        return f"{where} has format version {got!r}; this code reads {FORMAT_VERSION}" + (
            ": the index was built by an earlier version of this project; rebuild it "
            "(python -m ingest build --input ... --index NEW_FOLDER)"
            if older
            else ""
        )
    emb = data.get("embedding")
    if not isinstance(emb, dict) or not isinstance(emb.get("model"), str):
        return f"{where} names no embedding model"
    dim = emb.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= MAX_DIM:
        return f"{where} has an implausible embedding dimension {dim!r}"
    if data.get("kind") not in (KIND_CORPUS, KIND_STORE):
        return f"{where} has an unknown kind {data.get('kind')!r}"
    if not isinstance(data.get("generation"), int) or data["generation"] < 0:
        return f"{where} has a bad generation {data.get('generation')!r}"
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` then rename over it: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
