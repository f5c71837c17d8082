"""Answer receipts: the hash cache, the comparison, bad receipts; and (slow) a receipt made by
``ask`` replays to the identical answer in a new process that starts on an empty numba cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant import receipt as rc
from assistant.answer import Answer, Citation, Passage
from assistant.cli import main
from assistant.notice import ADVISORY_NOTICE
from assistant.replay import ReceiptError, compare, load_receipt

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "Adults aged 65 to 75 [1]."


def _receipt(**changes) -> dict:
    base = {
        "format": rc.RECEIPT_FORMAT, "version": rc.RECEIPT_VERSION, "question": "q?",
        "model": {"file": "m.gguf", "path": "/m.gguf", "sha256": "a" * 64, "quantization": "Q4_1"},
        "engine": {"version": "0.1.0", "source_sha256": "b" * 64},
        "sampler": {"temperature": 0.0, "seed": 0, "max_tokens": 32},
        "retrieval": {"k": 4, "min_similarity": 0.25, "mode": "hybrid", "sources": None},
        "index": {"path": "/idx", "generation": 1, "manifest_sha256": "c" * 64},
        "chunks": ["d#1", "d#2"], "prompt_sha256": "e" * 64,
        "answer": ANSWER, "answer_sha256": rc.text_sha256(ANSWER),
        "deterministic": True,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def test_file_sha256_is_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    f = tmp_path / "model.gguf"
    f.write_bytes(b"x" * 1000)
    cache = tmp_path / "hashes.json"
    want = hashlib.sha256(b"x" * 1000).hexdigest()
    assert rc.file_sha256(f, cache) == want
    assert json.loads(cache.read_text())[str(f.resolve())]["sha256"] == want
    # a new process (empty memory) reads the digest from the cache file without hashing
    rc._hashes.clear()
    monkeypatch.setattr(rc.hashlib, "sha256", lambda *a: pytest.fail("hashed again"))
    assert rc.file_sha256(f, cache) == want
    monkeypatch.undo()
    # the file changes (size and mtime): hashed again
    f.write_bytes(b"y" * 1001)
    os.utime(f, ns=(1, 1))
    rc._hashes.clear()
    assert rc.file_sha256(f, cache) == hashlib.sha256(b"y" * 1001).hexdigest()


def test_file_sha256_ignores_a_corrupt_cache(tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"abc")
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")
    rc._hashes.clear()
    assert rc.file_sha256(f, cache) == rc.text_sha256("abc")


def test_compare_identical_and_each_difference() -> None:
    old = _receipt()
    assert compare(old, _receipt()).identical
    new = _receipt(model={"sha256": "f" * 64}, index={"generation": 2}, chunks=["d#2", "d#1"],
                   prompt_sha256="0" * 64, answer="Adults aged 50 [1].",
                   answer_sha256=rc.text_sha256("Adults aged 50 [1]."))
    result = compare(old, new)
    assert not result.identical
    parts = [p for p, _ in result.differences]
    assert parts == ["model", "index", "passages", "prompt", "answer"]
    answer_diff = dict(result.differences)["answer"]
    assert "character 12" in answer_diff
    report = result.report()
    assert report.startswith("different") and "generation was 1, now 2" in report


def test_compare_engine_and_sampler_differences() -> None:
    result = compare(_receipt(), _receipt(engine={"source_sha256": "9" * 64},
                                          sampler={"seed": 7}))
    assert result.identical  # same answer: the differences are still reported
    assert [p for p, _ in result.differences] == ["engine", "sampler"]


def test_compare_names_the_prompt_products_path() -> None:
    """An answer made with AMX tiles and replayed where BLAS does the prompts (or the other way
    round) may differ: the report says so."""
    engine = {"version": "0.1.0", "source_sha256": "b" * 64}
    old = _receipt(engine={**engine, "prompt_products": "amx-bfloat16"})
    new = _receipt(engine={**engine, "prompt_products": "blas-float32"})
    result = compare(old, new)
    assert result.differences == [
        ("engine", "prompt_products was amx-bfloat16, now blas-float32")
    ]


def test_receipt_records_how_prompt_products_run() -> None:
    from assistant.receipt import engine_version
    from engine.kernels import amx as kernels_amx

    products = engine_version()["prompt_products"]
    assert products == ("amx-bfloat16" if kernels_amx.available() else "blas-float32")


def test_load_receipt_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ReceiptError, match="format"):
        load_receipt(bad)
    bad.write_text(json.dumps(_receipt(chunks="d#1")))
    with pytest.raises(ReceiptError, match="'chunks'"):
        load_receipt(bad)
    bad.write_text(json.dumps(_receipt(version=99)))
    with pytest.raises(ReceiptError, match="version"):
        load_receipt(bad)
    bad.write_text("{nope")
    with pytest.raises(ReceiptError, match="not JSON"):
        load_receipt(bad)
    with pytest.raises(ReceiptError, match="cannot be read"):
        load_receipt(tmp_path / "absent.json")
    ok = tmp_path / "ask.json"
    ok.write_text(json.dumps({"answer": "x", "receipt": _receipt()}))  # an ask --json output
    assert load_receipt(ok)["question"] == "q?"


def test_replay_cli_exit_2_on_a_bad_receipt_or_missing_model(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "format" in err and ADVISORY_NOTICE in err
    bad.write_text(json.dumps(_receipt(model={"path": str(tmp_path / "none.gguf"),
                                              "file": "none.gguf"})))
    assert main(["replay", str(bad), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "cannot-replay" and "model file" in out["error"]


def test_markdown_download_has_answer_sources_receipt_and_notice() -> None:
    p = Passage(1, "ngc-1", "ngc-1#3", "AAA screening", "ngc", "https://x", "Recommendations",
                "Men aged 65 to 75 who have ever smoked.\nOne-time ultrasound.")
    answer = Answer("Who should be screened?", "Men aged 65 to 75 who ever smoked [1].",
                    [Citation.from_passage(p, "cited")], [p], finish_reason="repetition",
                    receipt=_receipt())
    md = rc.answer_markdown(answer)
    assert md.startswith("# Who should be screened?")
    assert "[1] AAA screening — Recommendations (ngc)" in md and "<https://x>" in md
    assert "  > One-time ultrasound." in md
    assert "began repeating itself" in md
    assert "a" * 64 in md and "d#1, d#2" in md
    assert md.rstrip().endswith(f"**{ADVISORY_NOTICE}**")


# -- end to end: ask in one process, replay in another on an empty numba cache ----------------

@pytest.mark.slow
def test_receipt_replays_identically_on_an_empty_numba_cache(small_index: Path,
                                                           default_model_path: Path,
                                                           tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GUIDELINES_HOME": str(tmp_path / "home")}
    env.pop("NUMBA_CACHE_DIR", None)  # ask: the engine's own (warm) cache
    receipt_file = tmp_path / "receipt.json"
    ask = subprocess.run(
        [sys.executable, "-m", "assistant", "ask", "What is ascariasis?", "--index",
         str(small_index), "--model", str(default_model_path), "--max-tokens", "32", "--k", "2",
         "--json", "--receipt", str(receipt_file)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert ask.returncode == 0, ask.stderr[-2000:]
    out = json.loads(ask.stdout)
    receipt = out["receipt"]
    assert json.loads(receipt_file.read_text()) == receipt
    assert receipt["answer_sha256"] == rc.text_sha256(out["answer"]) and out["answer"]
    assert receipt["chunks"] == [p["chunk_id"] for p in out["passages"]]
    assert receipt["model"]["quantization"] == "Q4_1" and len(receipt["model"]["sha256"]) == 64
    assert receipt["index"]["generation"] >= 1 and receipt["deterministic"]

    fresh = tmp_path / "numba-cache"
    fresh.mkdir()
    replay = subprocess.run(
        [sys.executable, "-m", "assistant", "replay", str(receipt_file), "--json"],
        env={**env, "NUMBA_CACHE_DIR": str(fresh)}, cwd=ROOT, capture_output=True, text=True,
        timeout=1800)
    assert any(fresh.rglob("*.nbi")), "the replay did not compile into the empty cache"
    result = json.loads(replay.stdout)
    assert replay.returncode == 0, result
    assert result["status"] == "identical" and result["differences"] == []
    assert result["replayed"]["answer_sha256"] == receipt["answer_sha256"]
