"""A build that is killed at several points, or hits a full disk, leaves the previous generation
readable and intact (every check at open passes, readers see exactly what they saw), and the next
run completes it to the same index as a build that was never interrupted.

Real processes: ``python -m ingest build`` in a subprocess, killed with SIGKILL after k committed
batches and after seeded random delays, or run under ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so a write
past the limit fails with EFBIG as on a full disk).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ingest_helpers import ROOT, THREADS, observe, staged_chunks, write_jsonl

import ingest
from ingest.index import DB_NAME, VISIBLE_AT

BATCH = 2  # chunks per committed batch: many kill points on a small corpus
KILL_AFTER_BATCHES = (1, 4)
RANDOM_DELAYS = 2  # kills after a seeded random delay (model loading, reading, embedding...)
FSIZE_MARGIN = 48 * 1024  # bytes any file may grow past the index's size before writes fail


def _build_cmd(corpus, index) -> list[str]:
    return [sys.executable, "-m", "ingest", "build", "--input", str(corpus), "--index", str(index),
            "--batch-chunks", str(BATCH), "--threads", str(THREADS), "--quiet"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}


def _start(corpus, index, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(_build_cmd(corpus, index), cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)


def _kill_after(proc: subprocess.Popen, index, batches: int, timeout: float = 600) -> int:
    """SIGKILL once ``batches`` batches are committed; returns the chunks staged by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the build ended before its kill point: {proc.stderr.read()[-2000:]}")
        staged = staged_chunks(index)
        if staged >= batches * BATCH:
            proc.kill()
            proc.communicate(timeout=60)
            return staged
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the build committed too few batches in time")


def _content(index) -> tuple[list, np.ndarray]:
    idx = ingest.open_index(index)
    try:
        with idx.store.snapshot() as (conn, gen):
            ids = [r[0] for r in conn.execute(
                f"SELECT chunk_id FROM chunks WHERE {VISIBLE_AT} ORDER BY chunk_id", (gen, gen))]
        chunks = [(c.id, c.text, c.metadata) for c in idx.store.get(ids)]
        return chunks, idx.store.get_vectors(ids)
    finally:
        idx.close()


def _assert_same_index(index, reference) -> None:
    got, got_v = _content(index)
    want, want_v = _content(reference)
    assert got == want  # the same chunks, texts and metadata
    np.testing.assert_allclose(got_v, want_v, atol=2e-5)  # batches pad differently: last bits


@pytest.fixture()
def gen1(tmp_path, small_docs, embedder):
    """An index at generation 1 (two documents) and what its readers see."""
    index = tmp_path / "index"
    ingest.build(write_jsonl(tmp_path / "first.jsonl", small_docs[:2]), index, embedder=embedder,
                 progress=False)
    return index, observe(index, embedder)


@pytest.mark.slow
def test_kills_at_several_points_leave_generation_1_intact_and_the_next_run_completes(
    tmp_path, small_docs, small_index, embedder, gen1
):
    index, seen = gen1
    corpus = write_jsonl(tmp_path / "all.jsonl", small_docs)
    staged_before = 0
    points = [f"after {k} batches" for k in KILL_AFTER_BATCHES]
    for k in KILL_AFTER_BATCHES:
        staged = _kill_after(_start(corpus, index), index, staged_before // BATCH + k)
        assert staged >= staged_before  # committed batches survive each kill
        staged_before = staged
        assert observe(index, embedder) == seen, f"readers saw a change after a kill after {k}"
    rng = random.Random(7)
    for _ in range(RANDOM_DELAYS):
        delay = rng.uniform(0.5, 12.0)
        proc = _start(corpus, index)
        time.sleep(delay)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
        points.append(f"after {delay:.1f} s (exit {proc.returncode})")
        man = ingest.open_index(index).manifest
        if man["generation"] == 1:  # killed before it published: nothing visible changed
            assert observe(index, embedder) == seen, points[-1]
        else:  # the run published before its kill (it may be killed after publishing, before
            # exiting: exit -9 with generation 2): then the published index is complete
            assert man["generation"] == 2 and proc.returncode in (0, -9), points[-1]
            _assert_same_index(index, small_index)
    rep = ingest.build(corpus, index, embedder=embedder, progress=False)
    assert ingest.open_index(index).manifest["generation"] == 2
    full, first = ingest.open_index(small_index).stats()["chunks"], seen["stats"][1]
    assert rep.chunks_added <= full - first - staged_before  # committed batches were not redone
    _assert_same_index(index, small_index)
    print(f"\nkill points survived: {', '.join(points)}; then the next run completed it")


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_a_full_disk_fails_with_a_clear_error_keeps_generation_1_and_the_next_run_completes(
    tmp_path, small_docs, small_index, embedder, gen1
):
    index, seen = gen1
    corpus = write_jsonl(tmp_path / "all.jsonl", small_docs)
    limit = (index / DB_NAME).stat().st_size + FSIZE_MARGIN
    proc = _start(corpus, index, _limit_file_size(limit))
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    assert f"error: index {index}: writing {DB_NAME} failed" in err, err[-2000:]
    assert "re-run the same build" in err
    assert observe(index, embedder) == seen  # generation 1 whole, every check at open passes
    ingest.build(corpus, index, embedder=embedder, progress=False)
    _assert_same_index(index, small_index)
