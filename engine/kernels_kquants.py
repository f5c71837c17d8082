"""Row · activation dot products for the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Same contract as ``kernels_legacy.py``: one quantized weight row against one activation row
in 8-bit blocks of 32 (``xq``, ``xd`` per 32, ``xs`` = scaled sums per 16).  A 256-value
super-block is walked as eight 32-value groups, each matching one activation block; groups
of two 16-value sub-blocks (Q2_K, Q3_K, Q6_K) multiply their two integer scales into the
pairwise sums (``vscale2``).  Offsets (−4 of Q3_K, −32 of Q6_K) and minima (Q2_K, Q4_K,
Q5_K) go through the activation block sums.  Bit layouts: see ``engine/quants.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels_decode import i8, k_scale_min, q3_k_scale
from engine.kernels_simd import bits32, f16x2, vdot, vfma, vor_shl, vscale2, vsum, vzero

F32 = np.float32


@njit(inline="always")
def dot_q2_k(row, xq, xd, xs):
    acc = vzero()
    mins = F32(0.0)
    for i in range(xd.shape[0] // 8):
        o = i * 84  # scales[16] | qs[64] | d:f16 | dmin:f16
        d, dmin = f16x2(row, o + 80)
        for g8 in range(8):  # 32-value group: half g8 // 4, crumb g8 % 4
            half, g = g8 // 4, g8 % 4
            s0 = o + 2 * g8  # its two sub-block scale bytes
            q = bits32(row, o + 16 + 32 * half, 2 * g, 3)
            v = vscale2(vdot(q, xq, (8 * i + g8) * 32), row[s0] & 15, row[s0 + 1] & 15)
            ab = 8 * i + g8
            acc = vfma(acc, v, d * xd[ab])
            mins += dmin * (F32(row[s0] >> 4) * xs[2 * ab] + F32(row[s0 + 1] >> 4) * xs[2 * ab + 1])
    return vsum(acc) - mins


@njit(inline="always")
def dot_q3_k(row, xq, xd, xs):
    acc = vzero()
    offset = F32(0.0)
    for i in range(xd.shape[0] // 8):
        o = i * 110  # hmask[32] | qs[64] | scales[12] | d:f16
        d = f16x2(row, o + 106)[1]
        for g8 in range(8):
            half, g = g8 // 4, g8 % 4
            sc0 = q3_k_scale(row, o + 96, 2 * g8)
            sc1 = q3_k_scale(row, o + 96, 2 * g8 + 1)
            low = bits32(row, o + 32 + 32 * half, 2 * g, 3)
            q = vor_shl(low, bits32(row, o, g8, 1), 2)  # 0..7 = value + 4
            ab = 8 * i + g8
            acc = vfma(acc, vscale2(vdot(q, xq, ab * 32), sc0, sc1), d * xd[ab])
            offset += d * (F32(sc0) * xs[2 * ab] + F32(sc1) * xs[2 * ab + 1])
    return vsum(acc) - F32(4.0) * offset


@njit(inline="always")
def dot_q4_k(row, xq, xd, xs):
    acc = vzero()
    mins = F32(0.0)
    for i in range(xd.shape[0] // 8):
        o = i * 144  # d:f16 | dmin:f16 | scales[12] | qs[128]
        d, dmin = f16x2(row, o)
        for s in range(8):  # sub-block s: nibble s % 2 of 32 bytes at chunk s // 2
            sc, mn = k_scale_min(row, o + 4, s)
            q = bits32(row, o + 16 + 32 * (s // 2), 4 * (s % 2), 15)
            ab = 8 * i + s
            acc = vfma(acc, vdot(q, xq, ab * 32), d * F32(sc) * xd[ab])
            mins += dmin * F32(mn) * (xs[2 * ab] + xs[2 * ab + 1])
    return vsum(acc) - mins


@njit(inline="always")
def dot_q5_k(row, xq, xd, xs):
    acc = vzero()
    mins = F32(0.0)
    for i in range(xd.shape[0] // 8):
        o = i * 176  # d:f16 | dmin:f16 | scales[12] | qh[32] | qs[128]
        d, dmin = f16x2(row, o)
        for s in range(8):
            sc, mn = k_scale_min(row, o + 4, s)
            low = bits32(row, o + 48 + 32 * (s // 2), 4 * (s % 2), 15)
            q = vor_shl(low, bits32(row, o + 16, s, 1), 4)
            ab = 8 * i + s
            acc = vfma(acc, vdot(q, xq, ab * 32), d * F32(sc) * xd[ab])
            mins += dmin * F32(mn) * (xs[2 * ab] + xs[2 * ab + 1])
    return vsum(acc) - mins


@njit(inline="always")
def dot_q6_k(row, xq, xd, xs):
    acc = vzero()
    offset = F32(0.0)
    for i in range(xd.shape[0] // 8):
        o = i * 210  # ql[128] | qh[64] | scales:int8[16] | d:f16
        d = f16x2(row, o + 206)[1]
        for g8 in range(8):
            half, g = g8 // 4, g8 % 4
            low = bits32(row, o + 64 * half + 32 * (g % 2), 4 * (g // 2), 15)
            q = vor_shl(low, bits32(row, o + 128 + 32 * half, 2 * g, 3), 4)  # value + 32
            sc0 = i8(row[o + 192 + 2 * g8])
            sc1 = i8(row[o + 193 + 2 * g8])
            ab = 8 * i + g8
            acc = vfma(acc, vscale2(vdot(q, xq, ab * 32), sc0, sc1), d * xd[ab])
            offset += d * (F32(sc0) * xs[2 * ab] + F32(sc1) * xs[2 * ab + 1])
    return vsum(acc) - F32(32.0) * offset
