"""The index folder as a plain vector store (fake 6-dim vectors): semantics, safety, atomicity."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

import ingest
from ingest.index import DB_NAME, IndexStore

DIM = 6


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture()
def store(tmp_path):
    s = IndexStore.create(tmp_path / "store", DIM, "fake-6")
    yield s
    s.close()


def test_add_get_search_delete_upsert(store):
    v = _vecs(3)
    ids = store.add(
        ["a", "b", "c"],
        v,
        ["alpha", "beta", "gamma"],
        [{"source": "nice", "n": 1}, {"nested": {"x": [1, 2]}}, None],
    )
    assert ids == ["a", "b", "c"] and store.count() == 3
    got = store.get(["c", "missing", "a"])
    assert [(g.id, g.text, g.metadata) for g in got] == [
        ("c", "gamma", {}),
        ("a", "alpha", {"source": "nice", "n": 1}),
    ]
    hits = store.search_by_vector(v[1], k=2)
    assert hits[0].chunk_id == "b" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"nested": {"x": [1, 2]}}
    # upsert: same id, new text and vector
    store.add(["b"], v[2:3] * 3, ["beta 2"], [{"v": 2}])
    assert store.count() == 3 and store.get(["b"])[0].text == "beta 2"
    assert store.search_by_vector(v[2], k=3)[0].chunk_id in {"b", "c"}
    np.testing.assert_allclose(store.get_vectors(["b"]), v[2:3] * 3)
    assert store.delete(["a", "nope"]) >= 1
    assert store.count() == 2 and store.get(["a"]) == []
    assert [h.chunk_id for h in store.search_by_vector(v[0], k=5)] != [] and all(
        h.chunk_id != "a" for h in store.search_by_vector(v[0], k=5)
    )


def test_filters_sources_and_metadata(store):
    v = _vecs(6, seed=1)
    store.add(
        [f"id{i}" for i in range(6)],
        v,
        [f"t{i}" for i in range(6)],
        [{"source": "nice" if i % 2 else "who", "i": i} for i in range(6)],
    )
    hits = store.search_by_vector(v[0], k=6, sources=["nice"])
    assert {h.chunk_id for h in hits} == {"id1", "id3", "id5"}
    hits = store.search_by_vector(v[0], k=2, filter={"i": 4})
    assert [h.chunk_id for h in hits] == ["id4"]
    hits = store.search_by_vector(v[0], k=2, filter=lambda m: m["i"] > 3)
    assert {h.chunk_id for h in hits} == {"id4", "id5"}
    assert store.search_by_vector(v[0], k=3, sources=["cdc"]) == []


def test_bad_arguments(store):
    with pytest.raises(ValueError):
        store.add(["a"], _vecs(2), ["x"], [{}])
    with pytest.raises(ValueError):
        store.add(["a"], np.full((1, DIM), np.nan, np.float32), ["x"], [{}])
    with pytest.raises(ValueError):
        store.search_by_vector(np.ones(DIM + 1), k=1)
    with pytest.raises(KeyError):
        store.get_vectors(["missing"])
    assert store.count() == 0


def test_reopen_and_manifest(tmp_path, store):
    store.add(["a"], _vecs(1), ["x"], [{}])
    again = IndexStore.open(store.path)
    assert again.get(["a"])[0].text == "x" and again.dim == DIM
    assert again.embedding_model == "fake-6"
    man = json.loads((store.path / "manifest.json").read_text())
    assert man["counts"]["chunks"] == 1 and man["embedding"] == again.manifest["embedding"]
    with pytest.raises(ingest.IndexFolderError, match="already holds an index"):
        IndexStore.create(store.path, DIM, "fake-6")
    again.close()


def test_a_second_handle_sees_new_generations(store):
    reader = IndexStore.open(store.path, readonly=True)
    assert reader.search_by_vector(np.ones(DIM), k=1) == []
    v = _vecs(2)
    store.add(["a", "b"], v, ["x", "y"])
    assert reader.search_by_vector(v[0], k=1)[0].chunk_id == "a"
    store.delete(["a"])
    assert [h.chunk_id for h in reader.search_by_vector(v[0], k=2)] == ["b"]
    with pytest.raises(ingest.IndexFolderError, match="read-only"):
        reader.add(["c"], v[:1], ["z"])
    reader.close()


def test_not_an_index(tmp_path):
    with pytest.raises(ingest.IndexFolderError, match="no such folder"):
        IndexStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ingest.IndexFolderError, match="not an index"):
        IndexStore.open(tmp_path / "empty")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / DB_NAME).write_bytes(b"\x80\x04pickle? no" * 10)
    with pytest.raises(ingest.IndexFolderError, match="not an SQLite database"):
        IndexStore.open(tmp_path / "fake")


def _tamper(path, sql: str, *params) -> None:
    conn = sqlite3.connect(path / DB_NAME)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_tampered_vectors_are_refused(store):
    store.add(["a", "b"], _vecs(2), ["x", "y"])
    _tamper(store.path, "UPDATE chunks SET vector = zeroblob(1 << 20) WHERE chunk_id = 'a'")
    with pytest.raises(ingest.IndexDamaged, match="expected 24"):  # refused at open
        IndexStore.open(store.path, readonly=True)


def test_a_manifest_with_an_absurd_dimension_is_refused(store):
    man = dict(store.manifest, embedding={"model": "fake-6", "dim": 10**9})
    _tamper(store.path, "UPDATE meta SET value = ? WHERE key = 'manifest'", json.dumps(man))
    with pytest.raises(ingest.IndexFolderError, match="implausible embedding dimension"):
        IndexStore.open(store.path)


def test_extra_schema_objects_are_refused(store):
    _tamper(store.path, "CREATE TRIGGER t AFTER INSERT ON chunks BEGIN DELETE FROM meta; END")
    with pytest.raises(ingest.IndexFolderError, match="does not have the index schema"):
        IndexStore.open(store.path)


def test_staged_rows_are_invisible_until_published(store):
    v = _vecs(3)
    store.add(["a"], v[:1], ["published"])
    gen = store.begin_build()
    store.stage(
        gen,
        [("d1", "cdc", "T", None, "h", 10, 1)],
        [("d1#0", "d1", "cdc", "T", "staged", {"doc_id": "d1"})],
        v[1:2],
    )
    reader = IndexStore.open(store.path, readonly=True)
    assert [h.chunk_id for h in reader.search_by_vector(v[1], k=5)] == ["a"]
    assert reader.get(["d1#0"]) == []
    store.publish(gen)
    assert {h.chunk_id for h in reader.search_by_vector(v[1], k=5)} == {"a", "d1#0"}
    store.end_build()
    reader.close()


def test_discarded_build_changes_nothing(store):
    v = _vecs(2)
    store.add(["a"], v[:1], ["x"], [{"doc_id": "d0"}])
    gen = store.begin_build()
    store.stage(
        gen, [("d1", "cdc", None, None, "h", 1, 1)], [("d1#0", "d1", "cdc", "", "y", {})], v[1:]
    )
    store.discard_build(gen)
    store.end_build()
    assert store.count() == 1 and store.get(["d1#0"]) == []
    store.add(["b"], v[1:], ["z"])  # writable again: no build pending
    assert store.count() == 2


def test_two_writers_exclude_each_other(store):
    other = IndexStore.open(store.path)
    store.begin_build()
    with pytest.raises(ingest.IndexBusy):
        other.begin_build()
    store.end_build()
    other.close()


def test_concurrent_readers_while_writing(store):
    v = _vecs(50, seed=3)
    store.add([f"x{i}" for i in range(10)], v[:10], ["t"] * 10)
    reader = IndexStore.open(store.path, readonly=True)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for i in range(40):
                hits = reader.search_by_vector(v[i % 10], k=3)
                assert hits and all(h.text == "t" for h in hits)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(10, 50, 5):
        store.add([f"x{j}" for j in range(i, i + 5)], v[i : i + 5], ["t"] * 5)
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert reader.count() == 50
    reader.close()
