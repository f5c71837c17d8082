"""Damaged and contested index folders: each case is refused at open with a typed error that names
the file at fault and the fix (:class:`ingest.IndexDamaged`, :class:`ingest.ModelUnavailable`,
:class:`ingest.EmbeddingMismatch`), in the API, on the CLI (no traceback) and on the page's
services.

There is no FAISS file to damage: the vectors the FAISS view is built from live in
``index.sqlite`` (as raw float32 blobs, with a checksum in the manifest), so "a truncated or
bit-flipped FAISS file" is a truncated or bit-flipped database, in its vector bytes or anywhere.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import observe, run_cli, write_jsonl

import ingest
from ingest import manifest as mf
from ingest.index import DB_NAME, IndexStore

PAGE = 4096
RANDOM_FLIPS = 40  # single-bit flips at seeded random offsets of the database file


def fresh_copy(src: Path, dst: Path) -> Path:
    """A copy of an index folder with everything in ``index.sqlite`` (no -wal file)."""
    shutil.copytree(src, dst)
    conn = sqlite3.connect(dst / DB_NAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        (dst / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    return dst


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def one_value(db: Path, sql: str):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def offset_of(db: Path, blob: bytes) -> int:
    """Where ``blob`` (a prefix of a stored value: long ones continue on overflow pages) is."""
    data = db.read_bytes()
    at = data.find(blob)
    assert at > 0 and data.find(blob, at + 1) < 0, "the bytes to damage must occur once"
    return at


def damaged(folder: Path, embedder) -> ingest.IndexDamaged:
    with pytest.raises(ingest.IndexDamaged) as info:
        ingest.open_index(folder, embedder=embedder)
    return info.value


@pytest.fixture()
def copy(tmp_path, small_index) -> Path:
    return fresh_copy(small_index, tmp_path / "copy")


# ---- the database file ------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["empty", "header", "half", "last-page"])
def test_a_truncated_database_is_refused_naming_it_and_the_rebuild(copy, embedder, keep):
    db = copy / DB_NAME
    size = db.stat().st_size
    cut = {"empty": 0, "header": 50, "half": size // 2, "last-page": size - PAGE}[keep]
    with open(db, "r+b") as f:
        f.truncate(cut)
    err = damaged(copy, embedder)
    assert err.file == db and err.path == copy
    # the fix rebuilds from the input the index recorded (read from manifest.json when the
    # database itself cannot be read), with the damaged folder moved aside
    assert err.fix.startswith(f"mv {copy} {copy}.damaged && python -m ingest build --input ")
    assert "small.jsonl" in err.fix and f"--index {copy}" in err.fix
    assert DB_NAME in str(err) and err.fix in str(err)


def test_a_bit_flip_in_a_stored_vector_is_caught_by_its_checksum(copy, embedder):
    db = copy / DB_NAME
    vector = one_value(db, "SELECT vector FROM chunks ORDER BY rid LIMIT 1 OFFSET 3")
    flip_bit(db, offset_of(db, vector[:64]) + 10, bit=3)  # a mantissa bit: still finite
    err = damaged(copy, embedder)
    assert err.file == db and "vectors" in err.problem and "sha256" in err.problem


def test_a_bit_flip_in_a_chunk_text_is_caught_by_its_checksum(copy, embedder):
    db = copy / DB_NAME
    text = one_value(db, "SELECT text FROM chunks ORDER BY rid LIMIT 1 OFFSET 2")
    at = offset_of(db, text.encode()[:200]) + 40
    flip_bit(db, at, bit=0)  # still valid UTF-8 text: only the checksum can tell
    err = damaged(copy, embedder)
    assert err.file == db and "chunk texts" in err.problem


def test_a_bit_flip_in_part_vectors_is_caught_by_the_checksum(copy, embedder):
    db = copy / DB_NAME
    parts = one_value(db, "SELECT parts FROM chunks WHERE parts IS NOT NULL LIMIT 1 OFFSET 1")
    flip_bit(db, offset_of(db, parts[:256]) + 64, bit=2)
    err = damaged(copy, embedder)
    assert err.file == db and "part vectors" in err.problem


def test_a_damaged_btree_page_is_caught_by_sqlites_check(copy, embedder):
    db = copy / DB_NAME
    n_pages = db.stat().st_size // PAGE
    with open(db, "r+b") as f:  # overwrite the header and cell pointers of a middle page
        f.seek((n_pages // 2) * PAGE)
        f.write(b"\xff" * 64)
    err = damaged(copy, embedder)
    assert err.file == db and "damaged" in err.problem


@pytest.mark.slow
def test_random_bit_flips_are_refused_or_change_nothing_visible(tmp_path, small_index, embedder):
    """Single-bit flips anywhere in the database: each one is either refused at open with
    IndexDamaged, or lands where nothing a user can see changes (free space, unused bytes)."""
    want = observe(fresh_copy(small_index, tmp_path / "clean"), embedder)
    size = (tmp_path / "clean" / DB_NAME).stat().st_size
    rng = random.Random(20)
    refused = harmless = 0
    for i in range(RANDOM_FLIPS):
        folder = fresh_copy(small_index, tmp_path / f"flip{i}")
        offset = rng.randrange(size)
        flip_bit(folder / DB_NAME, offset, rng.randrange(8))
        try:
            got = observe(folder, embedder)
        except ingest.IndexDamaged as e:
            assert e.file.name in (DB_NAME, mf.MANIFEST_NAME) and e.fix
            refused += 1
        else:
            assert got == want, f"a flip at byte {offset} changed what readers see, unnoticed"
            harmless += 1
        shutil.rmtree(folder)
    assert refused + harmless == RANDOM_FLIPS and refused > 0
    print(f"\n{RANDOM_FLIPS} random bit flips: {refused} refused at open, {harmless} harmless")


# ---- the manifest and the generations ------------------------------------------------------------
def test_manifest_json_of_another_index_is_refused_naming_it(copy, embedder):
    man = json.loads((copy / mf.MANIFEST_NAME).read_text())
    man["embedding"]["dim"] = 768
    (copy / mf.MANIFEST_NAME).write_text(json.dumps(man))
    err = damaged(copy, embedder)
    assert err.file == copy / mf.MANIFEST_NAME and "dim 768" in err.problem.replace("'", "")
    assert err.fix == f"rm {copy / mf.MANIFEST_NAME}"
    # the fix works: index.sqlite is self-checked and authoritative
    (copy / mf.MANIFEST_NAME).unlink()
    assert ingest.open_index(copy, embedder=embedder).stats()["chunks"] > 0


def test_manifest_json_that_is_not_json_is_refused(copy, embedder):
    (copy / mf.MANIFEST_NAME).write_text('{"format": "guidelines-index", "gener')
    err = damaged(copy, embedder)
    assert err.file == copy / mf.MANIFEST_NAME and "not a manifest" in err.problem


def test_a_lost_generation_is_refused(tmp_path, small_docs, embedder):
    """index.sqlite restored from before the last build (or its -wal file deleted) while
    manifest.json says a later generation was published."""
    index = tmp_path / "index"
    ingest.build(write_jsonl(tmp_path / "a.jsonl", small_docs[:2]), index, embedder=embedder,
                 progress=False)
    fresh_copy(index, tmp_path / "gen1")
    ingest.build(write_jsonl(tmp_path / "b.jsonl", small_docs[:3]), index, embedder=embedder,
                 progress=False)
    assert json.loads((index / mf.MANIFEST_NAME).read_text())["generation"] == 2
    shutil.copyfile(tmp_path / "gen1" / DB_NAME, index / DB_NAME)
    for suffix in ("-wal", "-shm"):
        (index / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    err = damaged(index, embedder)
    assert err.file == index / DB_NAME and "generation 1" in err.problem
    assert "lost published data" in err.problem and "b.jsonl" in err.fix


def test_rows_of_the_published_generation_missing_are_refused(copy, embedder):
    conn = sqlite3.connect(copy / DB_NAME)
    conn.execute("DELETE FROM chunks WHERE rid IN (SELECT rid FROM chunks LIMIT 2)")
    conn.commit()
    conn.close()
    err = damaged(copy, embedder)
    assert err.file == copy / DB_NAME and "the manifest says" in err.problem


def test_a_missing_database_beside_its_manifest_is_refused(copy, embedder):
    (copy / DB_NAME).unlink()
    err = damaged(copy, embedder)
    assert err.file == copy / DB_NAME and "missing" in err.problem and "small.jsonl" in err.fix


# ---- another embedding model or dimension --------------------------------------------------------
def test_an_index_of_another_dimension_is_refused_at_the_first_check(tmp_path, embedder):
    folder = tmp_path / "dim768"
    store = IndexStore.create(folder, 768, embedder.name, kind=mf.KIND_CORPUS)
    store.add(["a", "b"], np.random.default_rng(0).normal(size=(2, 768)), ["x", "y"])
    store.close()
    with pytest.raises(ingest.EmbeddingMismatch, match="dim 768") as info:
        ingest.check_model(ingest.open_index(folder))
    assert info.value.path == folder


def test_an_index_of_a_model_not_here_is_refused_naming_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "other-model"
    store = IndexStore.create(folder, 8, "nowhere-org/no-such-model", kind=mf.KIND_CORPUS)
    store.add(["a"], np.ones((1, 8)), ["x"])
    store.close()
    with pytest.raises(ingest.ModelUnavailable, match="nowhere-org/no-such-model"):
        ingest.check_model(ingest.open_index(folder))


# ---- what a user sees: the CLI and the page ----------------------------------------------------
def test_cli_stats_and_query_name_the_damaged_file_and_the_fix(copy):
    with open(copy / DB_NAME, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    for args in (["stats"], ["query", "fever"]):
        done = run_cli(*args, "--index", str(copy))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith(f"error: index {copy}: {DB_NAME} ")
        assert f"mv {copy} {copy}.damaged && python -m ingest build" in done.stderr


def test_cli_query_names_an_embedding_model_that_is_not_here(tmp_path):
    folder = tmp_path / "other-model"
    store = IndexStore.create(folder, 8, "nowhere-org/no-such-model", kind=mf.KIND_CORPUS)
    store.add(["a"], np.ones((1, 8)), ["x"])
    store.close()
    done = run_cli("query", "fever", "--index", str(folder), env_extra={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nowhere-org/no-such-model" in done.stderr and "cannot be loaded here" in done.stderr
