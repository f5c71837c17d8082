"""The checks an index folder passes when it is opened, and the fix each failure names.

On open (see :class:`ingest.index.IndexStore`): SQLite's own structural check of ``index.sqlite``
(``PRAGMA quick_check``: every page, b-tree and record readable); ``manifest.json``, the copy for
people, agrees with the authoritative manifest inside the database (same format, kind, embedding
model and dimension; a *newer* generation there means the database lost published data: a
deleted ``-wal`` file or an older copy of ``index.sqlite``); and, for readers, the content of the
published generation against the manifest's checksums (texts, metadata and part vectors here; the
vectors when the FAISS view is loaded, see ``view.py``). Each failure is an
:class:`IndexDamaged` naming the file and the command that repairs it.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import manifest as mf
from ..errors import EmbedderError, IndexDamaged, ModelUnavailable
from . import sql

QUICK_CHECK_LINES = 5  # problems SQLite reports at most (the first one is shown)
# manifest.json must agree with the database on these (they describe what the files hold).
AGREEING_KEYS = ("format", "format_version", "kind")
AGREEING_EMBEDDING_KEYS = ("model", "dim")


def rebuild_fix(folder: Path, manifest: dict | None = None) -> str:
    """The command that rebuilds ``folder`` from its recorded input, the damaged folder moved
    aside (input and model from the database's manifest when readable, else manifest.json)."""
    man = manifest if manifest is not None else read_manifest_json(folder)
    spec, model = "CORPUS", None
    if isinstance(man, dict):
        inputs = man.get("inputs")
        if isinstance(inputs, list) and inputs and isinstance(inputs[-1], dict):
            spec = str(inputs[-1].get("input") or spec)
        emb = man.get("embedding")
        if isinstance(emb, dict) and isinstance(emb.get("model"), str):
            model = emb["model"]
    q = shlex.quote(str(folder))
    cmd = f"mv {q} {shlex.quote(str(folder) + '.damaged')} && python -m ingest build --input "
    cmd += shlex.quote(spec) + f" --index {q}"
    if model:
        cmd += f" --embedding-model {shlex.quote(model)}"
    return cmd


def read_manifest_json(folder: Path) -> Any:
    """``manifest.json``'s content, or None when it is missing or unreadable."""
    path = Path(folder) / mf.MANIFEST_NAME
    try:
        if path.stat().st_size > mf.MAX_MANIFEST_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


REBUILD_ADVICE = "Rebuild it (the damaged folder is kept aside)"


def database_damaged(folder: Path, problem: str, manifest: dict | None = None) -> IndexDamaged:
    """``index.sqlite`` cannot be trusted: the fix is a rebuild."""
    db = Path(folder) / sql.DB_NAME
    return IndexDamaged(folder, db, problem, REBUILD_ADVICE, rebuild_fix(folder, manifest))


def check_structure(folder: Path, conn: sqlite3.Connection, manifest: dict | None) -> None:
    """SQLite's structural check of the whole database file (every page and b-tree)."""
    try:
        rows = conn.execute(f"PRAGMA quick_check({QUICK_CHECK_LINES})").fetchall()
    except sqlite3.DatabaseError as e:
        raise database_damaged(folder, f"is damaged ({e})", manifest) from e
    if rows != [("ok",)]:
        found = "; ".join(str(r[0]) for r in rows[:2])
        raise database_damaged(folder, f"is damaged (SQLite's check: {found})", manifest)


def check_manifest_json(folder: Path, manifest: dict, reread: Callable[[], dict]) -> None:
    """``manifest.json`` (when present) describes the same index as the database, at the same
    or an older generation (it is rewritten just after each publish)."""
    path = Path(folder) / mf.MANIFEST_NAME
    if not path.exists():
        return  # the copy for people: the next publish writes it again
    data = read_manifest_json(folder)

    def mismatch(problem: str) -> IndexDamaged:
        advice = (
            f"{sql.DB_NAME} passed its own checks and holds the authoritative manifest; if it is "
            f"the index you want, remove {mf.MANIFEST_NAME} (the next build writes it again), "
            f"otherwise rebuild ({rebuild_fix(folder, manifest)})"
        )
        return IndexDamaged(folder, path, problem, advice, f"rm {shlex.quote(str(path))}")

    problem = mf.check_manifest(data, "it")
    if problem:
        raise mismatch(f"is not a manifest this code reads ({problem})")
    for key in AGREEING_KEYS:
        if data.get(key) != manifest.get(key):
            raise mismatch(
                f"says {key} {data.get(key)!r}, {sql.DB_NAME} says {manifest.get(key)!r}: the "
                "folder mixes files of two indexes"
            )
    for key in AGREEING_EMBEDDING_KEYS:
        got, want = data["embedding"].get(key), manifest["embedding"].get(key)
        if got != want:
            raise mismatch(
                f"says embedding {key} {got!r}, {sql.DB_NAME} says {want!r}: the folder mixes "
                "files of two indexes"
            )
    if data["generation"] > manifest["generation"]:
        manifest = reread()  # a writer may have published between our two reads
    if data["generation"] > manifest["generation"]:
        raise database_damaged(
            folder,
            f"is at generation {manifest['generation']} but {mf.MANIFEST_NAME} says generation "
            f"{data['generation']} was published: the database lost published data (a deleted "
            f"{sql.DB_NAME}-wal file, or an older copy of {sql.DB_NAME})",
            data,  # rebuild from what the newer manifest says was built
        )
    if data["generation"] == manifest["generation"] and data.get("checksums") != manifest.get(
        "checksums"
    ):
        raise mismatch(
            f"has other checksums than {sql.DB_NAME} at the same generation "
            f"{manifest['generation']}: the folder mixes files of two indexes"
        )


def check_chunks(folder: Path, conn: sqlite3.Connection, gen: int, manifest: dict) -> None:
    """The published chunks against the manifest: their count, then their checksum (ids, texts,
    metadata and part vectors)."""
    n = conn.execute(f"SELECT count(*) FROM chunks WHERE {sql.VISIBLE}", {"g": gen}).fetchone()[0]
    counted = (manifest.get("counts") or {}).get("chunks")
    if counted is not None and n != counted:
        raise database_damaged(
            folder,
            f"holds {n} chunks of the published generation {gen}, the manifest says {counted}",
            manifest,
        )
    want = (manifest.get("checksums") or {}).get("chunks_sha256")
    if not want:
        return  # an index published before this checksum existed
    got = sql.chunks_checksum(conn, gen)
    if got != want:
        raise database_damaged(
            folder,
            "holds chunk texts, metadata or part vectors that differ from what was published "
            "(their sha256 differs from the manifest's)",
            manifest,
        )


def check_model(index: Any) -> None:
    """Load an opened index's embedding model and check it against the index (``index`` is an
    :class:`ingest.search.Index`), so a model that is not here, or is not the one the index was
    built with, is reported at open rather than at the first query."""
    try:
        index.embedder  # noqa: B018 (loads the model; raises EmbeddingMismatch on a mismatch)
    except EmbedderError as e:
        raise ModelUnavailable(index.path, e) from e
