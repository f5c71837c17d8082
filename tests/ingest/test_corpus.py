"""Corpus readers: every format, every bad-input case (file, line, reason), filters."""

from __future__ import annotations

import gzip
import json

import pytest
from ingest_helpers import shortest, write_jsonl

import ingest
from ingest.corpus import MAX_RECORD_BYTES, Record, Rejection, read_corpus


def _good(i: int, source: str = "cdc", **extra) -> dict:
    return {
        "id": f"doc-{i}",
        "source": source,
        "title": f"Title {i}",
        "clean_text": f"# Heading\n\nBody of document {i}.",
        "url": f"https://x/{i}",
        **extra,
    }


def _split(items):
    items = list(items)
    recs = [i for i in items if isinstance(i, Record)]
    rejs = [i for i in items if isinstance(i, Rejection)]
    return recs, rejs


def test_jsonl_reads_the_sample_corpus():
    recs, rejs = _split(read_corpus(ingest.SAMPLE_CORPUS))
    assert len(recs) == 262 and not rejs
    assert {r.source for r in recs} == {"ngc", "cdc", "nhlbi"}
    assert all(r.line == i + 1 for i, r in enumerate(recs))
    assert recs[0].origin == str(ingest.SAMPLE_CORPUS)


BAD_LINES = [
    (b'{"id": "a", "source": "cdc", "clean_text": "x"', "malformed JSON"),
    (b'["not", "an", "object"]', "must be a JSON object"),
    (b'{"id": "b", "source": "cdc"}', "missing field 'clean_text'"),
    (b'{"id": "c", "source": "cdc", "clean_text": "   "}', "field 'clean_text' is empty"),
    (b'{"id": "d", "source": "cdc", "clean_text": 12}', "field 'clean_text' is int, not a string"),
    (
        b'{"id": "e", "source": "cdc", "clean_text": "t", "title": ["x"]}',
        "field 'title' is list, not a string",
    ),
    (b'{"id": 5, "source": "cdc", "clean_text": "t"}', "field 'id' is int, not a string"),
    (b'{"id": "f", "source": "cdc", "clean_text": "caf\xe9"}', "invalid UTF-8"),
    (b'{"id": "g", "source": "cdc", "clean_text": "bad \\ud800 surrogate"}', "lone surrogate"),
    (b'{"id": "doc-0", "source": "cdc", "clean_text": "again"}', "duplicate id, first seen at"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_each_bad_record_is_rejected_with_file_line_and_reason(tmp_path, line, reason):
    path = write_jsonl(tmp_path / "c.jsonl", [_good(0)], [line, json.dumps(_good(1)).encode()])
    recs, rejs = _split(read_corpus(path))
    assert [r.id for r in recs] == ["doc-0", "doc-1"]  # the good records around it are kept
    assert len(rejs) == 1
    assert rejs[0].origin == str(path) and rejs[0].line == 2
    assert reason in rejs[0].reason
    assert f"{path}:2" in str(rejs[0])


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n" + json.dumps(_good(0)).encode() + b"\r\n\n" + b"{bad\n")
    recs, rejs = _split(read_corpus(path))
    assert recs[0].line == 2 and rejs[0].line == 4


def test_an_oversized_line_is_rejected_without_being_kept(tmp_path, monkeypatch):
    monkeypatch.setattr("ingest.corpus.MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr("ingest.corpus._LINE_READ", 1000)
    big = json.dumps(_good(1) | {"clean_text": "x" * 10_000}).encode()
    path = write_jsonl(tmp_path / "c.jsonl", [_good(0)], [big, json.dumps(_good(2)).encode()])
    recs, rejs = _split(read_corpus(path))
    assert [r.id for r in recs] == ["doc-0", "doc-2"]
    assert rejs[0].line == 2 and "longer than 4096 bytes" in rejs[0].reason
    assert MAX_RECORD_BYTES >= 16 * 1024 * 1024  # the real limit leaves room for real documents


def test_gzip_parquet_and_folder_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = shortest(2)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    with gzip.open(folder / "a.jsonl.gz", "wb") as f:
        f.write(b"".join(json.dumps(d).encode() + b"\n" for d in docs[:2]))
    pq.write_table(pa.Table.from_pylist(docs[2:4]), folder / "sub" / "b.parquet")
    write_jsonl(folder / "sub" / "c.jsonl", docs[4:])
    (folder / "notes.txt").write_text("ignored")
    recs, rejs = _split(read_corpus(folder))
    assert not rejs
    assert [r.id for r in recs] == [d["id"] for d in docs]
    assert recs[2].origin.endswith("b.parquet") and recs[2].line == 1
    assert recs[0].clean_text == docs[0]["clean_text"]


def test_parquet_with_a_non_string_column_rejects_its_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"id": "a", "source": "cdc", "clean_text": 1},
            {"id": "b", "source": "cdc", "clean_text": 2},
        ]
    )
    pq.write_table(table, tmp_path / "x.parquet")
    recs, rejs = _split(read_corpus(tmp_path / "x.parquet"))
    assert not recs and [r.line for r in rejs] == [1, 2]
    assert "not a string" in rejs[0].reason


def test_hugging_face_paths_on_local_data(tmp_path):
    """The `datasets` path: a folder saved with save_to_disk, and `hf:` on a local data folder."""
    import datasets

    docs = shortest(1)
    datasets.Dataset.from_list(docs).save_to_disk(str(tmp_path / "saved"))
    recs, rejs = _split(read_corpus(tmp_path / "saved"))
    assert [r.id for r in recs] == [d["id"] for d in docs] and not rejs
    assert recs[0].origin.startswith("hf:")

    write_jsonl((tmp_path / "hub").mkdir() or tmp_path / "hub" / "train.jsonl", docs)
    recs, _ = _split(read_corpus(f"hf:{tmp_path / 'hub'}"))
    assert [r.id for r in recs] == [d["id"] for d in docs]


def test_hugging_face_dataset_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ingest.CorpusError) as err:
        list(read_corpus("epfl-llm/guidelines", limit=1))
    msg = str(err.value)
    assert "epfl-llm/guidelines" in msg and "open_guidelines.jsonl" in msg


def test_missing_input_and_unknown_format(tmp_path):
    with pytest.raises(ingest.CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ingest.CorpusError, match="unknown format"):
        list(read_corpus(tmp_path / "x.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ingest.CorpusError, match="holds no"):
        list(read_corpus(tmp_path / "empty"))


def test_sources_and_limit(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [_good(0, "nice"), _good(1, "who"), _good(2, "NICE"), _good(3, "cdc"), _good(4, "nice")],
    )
    recs, _ = _split(read_corpus(path, sources=["nice", "cdc"]))
    assert [r.id for r in recs] == ["doc-0", "doc-2", "doc-3", "doc-4"]
    recs, _ = _split(read_corpus(path, sources=["nice"], limit=2))
    assert [r.id for r in recs] == ["doc-0", "doc-2"]


def test_content_hash_follows_the_indexed_fields():
    a = Record("x", "cdc", "text", "T", None, "f", 1)
    assert a.content_hash == Record("x", "cdc", "text", "T", None, "g", 9).content_hash
    assert a.content_hash != Record("x", "cdc", "text!", "T", None, "f", 1).content_hash
    assert a.content_hash != Record("x", "cdc", "text", "T2", None, "f", 1).content_hash
