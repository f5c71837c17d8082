"""A small SIMD vocabulary for numba: LLVM vector values for the integer dot products.

LLVM's loop vectorizer cannot see the right loop in block-quantized code (32-value blocks
with their scales interleaved in the bytes): it either leaves the 32-value dot scalar or
vectorizes across blocks with byte gathers.  These intrinsics state the vector work
directly, in portable LLVM IR (``<32 x i8>`` loads, widening multiplies, pairwise adds),
which LLVM lowers to the target's instructions (on x86 AVX2: ``vpmaddwd``, ``vcvtdq2ps``,
``vcvtph2ps``).  Four value types travel between them inside numba code:

* ``u8x32``  — 32 unsigned weight values (0..255) of one 32-value group;
* ``i32x8``  — sums of 32 int products in groups of 4 (lane i = products 4i..4i+3);
* ``f32x8``  — a float accumulator, summed horizontally once per output (``vsum``);
* ``i16x16`` — the 16 small integer scales (or 8 scales and 8 minima) of one K-quant
  super-block, decoded once per super-block (``scales16``, ``scales16_q3_k``, ``scales16_k``)
  and folded into the pairwise adds of each 32-value group (``vdot_sc``), as ggml does.

The kernels of ``kernels/legacy.py``, ``kernels/kquants.py`` and ``kernels/iquants.py`` are
written with them.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic, models, overload, register_model

from engine.constants import IQ4_VALUES

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_F32 = ir.FloatType()


class _VectorType(types.Type):
    def __init__(self, name: str) -> None:
        super().__init__(name=name)


u8x32 = _VectorType("u8x32")
i32x8 = _VectorType("i32x8")
f32x8 = _VectorType("f32x8")
i16x16 = _VectorType("i16x16")
_LLVM_TYPES = {
    "i16x16": ir.VectorType(_I16, 16),
    "u8x32": ir.VectorType(_I8, 32),
    "i32x8": ir.VectorType(_I32, 8),
    "f32x8": ir.VectorType(_F32, 8),
}


@register_model(_VectorType)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _LLVM_TYPES[fe_type.name])


_X86 = llvm_binding.get_process_triple().startswith(("x86_64", "i386", "i686"))


def _has_native_f16() -> bool:
    """True where LLVM converts half floats in one instruction (x86 F16C, any AArch64).  On x86
    only when compiling for this host's CPU: for a named CPU (``NUMBA_CPU_NAME``, e.g.
    ``generic``) LLVM would call a runtime helper numba does not link (``__extendhfsf2``)."""
    triple = llvm_binding.get_process_triple()
    if not triple.startswith(("x86_64", "i386", "i686")):
        return triple.startswith(("aarch64", "arm64"))
    host = "+f16c" in llvm_binding.get_host_cpu_features().flatten().split(",")
    return config.CPU_NAME is None and host


NATIVE_F16 = _has_native_f16()
# x86 AVX2: products through vpmaddubsw/vpmaddwd as ggml does (generic IR otherwise).
# Only when compiling for this host's CPU (numba's NUMBA_CPU_NAME unset).
AVX2 = config.CPU_NAME is None and "+avx2" in llvm_binding.get_host_cpu_features().flatten().split(
    ","
)


def _const_vec(elem, values):
    return ir.Constant(ir.VectorType(elem, len(values)), list(values))


def _splat(builder, value, n):
    vt = ir.VectorType(value.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), _const_vec(_I32, [0] * n))


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, _const_vec(_I32, lanes))


def _load(context, builder, arrty, arr, offset, vtype):
    """Unaligned load of ``vtype`` from byte ``offset`` of a 1-D byte array."""
    data = context.make_array(arrty)(context, builder, arr).data
    ptr = builder.gep(data, [offset])
    return builder.load(builder.bitcast(ptr, vtype.as_pointer()), align=1)


def _load_f32x8(context, builder, arrty, arr, offset):
    """8 float32 values from element ``offset`` of a float32 row, or of a row of IEEE halves
    stored as uint16 (the f16 KV cache), widened exactly (x86 F16C ``vcvtph2ps``)."""
    if arrty.dtype == types.uint16:
        raw = _load(context, builder, arrty, arr, offset, ir.VectorType(_I16, 8))
        halves = builder.bitcast(raw, ir.VectorType(ir.HalfType(), 8))
        return builder.fpext(halves, _LLVM_TYPES["f32x8"])
    return _load(context, builder, arrty, arr, offset, _LLVM_TYPES["f32x8"])


@intrinsic
def f16_bits(typingctx, x):
    """float32 → the IEEE half nearest to it (ties to even, as ``vcvtps2ph`` and ggml), as
    uint16 bits: how the f16 KV cache stores a value.  Needs ``NATIVE_F16``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), _I16)

    return types.uint16(types.float32), codegen


@intrinsic
def f16_value(typingctx, bits):
    """uint16 bits of an IEEE half → its float32 value (exact)."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), _F32)

    return types.float32(types.uint16), codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """int32 bits of an IEEE single → its float32 value (``blas.exp_neg``'s power of two)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _F32)

    return types.float32(types.int32), codegen


def kv_value(row, i):
    """Element i of a KV cache row as float32, whether the cache is float32 or f16 bits
    (compiled code only)."""
    raise NotImplementedError("kv_value is only callable from numba-compiled code")


@overload(kv_value)
def _kv_value(row, i):
    if row.dtype == types.uint16:
        return lambda row, i: f16_value(row[i])
    return lambda row, i: row[i]


def kv_store(row, i, x):
    """row[i] = x (float32), rounded to a half when the cache holds f16 bits (compiled code)."""
    raise NotImplementedError("kv_store is only callable from numba-compiled code")


@overload(kv_store)
def _kv_store(row, i, x):
    if row.dtype == types.uint16:

        def store_half(row, i, x):
            row[i] = f16_bits(np.float32(x))

        return store_half

    def store(row, i, x):
        row[i] = x

    return store


def _half_pair_to_float(builder, word):
    """i32 holding two IEEE halves → <2 x float> (exact, like ``vcvtph2ps``)."""
    if NATIVE_F16:
        v4 = builder.insert_element(
            ir.Constant(ir.VectorType(_I32, 4), ir.Undefined), word, ir.Constant(_I32, 0)
        )
        h8 = builder.bitcast(v4, ir.VectorType(ir.HalfType(), 8))
        return builder.fpext(_shuffle(builder, h8, h8, [0, 1]), ir.VectorType(_F32, 2))
    # Portable: move exponent and mantissa into a float32 and rescale by 2**112 (exact for
    # normal and subnormal halves); infinities and NaNs are rebuilt separately.
    v2 = builder.bitcast(word, ir.VectorType(ir.IntType(16), 2))
    h = builder.zext(v2, ir.VectorType(_I32, 2))
    sign = builder.shl(builder.and_(h, _const_vec(_I32, [0x8000] * 2)), _const_vec(_I32, [16] * 2))
    body = builder.shl(builder.and_(h, _const_vec(_I32, [0x7FFF] * 2)), _const_vec(_I32, [13] * 2))
    finite = builder.fmul(
        builder.bitcast(body, ir.VectorType(_F32, 2)),
        ir.Constant(ir.VectorType(_F32, 2), [2.0**112] * 2),
    )
    special = builder.or_(body, _const_vec(_I32, [0x7F800000] * 2))
    is_special = builder.icmp_unsigned(
        ">=", builder.and_(h, _const_vec(_I32, [0x7C00] * 2)), _const_vec(_I32, [0x7C00] * 2)
    )
    magnitude = builder.select(is_special, builder.bitcast(special, ir.VectorType(_F32, 2)), finite)
    return builder.bitcast(
        builder.or_(builder.bitcast(magnitude, ir.VectorType(_I32, 2)), sign),
        ir.VectorType(_F32, 2),
    )


@intrinsic
def f16x2(typingctx, row, o):
    """The two IEEE halves at bytes ``o..o+4`` of ``row`` as a pair of float32."""
    sig = types.UniTuple(types.float32, 2)(row, types.intp)

    def codegen(context, builder, signature, args):
        word = _load(context, builder, signature.args[0], args[0], args[1], _I32)
        pair = _half_pair_to_float(builder, word)
        out = ir.Constant(context.get_value_type(signature.return_type), ir.Undefined)
        for i in range(2):
            out = builder.insert_value(out, builder.extract_element(pair, ir.Constant(_I32, i)), i)
        return out

    return sig, codegen


@intrinsic
def f16(typingctx, row, o):
    """The IEEE half at bytes ``o..o+2`` of ``row`` as a float32.

    On x86 the zero-extended half passes through an empty asm: LLVM would otherwise load it
    with ``vpinsrw`` into whatever register it likes, often a loop's accumulator, a false
    dependency that serialises the loop (it made Q4_0 ~1.8x slower per byte than Q4_1)."""

    def codegen(context, builder, signature, args):
        half = _load(context, builder, signature.args[0], args[0], args[1], _I16)
        word = builder.zext(half, _I32)
        if _X86:
            word = builder.asm(ir.FunctionType(_I32, [_I32]), "", "=r,0", [word], False)
        pair = _half_pair_to_float(builder, word)
        return builder.extract_element(pair, ir.Constant(_I32, 0))

    return types.float32(row, types.intp), codegen


@intrinsic
def vzero(typingctx):
    """A zero float accumulator."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_LLVM_TYPES["f32x8"], [0.0] * 8)

    return f32x8(), codegen


# How far ahead of the block being multiplied the dot products ask for weight bytes.  A weight
# matrix larger than the caches streams from memory, and the products do enough work per byte
# that the hardware prefetcher falls behind: on the 2-core development machine generation on
# the 1.1B Q4_K_M benchmark model went from 11.1 to 20.1 tok/s with it (`python -m engine
# bench`), and a one-off sweep streamed a 1.6 GB Q4_K matrix equally fast from 2 to 8 KiB ahead.
PREFETCH_AHEAD = 2048


@intrinsic
def prefetch(typingctx, row, o):
    """Ask for the cache line holding byte ``o`` of ``row``'s buffer (a hint: an address past
    the end is allowed and never faults; rows are contiguous, so that is the next row)."""

    def codegen(context, builder, signature, args):
        arr, off = args
        data = context.make_array(signature.args[0])(context, builder, arr).data
        ptr = builder.bitcast(builder.gep(data, [off]), ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=fnty)
        # read, keep in all cache levels, data cache
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.none(row, types.intp), codegen


@intrinsic
def vsum(typingctx, acc):
    """Horizontal sum of a float accumulator."""

    def codegen(context, builder, signature, args):
        (a,) = args
        s4 = builder.fadd(
            _shuffle(builder, a, a, [0, 1, 2, 3]), _shuffle(builder, a, a, [4, 5, 6, 7])
        )
        s2 = builder.fadd(_shuffle(builder, s4, s4, [0, 1]), _shuffle(builder, s4, s4, [2, 3]))
        e0 = builder.extract_element(s2, ir.Constant(_I32, 0))
        return builder.fadd(e0, builder.extract_element(s2, ir.Constant(_I32, 1)))

    return types.float32(acc), codegen


def _nibbles(context, builder, arrty, arr, o):
    """16 bytes at ``o`` → <32 x i8>: low nibbles (lanes 0..15), then high nibbles (16..31)."""
    v = _load(context, builder, arrty, arr, o, ir.VectorType(_I8, 16))
    lo = builder.and_(v, _const_vec(_I8, [15] * 16))
    hi = builder.lshr(v, _const_vec(_I8, [4] * 16))
    return _shuffle(builder, lo, hi, list(range(32)))


@intrinsic
def nib16(typingctx, row, o):
    """16 bytes at ``o`` → 32 values: low nibbles (lanes 0..15), then high nibbles (16..31)."""

    def codegen(context, builder, signature, args):
        return _nibbles(context, builder, signature.args[0], args[0], args[1])

    return u8x32(row, types.intp), codegen


@intrinsic
def bits32(typingctx, row, o, shift, mask):
    """32 bytes at ``o`` → lane i = (byte i >> shift) & mask."""

    def codegen(context, builder, signature, args):
        v = _load(context, builder, signature.args[0], args[0], args[1], ir.VectorType(_I8, 32))
        sh = _splat(builder, builder.trunc(args[2], _I8), 32)
        mk = _splat(builder, builder.trunc(args[3], _I8), 32)
        return builder.and_(builder.lshr(v, sh), mk)

    return u8x32(row, types.intp, types.intp, types.intp), codegen


@intrinsic
def qh_bits(typingctx, qh):
    """A uint32 of 32 high bits → lane i = ((qh >> i) & 1) << 4 (the 5th bit of Q5_0/Q5_1)."""

    def codegen(context, builder, signature, args):
        # Byte i // 8 of the word into lane i, test bit i % 8 (no 32-bit lanes: pshufb, pand,
        # pcmpeqb on AVX2).
        v4 = builder.bitcast(builder.trunc(args[0], _I32), ir.VectorType(_I8, 4))
        spread = _shuffle(builder, v4, v4, [i // 8 for i in range(32)])
        bit = builder.and_(spread, _const_vec(_I8, [1 << (i % 8) for i in range(32)]))
        is_set = builder.icmp_unsigned("!=", bit, _const_vec(_I8, [0] * 32))
        return builder.select(is_set, _const_vec(_I8, [16] * 32), _const_vec(_I8, [0] * 32))

    return u8x32(types.intp), codegen


@intrinsic
def vor_shl(typingctx, a, b, k):
    """a | (b << k) lane by lane."""

    def codegen(context, builder, signature, args):
        kk = _splat(builder, builder.trunc(args[2], _I8), 32)
        return builder.or_(args[0], builder.shl(args[1], kk))

    return u8x32(a, b, types.intp), codegen


def _llvm_call(builder, name, ret, args):
    fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(ret, [a.type for a in args]))
    return builder.call(fn, args)


def _quad_sums(builder, u, s):
    """Unsigned bytes ``u`` · signed bytes ``s`` (<32 x i8> each) → <8 x i32>, lane i the sum
    of products 4i..4i+3.  Exact while |u·s| pairs fit int16 (weights ≤ 127 unsigned)."""
    if AVX2:
        pairs = _llvm_call(builder, "llvm.x86.avx2.pmadd.ub.sw", ir.VectorType(_I16, 16), [u, s])
        ones = _const_vec(_I16, [1] * 16)
        return _llvm_call(builder, "llvm.x86.avx2.pmadd.wd", ir.VectorType(_I32, 8), [pairs, ones])
    v32 = ir.VectorType(_I32, 32)
    return _add_quads(builder, builder.mul(builder.zext(u, v32), builder.sext(s, v32)))


def _add_quads(builder, p):
    """<32 x i32> products → <8 x i32>, lane i the sum of products 4i..4i+3."""
    quads = [_shuffle(builder, p, p, list(range(k, 32, 4))) for k in range(4)]
    return builder.add(builder.add(quads[0], quads[1]), builder.add(quads[2], quads[3]))


@intrinsic
def vdot(typingctx, q, x, xo):
    """Unsigned weights ``q`` (0..127) · int8 ``x[xo:xo+32]`` → sums of 4 products."""

    def codegen(context, builder, signature, args):
        xv = _load(context, builder, signature.args[1], args[1], args[2], ir.VectorType(_I8, 32))
        return _quad_sums(builder, args[0], xv)

    return i32x8(q, x, types.intp), codegen


def _sign_moved(builder, wv, xv):
    """AVX2: (|w|, x carrying the sign of w), so the unsigned × signed ``vpmaddubsw`` gives the
    signed products w · x, as ggml does (weights in −127..127)."""
    v8 = ir.VectorType(_I8, 32)
    absw = _llvm_call(builder, "llvm.abs.v32i8", v8, [wv, ir.Constant(ir.IntType(1), 0)])
    return absw, _llvm_call(builder, "llvm.x86.avx2.psign.b", v8, [xv, wv])


def _signed_quad_sums(builder, wv, xv):
    """Signed bytes ``wv`` · signed bytes ``xv`` (<32 x i8>, weights in −127..127) → <8 x i32>
    sums of 4 products."""
    if AVX2:
        return _quad_sums(builder, *_sign_moved(builder, wv, xv))
    v32 = ir.VectorType(_I32, 32)
    return _add_quads(builder, builder.mul(builder.sext(wv, v32), builder.sext(xv, v32)))


@intrinsic
def vdot_s8(typingctx, row, o, x, xo):
    """Signed weight bytes ``row[o:o+32]`` · int8 ``x[xo:xo+32]`` → sums of 4 products."""

    def codegen(context, builder, signature, args):
        v8 = ir.VectorType(_I8, 32)
        wv = _load(context, builder, signature.args[0], args[0], args[1], v8)
        xv = _load(context, builder, signature.args[2], args[2], args[3], v8)
        return _signed_quad_sums(builder, wv, xv)

    return i32x8(row, types.intp, x, types.intp), codegen


@intrinsic
def vdot_sv(typingctx, q, x, xo):
    """Signed weights ``q`` (int8 values −127..127 in a ``u8x32``, e.g. ``iq4_values``) · int8
    ``x[xo:xo+32]`` → sums of 4 products."""

    def codegen(context, builder, signature, args):
        xv = _load(context, builder, signature.args[1], args[1], args[2], ir.VectorType(_I8, 32))
        return _signed_quad_sums(builder, args[0], xv)

    return i32x8(q, x, types.intp), codegen


@intrinsic
def iq4_values(typingctx, row, o):
    """16 bytes at ``o`` → the 32 signed values their nibbles index in ``IQ4_VALUES`` (as int8
    in a ``u8x32``): low nibbles (lanes 0..15), then high nibbles (16..31).  AVX2: one
    ``vpshufb`` with the table in both 128-bit lanes; elsewhere lane by lane."""

    def codegen(context, builder, signature, args):
        idx = _nibbles(context, builder, signature.args[0], args[0], args[1])
        v8 = ir.VectorType(_I8, 32)
        if AVX2:
            table = _const_vec(_I8, IQ4_VALUES * 2)
            return _llvm_call(builder, "llvm.x86.avx2.pshuf.b", v8, [table, idx])
        table = _const_vec(_I8, IQ4_VALUES)
        out = ir.Constant(v8, ir.Undefined)
        for i in range(32):
            lane = ir.Constant(_I32, i)
            value = builder.extract_element(table, builder.extract_element(idx, lane))
            out = builder.insert_element(out, value, lane)
        return out

    return u8x32(row, types.intp), codegen


@intrinsic
def vscale2(typingctx, v, s0, s1):
    """Multiply the sums of values 0..15 by ``s0`` and of values 16..31 by ``s1``."""

    def codegen(context, builder, signature, args):
        a = _splat(builder, builder.trunc(args[1], _I32), 4)
        b = _splat(builder, builder.trunc(args[2], _I32), 4)
        return builder.mul(args[0], _shuffle(builder, a, b, list(range(8))))

    return i32x8(v, types.intp, types.intp), codegen


@intrinsic
def vfma(typingctx, acc, v, scale):
    """acc + float(v) * scale."""

    def codegen(context, builder, signature, args):
        a, s, sc = args
        f = builder.sitofp(s, _LLVM_TYPES["f32x8"])
        vt = _LLVM_TYPES["f32x8"]
        return _llvm_call(builder, "llvm.fmuladd.v8f32", vt, [f, _splat(builder, sc, 8), a])

    return f32x8(acc, v, types.float32), codegen


@intrinsic
def vmla_f32(typingctx, acc, a, ao, b, bo):
    """acc + a[ao:ao+8] * b[bo:bo+8] for contiguous float32 rows (``b`` may be f16 bits, the f16
    KV cache): a vector multiply, then add (lane by lane, exact IEEE: the same bits however the
    caller is optimised or inlined)."""

    def codegen(context, builder, signature, args):
        c, x, xo, y, yo = args
        va = _load_f32x8(context, builder, signature.args[1], x, xo)
        vb = _load_f32x8(context, builder, signature.args[3], y, yo)
        return builder.fadd(c, builder.fmul(va, vb))

    return f32x8(acc, a, types.intp, b, types.intp), codegen


@intrinsic
def vaxpy_f32(typingctx, y, yo, a, x, xo):
    """y[yo:yo+8] += a * x[xo:xo+8] for contiguous float32 rows (``x`` may be f16 bits, the f16
    KV cache; exact IEEE, lane by lane)."""

    def codegen(context, builder, signature, args):
        yy, yoff, aa, xx, xoff = args
        vy = _load(context, builder, signature.args[0], yy, yoff, _LLVM_TYPES["f32x8"])
        vx = _load_f32x8(context, builder, signature.args[3], xx, xoff)
        out = builder.fadd(vy, builder.fmul(_splat(builder, aa, 8), vx))
        _store_f32(context, builder, signature.args[0], yy, yoff, out)
        return context.get_dummy_value()

    return types.none(y, types.intp, types.float32, x, types.intp), codegen


def _store_f32(context, builder, arrty, arr, k, vec):
    data = context.make_array(arrty)(context, builder, arr).data
    ptr = builder.gep(data, [k])
    builder.store(vec, builder.bitcast(ptr, vec.type.as_pointer()), align=4)


def _store_scaled_s8(context, builder, arrty, arr, k, qv, d):
    """arr[k:k+32] = float(int8 lanes of ``qv``) * d (one multiply: exact decodes)."""
    f = builder.sitofp(qv, ir.VectorType(_F32, 32))
    _store_f32(context, builder, arrty, arr, k, builder.fmul(f, _splat(builder, d, 32)))


@intrinsic
def vstore(typingctx, out, k, q, off, d0, m0, d1, m1):
    """out[k:k+32] = d * float(q - off) + m, with (d0, m0) for values 0..15, (d1, m1) for 16..31.

    The float operations (one multiply, one add, no fusing) are ggml's, so values are exact."""

    def codegen(context, builder, signature, args):
        o, kk, qv, offv, a0, b0, a1, b1 = args
        v32 = ir.VectorType(_I32, 32)
        qi = builder.sub(builder.zext(qv, v32), _splat(builder, builder.trunc(offv, _I32), 32))
        f = builder.sitofp(qi, ir.VectorType(_F32, 32))
        d = _shuffle(builder, _splat(builder, a0, 16), _splat(builder, a1, 16), list(range(32)))
        m = _shuffle(builder, _splat(builder, b0, 16), _splat(builder, b1, 16), list(range(32)))
        _store_f32(context, builder, signature.args[0], o, kk, builder.fadd(builder.fmul(d, f), m))
        return context.get_dummy_value()

    f32 = types.float32
    sig = types.void(out, types.intp, q, types.intp, f32, f32, f32, f32)
    return sig, codegen


@intrinsic
def vstore_sv(typingctx, out, k, q, d):
    """out[k:k+32] = float(int8 lanes of ``q``) * d (IQ4_NL / IQ4_XS values, exact)."""

    def codegen(context, builder, signature, args):
        dst, kk, qv, dd = args
        _store_scaled_s8(context, builder, signature.args[0], dst, kk, qv, dd)
        return context.get_dummy_value()

    return types.void(out, types.intp, q, types.float32), codegen


@intrinsic
def vstore_s8(typingctx, out, k, row, o, d):
    """out[k:k+32] = float(int8 row[o:o+32]) * d (Q8_0, exact)."""

    def codegen(context, builder, signature, args):
        dst, kk, src, oo, dd = args
        wv = _load(context, builder, signature.args[2], src, oo, ir.VectorType(_I8, 32))
        _store_scaled_s8(context, builder, signature.args[0], dst, kk, wv, dd)
        return context.get_dummy_value()

    return types.void(out, types.intp, row, types.intp, types.float32), codegen


# --- K-quant super-blocks: 16 scales decoded once, folded into the pairwise adds ----------


def _i16_shift_mask(builder, v8, lanes, shifts, masks):
    """<16 x i16> lane i = (v8[lanes[i]] >> shifts[i]) & masks[i] (bytes zero-extended)."""
    picked = _shuffle(builder, v8, v8, lanes)
    wide = builder.zext(picked, ir.VectorType(_I16, 16))
    return builder.and_(builder.lshr(wide, _const_vec(_I16, shifts)), _const_vec(_I16, masks))


@intrinsic
def scales16(typingctx, row, o, shift, mask, signed):
    """16 scale bytes at ``o`` → lane i = (byte i >> shift) & mask, or the int8 bytes when
    ``signed`` (Q6_K)."""

    def codegen(context, builder, signature, args):
        v = _load(context, builder, signature.args[0], args[0], args[1], ir.VectorType(_I8, 16))
        s16 = ir.VectorType(_I16, 16)
        sh = _splat(builder, builder.trunc(args[2], _I8), 16)
        mk = _splat(builder, builder.trunc(args[3], _I8), 16)
        unsigned = builder.zext(builder.and_(builder.lshr(v, sh), mk), s16)
        return builder.select(builder.trunc(args[4], ir.IntType(1)), builder.sext(v, s16), unsigned)

    return i16x16(row, types.intp, types.intp, types.intp, types.boolean), codegen


@intrinsic
def scales16_q3_k(typingctx, row, o):
    """Q3_K's 16 six-bit scales − 32; ``o`` = 2 bytes before its 12 scale bytes (the 16-byte
    load then ends at the block's last byte).  Scale i: low 4 bits from byte i % 8 (nibble
    i // 8), high 2 bits from byte 8 + i % 4 (crumb i // 4)."""

    def codegen(context, builder, signature, args):
        v = _load(context, builder, signature.args[0], args[0], args[1], ir.VectorType(_I8, 16))
        low = _i16_shift_mask(
            builder, v, [2 + i % 8 for i in range(16)], [4 * (i // 8) for i in range(16)], [15] * 16
        )
        high = _i16_shift_mask(
            builder, v, [10 + i % 4 for i in range(16)], [2 * (i // 4) for i in range(16)], [3] * 16
        )
        both = builder.or_(low, builder.shl(high, _const_vec(_I16, [4] * 16)))
        return builder.sub(both, _const_vec(_I16, [32] * 16))

    return i16x16(row, types.intp), codegen


@intrinsic
def scales16_k(typingctx, row, o):
    """Q4_K/Q5_K's 12 scale bytes at ``o`` → lanes 0..7 the 6-bit scales, 8..15 the 6-bit
    minima (sub-block j < 4: low 6 bits of bytes j, j + 4; j ≥ 4: a nibble of byte j + 4 and
    the top 2 bits of byte j − 4, j)."""

    def codegen(context, builder, signature, args):
        v = _load(context, builder, signature.args[0], args[0], args[1], ir.VectorType(_I8, 16))
        idx = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11]
        low = _i16_shift_mask(builder, v, idx, [0] * 12 + [4] * 4, ([63] * 4 + [15] * 4) * 2)
        top = _i16_shift_mask(
            builder, v, [0, 1, 2, 3] * 2 + [4, 5, 6, 7] * 2, [6] * 16, ([0] * 4 + [3] * 4) * 2
        )
        return builder.or_(low, builder.shl(top, _const_vec(_I16, [4] * 16)))

    return i16x16(row, types.intp), codegen


@intrinsic
def vdot_sc(typingctx, q, x, xo, sc, a, b):
    """Unsigned weights ``q`` · int8 ``x[xo:xo+32]`` with values 0..15 times scale ``sc[a]``
    and 16..31 times ``sc[b]`` → sums of 4 products (AVX2: the scales are pmaddwd's
    multiplier instead of ones; ``a``, ``b`` constant once the group loop is unrolled)."""

    def codegen(context, builder, signature, args):
        qv, xarr, xoff, scv, ia, ib = args
        xv = _load(context, builder, signature.args[1], xarr, xoff, ir.VectorType(_I8, 32))
        s0 = builder.extract_element(scv, builder.trunc(ia, _I32))
        s1 = builder.extract_element(scv, builder.trunc(ib, _I32))
        if AVX2:
            pairs = _llvm_call(
                builder, "llvm.x86.avx2.pmadd.ub.sw", ir.VectorType(_I16, 16), [qv, xv]
            )
            scales = _shuffle(builder, _splat(builder, s0, 8), _splat(builder, s1, 8), range(16))
            return _llvm_call(
                builder, "llvm.x86.avx2.pmadd.wd", ir.VectorType(_I32, 8), [pairs, scales]
            )
        sums = _quad_sums(builder, qv, xv)
        a4 = _splat(builder, builder.sext(s0, _I32), 4)
        b4 = _splat(builder, builder.sext(s1, _I32), 4)
        return builder.mul(sums, _shuffle(builder, a4, b4, range(8)))

    t = types.intp
    return i32x8(q, x, t, sc, t, t), codegen


@intrinsic
def scales16_iq4_xs(typingctx, row, o):
    """The eight 6-bit group scales of the IQ4_XS block at ``o``, minus 32, in lanes 0..7 (and
    again in 8..15): the low 4 bits from ``scales_l`` (bytes 4..7, nibble g % 2 of byte
    g // 2), the top 2 from the u16 ``scales_h`` (bytes 2..3, bits 2g and 2g + 1)."""

    def codegen(context, builder, signature, args):
        v = _load(context, builder, signature.args[0], args[0], args[1], ir.VectorType(_I8, 16))
        g = [i % 8 for i in range(16)]
        low = _i16_shift_mask(
            builder, v, [4 + j // 2 for j in g], [4 * (j % 2) for j in g], [15] * 16
        )
        top = _i16_shift_mask(
            builder, v, [2 + j // 4 for j in g], [2 * (j % 4) for j in g], [3] * 16
        )
        both = builder.or_(low, builder.shl(top, _const_vec(_I16, [4] * 16)))
        return builder.sub(both, _const_vec(_I16, [32] * 16))

    return i16x16(row, types.intp), codegen


@intrinsic
def vdot_sv_sc(typingctx, q, x, xo, sc, a):
    """Signed weights ``q`` (as ``vdot_sv``) · int8 ``x[xo:xo+32]``, every product times the
    scale ``sc[a]`` → sums of 4 products (AVX2: |q| times x with q's sign, the scale as
    pmaddwd's multiplier; ``a`` constant once the group loop is unrolled)."""

    def codegen(context, builder, signature, args):
        qv, xarr, xoff, scv, ia = args
        v8 = ir.VectorType(_I8, 32)
        xv = _load(context, builder, signature.args[1], xarr, xoff, v8)
        s = builder.extract_element(scv, builder.trunc(ia, _I32))
        if AVX2:
            absw, signed_x = _sign_moved(builder, qv, xv)
            pairs = _llvm_call(
                builder, "llvm.x86.avx2.pmadd.ub.sw", ir.VectorType(_I16, 16), [absw, signed_x]
            )
            return _llvm_call(
                builder,
                "llvm.x86.avx2.pmadd.wd",
                ir.VectorType(_I32, 8),
                [pairs, _splat(builder, s, 16)],
            )
        sums = _signed_quad_sums(builder, qv, xv)
        return builder.mul(sums, _splat(builder, builder.sext(s, _I32), 8))

    t = types.intp
    return i32x8(q, x, t, sc, t), codegen


@intrinsic
def vmins(typingctx, sc, xs, xo, paired):
    """Σ float(scale) · ``xs`` over one super-block, as 8 partial sums: the 16 lanes of ``sc``
    against ``xs[xo:xo+16]``, or with ``paired`` the minima (lanes 8..15) each against two
    16-value sums (Q4_K/Q5_K: one minimum per 32 values)."""

    def codegen(context, builder, signature, args):
        scv, xarr, xoff, pr = args
        v16 = ir.VectorType(_F32, 16)
        dup = _shuffle(builder, scv, scv, [8 + i // 2 for i in range(16)])
        lanes = builder.select(builder.trunc(pr, ir.IntType(1)), dup, scv)
        xv = _load(context, builder, signature.args[1], xarr, xoff, v16)
        p = builder.fmul(builder.sitofp(lanes, v16), xv)
        return builder.fadd(
            _shuffle(builder, p, p, range(8)), _shuffle(builder, p, p, range(8, 16))
        )

    return f32x8(sc, xs, types.intp, types.boolean), codegen


@intrinsic
def vaxpy(typingctx, acc, v, scale):
    """acc + v * scale (float vectors)."""

    def codegen(context, builder, signature, args):
        a, x, sc = args
        vt = _LLVM_TYPES["f32x8"]
        return _llvm_call(builder, "llvm.fmuladd.v8f32", vt, [x, _splat(builder, sc, 8), a])

    return f32x8(acc, v, types.float32), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b (float vectors)."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return f32x8(a, b), codegen
