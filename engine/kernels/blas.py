"""Prompt batches through BLAS: ``y = x @ W.T`` on bands of weight rows decoded to float32, and
attention one head at a time as two products and a causal softmax.

From ``kernels.BLAS_PATH_MIN_TOKENS`` tokens on, a product is worth decoding each weight row
once to float32 (exactly, ``kernels/decode.py``) and handing the multiply to numpy's BLAS
(``sgemm``), which tiles for the registers and caches better than a hand loop: on this
machine's AVX-512 cores about 2.5 × the 4 × 2 register tile at 512 tokens.

The rows are split into bands of ``BLAS_BAND_BYTES`` decoded bytes (they stay in the cache
between decoding and multiplying), and of at least ``BLAS_BAND_MIN_ROWS`` rows. Each of the
engine's threads (``kernels.set_threads``) takes every n-th band and runs decode and ``sgemm``
on it in turn, BLAS limited to one thread meanwhile: a fixed split with no hand-over between
numba's and BLAS's thread pools, whose spinning waits slow each other down on a busy machine,
and the same sums in the same order on every run (a band's products do not depend on which
thread computed them).

Attention of a prompt batch (``attention_heads``) splits the heads the same way: per head and
block of ``ATTENTION_QUERY_BLOCK`` positions, the scores ``q k^T`` against the keys the block
sees are one product, the causal (and, on a sliding-window layer, windowed) softmax a compiled
loop, and the weighted sum of values another product.  Only the masked triangle inside each
block is computed and thrown away, and still the products beat the loop of dot products they
replace (``ops.attention_parallel``, which short batches keep): 0.125 s against 0.209 s for 512
positions of 32 heads of 64 on a loaded machine, with the whole square of scores computed.
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

from engine.kernels.simd import f32_from_bits

BLAS_BAND_BYTES = 2 << 20  # float32 bytes of one decoded band (it stays in the cache) ...
# ... but at least this many rows: sgemm packs all the activations again for every band, so a
# wide matrix's narrow bands (7B's ffn_down, 11008 columns: 47 rows in 2 MiB) packed more than
# they multiplied (113 GFLOP/s, 160 with bands of 190 rows; docs/BENCHMARKS.md)
BLAS_BAND_MIN_ROWS = 192
ATTENTION_QUERY_BLOCK = 128  # prompt positions whose scores are computed together

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
    rows = max(BLAS_BAND_MIN_ROWS, BLAS_BAND_BYTES // (4 * n_in))
    n_band = max(1, min(rows, -(-n_out // n_threads)))
    starts = range(0, n_out, n_band)

    def work(first: int) -> None:
        band = _buffer("band", n_band, n_in)  # (n_band, n_in) decoded weight rows
        for r0 in starts[first::n_threads]:
            r1 = min(r0 + n_band, n_out)
            rows = band[: r1 - r0]
            decode_band(w, r0, rows)
            np.matmul(x, rows.T, out=y[:, r0:r1])  # (n_tok, n_in) @ (n_in, r1 - r0)

    _run(work, n_threads)


# exp(x) = 2^n · e^r with n = round(x / ln 2), r = x − n ln 2 (ln 2 in two parts, Cody and
# Waite), e^r by Cephes' degree-7 polynomial for expf: below 1 ulp, measured over 2 million
# arguments in [−87, 0] against float64 (numpy's own float32 exp: 2.4 ulp).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_POLY = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
              5.0000001201e-1)
)  # fmt: skip


@njit(inline="always")
def exp_neg(x):  # pragma: no cover - compiled
    """exp(x) in float32 for x <= 0 (a softmax's scores minus their maximum), written out so
    that LLVM vectorizes a loop of it (a call to the C library's expf it cannot).  Below −87
    it gives exp(−87) (1.6e-38, nothing beside the maximum's 1); NaN stays NaN."""
    if x < np.float32(-87.0):
        x = np.float32(-87.0)
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - n * _LN2_HI - n * _LN2_LO
    c0, c1, c2, c3, c4, c5 = _EXP_POLY
    p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
    p = p * (r * r) + r + np.float32(1.0)
    return p * f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(inline="always")
def exp_span(scores, first, last):  # pragma: no cover - compiled
    """scores[first:last] = exp(scores[j] - max), in place; returns their sum (the softmax's
    denominator), added in 8 interleaved partial sums.  Shared by both attention kernels."""
    span = scores[first:last]  # indices from 0: LLVM can see they are not negative
    m = span[0]
    for j in range(1, span.shape[0]):
        m = max(m, span[j])
    for j in range(span.shape[0]):
        span[j] = exp_neg(span[j] - m)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    n8 = span.shape[0] - span.shape[0] % 8
    for j in range(0, n8, 8):
        s0 += span[j]
        s1 += span[j + 1]
        s2 += span[j + 2]
        s3 += span[j + 3]
        s4 += span[j + 4]
        s5 += span[j + 5]
        s6 += span[j + 6]
        s7 += span[j + 7]
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for j in range(n8, span.shape[0]):
        total += span[j]
    return total


@njit(cache=True, nogil=True)
def causal_softmax(scores, pos0, scale, window):  # pragma: no cover - compiled
    """Row t of scores ((n, n_keys): q_t . k_j) becomes softmax(scale * q_t . k_j) over the keys
    j <= pos0 + t (and j > pos0 + t - window when window > 0), 0 elsewhere; in place."""
    for t in range(scores.shape[0]):
        row = scores[t]
        last = pos0 + t + 1
        first = max(0, last - window) if window > 0 else 0
        span = row[first:last]  # the keys it sees (indices from 0: vectorized loops)
        for j in range(span.shape[0]):
            span[j] = span[j] * scale
        inv = np.float32(1.0) / exp_span(span, 0, span.shape[0])
        row[:first] = 0.0
        for j in range(span.shape[0]):
            span[j] *= inv
        row[last:] = 0.0


def attention_heads(
    q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int, scale: np.float32,
    window: int, out: np.ndarray,
) -> None:
    """Causal grouped-query attention of a prompt batch, as ``ops.attention_parallel``:
    q (n, n_head*hd) at positions pos0.., caches (n_kv, n_ctx, hd) already holding them, out
    (n, n_head*hd).  The queries go in blocks of ``ATTENTION_QUERY_BLOCK``, each against the
    keys it can see (up to its last position; from its first position's window start on a
    sliding-window layer)."""
    n, (n_kv, _, hd) = q.shape[0], k_cache.shape
    n_head, n_keys = q.shape[1] // hd, pos0 + n
    group = n_head // n_kv  # consecutive query heads share a kv head
    n_threads = max(1, min(numba.get_num_threads(), n_head))
    blocks = []  # (first query, end query, first key, end key)
    for i0 in range(0, n, ATTENTION_QUERY_BLOCK):
        i1 = min(i0 + ATTENTION_QUERY_BLOCK, n)
        lo = max(0, pos0 + i0 + 1 - window) if window > 0 else 0
        blocks.append((i0, i1, lo, pos0 + i1))

    def rows(cache: np.ndarray, kv: int) -> np.ndarray:  # (n_keys, hd) float32
        if cache.dtype == np.uint16:  # f16 KV cache: widened exactly for BLAS
            return cache[kv, :n_keys].view(np.float16).astype(np.float32)
        return cache[kv, :n_keys]

    def work(first: int) -> None:
        for h in range(first, n_head, n_threads):
            cols, kv = slice(h * hd, (h + 1) * hd), h // group
            keys, values = rows(k_cache, kv), rows(v_cache, kv)  # (n_keys, hd)
            for i0, i1, lo, hi in blocks:
                scores = _buffer("scores", i1 - i0, hi - lo)  # (block, keys it sees)
                np.matmul(q[i0:i1, cols], keys[lo:hi].T, out=scores)
                causal_softmax(scores, pos0 + i0 - lo, scale, window)  # positions from lo
                np.matmul(scores, values[lo:hi], out=out[i0:i1, cols])

    _run(work, n_threads)
