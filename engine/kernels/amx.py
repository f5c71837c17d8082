"""Prompt batches on Intel AMX: ``y = x @ W.T`` in bfloat16 tiles with float32 sums.

Where the CPU has AMX (Sapphire Rapids and later: ``amx_tile`` and ``amx_bf16``) and the Linux
kernel grants a process the tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``), one
instruction, ``tdpbf16ps``, multiplies a 16 × 32 bfloat16 tile by a 32 × 16 one into a 16 × 16
float32 tile: 8,192 multiply-adds, against 16 for an AVX-512 float32 FMA.  llama.cpp uses the
same unit for its prompt batches (its ``ggml-cpu/amx``, on 8-bit activations).

The kernel (``make_matmul_amx``, one per weight type like the other kernels) takes bands of 32
weight rows; each band is decoded exactly to float32 (``kernels.decode.decode_row``), rounded to
bfloat16 and laid out as two 16-column panels in the tile unit's pair layout (row ``k/2`` of a
panel holds the pairs ``W[n, k], W[n, k+1]`` of its 16 rows ``n``).  Then, for every 32 tokens,
four accumulator tiles (32 tokens × 32 rows) take 32 input columns per step: two tiles of
activations, two of weights, four ``tdpbf16ps``.  The sums are float32 in a fixed order, so a
result does not depend on the thread that computed it.

Rounding both operands to bfloat16 (8 significant bits, relative error ≤ 2^-9 each) gives a
relative error of about 0.2 % per product (measured on Qwen2.5-1.5B's Q4_K/Q6_K matrices:
0.23 % RMS against float64); llama.cpp's 8-bit activations (one scale per 256 values) give
more.  ``engine.kernels`` takes this path for prompt batches when ``available()``;
``ENGINE_AMX=0`` in the environment turns it off (then numpy's BLAS does the prompts, in exact
float32 products of the decoded weights).

numba has no AMX intrinsics; the instructions are written as LLVM inline assembly (which needs
LLVM's assembly parser, initialised here).  The tile registers live between the inline blocks of
one kernel call: nothing else in the process uses them, and the kernel loads its tile
configuration at the start of each band and releases the tiles at its end.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from functools import cache
from typing import Any

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from engine.kernels.decode import decode_row

llvm_binding.initialize_native_asmparser()  # inline assembly needs the target's parser

TILE = 32  # tokens and weight rows per accumulator block (2 × 2 tiles of 16 × 16)
_I64, _VOID = ir.IntType(64), ir.VoidType()
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


@cache
def _cpu_has_amx() -> bool:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("amx-tile")) and bool(features.get("amx-bf16"))


@cache
def _granted(pid: int) -> bool:
    """Ask the kernel for the tile state, once per process (a forked child asks again)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def _tiles_usable() -> bool:
    """The CPU has the tiles and the kernel granted this process their state."""
    return _cpu_has_amx() and _granted(os.getpid())


def available() -> bool:
    """True when prompt products may run on AMX here (CPU, kernel and ``ENGINE_AMX``)."""
    return os.environ.get("ENGINE_AMX", "1") != "0" and _tiles_usable()


# -- the instructions, as inline assembly ----------------------------------------------------


def _asm(builder: Any, text: str, args: list) -> None:
    fty = ir.FunctionType(_VOID, [a.type for a in args])
    constraints = ",".join(["r"] * len(args) + ["~{memory}"])
    builder.call(ir.InlineAsm(fty, text, constraints, side_effect=True), args)


def _address(context: Any, builder: Any, arrty: Any, arr: Any, offset: Any) -> Any:
    """The address of element ``offset`` of a C-contiguous array."""
    data = context.make_array(arrty)(context, builder, arr).data
    size = context.get_abi_sizeof(context.get_data_type(arrty.dtype))
    return builder.add(builder.ptrtoint(data, _I64), builder.mul(offset, ir.Constant(_I64, size)))


@intrinsic
def tiles_begin(typingctx, config):
    """Load the tile configuration (64 bytes, ``TILE_CONFIG``) and zero nothing yet."""

    def codegen(context, builder, signature, args):
        address = _address(context, builder, signature.args[0], args[0], ir.Constant(_I64, 0))
        _asm(builder, "ldtilecfg ($0)", [address])
        return context.get_dummy_value()

    return types.void(config), codegen


@intrinsic
def tiles_end(typingctx):
    """Release the tiles (the thread's tile state goes back to its initial, cheap state)."""

    def codegen(context, builder, signature, args):
        _asm(builder, "tilerelease", [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def tiles_zero(typingctx):
    """Accumulators tmm0..tmm3 = 0."""

    def codegen(context, builder, signature, args):
        _asm(builder, "tilezero %tmm0\n\ttilezero %tmm1\n\ttilezero %tmm2\n\ttilezero %tmm3", [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def tiles_step(typingctx, a, ao, a_stride, b, bo0, bo1):
    """tmm0..3 += A · B over 32 input columns.

    A: activations, uint16 (bfloat16) rows of ``a_stride`` elements: tokens ao.. (tmm4) and the
    16 after them (tmm5), 32 columns each.  B: two weight panels of 16 rows × 64 bytes at
    ``b[bo0]`` (tmm6) and ``b[bo1]`` (tmm7).  tmm0 = A0·B0, tmm1 = A0·B1, tmm2 = A1·B0,
    tmm3 = A1·B1.
    """

    def codegen(context, builder, signature, args):
        a0 = _address(context, builder, signature.args[0], args[0], args[1])
        row_bytes = builder.mul(args[2], ir.Constant(_I64, 2))
        a1 = builder.add(a0, builder.mul(row_bytes, ir.Constant(_I64, 16)))
        b0 = _address(context, builder, signature.args[3], args[3], args[4])
        b1 = _address(context, builder, signature.args[3], args[3], args[5])
        text = (
            "tileloadd ($0,$1,1), %tmm4\n\ttileloadd ($2,$1,1), %tmm5\n\t"
            "tileloadd ($3,$5,1), %tmm6\n\ttileloadd ($4,$5,1), %tmm7\n\t"
            "tdpbf16ps %tmm6, %tmm4, %tmm0\n\ttdpbf16ps %tmm7, %tmm4, %tmm1\n\t"
            "tdpbf16ps %tmm6, %tmm5, %tmm2\n\ttdpbf16ps %tmm7, %tmm5, %tmm3"
        )
        _asm(builder, text, [a0, row_bytes, a1, b0, b1, ir.Constant(_I64, 64)])
        return context.get_dummy_value()

    return types.void(a, ao, a_stride, b, bo0, bo1), codegen


@intrinsic
def tiles_store(typingctx, c):
    """c ((32, 32) float32, C-contiguous) = [[tmm0, tmm1], [tmm2, tmm3]]."""

    def codegen(context, builder, signature, args):
        base = _address(context, builder, signature.args[0], args[0], ir.Constant(_I64, 0))
        corners = [builder.add(base, ir.Constant(_I64, off)) for off in (0, 64, 2048, 2112)]
        text = (
            "tilestored %tmm0, ($0,$4,1)\n\ttilestored %tmm1, ($1,$4,1)\n\t"
            "tilestored %tmm2, ($2,$4,1)\n\ttilestored %tmm3, ($3,$4,1)"
        )
        _asm(builder, text, [*corners, ir.Constant(_I64, 128)])
        return context.get_dummy_value()

    return types.void(c), codegen


def _tile_config() -> np.ndarray:
    """Palette 1; all eight tiles 16 rows of 64 bytes."""
    config = np.zeros(64, np.uint8)
    config[0] = 1
    for t in range(8):
        config[16 + 2 * t] = 64  # bytes per row (little-endian uint16)
        config[48 + t] = 16  # rows
    return config


TILE_CONFIG = _tile_config()


# -- the kernels -------------------------------------------------------------------------------


@njit(inline="always")
def _bf16(bits):  # pragma: no cover - compiled
    """float32 bits → bfloat16 bits, rounded to nearest even (finite values)."""
    u = np.uint32(bits)
    return np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> 16)


@njit(parallel=True, cache=True)
def to_bf16(x, xb):  # pragma: no cover - compiled
    """xb[:n] = bfloat16(x) for x (n, n_in) float32; rows of xb past n stay as they are (0)."""
    bits = x.view(np.uint32)
    for t in prange(x.shape[0]):
        for k in range(x.shape[1]):
            xb[t, k] = _bf16(bits[t, k])


def make_matmul_amx(code: int) -> Any:
    """The AMX product kernel of weight type ``code`` (a closure, as in ``kernels``)."""

    @njit(parallel=True, cache=True)
    def matmul_amx(w, xb, y, config):  # pragma: no cover - compiled
        """y = x @ W.T: w (n_out, row_bytes) quantized rows; xb (n_pad, n_in) uint16 bfloat16
        activations, n_pad a multiple of 32 with zero rows past y's; y (n_tok, n_out)."""
        n_out, n_pad, n_in = w.shape[0], xb.shape[0], xb.shape[1]
        n_tok, half = y.shape[0], n_in // 2
        xflat = xb.reshape(-1)
        for band in prange((n_out + TILE - 1) // TILE):
            r0 = band * TILE
            n_rows = min(TILE, n_out - r0)
            rows = np.zeros((TILE, n_in), np.float32)  # (32, n_in) decoded weight rows
            for i in range(n_rows):
                decode_row(code, w[r0 + i], rows[i])
            bits = rows.view(np.uint32)
            panels = np.empty(TILE * n_in, np.uint16)  # [panel][k // 2][2 * row + k % 2]
            for i in range(TILE):
                base = (i // 16) * half * 32 + 2 * (i % 16)
                for k in range(n_in):
                    panels[base + (k // 2) * 32 + (k & 1)] = _bf16(bits[i, k])
            c = np.empty((TILE, TILE), np.float32)  # (32 tokens, 32 rows)
            tiles_begin(config)
            for t0 in range(0, n_pad, TILE):
                tiles_zero()
                for k in range(0, n_in, 32):
                    p = (k // 2) * 32
                    tiles_step(xflat, t0 * n_in + k, n_in, panels, p, half * 32 + p)
                tiles_store(c)
                for t in range(min(TILE, n_tok - t0)):
                    for i in range(n_rows):
                        y[t0 + t, r0 + i] = c[t, i]
            tiles_end()

    return matmul_amx


def matmul(kernel: Any, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """y = x @ W.T through ``kernel`` (``make_matmul_amx``): x (n_tok, n_in) float32."""
    if not _tiles_usable():  # the instructions would fault (SIGILL)
        raise RuntimeError("AMX tiles are not available in this process")
    n_tok, n_in = x.shape
    assert n_in % 32 == 0, n_in  # every weight type's rows are whole blocks of 32
    xb = np.zeros((-(-n_tok // TILE) * TILE, n_in), np.uint16)  # (n_pad, n_in) bfloat16
    to_bf16(x, xb)
    kernel(w, xb, y, TILE_CONFIG)
