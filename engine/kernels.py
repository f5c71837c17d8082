"""Matrix products and row gathers on quantized weights: ``QuantMatrix``.

A weight matrix stays as the bytes of its GGUF tensor (uint8, ``(n_out, row_bytes)``, usually
a view of the memory map); products decode each block on the fly inside numba kernels and
never build a float copy of the matrix.  ``QuantMatrix.matmul(x)`` computes ``x @ W.T``;
``QuantMatrix.rows(ids)`` dequantizes only the requested rows (the token embedding).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from engine import quants
from engine.constants import ENGINE_WEIGHT_TYPES, GGMLType
from engine.kernels_decode import decode_row

F32 = np.float32
ROW_CHUNK = 16  # output rows per parallel work item of the float path


def set_threads(n: int) -> None:
    """Use ``n`` threads (at most numba's pool size) for the kernels of this process."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_threads() -> int:
    return numba.get_num_threads()


@njit(parallel=True, cache=True)
def gather_rows(code, w, ids, out):
    """out[i] = dequantize(w[ids[i]]) for a type code; ids already checked."""
    for i in prange(ids.shape[0]):
        decode_row(code, w[ids[i]], out[i])


@njit(parallel=True, fastmath=True, cache=True)
def matmul_decoded(code, w, x, y):
    """y = x @ W.T: each weight row decoded once to float32, dotted with every row of x.

    w: (n_out, row_bytes) uint8; x: (n_tok, n_in) float32; y: (n_tok, n_out) float32.
    """
    n_out, n_tok, n_in = w.shape[0], x.shape[0], x.shape[1]
    n_chunks = (n_out + ROW_CHUNK - 1) // ROW_CHUNK
    for c in prange(n_chunks):
        wrow = np.empty(n_in, F32)  # (n_in,) one decoded weight row
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            decode_row(code, w[r], wrow)
            for t in range(n_tok):
                xt = x[t]
                acc = F32(0.0)
                for k in range(n_in):
                    acc += wrow[k] * xt[k]
                y[t, r] = acc


class QuantMatrix:
    """A weight matrix of ``n_out`` rows × ``n_in`` columns kept in its quantized bytes.

    ``data``: uint8 ``(n_rows, row_bytes)`` (a view of the file is fine: it is only read);
    ``ggml_type``: the tensor type; ``n_cols``: elements per row.
    """

    def __init__(self, data: np.ndarray, ggml_type: GGMLType, n_cols: int) -> None:
        ggml_type = GGMLType(ggml_type)
        if ggml_type not in ENGINE_WEIGHT_TYPES:
            raise ValueError(f"tensor type {ggml_type.name} is not supported by the kernels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            raise ValueError("QuantMatrix data must be a 2-D uint8 array (n_rows, row_bytes)")
        expected = quants.row_bytes(ggml_type, n_cols)
        if data.shape[1] != expected:
            raise ValueError(
                f"{ggml_type.name} rows of {n_cols} elements take {expected} bytes,"
                f" not {data.shape[1]}"
            )
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        self.data = data
        self.ggml_type = ggml_type
        self.code = int(ggml_type)
        self.n_out = int(data.shape[0])
        self.n_in = int(n_cols)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def __repr__(self) -> str:
        return f"QuantMatrix({self.ggml_type.name}, n_out={self.n_out}, n_in={self.n_in})"

    def matmul(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T``: x float32 ``(n_tok, n_in)`` → ``(n_tok, n_out)`` (written to ``out``)."""
        x = np.ascontiguousarray(x, dtype=F32)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"x of shape {x.shape} does not match {self!r}")
        n_tok = x.shape[0]
        if out is None:
            out = np.empty((n_tok, self.n_out), F32)
        elif out.shape != (n_tok, self.n_out) or out.dtype != F32:
            raise ValueError(f"out of shape {out.shape} / {out.dtype} for {n_tok} x {self!r}")
        target = out if out.flags.c_contiguous else np.empty((n_tok, self.n_out), F32)
        if n_tok:
            matmul_decoded(self.code, self.data, x, target)
        if target is not out:
            out[...] = target
        return out

    def rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Dequantized rows ``ids`` → float32 ``(len(ids), n_in)``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_out):
            bad = ids[(ids < 0) | (ids >= self.n_out)][0]
            raise IndexError(f"row {bad} is out of range for {self!r}")
        out = np.empty((ids.size, self.n_in), F32)
        if ids.size:
            gather_rows(self.code, self.data, np.ascontiguousarray(ids), out)
        return out
