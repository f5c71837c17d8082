"""Prompt batches through BLAS: ``y = x @ W.T`` on bands of weight rows decoded to float32, and
attention one head at a time as two products and a causal softmax.

From ``kernels.BLAS_PATH_MIN_TOKENS`` tokens on, a product is worth decoding each weight row
once to float32 (exactly, ``kernels/decode.py``) and handing the multiply to numpy's BLAS
(``sgemm``), which tiles for the registers and caches better than a hand loop: on this
machine's AVX-512 cores about 2.5 × the 4 × 2 register tile at 512 tokens.

The rows are split into bands of at most ``BLAS_BAND_BYTES`` decoded bytes (they stay in the
cache between decoding and multiplying).  Each of the engine's threads (``kernels.set_threads``)
takes every n-th band and runs decode and ``sgemm`` on it in turn, BLAS limited to one thread
meanwhile: a fixed split with no hand-over between numba's and BLAS's thread pools, whose
spinning waits slow each other down on a busy machine, and the same sums in the same order on
every run (a band's products do not depend on which thread computed them).

Attention of a prompt batch (``attention_heads``) splits the heads the same way: per head, the
scores ``q k^T`` of every position against every key are one product, the causal (and, on a
sliding-window layer, windowed) softmax a compiled loop, and the weighted sum of values another
product.  The masked half of the scores is computed and thrown away, and still the products
beat the loop of dot products they replace (``ops.attention_parallel``, which short batches
keep): 0.125 s against 0.209 s for 512 positions of 32 heads of 64 on a loaded machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from numba import njit
from threadpoolctl import ThreadpoolController

BLAS_BAND_BYTES = 2 << 20  # float32 bytes of one decoded band

_STATE = threading.local()  # each worker's reusable band buffer
_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas: Any = None  # ThreadpoolController over the BLAS libraries, made on first use


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: make a new pool on first use."""
    global _pool, _pool_size, _POOL_LOCK
    _pool, _pool_size, _POOL_LOCK = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _workers(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size, _blas
    with _POOL_LOCK:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="engine-blas"), n
        if _blas is None:
            _blas = ThreadpoolController().select(user_api="blas")
        return _pool


def _buffer(name: str, n_rows: int, n_cols: int) -> np.ndarray:
    """This worker's reusable float32 ``(n_rows, n_cols)`` scratch array ``name``."""
    buf = getattr(_STATE, name, None)
    if buf is None or buf.size < n_rows * n_cols:
        buf = np.empty(n_rows * n_cols, np.float32)
        setattr(_STATE, name, buf)
    return buf[: n_rows * n_cols].reshape(n_rows, n_cols)


def _run(work: Callable[[int], None], n_threads: int) -> None:
    """work(0) … work(n_threads - 1) on the pool's threads, BLAS on one thread each."""
    pool = _workers(n_threads)
    with _blas.limit(limits=1):
        for done in [pool.submit(work, i) for i in range(n_threads)]:
            done.result()


def matmul_bands(decode_band: Any, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """y = x @ W.T: w (n_out, row_bytes) quantized rows, x (n_tok, n_in), y (n_tok, n_out).

    ``decode_band(w, r0, out)`` writes rows r0.. of W as float32 into ``out`` (a nogil kernel).
    """
    n_out, n_in = w.shape[0], x.shape[1]
    n_threads = max(1, min(numba.get_num_threads(), n_out))
    n_band = max(1, min(BLAS_BAND_BYTES // (4 * n_in), -(-n_out // n_threads)))
    starts = range(0, n_out, n_band)

    def work(first: int) -> None:
        band = _buffer("band", n_band, n_in)  # (n_band, n_in) decoded weight rows
        for r0 in starts[first::n_threads]:
            r1 = min(r0 + n_band, n_out)
            rows = band[: r1 - r0]
            decode_band(w, r0, rows)
            np.matmul(x, rows.T, out=y[:, r0:r1])  # (n_tok, n_in) @ (n_in, r1 - r0)

    _run(work, n_threads)


@njit(inline="always")
def exp_span(scores, first, last):  # pragma: no cover - compiled
    """scores[first:last] = exp(scores[j] - max), in place; returns their sum (the softmax's
    denominator).  Exact float code, shared by both attention kernels."""
    m = scores[first]
    for j in range(first + 1, last):
        m = max(m, scores[j])
    total = np.float32(0.0)
    for j in range(first, last):
        e = np.exp(scores[j] - m)
        scores[j] = e
        total += e
    return total


@njit(cache=True, nogil=True)
def causal_softmax(scores, pos0, scale, window):  # pragma: no cover - compiled
    """Row t of scores ((n, n_keys): q_t . k_j) becomes softmax(scale * q_t . k_j) over the keys
    j <= pos0 + t (and j > pos0 + t - window when window > 0), 0 elsewhere; in place."""
    for t in range(scores.shape[0]):
        row = scores[t]
        last = pos0 + t + 1
        first = max(0, last - window) if window > 0 else 0
        for j in range(first, last):
            row[j] = row[j] * scale
        inv = np.float32(1.0) / exp_span(row, first, last)
        row[:first] = 0.0
        for j in range(first, last):
            row[j] *= inv
        row[last:] = 0.0


def attention_heads(
    q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int, scale: np.float32,
    window: int, out: np.ndarray,
) -> None:
    """Causal grouped-query attention of a prompt batch, as ``ops.attention_parallel``:
    q (n, n_head*hd) at positions pos0.., caches (n_kv, n_ctx, hd) already holding them, out
    (n, n_head*hd)."""
    n, (n_kv, _, hd) = q.shape[0], k_cache.shape
    n_head, n_keys = q.shape[1] // hd, pos0 + n
    group = n_head // n_kv  # consecutive query heads share a kv head
    n_threads = max(1, min(numba.get_num_threads(), n_head))

    def rows(cache: np.ndarray, kv: int) -> np.ndarray:  # (n_keys, hd) float32
        if cache.dtype == np.uint16:  # f16 KV cache: widened exactly for BLAS
            return cache[kv, :n_keys].view(np.float16).astype(np.float32)
        return cache[kv, :n_keys]

    def work(first: int) -> None:
        scores = _buffer("scores", n, n_keys)  # (n, n_keys)
        for h in range(first, n_head, n_threads):
            cols, kv = slice(h * hd, (h + 1) * hd), h // group
            np.matmul(q[:, cols], rows(k_cache, kv).T, out=scores)  # (n, hd) @ (hd, n_keys)
            causal_softmax(scores, pos0, scale, window)
            np.matmul(scores, rows(v_cache, kv), out=out[:, cols])  # (n, n_keys) @ (n_keys, hd)

    _run(work, n_threads)

