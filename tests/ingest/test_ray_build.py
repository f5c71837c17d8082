"""The Ray build on a real local Ray cluster: a head and a second worker node (``ray start``, one
CPU each, small object stores), building 30 real documents of the sample through
``python -m ingest build --ray ADDRESS`` while a worker process is killed mid-build, and comparing
the index with the single-process one: nothing lost, nothing duplicated, vectors within float
tolerance, the same manifest but for how it was built.

The cluster's processes are found by a token in their environment and only they are stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import ROOT, THREADS, run_cli, shortest, write_jsonl

import ingest

pytest.importorskip("ray", reason="the 'distributed' extra (ray[data]) is not installed")

pytestmark = pytest.mark.slow
WORKER_TITLE = "ray::MapWorker(MapBatches(EmbedWorker))"
OBJECT_STORE = str(100 * 1024 * 1024)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _our_processes(token: str) -> list[int]:
    """Pids of the processes that carry ``token`` in their environment (our cluster's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"GUIDELINES_RAY_TEST={token}".encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Cluster:
    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GUIDELINES_RAY_TEST": self.token,
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_USAGE_STATS_ENABLED": "0",
            # token authentication (Ray's default), with this cluster's own token
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
        }
        self.temp = Path(f"/tmp/ray-{self.token[:8]}")  # sockets need a short path
        self.ray = str(Path(sys.executable).parent / "ray")

    def start(self) -> None:
        common = ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats"]
        self._run("start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                  "--include-dashboard=false", f"--temp-dir={self.temp}", *common)
        self._run("start", f"--address={self.address}", "--node-ip-address=127.0.0.1", *common)

    def _run(self, *args: str) -> None:
        done = subprocess.run([self.ray, *args], env=self.env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr

    def workers(self) -> list[int]:
        return [p for p in _our_processes(self.token) if _title(p).startswith(WORKER_TITLE)]

    def stop(self) -> None:
        """SIGTERM then SIGKILL our cluster's processes (never anyone else's)."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = _our_processes(self.token)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and _alive(p)]
            if not pids:
                break


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def corpus30(tmp_path_factory) -> Path:
    """30 real documents: the 10 shortest of each source of the sample."""
    return write_jsonl(tmp_path_factory.mktemp("c30") / "c30.jsonl", shortest(10))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus30, embedder) -> Path:
    """The single-process index of the same documents."""
    index = tmp_path_factory.mktemp("ref") / "index"
    ingest.build(corpus30, index, embedder=embedder, progress=False)
    return index


def _ray_build(cluster: Cluster, corpus: Path, index: Path, *extra: str, **kw):
    args = ["build", "--input", str(corpus), "--index", str(index), "--ray", cluster.address,
            "--quiet", "--json", *extra]
    return subprocess.Popen([sys.executable, "-m", "ingest", *args], cwd=ROOT, env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def _content(index: Path) -> tuple[dict, dict]:
    """Live documents and chunks (with vectors and part vectors) by id."""
    conn = sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True)
    try:
        docs = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT doc_id, source, title, url, content_hash, n_chars, n_chunks "
                "FROM documents WHERE gen_deleted IS NULL"
            )
        }
        chunks: dict = {}
        for cid, doc, src, ctx, text, md, vec, parts in conn.execute(
            "SELECT chunk_id, doc_id, source, context, text, metadata, vector, parts "
            "FROM chunks WHERE gen_deleted IS NULL"
        ):
            assert cid not in chunks, f"chunk {cid} twice"
            chunks[cid] = ((doc, src, ctx, text, json.loads(md)), vec, parts)
        n_rows = conn.execute("SELECT count(*) FROM chunks WHERE gen_deleted IS NULL").fetchone()
        assert n_rows[0] == len(chunks)
    finally:
        conn.close()
    return docs, chunks


def _assert_same_index(ray_index: Path, ref_index: Path) -> None:
    ray_docs, ray_chunks = _content(ray_index)
    ref_docs, ref_chunks = _content(ref_index)
    assert ray_docs == ref_docs
    assert ray_chunks.keys() == ref_chunks.keys()
    dim = json.loads((ref_index / "manifest.json").read_text())["embedding"]["dim"]
    for cid, (rows, vec, parts) in ref_chunks.items():
        got_rows, got_vec, got_parts = ray_chunks[cid]
        assert got_rows == rows, cid
        a, b = (np.frombuffer(v, dtype=np.float32).reshape(-1, dim) for v in (got_vec, vec))
        np.testing.assert_allclose(a, b, atol=2e-5, err_msg=cid)
        pa, pb = (np.frombuffer(p, dtype=np.float16).astype(np.float32) for p in (got_parts, parts))
        np.testing.assert_allclose(pa, pb, atol=2e-3, err_msg=cid)
    ray_man = json.loads((ray_index / "manifest.json").read_text())
    ref_man = json.loads((ref_index / "manifest.json").read_text())
    for man in (ray_man, ref_man):
        for key in ("created", "updated", "last_build", "inputs"):
            man.pop(key)
        # vectors and the sentence (part) vectors inside chunks_sha256 agree within tolerance
        # (compared above), not in bits; ids, texts and metadata are compared row by row above
        man["checksums"].pop("vectors_sha256")
        man["checksums"].pop("chunks_sha256", None)
    assert ray_man == ref_man


def test_ray_build_survives_a_killed_worker_and_equals_single_process(
    cluster, corpus30, reference, tmp_path
):
    """One build on the two-node cluster; a worker process is killed while it embeds.  The index
    equals the single-process one (nothing lost, nothing twice); a re-run adds nothing."""
    index = tmp_path / "ray-index"
    # small committed batches: several transactions land before and after the kill
    proc = _ray_build(cluster, corpus30, index, "--batch-chunks", "8")
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        busy = [p for p in cluster.workers() if ".submit" in _title(p)]
        if busy:  # a worker with the model loaded, embedding its documents
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.05)
    assert killed is not None, "no worker was seen at work before the build ended"
    report = _finish(proc)
    assert report["added"] == 30 and report["published"]
    assert report["executor"] == {"kind": "ray", "address": cluster.address, "nodes": 2,
                                  "actors": 2, "threads_per_actor": 1}
    _assert_same_index(index, reference)
    man = json.loads((index / "manifest.json").read_text())
    assert man["last_build"]["executor"]["kind"] == "ray"
    ref_man = json.loads((reference / "manifest.json").read_text())
    assert ref_man["last_build"]["executor"] == {"kind": "local", "threads": THREADS}

    again = _finish(_ray_build(cluster, corpus30, index))
    assert again["added"] == 0 and again["unchanged"] == 30 and not again["published"]


def test_unreachable_cluster_is_a_clear_error(tmp_path, corpus30):
    done = run_cli("build", "--input", str(corpus30), "--index", str(tmp_path / "i"),
                   "--ray", f"127.0.0.1:{_free_port()}", "--quiet", timeout=180)
    assert done.returncode == 2
    assert "Ray cluster" in done.stderr
    assert not (tmp_path / "i" / "index.sqlite").exists()
