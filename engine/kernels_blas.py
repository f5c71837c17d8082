"""Prompt batches through BLAS: ``y = x @ W.T`` on bands of weight rows decoded to float32.

From ``kernels.BLAS_PATH_MIN_TOKENS`` tokens on, a product is worth decoding each weight row
once to float32 (exactly, ``kernels_decode.py``) and handing the multiply to numpy's BLAS
(``sgemm``), which tiles for the registers and caches better than a hand loop: on this
machine's AVX-512 cores about 2.5 × the 4 × 2 register tile at 512 tokens.

The rows are split into bands of at most ``BLAS_BAND_BYTES`` decoded bytes (they stay in the
cache between decoding and multiplying).  Each of the engine's threads (``kernels.set_threads``)
takes every n-th band and runs decode and ``sgemm`` on it in turn, BLAS limited to one thread
meanwhile: a fixed split with no hand-over between numba's and BLAS's thread pools, whose
spinning waits slow each other down on a busy machine, and the same sums in the same order on
every run (a band's products do not depend on which thread computed them).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

BLAS_BAND_BYTES = 2 << 20  # float32 bytes of one decoded band

_STATE = threading.local()  # each worker's reusable band buffer
_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas: Any = None  # ThreadpoolController over the BLAS libraries, made on first use


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


def _band_buffer(n_rows: int, n_in: int) -> np.ndarray:
    buf = getattr(_STATE, "band", None)
    if buf is None or buf.size < n_rows * n_in:
        buf = _STATE.band = np.empty(n_rows * n_in, np.float32)
    return buf[: n_rows * n_in].reshape(n_rows, n_in)


def matmul_bands(decode_band: Any, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """y = x @ W.T: w (n_out, row_bytes) quantized rows, x (n_tok, n_in), y (n_tok, n_out).

    ``decode_band(w, r0, out)`` writes rows r0.. of W as float32 into ``out`` (a nogil kernel).
    """
    n_out, n_in = w.shape[0], x.shape[1]
    n_threads = max(1, min(numba.get_num_threads(), n_out))
    n_band = max(1, min(BLAS_BAND_BYTES // (4 * n_in), -(-n_out // n_threads)))
    starts = range(0, n_out, n_band)

    def work(first: int) -> None:
        band = _band_buffer(n_band, n_in)  # (n_band, n_in) decoded weight rows
        for r0 in starts[first::n_threads]:
            r1 = min(r0 + n_band, n_out)
            rows = band[: r1 - r0]
            decode_band(w, r0, rows)
            np.matmul(x, rows.T, out=y[:, r0:r1])  # (n_tok, n_in) @ (n_in, r1 - r0)

    pool = _workers(n_threads)
    with _blas.limit(limits=1):
        for done in [pool.submit(work, i) for i in range(n_threads)]:
            done.result()
