"""Greedy output does not depend on numba's disk cache: a process that compiles the kernels
(an empty ``NUMBA_CACHE_DIR``) and one that loads them from that cache compute the same logits,
bit for bit, on the real default model.

Before the fix the attention kernel (then ``engine.llama._attend``, fastmath; now
``engine.ops.attend_pair``) differed in the last bits between the two (docs/BENCHMARKS.md):
numba links a copy of a callee into each caller, and a compiling process ran the callee's own
copy while a cached one ran the caller's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# A prompt of 47 tokens: long enough for the float path of the products (>= 6 tokens) and the
# threaded attention (>= 2^20 multiply-adds); then single-token decode steps (the fused step).
SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import engine
from engine.llama import KVCache, Workspace, forward, prefill

model = engine.load(sys.argv[1])
text = ("<|im_start|>user\nWho should be screened for abdominal aortic aneurysm, and how? "
        "Explain the guideline and the evidence, with the recommended ultrasound."
        "<|im_end|>\n<|im_start|>assistant\n")
ids = model.tokenize(text, special=True)
w, cfg = model._weights(), model.config
cache, ws = KVCache(cfg, len(ids) + 16), Workspace(cfg, 64)
logits = prefill(w, cache, np.asarray(ids, np.int64), ws)
digest, tokens, token = hashlib.sha256(logits.tobytes()), [], np.zeros(1, np.int64)
for _ in range(16):
    token[0] = int(np.argmax(logits))
    tokens.append(int(token[0]))
    logits = forward(w, cache, token, ws)
    digest.update(logits.tobytes())
print(json.dumps({"n_prompt": len(ids), "tokens": tokens, "logits_sha256": digest.hexdigest()}))
"""


def _run(model: Path, cache_dir: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_and_cached_kernels_give_identical_logits(default_model_path: Path,
                                                        tmp_path: Path) -> None:
    cache_dir = tmp_path / "numba-cache"
    cache_dir.mkdir()
    fresh = _run(default_model_path, cache_dir)  # compiles every kernel, fills the cache
    assert any(cache_dir.rglob("*.nbi")), "the first run wrote no numba cache"
    cached = _run(default_model_path, cache_dir)  # loads them all from the cache
    assert fresh["n_prompt"] >= 6
    assert cached["tokens"] == fresh["tokens"]
    assert cached["logits_sha256"] == fresh["logits_sha256"]
