"""How long a prompt batch's attention takes (``engine.kernels.blas.attention_heads``), by shape.

    python scripts/bench_attention.py [--threads 2] [--repeats 5]

Times one layer's attention of a 512-position prompt batch at several starting positions, on
random float32 queries and caches, for the shapes of the 1.1B benchmark model (32 query heads,
4 KV heads of 64), of Llama-2-7B / Meditron-7B (32 heads of 128) and of a Gemma-3 sliding-window
layer (8 heads, 4 KV heads of 256, window 512); best of ``--repeats``.  To compare two commits,
copy this file into the other checkout's ``scripts/`` and run both there, one after the other:
it imports the engine of the checkout it sits in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.kernels import set_threads
from engine.kernels.blas import attention_heads

# (name, query heads, KV heads, head size, sliding window or 0)
SHAPES = [
    ("1.1B (TinyLlama)", 32, 4, 64, 0),
    ("7B (Llama-2)", 32, 32, 128, 0),
    ("Gemma-3 local layer", 8, 4, 256, 512),
]
N_BATCH = 512
STARTS = (0, 512, 1280)


def time_attention(n_head: int, n_kv: int, hd: int, window: int, pos0: int, repeats: int) -> float:
    """Best seconds of ``repeats`` calls for a batch of N_BATCH positions from ``pos0``."""
    rng = np.random.default_rng(pos0)
    n_ctx = pos0 + N_BATCH
    q = rng.standard_normal((N_BATCH, n_head * hd), dtype=np.float32)
    k_cache = rng.standard_normal((n_kv, n_ctx, hd), dtype=np.float32)
    v_cache = rng.standard_normal((n_kv, n_ctx, hd), dtype=np.float32)
    out = np.empty_like(q)
    scale = np.float32(hd**-0.5)
    attention_heads(q, k_cache, v_cache, pos0, scale, window, out)  # compile, warm the buffers
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        attention_heads(q, k_cache, v_cache, pos0, scale, window, out)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print(f"attention of {N_BATCH} prompt positions, one layer, {args.threads} threads (best "
          f"of {args.repeats})")  # fmt: skip
    for name, n_head, n_kv, hd, window in SHAPES:
        for pos0 in STARTS:
            seconds = time_attention(n_head, n_kv, hd, window, pos0, args.repeats)
            print(f"{name:22s} positions {pos0:5d}-{pos0 + N_BATCH - 1:5d}: "
                  f"{seconds * 1e3:7.1f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
