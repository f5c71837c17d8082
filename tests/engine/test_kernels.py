"""numba kernels on quantized weights: row gather and ``x @ W.T`` for every tensor type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from engine import kernels, quants
from engine.bench.kernels import Q8_K_ACTIVATION_TYPES
from engine.constants import ENGINE_WEIGHT_TYPES, GGML_BLOCK_LAYOUT, GGMLType
from engine.kernels import amx as kernels_amx
from engine.kernels import blas as kernels_blas
from tests.engine.test_quants import random_blocks

ALL_TYPES = list(quants.QUANT_TYPES)
ROOT = Path(__file__).resolve().parents[2]
FLOAT_TYPES = {GGMLType.F32, GGMLType.F16, GGMLType.BF16}


def random_matrix(ggml_type: GGMLType, n_out: int, n_blocks: int, seed: int) -> kernels.QuantMatrix:
    """A matrix of random valid blocks (finite f16 scales), ``n_blocks`` blocks per row."""
    rng = np.random.default_rng(seed)
    layout = GGML_BLOCK_LAYOUT[ggml_type]
    blocks = random_blocks(ggml_type, n_out * n_blocks, rng)
    data = blocks.reshape(n_out, n_blocks * layout.type_size)
    return kernels.QuantMatrix(data, ggml_type, n_blocks * layout.block_size)


def blocks_per_row(ggml_type: GGMLType) -> int:
    """Odd row lengths: 3 K-quant super-blocks (768), 7 legacy blocks (224), 45 floats."""
    return {256: 3, 32: 7, 1: 45}[GGML_BLOCK_LAYOUT[ggml_type].block_size]


def activation_error_bound(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Worst-case |error| of x @ w.T when x is rounded to 8-bit blocks of 32 (round to nearest).

    Each element of a block moves by at most half its step max|x_block|/127, so output (t, r)
    moves by at most sum_b step_tb / 2 * sum_{k in b} |w_rk|.  Plus float32 accumulation slack.
    """
    n_tok, n_in = x.shape
    n_blk = -(-n_in // 32)
    pad = n_blk * 32 - n_in
    xp = np.pad(np.abs(x), ((0, 0), (0, pad))).reshape(n_tok, n_blk, 32)
    wp = np.pad(np.abs(w), ((0, 0), (0, pad))).reshape(w.shape[0], n_blk, 32)
    half_step = xp.max(axis=2) / 127 / 2  # (n_tok, n_blk)
    bound = half_step @ wp.sum(axis=2).T  # (n_tok, n_out)
    slack = 1e-5 * (np.abs(x) @ np.abs(w).T) + 1e-6
    return bound * 1.001 + slack


def test_every_weight_type_has_a_reference_a_decoder_and_a_dot_product() -> None:
    """The engine's one list of weight types (``ENGINE_WEIGHT_TYPES``) is what the reference
    classes, the numba decoders and the integer dot products cover."""
    from engine.kernels.decode import DECODE_BLOCK, FLOAT_CODES

    assert set(quants.QUANT_TYPES) == set(ENGINE_WEIGHT_TYPES)
    assert {int(t) for t in ENGINE_WEIGHT_TYPES} == set(DECODE_BLOCK) | set(FLOAT_CODES)
    assert {int(t) for t in kernels.INT_DOT_TYPES} == set(kernels.DOT_INT)


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.name)
def test_rows_equal_dequantize(ggml_type: GGMLType) -> None:
    m = random_matrix(ggml_type, 29, blocks_per_row(ggml_type), seed=int(ggml_type))
    ids = np.array([28, 0, 5, 5, 17])
    got = m.rows(ids)
    assert got.dtype == np.float32 and got.shape == (5, m.n_in)
    np.testing.assert_array_equal(got, quants.dequantize(m.data[ids], ggml_type))
    assert m.rows([]).shape == (0, m.n_in)


@pytest.mark.parametrize("n_tok", [1, 2, 20, kernels.BLAS_PATH_MIN_TOKENS + 3])
@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.name)
def test_matmul_matches_float64_reference(ggml_type: GGMLType, n_tok: int) -> None:
    m = random_matrix(ggml_type, 37, blocks_per_row(ggml_type), seed=100 + int(ggml_type))
    rng = np.random.default_rng(n_tok)
    x = rng.standard_normal((n_tok, m.n_in)).astype(np.float32)
    x[:, :5] *= 20  # a few outlier channels, as in real activations
    w = quants.dequantize(m.data, ggml_type).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    got = m.matmul(x)
    assert got.dtype == np.float32 and got.shape == (n_tok, m.n_out)
    err = np.abs(got - ref)
    bound = activation_error_bound(w, x.astype(np.float64))
    assert (err <= bound).all(), f"max excess {(err - bound).max()}"
    # out= is filled in place and returned.
    out = np.full((n_tok, m.n_out), np.nan, np.float32)
    assert m.matmul(x, out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("ggml_type", [GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.F16], ids=str)
def test_blas_path_bands_are_exact_float32(ggml_type: GGMLType, monkeypatch) -> None:
    """Prompt batches: bands of decoded rows through sgemm, several bands and a partial last one,
    written into a strided out=; float32 rounding of the exact product, nothing more."""
    m = random_matrix(ggml_type, 37, blocks_per_row(ggml_type), seed=7)
    monkeypatch.setenv("ENGINE_AMX", "0")  # the BLAS path, not the AMX one (bfloat16)
    monkeypatch.setattr(kernels_blas, "BLAS_BAND_BYTES", 8 * 4 * m.n_in)  # 8 rows a band: 5 bands
    monkeypatch.setattr(kernels_blas, "BLAS_BAND_MIN_ROWS", 1)
    n_tok = kernels.BLAS_PATH_MIN_TOKENS
    x = np.random.default_rng(3).standard_normal((n_tok, m.n_in)).astype(np.float32)
    w = quants.dequantize(m.data, ggml_type).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    wide = np.full((n_tok, m.n_out + 3), np.nan, np.float32)
    got = m.matmul(x, out=wide[:, 1 : 1 + m.n_out])
    bound = 4 * m.n_in * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(w).T)
    assert (np.abs(got - ref) <= bound).all()
    assert np.isnan(wide[:, 0]).all() and np.isnan(wide[:, -2:]).all()


def test_matmul_zero_tokens_and_bad_shapes() -> None:
    m = random_matrix(GGMLType.Q4_0, 4, 2, seed=1)
    assert m.matmul(np.zeros((0, 64), np.float32)).shape == (0, 4)
    with pytest.raises(ValueError):
        m.matmul(np.zeros((1, 63), np.float32))
    with pytest.raises(ValueError):
        m.matmul(np.zeros((1, 64), np.float32), out=np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError):
        kernels.QuantMatrix(m.data, GGMLType.Q4_0, 96)
    with pytest.raises(ValueError):
        kernels.QuantMatrix(m.data, GGMLType.IQ2_XXS, 64)
    with pytest.raises(IndexError):
        m.rows([4])


@pytest.mark.parametrize("ggml_type", sorted(kernels.INT_DOT_TYPES), ids=lambda t: t.name)
def test_int_path_equals_its_own_scheme(ggml_type: GGMLType) -> None:
    """With 8-bit activations the products are exact integer sums: the kernel equals
    dequantize(W) @ (the same 8-bit activations), up to float32 accumulation."""
    m = random_matrix(ggml_type, 23, blocks_per_row(ggml_type), seed=7 + int(ggml_type))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, m.n_in)).astype(np.float32)
    xq = np.empty((2, m.n_in), np.int8)
    xd = np.empty((2, m.n_in // 32), np.float32)
    xs = np.empty((2, m.n_in // 16), np.float32)
    kernels.quantize_activations(x, xq, xd, xs)
    x8 = (xq.reshape(2, -1, 32) * xd[..., None].astype(np.float64)).reshape(2, -1)
    assert np.abs(x8 - x).max() <= np.abs(x).max() / 254 * 1.0001
    np.testing.assert_allclose(
        xs, (xq.reshape(2, -1, 16).sum(-1) * np.repeat(xd, 2, axis=1)), rtol=1e-6
    )
    w = quants.dequantize(m.data, ggml_type).astype(np.float64)
    got = np.empty((2, m.n_out), np.float32)
    kernels.matmul_int(m.code, m.data, xq, xd, xs, got)
    slack = 2e-6 * (np.abs(x8) @ np.abs(w).T) + 1e-6
    assert (np.abs(got - x8 @ w.T) <= slack).all()


def test_read_only_weights_and_one_specialisation() -> None:
    """Writable and read-only weights (a memory map) run the same compiled kernel."""
    m = random_matrix(GGMLType.Q4_1, 5, 2, seed=3)
    writable = m.data.copy()
    m2 = kernels.QuantMatrix(writable, GGMLType.Q4_1, 64)
    assert not m2.data.flags.writeable and writable.flags.writeable
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(m.matmul(x), m2.matmul(x))
    assert len(kernels.type_kernels(GGMLType.Q4_1).matmul_int.signatures) == 1


def test_a_type_compiles_only_its_own_kernels(tmp_path) -> None:
    """Q4_1 products (both paths) and a row gather, in a fresh process with an empty numba
    cache, compile Q4_1's kernels only: every decoder or dot product numba compiles is asked
    for the constant Q4_1 code (or type set), never another type's."""
    code = (
        "import json, numpy as np\n"
        "from numba.core import event\n"
        "from engine import kernels\n"
        "from engine.constants import GGMLType\n"
        "from tests.engine.test_kernels import random_matrix\n"
        "m = random_matrix(GGMLType.Q4_1, 9, 2, seed=1)\n"
        "with event.install_recorder('numba:compile') as rec:\n"
        "    for n_tok in (1, 8):\n"
        "        m.matmul(np.ones((n_tok, m.n_in), np.float32))\n"
        "    m.rows([0, 3])\n"
        "seen = [(e.data['dispatcher'].py_func.__qualname__, str(e.data['args']))\n"
        "        for _, e in rec.buffer if e.is_start]\n"
        "types = sorted(t.name for t in kernels.compiled_types())\n"
        "print(json.dumps([types, seen]))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=True)  # fmt: skip
    types, seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert types == ["Q4_1"], seen
    # the per-type choices, compiled on their own (products: dot_int_tokens, all tokens of a row)
    overloads = ("_decode_row.", "_dot_int_tokens.")
    per_type = [(name, args) for name, args in seen if name.startswith(overloads)]
    assert {name.split(".")[0] for name, _ in per_type} == {"_decode_row", "_dot_int_tokens"}, seen
    q4_1, q4_1_set = f"Literal[int]({int(GGMLType.Q4_1)})", f"Literal[int]({1 << GGMLType.Q4_1})"
    for name, args in per_type:
        assert args.startswith(f"({q4_1},") or args.startswith(f"({q4_1_set},"), (name, args)


GENERIC_TYPES = (GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS)


def _products(types=GENERIC_TYPES) -> list[list[float]]:
    """Generation-step products (8-bit activations) and row gathers of one random matrix per
    type, as plain lists (the same numbers in any process)."""
    x = np.random.default_rng(5).standard_normal((2, 768)).astype(np.float32)
    out = []
    for t in types:
        m = random_matrix(t, 6, 768 // GGML_BLOCK_LAYOUT[t].block_size, seed=int(t))
        out += [m.matmul(x).ravel().tolist(), m.rows([5, 0]).ravel().tolist()]
    return out


def test_kernels_compiled_for_a_named_cpu_use_portable_code(tmp_path) -> None:
    """With ``NUMBA_CPU_NAME=generic`` (machine code for any x86-64, e.g. a cache shared across
    machines) the kernels take the portable IR (no AVX2 intrinsics, no native half conversions,
    whose runtime helper numba does not link: LLVM aborted the process) and give the host
    path's numbers."""
    code = (
        "import json\n"
        "from engine.kernels import simd\n"
        "from tests.engine.test_kernels import _products\n"
        "print(json.dumps([simd.AVX2, _products()]))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_CPU_NAME": "generic"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    avx2, generic = json.loads(out.stdout.strip().splitlines()[-1])
    assert avx2 is False
    for got, want in zip(generic, _products(), strict=True):  # float sums in another order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


MIXED = kernels.type_mask([GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0])  # as in Q4_K_M files


@njit
def _dot_mixed(code, row, xq, xd, xs):  # pragma: no cover - compiled
    return kernels.dot_int_in(MIXED, code, row, xq, xd, xs)


def test_dot_over_a_set_of_types_equals_each_types_kernel() -> None:
    """The decode step's dot product over several types (a run-time code among a constant set)
    gives each type's kernel's numbers exactly."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 512)).astype(np.float32)
    xq = np.empty((1, 512), np.int8)
    xd, xs = np.empty((1, 16), np.float32), np.empty((1, 32), np.float32)
    kernels.quantize_activations(x, xq, xd, xs)
    for ggml_type in (GGMLType.Q6_K, GGMLType.Q8_0, GGMLType.Q4_K):
        m = random_matrix(ggml_type, 3, 512 // GGML_BLOCK_LAYOUT[ggml_type].block_size, seed=9)
        want = np.empty((1, 3), np.float32)
        kernels.matmul_int(m.code, m.data, xq, xd, xs, want)
        got = [_dot_mixed(m.code, m.data[r], xq[0], xd[0], xs[0]) for r in range(3)]
        np.testing.assert_array_equal(np.float32(got), want[0])


@pytest.mark.parametrize(
    ("n_head", "n_kv", "hd", "n", "pos0", "window"),
    [(8, 2, 16, 70, 0, 0), (8, 2, 16, 70, 30, 0), (4, 4, 32, 66, 5, 16), (6, 3, 24, 65, 0, 40),
     (4, 2, 16, 300, 20, 0), (4, 2, 16, 300, 20, 100), (2, 1, 8, 257, 0, 0)],
)  # fmt: skip
def test_attention_heads_equal_the_loop(n_head, n_kv, hd, n, pos0, window) -> None:
    """Prompt attention through BLAS (per head and block of positions: q k^T, causal softmax,
    p v) equals the kernel decode steps use, with grouped-query heads, earlier positions, a
    sliding window, and batches of several query blocks (``ATTENTION_QUERY_BLOCK``)."""
    from engine.kernels.blas import attention_heads
    from engine.ops import attention_parallel

    rng = np.random.default_rng(n + pos0)
    n_ctx = pos0 + n + 7  # unused cache rows past the batch must not count
    q = rng.standard_normal((n, n_head * hd)).astype(np.float32)
    k_cache = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
    v_cache = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
    scale = np.float32(hd**-0.5)
    want, got = np.empty_like(q), np.full_like(q, np.nan)
    attention_parallel(q, k_cache, v_cache, pos0, scale, window, want)
    attention_heads(q, k_cache, v_cache, pos0, scale, window, got)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_exp_neg_is_within_one_ulp() -> None:
    """The softmax's exponential (a polynomial LLVM can vectorize) is within 1 ulp of exp over
    [-87, 0] (2^20 arguments, against float64), 1 at 0, and keeps NaN."""
    from numba import njit

    from engine.kernels.blas import exp_neg

    @njit
    def exp_all(a):
        out = np.empty_like(a)
        for i in range(a.shape[0]):
            out[i] = exp_neg(a[i])
        return out

    a = -np.random.default_rng(0).random(1 << 20, dtype=np.float32) * np.float32(87.0)
    want = np.exp(a.astype(np.float64))
    ulps = np.abs(exp_all(a) - want) / np.spacing(want.astype(np.float32))
    assert ulps.max() < 1.0, ulps.max()
    edge = exp_all(np.array([0.0, np.nan, -200.0], np.float32))
    assert edge[0] == 1.0 and np.isnan(edge[1]) and 0.0 < edge[2] < 1e-37


def test_blas_pool_works_in_a_forked_child() -> None:
    """The prompt path's thread pool is made again in a forked child (its threads are gone)."""
    script = (
        "import os, numpy as np\n"
        "from engine.kernels.blas import attention_heads\n"
        "q = np.ones((70, 32), np.float32); kc = np.ones((2, 80, 16), np.float32)\n"
        "out = np.empty_like(q)\n"
        "attention_heads(q, kc, kc, 0, np.float32(0.25), 0, out)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    attention_heads(q, kc, kc, 0, np.float32(0.25), 0, out)\n"
        "    os._exit(0 if out[0, 0] == 1.0 else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert done.returncode == 0


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 (round to nearest even), back as float64: the AMX path's operands."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


needs_amx = pytest.mark.skipif(
    not kernels_amx.available(), reason="this CPU or kernel offers no AMX tiles (or ENGINE_AMX=0)"
)


@needs_amx
@pytest.mark.parametrize("ggml_type", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0], ids=str)
def test_amx_path_is_the_bfloat16_product(ggml_type: GGMLType) -> None:
    """Prompt batches on AMX: the product of the bfloat16-rounded operands with float32 sums,
    for a partial band of rows (37) and a partial tile of tokens (67), into a strided out=."""
    m = random_matrix(ggml_type, 37, blocks_per_row(ggml_type), seed=11)
    n_tok = kernels.BLAS_PATH_MIN_TOKENS + 3
    x = np.random.default_rng(5).standard_normal((n_tok, m.n_in)).astype(np.float32)
    w = quants.dequantize(m.data, ggml_type)
    ref = _bf16(x) @ _bf16(w).T  # (n_tok, n_out), float64
    wide = np.full((n_tok, m.n_out + 3), np.nan, np.float32)
    got = m.matmul(x, out=wide[:, 1 : 1 + m.n_out])
    sums = np.abs(_bf16(x)) @ np.abs(_bf16(w)).T
    assert (np.abs(got - ref) <= 4 * m.n_in * np.finfo(np.float32).eps * sums + 1e-30).all()
    assert np.isnan(wide[:, 0]).all() and np.isnan(wide[:, -2:]).all()
    # and the exact product is within bfloat16's rounding of both operands (2^-8 + 2^-18)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    assert (np.abs(got - exact) <= (2.0**-8 + 2.0**-14) * np.abs(x) @ np.abs(w).T).all()


@needs_amx
def test_amx_path_is_used_for_quantized_types_only(monkeypatch) -> None:
    """A quantized prompt product takes the tiles, a float one BLAS; ENGINE_AMX=0 turns the
    tiles off (the result is then exact float32 again)."""
    q = random_matrix(GGMLType.Q4_K, 16, 1, seed=1)
    f = random_matrix(GGMLType.F16, 16, 256, seed=1)
    x = np.random.default_rng(2).standard_normal((kernels.BLAS_PATH_MIN_TOKENS, 256))
    x = x.astype(np.float32)

    def relative_error(m: kernels.QuantMatrix) -> float:
        w = quants.dequantize(m.data, m.ggml_type).astype(np.float64)
        scale = (np.abs(x) @ np.abs(w).T).max()
        return float(np.abs(m.matmul(x) - x.astype(np.float64) @ w.T).max() / scale)

    assert relative_error(q) > 1e-5  # bfloat16 rounding shows (about 1e-3)
    assert relative_error(f) < 1e-6  # float32 BLAS
    monkeypatch.setenv("ENGINE_AMX", "0")
    assert not kernels_amx.available()
    assert relative_error(q) < 1e-6


@pytest.mark.parametrize(
    "ggml_type", sorted(Q8_K_ACTIVATION_TYPES), ids=lambda t: t.name,
)  # fmt: skip
def test_k_quant_products_as_accurate_as_llama_cpp(ggml_type: GGMLType) -> None:
    """A generation-step product with a K-quant or IQ4_XS (8-bit activations with one scale per
    32 values) is at least as accurate as llama.cpp's scheme (one scale per 256 values, its
    Q8_K) against the exact float64 product."""
    from engine.bench.kernels import accuracy, random_quant_matrix

    m = random_quant_matrix(ggml_type, 64, 1024, seed=3)
    x = np.random.default_rng(4).standard_normal((4, m.n_in)).astype(np.float32)
    r = accuracy(m, x)
    assert r["rms_err_ours"] <= r["rms_err_llamacpp_scheme"], r
    assert r["rms_err_ours"] < 0.05 * r["rms_exact"], r
