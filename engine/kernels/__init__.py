"""Matrix products and row gathers on quantized weights: ``QuantMatrix``.

A weight matrix stays as the bytes of its GGUF tensor (uint8, ``(n_out, row_bytes)``, usually
a view of the memory map); products decode each block on the fly inside numba kernels and
never build a float copy of the matrix.  ``QuantMatrix.matmul(x)`` computes ``x @ W.T``;
``QuantMatrix.rows(ids)`` dequantizes only the requested rows (the token embedding).

Three paths, chosen by the number of activation rows (tokens):

* fewer than ``FLOAT_PATH_MIN_TOKENS`` (generation): the activations are quantized once to
  8-bit blocks of 32 and every weight row is streamed once, with integer dot products per
  block (``kernels/legacy.py``, ``kernels/kquants.py``, ``kernels/iquants.py``), as llama.cpp
  does;
* from ``FLOAT_PATH_MIN_TOKENS`` on (short prompt batches): a tile of 4 weight rows is decoded
  once to float32 (exactly, ``kernels/decode.py``) and multiplied with every token in a 4 × 2
  register tile; float32 activations, so this path is more accurate than llama.cpp's;
* from ``BLAS_PATH_MIN_TOKENS`` on (prompts): bands of weight rows (``BLAS_BAND_BYTES``) are
  decoded the same way and multiplied by numpy's BLAS (``sgemm``), which tiles for the caches
  far better than a hand loop can (``kernels/blas.py``); on a CPU with AMX (and
  ``ENGINE_AMX`` not 0), bands of 32 rows of a quantized type are decoded to bfloat16 instead
  and multiplied in the tile unit, about 3-4 × faster than BLAS, with products rounded to
  bfloat16 (about 0.2 % relative error, less than llama.cpp's 8-bit activations;
  ``kernels/amx.py``).

All three parallelise over output rows (``prange``, or the BLAS path's bands). The kernels are
made per weight type, on first use (``type_kernels(code)``): closures over the constant type
code, whose decoder (``kernels.decode.decode_row``) and dot product (``dot_int_in``) are numba
overloads that pick that type's function while compiling. So a model compiles only its own
types: the first run of SmolLM2 (Q4_1 layers, Q8_0 embedding) on an empty cache takes 24 s
instead of 141-145 s when every type was compiled (docs/BENCHMARKS.md, *Start-up*). numba's
on-disk cache (``cache=True``) keys each kernel on the file that defines it only, while these
kernels inline helpers from ``kernels/simd.py``, ``kernels/decode.py``, ``kernels/legacy.py``,
``kernels/kquants.py``, ``kernels/iquants.py``, ``kernels/blas.py`` and ``kernels/amx.py``: so
``engine/__init__.py`` names the cache folder by a hash of every engine source, and an edit to
any of them starts a fresh cache (``_pin_numba_cache``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from engine import quants
from engine.constants import ENGINE_WEIGHT_TYPES, GGMLType
from engine.kernels import amx as kernels_amx
from engine.kernels import blas as kernels_blas
from engine.kernels.decode import (
    T_IQ4_NL,
    T_IQ4_XS,
    T_Q2_K,
    T_Q3_K,
    T_Q4_0,
    T_Q4_1,
    T_Q4_K,
    T_Q5_0,
    T_Q5_1,
    T_Q5_K,
    T_Q6_K,
    T_Q8_0,
    decode_row,
)
from engine.kernels.iquants import dot4_iq4_xs, dot_iq4_nl, dot_iq4_xs
from engine.kernels.kquants import (
    dot4_q2_k,
    dot4_q3_k,
    dot4_q4_k,
    dot4_q5_k,
    dot4_q6_k,
    dot_q2_k,
    dot_q3_k,
    dot_q4_k,
    dot_q5_k,
    dot_q6_k,
)
from engine.kernels.legacy import dot_q4_0, dot_q4_1, dot_q5_0, dot_q5_1, dot_q8_0

F32 = np.float32
TILE_ROWS = 4  # weight rows decoded together by the float path (register tile 4 x 2 tokens)
# From this many tokens on, products decode each weight row once to float32 and reuse it for
# all tokens (prompt batches); below it, 8-bit activations and integer dots (generation).
FLOAT_PATH_MIN_TOKENS = 6  # measured crossover (python -m engine.bench.kernels --crossover)
# From this many tokens on, bands of weight rows are decoded to float32 and multiplied by
# numpy's BLAS (kernels/blas.py); measured crossover (python -m engine.bench.kernels --crossover).
BLAS_PATH_MIN_TOKENS = 64
ACT_BLOCK = 32  # activation values per 8-bit block (one scale each)
# Types whose products use 8-bit activations and integer dot products: every quantized weight
# type (F32 / F16 / BF16: the float path).
INT_DOT_TYPES = ENGINE_WEIGHT_TYPES - {GGMLType.F32, GGMLType.F16, GGMLType.BF16}


def set_threads(n: int) -> None:
    """Use ``n`` threads (at most numba's pool size) for the kernels of this process."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_threads() -> int:
    return numba.get_num_threads()


@njit(cache=True)
def quantize_activations(x, xq, xd, xs):
    """Rows of x → 8-bit blocks of 32: xq = round(x / d) with d = max|x_block| / 127.

    x: (n_tok, n_in) float32; xq: (n_tok, n_in) int8; xd: (n_tok, n_in / 32) float32 scales;
    xs: (n_tok, n_in / 16) float32, d · Σ xq over each 16-value half (for offsets and minima).
    """
    for t in range(x.shape[0]):
        for b in range(xd.shape[1]):
            xb = x[t, b * 32 : b * 32 + 32]
            amax = F32(0.0)
            for j in range(32):
                amax = max(amax, abs(xb[j]))
            d = amax / F32(127.0)
            inv = F32(127.0) / amax if amax > 0 else F32(0.0)
            for h in range(2):
                total = 0
                for j in range(16 * h, 16 * h + 16):
                    q = int(np.rint(xb[j] * inv))
                    xq[t, b * 32 + j] = q
                    total += q
                xs[t, 2 * b + h] = d * F32(total)
            xd[t, b] = d


# The integer dot product of each type code of INT_DOT_TYPES.
DOT_INT = {
    T_Q4_0: dot_q4_0,
    T_Q4_1: dot_q4_1,
    T_Q5_0: dot_q5_0,
    T_Q5_1: dot_q5_1,
    T_Q8_0: dot_q8_0,
    T_Q2_K: dot_q2_k,
    T_Q3_K: dot_q3_k,
    T_Q4_K: dot_q4_k,
    T_Q5_K: dot_q5_k,
    T_Q6_K: dot_q6_k,
    T_IQ4_NL: dot_iq4_nl,
    T_IQ4_XS: dot_iq4_xs,
}


def type_mask(codes) -> int:
    """The bit set of type codes that ``dot_int_in`` takes as its first argument."""
    return sum({1 << int(c) for c in codes})


def dot_int_in(codes, code, row, xq, xd, xs):
    """One weight row of type ``code`` · one 8-bit activation row (compiled code only).

    ``codes``: a compile-time constant bit set (``type_mask``) of the types ``code`` can be:
    only their dot products are compiled, tested in turn (one type: no test at all); a
    run-time ``codes`` is a typing error (it would compile every type)."""
    raise NotImplementedError("dot_int_in is only callable from numba-compiled code")


@overload(dot_int_in, prefer_literal=True)
def _dot_int_in(codes, code, row, xq, xd, xs):
    mask = codes.literal_value if isinstance(codes, types.IntegerLiteral) else 0
    known = [c for c in DOT_INT if mask >> c & 1]
    if not known or mask != type_mask(known):
        return None  # not a constant set of INT_DOT_TYPES: no implementation
    head, first, rest = known[0], DOT_INT[known[0]], type_mask(known[1:])
    if not rest:

        def dot_one(codes, code, row, xq, xd, xs):
            return first(row, xq, xd, xs)

        return dot_one

    def dot_first_or_rest(codes, code, row, xq, xd, xs):
        if code == head:
            return first(row, xq, xd, xs)
        return dot_int_in(rest, code, row, xq, xd, xs)

    return dot_first_or_rest


# Four activation rows at once, each weight group unpacked once for all four (super-block types).
DOT4 = {
    T_Q2_K: dot4_q2_k,
    T_Q3_K: dot4_q3_k,
    T_Q4_K: dot4_q4_k,
    T_Q5_K: dot4_q5_k,
    T_Q6_K: dot4_q6_k,
    T_IQ4_XS: dot4_iq4_xs,
}


def dot_int_tokens(codes, code, row, xq, xd, xs, y, r):
    """``y[t, r]`` = weight row ``row`` · 8-bit activation row t, for every t (compiled code
    only; ``codes`` as for ``dot_int_in``).  K-quant and IQ4_XS rows are unpacked once per four
    tokens (``DOT4``); every value has the bits ``dot_int_in`` gives it, so a
    sequence decoded in a batch gets exactly the logits it gets alone."""
    raise NotImplementedError("dot_int_tokens is only callable from numba-compiled code")


@overload(dot_int_tokens, prefer_literal=True)
def _dot_int_tokens(codes, code, row, xq, xd, xs, y, r):
    mask = codes.literal_value if isinstance(codes, types.IntegerLiteral) else 0
    known = [c for c in DOT_INT if mask >> c & 1]
    if not known or mask != type_mask(known):
        return None
    head, rest = known[0], type_mask(known[1:])
    one, four = DOT_INT[head], DOT4.get(head)
    if not rest and four is None:

        def tokens_each(codes, code, row, xq, xd, xs, y, r):
            for u in range(xq.shape[0]):
                y[u, r] = one(row, xq[u], xd[u], xs[u])

        return tokens_each
    if not rest:

        def tokens_by_four(codes, code, row, xq, xd, xs, y, r):
            n = xq.shape[0]
            for t in range(0, n - 3, 4):
                y[t, r], y[t + 1, r], y[t + 2, r], y[t + 3, r] = four(row, xq, xd, xs, t)
            for u in range(n - n % 4, n):
                y[u, r] = one(row, xq[u], xd[u], xs[u])

        return tokens_by_four

    only_head = 1 << head

    def tokens_first_or_rest(codes, code, row, xq, xd, xs, y, r):
        if code == head:
            dot_int_tokens(only_head, code, row, xq, xd, xs, y, r)
        else:
            dot_int_tokens(rest, code, row, xq, xd, xs, y, r)

    return tokens_first_or_rest


@njit(inline="always")  # numba inlines the source, so ``codes`` stays the caller's constant
def dot_int_rows(codes, code, w, first, last, xq, xd, xs, y):  # pragma: no cover - compiled
    """``y[t, r]`` = weight row ``w[r]`` · 8-bit activation row t, for rows first .. last - 1
    and every t: the decode step's products.  One activation row (a single sequence) loops over
    ``dot_int_in``; several over ``dot_int_tokens``.  The choice is made once, outside the row
    loop: with both calls inside it LLVM compiled the loop worse, and a single SmolLM2 step
    took 1.5-2 × as long."""
    if xq.shape[0] == 1:
        x0, d0, s0 = xq[0], xd[0], xs[0]
        for r in range(first, last):
            y[0, r] = dot_int_in(codes, code, w[r], x0, d0, s0)
    else:
        for r in range(first, last):
            dot_int_tokens(codes, code, w[r], xq, xd, xs, y, r)


@njit(inline="always")
def _dot_4x2(w0, w1, w2, w3, xa, xb):
    """The 8 dot products of 4 weight rows with 2 activation rows, in one pass over k."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = F32(0.0)
    for k in range(xa.shape[0]):
        u, v = xa[k], xb[k]
        a0 += w0[k] * u
        a1 += w1[k] * u
        a2 += w2[k] * u
        a3 += w3[k] * u
        b0 += w0[k] * v
        b1 += w1[k] * v
        b2 += w2[k] * v
        b3 += w3[k] * v
    return a0, a1, a2, a3, b0, b1, b2, b3


class TypeKernels(NamedTuple):
    """The numba kernels of one weight type (``type_kernels``); each compiles on first call."""

    gather_rows: Any  # (w, ids, out): out[i] = dequantize(w[ids[i]])
    decode_band: Any  # (w, r0, out): out[i] = dequantize(w[r0 + i]), one thread, GIL released
    matmul_int: Any  # (w, xq, xd, xs, y): y = x8 @ W.T (INT_DOT_TYPES only)
    matmul_decoded: Any  # (w, x, y): y = x @ W.T in float32
    matmul_amx: Any  # (w, xb, y, config): y = x @ W.T in bfloat16 tiles (kernels/amx.py)


_TYPE_KERNELS: dict[int, TypeKernels] = {}


def type_kernels(code: int) -> TypeKernels:
    """The kernels of weight type ``code``, made on first use."""
    kernels = _TYPE_KERNELS.get(code)
    if kernels is None:
        kernels = _TYPE_KERNELS[code] = _make_type_kernels(int(code))
    return kernels


def compiled_types() -> set[GGMLType]:
    """The weight types whose kernels this process has compiled or loaded from the cache."""
    return {
        GGMLType(code)
        for code, kernels in _TYPE_KERNELS.items()
        if any(k.signatures for k in kernels)
    }


def _make_type_kernels(code: int) -> TypeKernels:
    """Closures over the constant ``code`` (numba freezes it): each compiles that type's decoder
    or dot product alone, and numba's disk cache keeps one entry per type (it keys closures on
    their variables)."""
    mask = 1 << code

    @njit(parallel=True, cache=True)
    def gather_rows(w, ids, out):
        for i in prange(ids.shape[0]):
            decode_row(code, w[ids[i]], out[i])

    @njit(nogil=True, cache=True)
    def decode_band(w, r0, out):
        """out[i] = dequantize(w[r0 + i]), in the calling thread (the BLAS path's workers)."""
        for i in range(out.shape[0]):
            decode_row(code, w[r0 + i], out[i])

    @njit(parallel=True, cache=True)
    def matmul_int(w, xq, xd, xs, y):
        """Each weight row streamed once, for every token (xq/xd/xs: quantize_activations)."""
        for r in prange(w.shape[0]):
            dot_int_tokens(mask, code, w[r], xq, xd, xs, y, r)

    @njit(parallel=True, fastmath=True, cache=True)
    def matmul_decoded(w, x, y):
        """A tile of 4 weight rows decoded once, used for every token; the inner loop multiplies
        4 rows by 2 tokens at once (8 accumulators, 6 loads)."""
        n_out, n_tok, n_in = w.shape[0], x.shape[0], x.shape[1]
        for c in prange((n_out + TILE_ROWS - 1) // TILE_ROWS):
            r0 = c * TILE_ROWS
            n_rows = min(TILE_ROWS, n_out - r0)
            tile = np.zeros((TILE_ROWS, n_in), F32)  # (4, n_in) decoded weight rows
            for i in range(n_rows):
                decode_row(code, w[r0 + i], tile[i])
            for t in range(0, n_tok, 2):
                t1 = min(t + 1, n_tok - 1)
                dots = _dot_4x2(tile[0], tile[1], tile[2], tile[3], x[t], x[t1])
                for i in range(n_rows):
                    y[t, r0 + i] = dots[i]
                    y[t1, r0 + i] = dots[4 + i]

    matmul_amx = kernels_amx.make_matmul_amx(code)
    return TypeKernels(gather_rows, decode_band, matmul_int, matmul_decoded, matmul_amx)


def gather_rows(code, w, ids, out):
    """out[i] = dequantize(w[ids[i]]) for a type code; ids already checked."""
    type_kernels(code).gather_rows(w, ids, out)


def matmul_int(code, w, xq, xd, xs, y):
    """y = x @ W.T on 8-bit activations, for a type code of INT_DOT_TYPES.

    w: (n_out, row_bytes) uint8; xq/xd/xs: quantize_activations of x; y: (n_tok, n_out).
    """
    type_kernels(code).matmul_int(w, xq, xd, xs, y)


def matmul_bands(code, w, x, y):
    """y = x @ W.T for a prompt batch: a quantized type on AMX tiles where
    ``kernels_amx.available()``, else through BLAS, band by band (``kernels_blas.matmul_bands``).

    Float weights stay on BLAS: llama.cpp multiplies them in float32 or with float16
    activations, more precisely than bfloat16; quantized ones it multiplies with 8-bit
    activations, less precisely."""
    if code in INT_DOT_TYPES and kernels_amx.available():
        kernels_amx.matmul(type_kernels(code).matmul_amx, w, x, y)
    else:
        kernels_blas.matmul_bands(type_kernels(code).decode_band, w, x, y)


def matmul_decoded(code, w, x, y):
    """y = x @ W.T in float32 for a type code: w (n_out, row_bytes) uint8, x (n_tok, n_in)."""
    type_kernels(code).matmul_decoded(w, x, y)


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
        # Always a read-only view: weights are never written, and the kernels then see one
        # array type (memory maps are read-only) and compile once.
        data = data.view()
        data.flags.writeable = False
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
        if 0 < n_tok < FLOAT_PATH_MIN_TOKENS and self.ggml_type in INT_DOT_TYPES:
            xq = np.empty((n_tok, self.n_in), np.int8)  # (n_tok, n_in)
            xd = np.empty((n_tok, self.n_in // ACT_BLOCK), F32)  # (n_tok, n_in / 32)
            xs = np.empty((n_tok, 2 * (self.n_in // ACT_BLOCK)), F32)  # (n_tok, n_in / 16)
            quantize_activations(x, xq, xd, xs)
            matmul_int(self.code, self.data, xq, xd, xs, target)
        elif n_tok >= BLAS_PATH_MIN_TOKENS:
            matmul_bands(self.code, self.data, x, target)
        elif n_tok:
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
