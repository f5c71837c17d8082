"""Tensor types: one small class per ggml type with a numpy reference ``dequantize``.

Each class turns ``blocks`` (uint8, shape ``(n_blocks, type_size)``) into float32 values
(shape ``(n_blocks, block_size)``) exactly as ggml's ``dequantize_row_*`` does, operation for
operation, so the result equals gguf-py's ``gguf.quants.dequantize`` bit for bit.  These are
the readable references; the fast paths (matrix products on the quantized blocks, row
gathers) are the numba kernels of ``engine/kernels/__init__.py``, tested against these.

Block layouts (byte offsets inside one block, as in ggml-common.h):

* ``Q4_0``  d:f16 | qs[16] (low nibbles = elements 0..15, high nibbles = 16..31); x = d*(q-8)
* ``Q4_1``  d:f16 | m:f16 | qs[16]; x = d*q + m
* ``Q5_0``  d:f16 | qh:u32 (5th bit of element i at bit i) | qs[16]; x = d*(q-16)
* ``Q5_1``  d:f16 | m:f16 | qh:u32 | qs[16]; x = d*q + m
* ``Q8_0``  d:f16 | qs:int8[32]; x = d*q
* ``Q2_K``  scales[16] (low nibble scale, high nibble min) | qs[64] | d:f16 | dmin:f16
* ``Q3_K``  hmask[32] | qs[64] | scales[12] (sixteen 6-bit scales) | d:f16
* ``Q4_K``  d:f16 | dmin:f16 | scales[12] (eight 6-bit scales and mins) | qs[128]
* ``Q5_K``  d:f16 | dmin:f16 | scales[12] | qh[32] | qs[128]
* ``Q6_K``  ql[128] | qh[64] | scales:int8[16] | d:f16
* ``IQ4_NL`` d:f16 | qs[16] (4-bit indices into ``IQ4_VALUES``, low nibbles first); x = d*v[q]
* ``IQ4_XS`` d:f16 | scales_h:u16 | scales_l[4] | qs[128]; eight groups of 32 with 6-bit scales
  (low 4 bits in scales_l, top 2 in scales_h) minus 32; x = d*(scale-32)*v[q]

This module also holds the reference quantizers of 8-bit activation blocks (``Q8_0``,
``Q8_1``, ``Q8_K`` as ggml's ``quantize_row_*_ref``) used to judge the kernels' error against
llama.cpp's scheme, and ``Q8_0``/``Q4_0``/``Q4_1``/``Q5_0``/``Q5_1`` weight quantizers for tests.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.constants import GGML_BLOCK_LAYOUT, IQ4_VALUES, QK_K, GGMLType

# Shifts that unpack packed bit fields along a new axis.
_NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8)
_CRUMB_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
_BIT_SHIFTS = np.arange(8, dtype=np.uint8)
_BIT_SHIFTS_32 = np.arange(32, dtype=np.uint32)


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 at byte ``start`` of each block, as float32 of shape (n_blocks, 1)."""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) bytes → (n, 2k) values: the k low nibbles, then the k high nibbles."""
    n = qs.shape[0]
    return ((qs[:, None, :] >> _NIBBLE_SHIFTS[None, :, None]) & np.uint8(0x0F)).reshape(n, -1)


def _bits32(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes of a little-endian u32 → (n, 32) bits (bit i of the word at column i)."""
    word = np.ascontiguousarray(qh).view("<u4")  # (n, 1)
    return ((word >> _BIT_SHIFTS_32[None, :]) & np.uint32(1)).astype(np.uint8)


def k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed scale bytes of Q4_K/Q5_K → eight 6-bit scales and eight 6-bit mins.

    Bytes 0..3 hold scales 0..3 (low 6 bits), bytes 4..7 mins 0..3; scales/mins 4..7 take
    their low 4 bits from bytes 8..11 and their top 2 bits from the top of bytes 0..7.
    """
    d, m, md = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc, mn  # (n, 8) each


def q3_k_scales(scales: np.ndarray) -> np.ndarray:
    """The 12 packed scale bytes of Q3_K → sixteen signed scales (6-bit values minus 32)."""
    n = scales.shape[0]
    low = (scales[:, None, 0:8] >> _NIBBLE_SHIFTS[None, :, None]).reshape(n, 16) & 0x0F
    high = (scales[:, None, 8:12] >> _CRUMB_SHIFTS[None, :, None]).reshape(n, 16) & 0x03
    return (low | (high << 4)).astype(np.int8) - np.int8(32)  # (n, 16)


class QuantType:
    """A ggml tensor type: its layout and the numpy reference ``dequantize``."""

    ggml_type: ClassVar[GGMLType]
    block_size: ClassVar[int]
    type_size: ClassVar[int]
    # Byte offsets of the f16 scale fields inside one block (random test blocks keep them finite).
    f16_offsets: ClassVar[tuple[int, ...]] = ()

    def __init_subclass__(cls, ggml_type: GGMLType, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.ggml_type = ggml_type
        layout = GGML_BLOCK_LAYOUT[ggml_type]
        cls.block_size, cls.type_size = layout.block_size, layout.type_size

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class F32(QuantType, ggml_type=GGMLType.F32):
    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view("<f4").astype(np.float32)


class F16(QuantType, ggml_type=GGMLType.F16):
    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view("<f2").astype(np.float32)


class BF16(QuantType, ggml_type=GGMLType.BF16):
    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(blocks).view("<u2").astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)


class Q4_0(QuantType, ggml_type=GGMLType.Q4_0):
    f16_offsets = (0,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        q = _nibbles(blocks[:, 2:18]).astype(np.int8) - np.int8(8)  # (n, 32)
        return d * q.astype(np.float32)


class Q4_1(QuantType, ggml_type=GGMLType.Q4_1):
    f16_offsets = (0, 2)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d, m = _f16(blocks, 0), _f16(blocks, 2)
        q = _nibbles(blocks[:, 4:20]).astype(np.float32)  # (n, 32)
        return d * q + m


class Q5_0(QuantType, ggml_type=GGMLType.Q5_0):
    f16_offsets = (0,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        q = _nibbles(blocks[:, 6:22]) | (_bits32(blocks[:, 2:6]) << np.uint8(4))
        return d * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


class Q5_1(QuantType, ggml_type=GGMLType.Q5_1):
    f16_offsets = (0, 2)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d, m = _f16(blocks, 0), _f16(blocks, 2)
        q = _nibbles(blocks[:, 8:24]) | (_bits32(blocks[:, 4:8]) << np.uint8(4))
        return d * q.astype(np.float32) + m


class Q8_0(QuantType, ggml_type=GGMLType.Q8_0):
    f16_offsets = (0,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        return blocks[:, 2:34].view(np.int8).astype(np.float32) * d


class Q2_K(QuantType, ggml_type=GGMLType.Q2_K):
    f16_offsets = (80, 82)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        scales, qs = blocks[:, 0:16], blocks[:, 16:80]
        d, dmin = _f16(blocks, 80), _f16(blocks, 82)
        dl = (d * (scales & 0x0F).astype(np.float32))[:, :, None]  # (n, 16, 1)
        ml = (dmin * (scales >> 4).astype(np.float32))[:, :, None]
        # 2 halves of 128 elements; each byte of a half's 32 holds 4 elements (shift 0,2,4,6).
        q = (qs.reshape(n, 2, 1, 32) >> _CRUMB_SHIFTS[None, None, :, None]) & np.uint8(3)
        q = q.reshape(n, 16, 16).astype(np.float32)
        return (dl * q - ml).reshape(n, QK_K)


class Q3_K(QuantType, ggml_type=GGMLType.Q3_K):
    f16_offsets = (108,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        hmask, qs, scales = blocks[:, 0:32], blocks[:, 32:96], blocks[:, 96:108]
        d = _f16(blocks, 108)
        dl = (d * q3_k_scales(scales).astype(np.float32))[:, :, None]  # (n, 16, 1)
        low = (qs.reshape(n, 2, 1, 32) >> _CRUMB_SHIFTS[None, None, :, None]) & np.uint8(3)
        high = (hmask[:, None, :] >> _BIT_SHIFTS[None, :, None]) & np.uint8(1)  # (n, 8, 32)
        # A clear high bit means "subtract 4".
        q = low.reshape(n, 16, 16).astype(np.int8) - ((high ^ np.uint8(1)) << np.uint8(2)).reshape(
            n, 16, 16
        ).astype(np.int8)
        return (dl * q.astype(np.float32)).reshape(n, QK_K)


class Q4_K(QuantType, ggml_type=GGMLType.Q4_K):
    f16_offsets = (0, 2)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, mn = k_scale_min(blocks[:, 4:16])
        dl = (d * sc.astype(np.float32))[:, :, None]  # (n, 8, 1)
        ml = (dmin * mn.astype(np.float32))[:, :, None]
        # 4 chunks of 32 bytes; each chunk holds sub-block 2c (low nibbles) and 2c+1 (high).
        q = (
            blocks[:, 16:144].reshape(n, 4, 1, 32) >> _NIBBLE_SHIFTS[None, None, :, None]
        ) & np.uint8(0x0F)
        q = q.reshape(n, 8, 32).astype(np.float32)
        return (dl * q - ml).reshape(n, QK_K)


class Q5_K(QuantType, ggml_type=GGMLType.Q5_K):
    f16_offsets = (0, 2)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, mn = k_scale_min(blocks[:, 4:16])
        dl = (d * sc.astype(np.float32))[:, :, None]  # (n, 8, 1)
        ml = (dmin * mn.astype(np.float32))[:, :, None]
        qh, qs = blocks[:, 16:48], blocks[:, 48:176]
        low = (qs.reshape(n, 4, 1, 32) >> _NIBBLE_SHIFTS[None, None, :, None]) & np.uint8(0x0F)
        high = (qh[:, None, :] >> _BIT_SHIFTS[None, :, None]) & np.uint8(
            1
        )  # (n, 8, 32): bit j → sub-block j
        q = (low.reshape(n, 8, 32) | (high << np.uint8(4))).astype(np.float32)
        return (dl * q - ml).reshape(n, QK_K)


class Q6_K(QuantType, ggml_type=GGMLType.Q6_K):
    f16_offsets = (208,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        ql, qh = blocks[:, 0:128], blocks[:, 128:192]
        scales = blocks[:, 192:208].view(np.int8).astype(np.float32)
        d = _f16(blocks, 208)
        dl = (d * scales)[:, :, None]  # (n, 16, 1)
        # 2 halves of 128 elements: 64 ql bytes (low nibbles then high nibbles) and 32 qh bytes
        # (2 bits per element, shifts 0,2,4,6 → the half's four groups of 32).
        low = (ql.reshape(n, 2, 1, 64) >> _NIBBLE_SHIFTS[None, None, :, None]) & np.uint8(0x0F)
        high = (qh.reshape(n, 2, 1, 32) >> _CRUMB_SHIFTS[None, None, :, None]) & np.uint8(3)
        q = (low.reshape(n, 2, 4, 32) | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
        return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


_IQ4_VALUES = np.array(IQ4_VALUES, dtype=np.int8)


class IQ4_NL(QuantType, ggml_type=GGMLType.IQ4_NL):
    f16_offsets = (0,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        return d * _IQ4_VALUES[_nibbles(blocks[:, 2:18])].astype(np.float32)


class IQ4_XS(QuantType, ggml_type=GGMLType.IQ4_XS):
    f16_offsets = (0,)

    @staticmethod
    def dequantize(blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d = _f16(blocks, 0)
        high = np.ascontiguousarray(blocks[:, 2:4]).view("<u2")  # (n, 1): bits 2g, 2g+1
        high = (high >> (2 * np.arange(8, dtype=np.uint16))[None, :]) & np.uint16(3)
        low = _nibbles(blocks[:, 4:8].reshape(n * 4, 1)).reshape(n, 8)  # nibble g % 2 of g // 2
        scales = (low | (high.astype(np.uint8) << np.uint8(4))).astype(np.int8) - np.int8(32)
        dl = (d * scales.astype(np.float32))[:, :, None]  # (n, 8, 1)
        q = _nibbles(blocks[:, 8:].reshape(n * 8, 16)).reshape(n, 8, 32)
        return (dl * _IQ4_VALUES[q].astype(np.float32)).reshape(n, QK_K)


QUANT_TYPES: dict[GGMLType, type[QuantType]] = {
    cls.ggml_type: cls
    for cls in (
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS
    )
}


def quant_type(ggml_type: GGMLType | int) -> type[QuantType]:
    """The class of a ggml type; ``ValueError`` naming the type when the engine lacks it."""
    try:
        return QUANT_TYPES[GGMLType(ggml_type)]
    except (KeyError, ValueError):
        known = ggml_type in GGMLType._value2member_map_
        name = GGMLType(ggml_type).name if known else str(ggml_type)
        supported = ", ".join(t.name for t in QUANT_TYPES)
        raise ValueError(f"tensor type {name} is not supported (supported: {supported})") from None


def row_bytes(ggml_type: GGMLType | int, n_cols: int) -> int:
    """Bytes of one row of ``n_cols`` elements; ``ValueError`` if not a whole number of blocks."""
    cls = quant_type(ggml_type)
    if n_cols <= 0 or n_cols % cls.block_size:
        raise ValueError(
            f"a {cls.ggml_type.name} row of {n_cols} elements is not a whole number"
            f" of {cls.block_size}-element blocks"
        )
    return n_cols // cls.block_size * cls.type_size


def dequantize(data: np.ndarray, ggml_type: GGMLType | int) -> np.ndarray:
    """Quantized rows (uint8, shape ``(..., row_bytes)``) → float32 ``(..., n_cols)``."""
    cls = quant_type(ggml_type)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"quantized data must be uint8 bytes, not {data.dtype}")
    if data.ndim == 0 or data.shape[-1] % cls.type_size:
        raise ValueError(
            f"{cls.ggml_type.name} rows of shape {data.shape} are not a whole number"
            f" of {cls.type_size}-byte blocks"
        )
    blocks = np.ascontiguousarray(data).reshape(-1, cls.type_size)
    n_cols = data.shape[-1] // cls.type_size * cls.block_size
    return cls.dequantize(blocks).reshape(*data.shape[:-1], n_cols)


# ---------------------------------------------------------------------------------------------
# Reference quantizers (ggml's quantize_row_*_ref): 8-bit activation blocks, and a few weight
# types for tests.  Rounding is round-half-away-from-zero like C's roundf / nearest_int.


def round_away(x: np.ndarray) -> np.ndarray:
    """C ``roundf``: round half away from zero (numpy's ``rint`` rounds half to even)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % size:
        raise ValueError(
            f"rows of {x.shape[-1]} values are not a whole number of {size}-value blocks"
        )
    return x.reshape(-1, size)


def quantize_q8_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows → (qs int8 ``(..., n)``, d float32 ``(..., n/32)``) with ggml's Q8_0 rounding.

    ``d`` is returned in float32; ggml stores it as f16 (``quantize_q8_0_bytes`` does).
    """
    b = _blocks(x, 32)
    d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    qs = round_away(b * inv).astype(np.int8)
    lead = np.shape(x)[:-1]
    return qs.reshape(np.shape(x)), d.reshape(*lead, -1)


def quantize_q8_0_bytes(x: np.ndarray) -> np.ndarray:
    """Rows → Q8_0 blocks as bytes ``(..., n/32*34)``, as llama.cpp's quantize stores them."""
    qs, d = quantize_q8_0(x)
    b_qs = qs.reshape(-1, 32).view(np.uint8)
    b_d = d.reshape(-1, 1).astype(np.float16).view(np.uint8)
    return np.concatenate([b_d, b_qs], axis=1).reshape(*np.shape(x)[:-1], -1)


def quantize_q8_1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows → (qs int8, d float32, s float32 = d * sum(qs) per 32-block) as ggml's Q8_1."""
    qs, d = quantize_q8_0(x)
    lead = np.shape(x)[:-1]
    s = d.reshape(-1) * qs.reshape(-1, 32).astype(np.int32).sum(axis=1).astype(np.float32)
    return qs, d, s.reshape(*lead, -1)


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows → (qs int8, d float32 per 256) as ggml's ``quantize_row_q8_K_ref``.

    The scale is set by the value of largest magnitude, ``iscale = -127/max`` (so that value
    maps to -127 exactly), values clamp at 127.
    """
    b = _blocks(x, QK_K)
    idx = np.abs(b).argmax(axis=1)
    vmax = b[np.arange(b.shape[0]), idx][:, None]
    with np.errstate(divide="ignore"):
        iscale = np.where(vmax == 0, np.float32(0), np.float32(-127) / vmax).astype(np.float32)
        d = np.where(vmax == 0, np.float32(0), np.float32(1) / iscale).astype(np.float32)
    qs = np.minimum(round_away(b * iscale), 127).astype(np.int8)
    lead = np.shape(x)[:-1]
    return qs.reshape(np.shape(x)), d.reshape(*lead, -1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) values < 16 → (n, 16) bytes: elements 0..15 low nibbles, 16..31 high."""
    return (q[:, :16] | (q[:, 16:] << np.uint8(4))).astype(np.uint8)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    return v.reshape(-1, 1).astype(np.float16).view(np.uint8)


def quantize_weights(x: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """Float rows → quantized bytes of a legacy type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), F32, F16, BF16.

    Follows ggml's reference quantizers; used to build test weights.
    """
    ggml_type = GGMLType(ggml_type)
    x = np.asarray(x, dtype=np.float32)
    lead = x.shape[:-1]
    if ggml_type == GGMLType.F32:
        return x.view(np.uint8).copy()
    if ggml_type == GGMLType.F16:
        return x.astype(np.float16).view(np.uint8).reshape(*lead, -1)
    if ggml_type == GGMLType.BF16:
        bits = x.view(np.uint32).astype(np.uint64)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        return bits.astype(np.uint16).view(np.uint8).reshape(*lead, -1)
    if ggml_type == GGMLType.Q8_0:
        return quantize_q8_0_bytes(x)
    b = _blocks(x, 32)
    if ggml_type in (GGMLType.Q4_0, GGMLType.Q5_0):
        half = 8 if ggml_type == GGMLType.Q4_0 else 16
        vmax = b[np.arange(b.shape[0]), np.abs(b).argmax(axis=1)][:, None]
        d = vmax / np.float32(-half)
        with np.errstate(divide="ignore"):
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
        q = np.minimum(np.trunc(b * inv + np.float32(half + 0.5)), 2 * half - 1).astype(np.uint8)
        parts = [_f16_bytes(d)]
    else:
        top = 15 if ggml_type == GGMLType.Q4_1 else 31
        lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
        d = (hi - lo) / np.float32(top)
        with np.errstate(divide="ignore"):
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
        q = np.minimum(np.trunc((b - lo) * inv + np.float32(0.5)), top).astype(np.uint8)
        parts = [_f16_bytes(d), _f16_bytes(lo)]
    if ggml_type in (GGMLType.Q5_0, GGMLType.Q5_1):
        qh = np.packbits((q >> 4) & 1, axis=1, bitorder="little")  # (n, 4): bit i = element i
        parts.append(qh)
    elif ggml_type not in (GGMLType.Q4_0, GGMLType.Q4_1):
        raise ValueError(f"no reference quantizer for {ggml_type.name}")
    parts.append(_pack_nibbles(q & np.uint8(0x0F)))
    return np.concatenate(parts, axis=1).reshape(*lead, -1)
