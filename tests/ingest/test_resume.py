"""Crash safety with real processes: a killed build stays invisible, loses a batch at most."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from ingest_helpers import ROOT, THREADS, staged_chunks, write_jsonl

import ingest


def _start_build(corpus, index) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest",
            "build",
            "--input",
            str(corpus),
            "--index",
            str(index),
            "--batch-chunks",
            "4",
            "--threads",
            str(THREADS),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background jobs with SIGINT ignored, and Python
        # keeps it so: the ctrl-c case needs the default handling (KeyboardInterrupt)
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_after_first_batches(
    proc: subprocess.Popen, index, sig: int, timeout: float = 900
) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the build ended before it could be interrupted: {proc.stderr.read()}")
        staged = staged_chunks(index)
        if staged >= 4:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            return staged, err
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the build committed no batch in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["crash", "ctrl-c"])
def test_a_killed_build_is_invisible_then_resumes(tmp_path, small_docs, small_index, embedder, sig):
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs)
    index = tmp_path / "index"
    # generation 1: two documents, published
    ingest.build(
        write_jsonl(tmp_path / "first.jsonl", small_docs[:2]),
        index,
        embedder=embedder,
        progress=False,
    )
    before = ingest.open_index(index, embedder=embedder)
    gen1 = before.stats()

    proc = _start_build(corpus, index)
    staged, err = _kill_after_first_batches(proc, index, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "re-run the same build to resume" in err

    # readers still see generation 1, whole, and can search it
    after = ingest.open_index(index, embedder=embedder)
    assert after.stats()["chunks"] == gen1["chunks"] and after.stats()["generation"] == 1
    assert before.search("fever", k=3) and before.stats()["documents"] == 2
    assert staged_chunks(index) >= staged  # committed batches survived the kill

    # the next run resumes: it embeds only what the killed run had not committed
    rep = ingest.build(corpus, index, embedder=embedder, progress=False)
    full = ingest.open_index(small_index, embedder=embedder).stats()
    final = ingest.open_index(index, embedder=embedder).stats()
    assert final["documents"] == full["documents"] and final["chunks"] == full["chunks"]
    assert rep.chunks_added == full["chunks"] - gen1["chunks"] - staged
    assert final["generation"] == 2


@pytest.mark.slow
def test_first_build_killed_leaves_no_visible_index(tmp_path, small_docs, embedder):
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs)
    index = tmp_path / "index"
    proc = _start_build(corpus, index)
    _kill_after_first_batches(proc, index, signal.SIGKILL)
    with pytest.raises(ingest.IndexFolderError, match="no build has completed"):
        ingest.open_index(index)
    rep = ingest.build(corpus, index, embedder=embedder, progress=False)
    assert rep.published and ingest.open_index(index).stats()["documents"] == len(small_docs)
