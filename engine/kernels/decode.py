"""numba block decoders: one quantized block → float32 values, exactly as ``engine/quants.py``.

Each ``decode_<type>(row, o, out, k)`` reads the block at byte ``o`` of ``row`` (uint8) and
writes its ``block_size`` values at ``out[k:]``, with the same float32 operations in the same
order as ggml's ``dequantize_row_*`` (no fused multiply-add), so the results are bit-exact.
32 values at a time through the SIMD vocabulary of ``kernels/simd.py`` (``vstore``).
``decode_row(code, row, out)`` decodes a whole row of any supported type.  These serve the
row gather (token embedding) and the float paths of the matrix products.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from engine.constants import GGML_BLOCK_LAYOUT, GGMLType
from engine.kernels.simd import (
    bits32,
    f16x2,
    iq4_values,
    nib16,
    qh_bits,
    vor_shl,
    vstore,
    vstore_s8,
    vstore_sv,
)

F32 = np.float32
I32 = np.int32
ZERO = F32(0.0)

# Type codes as plain ints (numba freezes module-level ints as constants).
T_F32 = int(GGMLType.F32)
T_F16 = int(GGMLType.F16)
T_BF16 = int(GGMLType.BF16)
T_Q4_0 = int(GGMLType.Q4_0)
T_Q4_1 = int(GGMLType.Q4_1)
T_Q5_0 = int(GGMLType.Q5_0)
T_Q5_1 = int(GGMLType.Q5_1)
T_Q8_0 = int(GGMLType.Q8_0)
T_Q2_K = int(GGMLType.Q2_K)
T_Q3_K = int(GGMLType.Q3_K)
T_Q4_K = int(GGMLType.Q4_K)
T_Q5_K = int(GGMLType.Q5_K)
T_Q6_K = int(GGMLType.Q6_K)
T_IQ4_NL = int(GGMLType.IQ4_NL)
T_IQ4_XS = int(GGMLType.IQ4_XS)

# Per type code: elements and bytes per block (index = type code; 0 where unsupported).
_MAX_CODE = max(int(t) for t in GGML_BLOCK_LAYOUT) + 1
BLOCK_SIZE = np.zeros(_MAX_CODE, np.int64)
TYPE_SIZE = np.zeros(_MAX_CODE, np.int64)
for _t, _layout in GGML_BLOCK_LAYOUT.items():
    BLOCK_SIZE[int(_t)] = _layout.block_size
    TYPE_SIZE[int(_t)] = _layout.type_size

_F16_SUBNORMAL_SCALE = F32(2.0**112)  # f16 exponent bias 15 → f32 bias 127


@intrinsic
def bits_to_f32(typingctx, bits):
    """Reinterpret the 32 bits of a uint32 as a float32."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always")
def f16_at(row, o):
    """The little-endian IEEE half at byte ``o`` of ``row``, as float32 (exact)."""
    h = np.uint32(row[o]) | (np.uint32(row[o + 1]) << np.uint32(8))
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    if (h & np.uint32(0x7C00)) == np.uint32(0x7C00):  # inf / nan
        return bits_to_f32(
            sign | np.uint32(0x7F800000) | ((h & np.uint32(0x03FF)) << np.uint32(13))
        )
    # Normal and subnormal halves: shift into a float32 and rescale the exponent by 2**112.
    return bits_to_f32(sign | ((h & np.uint32(0x7FFF)) << np.uint32(13))) * _F16_SUBNORMAL_SCALE


@njit(inline="always")
def u32_at(row, o):
    """The little-endian uint32 at byte ``o`` of ``row``."""
    return (
        np.uint32(row[o])
        | (np.uint32(row[o + 1]) << np.uint32(8))
        | (np.uint32(row[o + 2]) << np.uint32(16))
        | (np.uint32(row[o + 3]) << np.uint32(24))
    )


@njit(inline="always")
def i8(v):
    """A byte read as a signed int8 value (as int32)."""
    return I32(v) - I32(256) * I32(v >> 7)


@njit(inline="always")
def k_scale_min(row, s, j):
    """Sub-block ``j`` (0..7) scale and min of a Q4_K/Q5_K block whose scales start at ``s``."""
    if j < 4:
        return I32(row[s + j] & 63), I32(row[s + j + 4] & 63)
    sc = (row[s + j + 4] & 15) | ((row[s + j - 4] >> 6) << 4)
    mn = (row[s + j + 4] >> 4) | ((row[s + j] >> 6) << 4)
    return I32(sc), I32(mn)


@njit(inline="always")
def q3_k_scale(row, s, i):
    """Scale ``i`` (0..15) of a Q3_K block whose 12 scale bytes start at ``s`` (6 bits − 32)."""
    low = (row[s + (i % 8)] >> (4 * (i // 8))) & 15
    high = (row[s + 8 + (i % 4)] >> (2 * (i // 4))) & 3
    return I32(low | (high << 4)) - I32(32)


@njit(inline="always")
def iq4_xs_scale(row, o, g):
    """Group ``g`` (0..7) scale of the IQ4_XS block at ``o``: 6 bits minus 32, the low 4 in
    ``scales_l[g // 2]`` (nibble g % 2), the top 2 in bits 2g, 2g + 1 of the u16 ``scales_h``."""
    low = (row[o + 4 + g // 2] >> (4 * (g % 2))) & 15
    high = (row[o + 2 + g // 4] >> (2 * (g % 4))) & 3
    return I32(low | (high << 4)) - I32(32)


@njit(inline="always")
def decode_q4_0(row, o, out, k):
    d = f16x2(row, o)[0]  # d:f16 | qs[16]
    vstore(out, k, nib16(row, o + 2), 8, d, ZERO, d, ZERO)


@njit(inline="always")
def decode_q4_1(row, o, out, k):
    d, m = f16x2(row, o)  # d:f16 | m:f16 | qs[16]
    vstore(out, k, nib16(row, o + 4), 0, d, m, d, m)


@njit(inline="always")
def decode_q5_0(row, o, out, k):
    d = f16x2(row, o)[0]  # d:f16 | qh:u32 | qs[16]
    q = vor_shl(nib16(row, o + 6), qh_bits(u32_at(row, o + 2)), 0)
    vstore(out, k, q, 16, d, ZERO, d, ZERO)


@njit(inline="always")
def decode_q5_1(row, o, out, k):
    d, m = f16x2(row, o)  # d:f16 | m:f16 | qh:u32 | qs[16]
    q = vor_shl(nib16(row, o + 8), qh_bits(u32_at(row, o + 4)), 0)
    vstore(out, k, q, 0, d, m, d, m)


@njit(inline="always")
def decode_q8_0(row, o, out, k):
    vstore_s8(out, k, row, o + 2, f16x2(row, o)[0])  # d:f16 | qs:int8[32]


@njit(inline="always")
def decode_q2_k(row, o, out, k):
    d, dmin = f16x2(row, o + 80)  # scales[16] | qs[64] | d | dmin
    for g8 in range(8):  # 32 values: bytes of half g8 // 4, 2-bit field g8 % 4
        sc0, sc1 = row[o + 2 * g8], row[o + 2 * g8 + 1]
        q = bits32(row, o + 16 + 32 * (g8 // 4), 2 * (g8 % 4), 3)
        dl0, ml0 = d * F32(sc0 & 15), dmin * F32(sc0 >> 4)
        dl1, ml1 = d * F32(sc1 & 15), dmin * F32(sc1 >> 4)
        vstore(out, k + 32 * g8, q, 0, dl0, -ml0, dl1, -ml1)


@njit(inline="always")
def decode_q3_k(row, o, out, k):
    d = f16x2(row, o + 106)[1]  # hmask[32] | qs[64] | scales[12] | d
    for g8 in range(8):
        low = bits32(row, o + 32 + 32 * (g8 // 4), 2 * (g8 % 4), 3)
        q = vor_shl(low, bits32(row, o, g8, 1), 2)  # value + 4
        dl0 = d * F32(q3_k_scale(row, o + 96, 2 * g8))
        dl1 = d * F32(q3_k_scale(row, o + 96, 2 * g8 + 1))
        vstore(out, k + 32 * g8, q, 4, dl0, ZERO, dl1, ZERO)


@njit(inline="always")
def decode_q4_k(row, o, out, k):
    d, dmin = f16x2(row, o)  # d | dmin | scales[12] | qs[128]
    for s in range(8):  # sub-block s: nibble s % 2 of the 32 bytes of chunk s // 2
        sc, mn = k_scale_min(row, o + 4, s)
        dl, ml = d * F32(sc), dmin * F32(mn)
        vstore(
            out,
            k + 32 * s,
            bits32(row, o + 16 + 32 * (s // 2), 4 * (s % 2), 15),
            0,
            dl,
            -ml,
            dl,
            -ml,
        )


@njit(inline="always")
def decode_q5_k(row, o, out, k):
    d, dmin = f16x2(row, o)  # d | dmin | scales[12] | qh[32] | qs[128]
    for s in range(8):
        sc, mn = k_scale_min(row, o + 4, s)
        dl, ml = d * F32(sc), dmin * F32(mn)
        low = bits32(row, o + 48 + 32 * (s // 2), 4 * (s % 2), 15)
        vstore(out, k + 32 * s, vor_shl(low, bits32(row, o + 16, s, 1), 4), 0, dl, -ml, dl, -ml)


@njit(inline="always")
def decode_q6_k(row, o, out, k):
    d = f16x2(row, o + 206)[1]  # ql[128] | qh[64] | scales:int8[16] | d
    for g8 in range(8):
        half, g = g8 // 4, g8 % 4
        low = bits32(row, o + 64 * half + 32 * (g % 2), 4 * (g // 2), 15)
        q = vor_shl(low, bits32(row, o + 128 + 32 * half, 2 * g, 3), 4)  # value + 32
        dl0 = d * F32(i8(row[o + 192 + 2 * g8]))
        dl1 = d * F32(i8(row[o + 193 + 2 * g8]))
        vstore(out, k + 32 * g8, q, 32, dl0, ZERO, dl1, ZERO)


@njit(inline="always")
def decode_iq4_nl(row, o, out, k):
    vstore_sv(out, k, iq4_values(row, o + 2), f16x2(row, o)[0])  # d:f16 | qs[16]


@njit(inline="always")
def decode_iq4_xs(row, o, out, k):
    d = f16x2(row, o)[0]  # d:f16 | scales_h:u16 | scales_l[4] | qs[128]
    for g in range(8):  # group g: the 16 bytes at 8 + 16g, low nibbles then high
        dl = d * F32(iq4_xs_scale(row, o, g))
        vstore_sv(out, k + 32 * g, iq4_values(row, o + 8 + 16 * g), dl)


@njit(inline="always")
def decode_float(code, row, o, out, k):
    """One element of an F32 / F16 / BF16 row."""
    if code == T_F32:
        out[k] = bits_to_f32(u32_at(row, o))
    elif code == T_F16:
        out[k] = f16_at(row, o)
    else:
        out[k] = bits_to_f32(
            (np.uint32(row[o]) | (np.uint32(row[o + 1]) << np.uint32(8))) << np.uint32(16)
        )


# The block decoder of each quantized type code (F32 / F16 / BF16: ``decode_float``).
DECODE_BLOCK = {
    T_Q4_0: decode_q4_0,
    T_Q4_1: decode_q4_1,
    T_Q5_0: decode_q5_0,
    T_Q5_1: decode_q5_1,
    T_Q8_0: decode_q8_0,
    T_Q2_K: decode_q2_k,
    T_Q3_K: decode_q3_k,
    T_Q4_K: decode_q4_k,
    T_Q5_K: decode_q5_k,
    T_Q6_K: decode_q6_k,
    T_IQ4_NL: decode_iq4_nl,
    T_IQ4_XS: decode_iq4_xs,
}
FLOAT_CODES = (T_F32, T_F16, T_BF16)


def decode_row(code, row, out):
    """Decode one whole row (uint8 bytes) of type ``code`` into ``out`` (float32, n_cols).

    For compiled code only, with ``code`` a compile-time constant (a global or a closure
    variable of the calling kernel): only that type's decoder compiles.  A run-time ``code``
    is a typing error."""
    raise NotImplementedError("decode_row is only callable from numba-compiled code")


@overload(decode_row, prefer_literal=True)
def _decode_row(code, row, out):
    known = isinstance(code, types.IntegerLiteral)
    if known and code.literal_value in DECODE_BLOCK:
        decode_block = DECODE_BLOCK[code.literal_value]

        def decode_quant(code, row, out):
            bs, ts = BLOCK_SIZE[code], TYPE_SIZE[code]
            for b in range(out.shape[0] // bs):
                decode_block(row, b * ts, out, b * bs)

        return decode_quant
    if known and code.literal_value in FLOAT_CODES:

        def decode_floats(code, row, out):
            ts = TYPE_SIZE[code]
            for k in range(out.shape[0]):
                decode_float(code, row, k * ts, out, k)

        return decode_floats

    return None  # a run-time code: no implementation (it would compile every type)
