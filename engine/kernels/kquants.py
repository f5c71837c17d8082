"""Row · activation dot products for the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Same contract as ``kernels/legacy.py``: one quantized weight row against one activation row in
8-bit blocks of 32 (``xq``, ``xd`` per 32, ``xs`` = scaled sums per 16). As ggml does on AVX2,
each 256-value super-block decodes its 16 small integer scales once into a vector
(``scales16*``) and every 32-value group folds its two sub-block scales into the pairwise adds
(``vdot_sc``); the group loop is written out (``_super_block``) so every shift and scale lane is
a constant. Each group's integer sums are scaled by its activation block's scale (llama.cpp uses
one activation scale per super-block, its Q8_K, and adds the integers first: faster, but on the
tiny Llama-SPM Q4_K_M its error is 1.5 × ours, ``scripts/accuracy.py``); the super-block scale
``d`` multiplies once per super-block. Offsets (−4 of Q3_K, −32 of Q6_K) and minima (Q2_K, Q4_K,
Q5_K) are one vector dot per super-block of the 16 scales with the 16 activation sums ``xs``
(``vmins``), into the same float accumulator. Each super-block asks for the weight bytes
``PREFETCH_AHEAD`` further on. Bit layouts: ``engine/quants.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.simd import (
    PREFETCH_AHEAD,
    bits32,
    f16,
    f16x2,
    prefetch,
    scales16,
    scales16_k,
    scales16_q3_k,
    vadd,
    vaxpy,
    vdot_sc,
    vfma,
    vmins,
    vor_shl,
    vsum,
    vzero,
)

F32 = np.float32
# Super-block kinds for the written-out group loop (constants once inlined).
Q2, Q3, Q4, Q5, Q6 = 2, 3, 4, 5, 6


@njit(inline="always")
def _weights(kind, row, o, g):
    """The 32 unsigned values (offset included) of group ``g`` (0..7) of the super-block at
    byte ``o``: its value j is weight 32g + j."""
    h, c = g // 4, g % 4  # Q2_K/Q3_K/Q6_K: 128-value half h, 2-bit field c of its bytes
    if kind == Q2:  # scales[16] | qs[64] | d | dmin
        return bits32(row, o + 16 + 32 * h, 2 * c, 3)
    if kind == Q3:  # hmask[32] | qs[64] | scales[12] | d; bit g of hmask = third bit
        return vor_shl(bits32(row, o + 32 + 32 * h, 2 * c, 3), bits32(row, o, g, 1), 2)
    if kind == Q4:  # d | dmin | scales[12] | qs[128]; nibble g % 2 of chunk g // 2
        return bits32(row, o + 16 + 32 * (g // 2), 4 * (g % 2), 15)
    if kind == Q5:  # d | dmin | scales[12] | qh[32] | qs[128]; bit g of qh = fifth bit
        low = bits32(row, o + 48 + 32 * (g // 2), 4 * (g % 2), 15)
        return vor_shl(low, bits32(row, o + 16, g, 1), 4)
    # Q6: ql[128] | qh[64] | scales[16] | d
    low = bits32(row, o + 64 * h + 32 * (c % 2), 4 * (c // 2), 15)
    return vor_shl(low, bits32(row, o + 128 + 32 * h, 2 * c, 3), 4)


@njit(inline="always")
def prefetch_super_block(row, o, size):
    """Ask for the ``size`` bytes ``PREFETCH_AHEAD`` after the super-block at byte ``o``."""
    for j in range(0, size, 64):
        prefetch(row, o + PREFETCH_AHEAD + j)
    prefetch(row, o + PREFETCH_AHEAD + size - 1)


@njit(inline="always")
def _group(acc, q, xq, xd, ab, sc, g, k):
    """acc + float(scaled integer dot of group g with activation block ab) · xd[ab]; the
    scales are lanes k·g and k·g + k − 1 of ``sc`` (k = 2: two per group, 1: one)."""
    return vfma(acc, vdot_sc(q, xq, 32 * ab, sc, k * g, k * g + k - 1), xd[ab])


@njit(inline="always")
def _super_block(kind, row, o, xq, xd, b, sc):
    """Σ over the 8 groups of the super-block at byte ``o`` (activation blocks b..b+7), before
    the super-block scale: written out, two accumulators alternating (to overlap the
    conversions and multiply-adds)."""
    k = 1 if kind in (Q4, Q5) else 2
    z = vzero()
    a0 = _group(z, _weights(kind, row, o, 0), xq, xd, b, sc, 0, k)
    a1 = _group(z, _weights(kind, row, o, 1), xq, xd, b + 1, sc, 1, k)
    a0 = _group(a0, _weights(kind, row, o, 2), xq, xd, b + 2, sc, 2, k)
    a1 = _group(a1, _weights(kind, row, o, 3), xq, xd, b + 3, sc, 3, k)
    a0 = _group(a0, _weights(kind, row, o, 4), xq, xd, b + 4, sc, 4, k)
    a1 = _group(a1, _weights(kind, row, o, 5), xq, xd, b + 5, sc, 5, k)
    a0 = _group(a0, _weights(kind, row, o, 6), xq, xd, b + 6, sc, 6, k)
    a1 = _group(a1, _weights(kind, row, o, 7), xq, xd, b + 7, sc, 7, k)
    return vadd(a0, a1)


@njit(inline="always")
def _head(kind, row, i):
    """Super-block i's byte offset (its bytes asked for ``PREFETCH_AHEAD`` on), its scale
    ``d``, the factor of its minima (or offset) sum (−dmin; Q3_K: −4d; Q6_K: −32d), the
    scales of its groups and of its minima (or offset)."""
    if kind == Q2:
        o = i * 84  # scales[16] (low nibble scale, high nibble min) | qs[64] | d | dmin
        prefetch_super_block(row, o, 84)
        d, dmin = f16x2(row, o + 80)
        return o, d, -dmin, scales16(row, o, 0, 15, False), scales16(row, o, 4, 15, False)
    if kind == Q3:
        o = i * 110  # hmask[32] | qs[64] | scales[12] | d
        prefetch_super_block(row, o, 110)
        d = f16(row, o + 108)
        sc = scales16_q3_k(row, o + 94)
        return o, d, F32(-4.0) * d, sc, sc
    if kind == Q6:
        o = i * 210  # ql[128] | qh[64] | scales:int8[16] | d
        prefetch_super_block(row, o, 210)
        d = f16(row, o + 208)
        sc = scales16(row, o + 192, 0, 255, True)
        return o, d, F32(-32.0) * d, sc, sc
    size = 144 if kind == Q4 else 176  # d | dmin | scales[12] | (Q5_K: qh[32] |) qs[128]
    o = i * size
    prefetch_super_block(row, o, size)
    d, dmin = f16x2(row, o)
    sc = scales16_k(row, o + 4)
    return o, d, -dmin, sc, sc


@njit(inline="always")
def dot_kquant(kind, row, xq, xd, xs):
    """One K-quant row · one activation row: per super-block, the minima (or offset) term,
    then the groups' scaled sum times d, into one float vector."""
    paired = kind in (Q4, Q5)  # one minimum per 32 values, each against two 16-value sums
    acc = vzero()
    for i in range(xd.shape[0] // 8):
        o, d, dm, sc, sm = _head(kind, row, i)
        acc = vaxpy(acc, vmins(sm, xs, 16 * i, paired), dm)
        acc = vaxpy(acc, _super_block(kind, row, o, xq, xd, 8 * i, sc), d)
    return vsum(acc)


@njit(inline="always")
def dot_q2_k(row, xq, xd, xs):
    return dot_kquant(Q2, row, xq, xd, xs)


@njit(inline="always")
def dot_q3_k(row, xq, xd, xs):
    return dot_kquant(Q3, row, xq, xd, xs)


@njit(inline="always")
def dot_q4_k(row, xq, xd, xs):
    return dot_kquant(Q4, row, xq, xd, xs)


@njit(inline="always")
def dot_q5_k(row, xq, xd, xs):
    return dot_kquant(Q5, row, xq, xd, xs)


@njit(inline="always")
def dot_q6_k(row, xq, xd, xs):
    return dot_kquant(Q6, row, xq, xd, xs)


# ----------------------------------------------------------------------------------------------
# four activation rows at once (batched decode: several sequences, one pass over the weights)


@njit(inline="always")
def _group4(acc, q, xq, xd, t, ab, sc, g, k):
    """``_group`` for activation rows t..t+3 with the same unpacked weights ``q``."""
    return (
        _group(acc[0], q, xq[t], xd[t], ab, sc, g, k),
        _group(acc[1], q, xq[t + 1], xd[t + 1], ab, sc, g, k),
        _group(acc[2], q, xq[t + 2], xd[t + 2], ab, sc, g, k),
        _group(acc[3], q, xq[t + 3], xd[t + 3], ab, sc, g, k),
    )


@njit(inline="always")
def _pairs4(a0, a1):
    """Each row's two alternating group sums, added as ``_super_block`` adds them."""
    return vadd(a0[0], a1[0]), vadd(a0[1], a1[1]), vadd(a0[2], a1[2]), vadd(a0[3], a1[3])


@njit(inline="always")
def dot4_kquant(kind, row, xq, xd, xs, t):
    """The dot products of one K-quant row with activation rows t..t+3 (2-D ``xq``/``xd``/
    ``xs``), each weight group unpacked once for all four.  Every row's sums are formed in the
    same order as ``dot_kquant``'s, so each result has exactly that function's bits."""
    k = 1 if kind in (Q4, Q5) else 2
    paired = kind in (Q4, Q5)
    z = vzero()
    acc, zs = (z, z, z, z), (z, z, z, z)
    for i in range(xd.shape[1] // 8):
        o, d, dm, sc, sm = _head(kind, row, i)
        b = 8 * i
        acc = (
            vaxpy(acc[0], vmins(sm, xs[t], 16 * i, paired), dm),
            vaxpy(acc[1], vmins(sm, xs[t + 1], 16 * i, paired), dm),
            vaxpy(acc[2], vmins(sm, xs[t + 2], 16 * i, paired), dm),
            vaxpy(acc[3], vmins(sm, xs[t + 3], 16 * i, paired), dm),
        )
        # written out as in _super_block: every shift and scale lane a constant
        a0 = _group4(zs, _weights(kind, row, o, 0), xq, xd, t, b, sc, 0, k)
        a1 = _group4(zs, _weights(kind, row, o, 1), xq, xd, t, b + 1, sc, 1, k)
        a0 = _group4(a0, _weights(kind, row, o, 2), xq, xd, t, b + 2, sc, 2, k)
        a1 = _group4(a1, _weights(kind, row, o, 3), xq, xd, t, b + 3, sc, 3, k)
        a0 = _group4(a0, _weights(kind, row, o, 4), xq, xd, t, b + 4, sc, 4, k)
        a1 = _group4(a1, _weights(kind, row, o, 5), xq, xd, t, b + 5, sc, 5, k)
        a0 = _group4(a0, _weights(kind, row, o, 6), xq, xd, t, b + 6, sc, 6, k)
        a1 = _group4(a1, _weights(kind, row, o, 7), xq, xd, t, b + 7, sc, 7, k)
        s4 = _pairs4(a0, a1)
        acc = (
            vaxpy(acc[0], s4[0], d),
            vaxpy(acc[1], s4[1], d),
            vaxpy(acc[2], s4[2], d),
            vaxpy(acc[3], s4[3], d),
        )
    return vsum(acc[0]), vsum(acc[1]), vsum(acc[2]), vsum(acc[3])


@njit(inline="always")
def dot4_q2_k(row, xq, xd, xs, t):
    return dot4_kquant(Q2, row, xq, xd, xs, t)


@njit(inline="always")
def dot4_q3_k(row, xq, xd, xs, t):
    return dot4_kquant(Q3, row, xq, xd, xs, t)


@njit(inline="always")
def dot4_q4_k(row, xq, xd, xs, t):
    return dot4_kquant(Q4, row, xq, xd, xs, t)


@njit(inline="always")
def dot4_q5_k(row, xq, xd, xs, t):
    return dot4_kquant(Q5, row, xq, xd, xs, t)


@njit(inline="always")
def dot4_q6_k(row, xq, xd, xs, t):
    return dot4_kquant(Q6, row, xq, xd, xs, t)
