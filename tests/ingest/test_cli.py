"""``python -m ingest`` in real subprocesses: build, stats, query, eval, errors (and how its
chunking flags combine with an index's settings, in-process)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from ingest_helpers import run_cli, write_jsonl

import ingest


@pytest.mark.slow
def test_build_stats_query_eval(tmp_path, small_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs, [b'{"id": "bad"'])
    index = tmp_path / "index"
    out = run_cli(
        "build", "--input", str(corpus), "--index", str(index), "--threads", "2", "--json"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["added"] == len(small_docs) and report["rejected"] == 1
    assert f"{corpus}:{len(small_docs) + 1}: malformed JSON" in out.stderr
    assert "chunks/s" in out.stderr and "generation 1 published" in out.stderr

    again = run_cli("build", "--input", str(corpus), "--index", str(index), "--quiet")
    assert again.returncode == 0 and f"{len(small_docs)} unchanged" in again.stderr

    strict = run_cli("build", "--input", str(corpus), "--index", str(index), "--strict")
    assert strict.returncode == 2 and "--strict: 1 bad record" in strict.stderr

    st = run_cli("stats", "--index", str(index), "--json")
    stats = json.loads(st.stdout)
    assert stats["documents"] == len(small_docs) and stats["dim"] == 384
    text = run_cli("stats", "--index", str(index)).stdout
    assert "all-MiniLM-L6-v2" in text and "documents" in text

    doc = small_docs[0]
    q = run_cli("query", "--index", str(index), f"What is {doc['title']}?", "-k", "2", "--json")
    hits = json.loads(q.stdout)
    assert len(hits) == 2 and hits[0]["doc_id"] == doc["id"]
    assert {"score", "title", "source", "url", "heading", "text", "chunk_id"} <= hits[0].keys()
    plain = run_cli("query", "--index", str(index), "fever", "-k", "1", "--mode", "lexical")
    assert plain.returncode == 0 and plain.stdout.startswith("1. [")

    qa = tmp_path / "qa.jsonl"
    passage = doc["clean_text"].split("\n\n")[0]
    qa.write_text(
        json.dumps({"question": f"What is {doc['title']}?", "answer": passage, "doc_id": doc["id"]})
        + "\n"
    )
    ev = run_cli(
        "eval",
        "--index",
        str(index),
        "--qa",
        str(qa),
        "--k",
        "1,3",
        "--json",
        str(tmp_path / "m.json"),
    )
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {
        "doc_hit@1",
        "doc_hit@3",
        "passage_hit@1",
        "passage_hit@3",
        "mrr",
        "p50_ms",
        "p95_ms",
    } <= metrics.keys()
    assert metrics["doc_hit@1"] == 1.0 and "| passage_hit@1" not in ev.stdout.split("\n")[2]


def test_errors_are_one_clear_line(tmp_path):
    out = run_cli("stats", "--index", str(tmp_path / "nope"))
    assert (
        out.returncode == 2
        and out.stderr.startswith("error: index")
        and "Traceback" not in out.stderr
    )
    out = run_cli("build", "--input", str(tmp_path / "none.jsonl"), "--index", str(tmp_path / "i"))
    assert out.returncode == 2 and "no such file" in out.stderr
    assert not (tmp_path / "i").exists()


def test_chunking_flags_apply_over_an_index_own_settings(tmp_path):
    from ingest.cli import _chunking, _parser

    def settings(*flags: str):
        return _chunking(_parser().parse_args(["build", "--input", "x", "--index", str(tmp_path),
                                               *flags]))

    assert settings() is None  # no flag: the build keeps an existing index's settings
    assert settings("--max-tokens", "128") == ingest.ChunkingSettings(max_tokens=128)
    old = ingest.ChunkingSettings(min_section_tokens=0, overlap_tokens=16)
    (tmp_path / "manifest.json").write_text(json.dumps({"chunking": old.to_dict()}))
    assert settings("--max-tokens", "128") == replace(old, max_tokens=128)
    assert settings("--no-context", "--subheadings") == replace(old, context=False,
                                                                subheadings=True)
