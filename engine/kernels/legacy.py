"""Row · activation dot products for the 32-value block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Each ``dot_<type>(row, xq, xd, xs)`` returns the dot product of one quantized weight row with
one activation row quantized to 8-bit blocks of 32 (see ``kernels.quantize_activations``):
``xq`` int8 values, ``xd`` the scale of each 32-block, ``xs`` the scaled sum of each
16-value half (``xd * sum(xq)``).  Per block: integer products of the unpacked weights with
``xq`` (``vdot``), scaled by weight scale × activation scale into a float vector accumulator
(``vfma``); constant offsets and minima go through the block sums (Σ(q−8)·x = Σq·x − 8·Σx).
This is llama.cpp's ``ggml_vec_dot_q*_q8_*`` scheme, with float32 activation scales.  Every
block asks for the bytes ``PREFETCH_AHEAD`` further on (``kernels/simd.py``): blocks are at
most 34 bytes, so each cache line of a streamed row is requested before it is needed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.decode import u32_at
from engine.kernels.simd import (
    PREFETCH_AHEAD,
    f16,
    f16x2,
    nib16,
    prefetch,
    qh_bits,
    vdot,
    vdot_s8,
    vfma,
    vor_shl,
    vsum,
    vzero,
)

F32 = np.float32


@njit(inline="always")
def dot_q4_0(row, xq, xd, xs):
    acc = vzero()
    offset = F32(0.0)  # Σ d·Σx, times the -8 offset of every value
    for b in range(xd.shape[0]):
        o = b * 18  # d:f16 | qs[16]
        prefetch(row, o + PREFETCH_AHEAD)
        d = f16(row, o)
        acc = vfma(acc, vdot(nib16(row, o + 2), xq, b * 32), d * xd[b])
        offset += d * (xs[2 * b] + xs[2 * b + 1])
    return vsum(acc) - F32(8.0) * offset


@njit(inline="always")
def dot_q4_1(row, xq, xd, xs):
    acc = vzero()
    mins = F32(0.0)
    for b in range(xd.shape[0]):
        o = b * 20  # d:f16 | m:f16 | qs[16]
        prefetch(row, o + PREFETCH_AHEAD)
        d, m = f16x2(row, o)
        acc = vfma(acc, vdot(nib16(row, o + 4), xq, b * 32), d * xd[b])
        mins += m * (xs[2 * b] + xs[2 * b + 1])
    return vsum(acc) + mins


@njit(inline="always")
def dot_q5_0(row, xq, xd, xs):
    acc = vzero()
    offset = F32(0.0)
    for b in range(xd.shape[0]):
        o = b * 22  # d:f16 | qh:u32 | qs[16]
        prefetch(row, o + PREFETCH_AHEAD)
        d = f16(row, o)
        q = vor_shl(nib16(row, o + 6), qh_bits(u32_at(row, o + 2)), 0)
        acc = vfma(acc, vdot(q, xq, b * 32), d * xd[b])
        offset += d * (xs[2 * b] + xs[2 * b + 1])
    return vsum(acc) - F32(16.0) * offset


@njit(inline="always")
def dot_q5_1(row, xq, xd, xs):
    acc = vzero()
    mins = F32(0.0)
    for b in range(xd.shape[0]):
        o = b * 24  # d:f16 | m:f16 | qh:u32 | qs[16]
        prefetch(row, o + PREFETCH_AHEAD)
        d, m = f16x2(row, o)
        q = vor_shl(nib16(row, o + 8), qh_bits(u32_at(row, o + 4)), 0)
        acc = vfma(acc, vdot(q, xq, b * 32), d * xd[b])
        mins += m * (xs[2 * b] + xs[2 * b + 1])
    return vsum(acc) + mins


@njit(inline="always")
def dot_q8_0(row, xq, xd, xs):
    acc = vzero()
    for b in range(xd.shape[0]):
        o = b * 34  # d:f16 | qs:int8[32]
        prefetch(row, o + PREFETCH_AHEAD)
        d = f16(row, o)
        acc = vfma(acc, vdot_s8(row, o + 2, xq, b * 32), d * xd[b])
    return vsum(acc)
