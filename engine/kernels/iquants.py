"""Row · activation dot products for the non-linear 4-bit types IQ4_NL and IQ4_XS.

Same contract as ``kernels/legacy.py``: one quantized weight row against one activation row in
8-bit blocks of 32 (``xq``, ``xd`` per 32; ``xs`` unused: these types have no offset or
minimum).  Each 4-bit index selects one of 16 signed values (``constants.IQ4_VALUES``, one
``vpshufb`` on AVX2); the 32 values of a group times ``xq`` are summed in integers
(``vdot_sv``) and scaled by weight scale × activation scale into a float vector accumulator.
llama.cpp multiplies IQ4_NL against Q8_0 activations (one scale per 32, as here) and IQ4_XS
against Q8_K (one per 256); ours keeps one activation scale per 32 for both.

* ``IQ4_NL``  d:f16 | qs[16]; x = d · v[q]
* ``IQ4_XS``  d:f16 | scales_h:u16 | scales_l[4] | qs[128]; x = d · (scale − 32) · v[q], eight
  groups of 32 with a 6-bit scale each (``simd.scales16_iq4_xs``, ``decode.iq4_xs_scale``)
"""

from __future__ import annotations

from numba import njit

from engine.kernels.kquants import prefetch_super_block
from engine.kernels.simd import (
    PREFETCH_AHEAD,
    f16,
    iq4_values,
    prefetch,
    scales16_iq4_xs,
    vadd,
    vaxpy,
    vdot_sv,
    vdot_sv_sc,
    vfma,
    vsum,
    vzero,
)


@njit(inline="always")
def dot_iq4_nl(row, xq, xd, xs):
    acc = vzero()
    for b in range(xd.shape[0]):
        o = b * 18  # d:f16 | qs[16]
        prefetch(row, o + PREFETCH_AHEAD)
        acc = vfma(acc, vdot_sv(iq4_values(row, o + 2), xq, b * 32), f16(row, o) * xd[b])
    return vsum(acc)


@njit(inline="always")
def dot_iq4_xs(row, xq, xd, xs):
    """As the K-quants (``kernels/kquants.py``): the eight group scales decoded once per
    super-block into a vector and folded into the pairwise adds, each group's integer sums
    times its activation block's scale, ``d`` once per super-block; two accumulators."""
    acc = vzero()
    for i in range(xd.shape[0] // 8):
        o = i * 136  # d:f16 | scales_h:u16 | scales_l[4] | qs[128]
        prefetch_super_block(row, o, 136)
        sc = scales16_iq4_xs(row, o)
        a0, a1 = vzero(), vzero()
        for g in range(0, 8, 2):
            b = 8 * i + g
            q0, q1 = iq4_values(row, o + 8 + 16 * g), iq4_values(row, o + 24 + 16 * g)
            a0 = vfma(a0, vdot_sv_sc(q0, xq, 32 * b, sc, g), xd[b])
            a1 = vfma(a1, vdot_sv_sc(q1, xq, 32 * b + 32, sc, g + 1), xd[b + 1])
        acc = vaxpy(acc, vadd(a0, a1), f16(row, o))
    return vsum(acc)


@njit(inline="always")
def _groups4(acc, q, xq, xd, t, b, sc, g):
    """One group's ``vfma`` of ``dot_iq4_xs`` for activation rows t..t+3, the same values ``q``."""
    return (
        vfma(acc[0], vdot_sv_sc(q, xq[t], 32 * b, sc, g), xd[t, b]),
        vfma(acc[1], vdot_sv_sc(q, xq[t + 1], 32 * b, sc, g), xd[t + 1, b]),
        vfma(acc[2], vdot_sv_sc(q, xq[t + 2], 32 * b, sc, g), xd[t + 2, b]),
        vfma(acc[3], vdot_sv_sc(q, xq[t + 3], 32 * b, sc, g), xd[t + 3, b]),
    )


@njit(inline="always")
def dot4_iq4_xs(row, xq, xd, xs, t):
    """The dot products of one IQ4_XS row with activation rows t..t+3 (2-D ``xq``/``xd``),
    each group's values looked up once for all four, every row's sums formed in
    ``dot_iq4_xs``'s order (so each result has exactly its bits)."""
    z = vzero()
    acc = (z, z, z, z)
    for i in range(xd.shape[1] // 8):
        o = i * 136
        prefetch_super_block(row, o, 136)
        sc = scales16_iq4_xs(row, o)
        a0, a1 = (z, z, z, z), (z, z, z, z)
        for g in range(0, 8, 2):
            b = 8 * i + g
            q0, q1 = iq4_values(row, o + 8 + 16 * g), iq4_values(row, o + 24 + 16 * g)
            a0 = _groups4(a0, q0, xq, xd, t, b, sc, g)
            a1 = _groups4(a1, q1, xq, xd, t, b + 1, sc, g + 1)
        d = f16(row, o)
        acc = (
            vaxpy(acc[0], vadd(a0[0], a1[0]), d),
            vaxpy(acc[1], vadd(a0[1], a1[1]), d),
            vaxpy(acc[2], vadd(a0[2], a1[2]), d),
            vaxpy(acc[3], vadd(a0[3], a1[3]), d),
        )
    return vsum(acc[0]), vsum(acc[1]), vsum(acc[2]), vsum(acc[3])
