"""The forward pass of every supported family on quantized GGUF weights, flat and commented
(after llama2.c's run.c), switched by the flags of ``config.parts`` (``engine.config.BlockParts``).

One transformer block, as llama.cpp's ``src/models/{llama,qwen2,qwen3,gemma3}.cpp`` compute it;
[brackets] mark the optional parts and the families that have them::

    x  = token_embd[tokens] [* sqrt(n_embd): gemma3]         # (n, n_embd)
    for each layer:
        h   = rms_norm(x) * attn_norm
        q,k,v = h @ attn_q, h @ attn_k, h @ attn_v        # (n, n_head*hd), (n, n_kv*hd) x2
              [+ attn_{q,k,v}.bias: qwen2]
        [q,k = rms_norm(each head) * attn_{q,k}_norm: qwen3, gemma3]
        q,k = rope(q), rope(k)    # NORM: pairs (2i, 2i+1) (llama); NEOX: (i, i + d/2) (others)
                                  # [/ rope_freqs: Llama-3.1] [local layers: base 10000: gemma3]
        cache[pos0:pos0+n] = k, v
        a   = softmax(q k^T * attn_scale, causal [, last sliding_window keys: gemma3 local]) v
        o   = a @ attn_output     [o = rms_norm(o) * post_attention_norm: gemma3]
        x  += o
        h   = rms_norm(x) * ffn_norm
        o   = (act(h @ ffn_gate) * (h @ ffn_up)) @ ffn_down    # act: SiLU [GELU(tanh): gemma3]
              [o = rms_norm(o) * post_ffw_norm: gemma3]
        x  += o
    logits = (rms_norm(x) * output_norm) @ output             # output = token_embd when tied

Matrix products run on the quantized blocks (``engine.kernels.QuantMatrix``: 8-bit activations,
fused dequantize-dot); the small kernels here (norm, RoPE + attention, SwiGLU) are numba, one
compiled call each per layer, working in preallocated buffers.  Nothing is compiled or read from
the weights until the first forward.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange
from numba.typed import List as TypedList

from engine.config import ModelConfig
from engine.constants import ENGINE_WEIGHT_TYPES, GGMLType
from engine.errors import ContextOverflow, GGUFError, UnsupportedTensorType
from engine.gguf import GGUFFile
from engine.kernels import (
    ACT_BLOCK,
    BLAS_PATH_MIN_TOKENS,
    INT_DOT_TYPES,
    QuantMatrix,
    dot_int_in,
    quantize_activations,
    type_mask,
)
from engine.kernels.blas import attention_heads, exp_span
from engine.kernels.decode import decode_row
from engine.kernels.phases import Phases, claim, finish, open_next, wait_open
from engine.kernels.simd import (
    NATIVE_F16,
    kv_store,
    kv_value,
    vaxpy_f32,
    vmla_f32,
    vsum,
    vzero,
)

# Tensor names of architecture ``llama`` (llama.cpp's LLM_TENSOR_NAMES); {i} is the layer.
TOKEN_EMBD = "token_embd.weight"
OUTPUT_NORM = "output_norm.weight"
OUTPUT = "output.weight"
LAYER_TENSORS = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "attn_q": "blk.{i}.attn_q.weight",
    "attn_k": "blk.{i}.attn_k.weight",
    "attn_v": "blk.{i}.attn_v.weight",
    "attn_output": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "ffn_gate": "blk.{i}.ffn_gate.weight",
    "ffn_up": "blk.{i}.ffn_up.weight",
    "ffn_down": "blk.{i}.ffn_down.weight",
}
# Optional vectors of a layer, each with the flag of config.parts that requires it.
LAYER_OPTIONAL = {
    "attn_q_b": ("blk.{i}.attn_q.bias", "qkv_bias"),
    "attn_k_b": ("blk.{i}.attn_k.bias", "qkv_bias"),
    "attn_v_b": ("blk.{i}.attn_v.bias", "qkv_bias"),
    "attn_q_norm": ("blk.{i}.attn_q_norm.weight", "qk_norm"),
    "attn_k_norm": ("blk.{i}.attn_k_norm.weight", "qk_norm"),
    "post_attention_norm": ("blk.{i}.post_attention_norm.weight", "post_norms"),
    "post_ffw_norm": ("blk.{i}.post_ffw_norm.weight", "post_norms"),
}

# Positions processed per forward call while reading a prompt (the batch of llama.cpp's n_ubatch).
DEFAULT_BATCH = 512

# numba's parallel kernels must not run from two Python threads at once: every forward (and so
# every QuantMatrix product) of every model in the process goes through this lock.
FORWARD_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# weights


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray  # (n_embd,) float32
    attn_q: QuantMatrix  # n_embd -> n_head * head_dim
    attn_k: QuantMatrix  # n_embd -> n_head_kv * head_dim
    attn_v: QuantMatrix  # n_embd -> n_head_kv * head_dim
    attn_output: QuantMatrix  # n_head * head_dim -> n_embd
    ffn_norm: np.ndarray  # (n_embd,) float32
    ffn_gate: QuantMatrix  # n_embd -> n_ff
    ffn_up: QuantMatrix  # n_embd -> n_ff
    ffn_down: QuantMatrix  # n_ff -> n_embd
    # optional parts (None when config.parts switches them off)
    attn_q_b: np.ndarray | None = None  # (n_head*hd,) float32
    attn_k_b: np.ndarray | None = None  # (n_kv*hd,)
    attn_v_b: np.ndarray | None = None  # (n_kv*hd,)
    attn_q_norm: np.ndarray | None = None  # (hd,) per-head RMSNorm weight
    attn_k_norm: np.ndarray | None = None  # (hd,)
    post_attention_norm: np.ndarray | None = None  # (n_embd,)
    post_ffw_norm: np.ndarray | None = None  # (n_embd,)


@dataclass(frozen=True)
class ModelWeights:
    """Every tensor of the model as a view on the memory map (nothing is copied or dequantized)."""

    config: ModelConfig
    token_embd: QuantMatrix  # rows: n_vocab x n_embd
    layers: tuple[LayerWeights, ...]
    output_norm: np.ndarray  # (n_embd,) float32
    output: QuantMatrix  # n_embd -> n_vocab (the token embedding itself when tied)
    decode_plan: DecodePlan | None = None  # the layers as one compiled decode step takes them

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, config: ModelConfig) -> ModelWeights:
        c = config
        q_dim, kv_dim = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
        token_embd = _matrix(gguf, TOKEN_EMBD, c.n_embd, c.n_vocab)
        output = (
            _matrix(gguf, OUTPUT, c.n_embd, c.n_vocab) if OUTPUT in gguf.tensors else token_embd
        )
        shapes = {  # (n_in, n_out) in ggml order
            "attn_q": (c.n_embd, q_dim),
            "attn_k": (c.n_embd, kv_dim),
            "attn_v": (c.n_embd, kv_dim),
            "attn_output": (q_dim, c.n_embd),
            "ffn_gate": (c.n_embd, c.n_ff),
            "ffn_up": (c.n_embd, c.n_ff),
            "ffn_down": (c.n_ff, c.n_embd),
        }
        layers = []
        for i in range(c.n_layer):
            parts: dict[str, object] = {}
            for key, pattern in LAYER_TENSORS.items():
                name = pattern.format(i=i)
                if key in shapes:
                    parts[key] = _matrix(gguf, name, *shapes[key])
                else:
                    parts[key] = _vector(gguf, name, c.n_embd)
            for key, (pattern, flag) in LAYER_OPTIONAL.items():
                if getattr(c.parts, flag):
                    n = c.n_embd if key.startswith("post") else c.head_dim
                    if key.endswith("_b"):
                        n = q_dim if key == "attn_q_b" else kv_dim
                    parts[key] = _vector(gguf, pattern.format(i=i), n)
            layers.append(LayerWeights(**parts))  # type: ignore[arg-type]
        layers_t = tuple(layers)
        out_norm = _vector(gguf, OUTPUT_NORM, c.n_embd)
        return cls(c, token_embd, layers_t, out_norm, output, DecodePlan.build(c, layers_t))


# The matrices of a layer in the order the fused decode step reads them.
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class DecodePlan:
    """Every layer's matrices in one typed list (7 per layer, LAYER_MATRICES order), their type
    codes and the vectors stacked: what ``decode_layers_kernel`` needs to run all layers of one
    decode step in a single compiled call.  Only for models whose layer matrices all have
    integer-dot kernels (every quantized type); float-weight models take the general path.
    Parts a model lacks are stacked as zeros (biases) or ones (norms) and switched off by flags."""

    mats: TypedList  # (n_layer * 7) uint8 (n_out, row_bytes) read-only views
    codes: np.ndarray  # (n_layer * 7,) int64 ggml type codes
    norms: np.ndarray  # (n_layer, 4, n_embd) float32: attn, ffn, post-attention, post-ffw norms
    head_norms: np.ndarray  # (n_layer, 2, hd) float32: attn_q_norm, attn_k_norm
    biases: np.ndarray  # (n_layer, n_head*hd + 2*n_kv*hd) float32: q, k, v biases
    mat_types: int  # kernels.type_mask of the codes: the types the decode step compiles

    @classmethod
    def build(cls, config: ModelConfig, layers: tuple[LayerWeights, ...]) -> DecodePlan | None:
        dims = (config.n_embd, config.n_head * config.head_dim, config.n_ff)
        matrices = [getattr(L, name) for L in layers for name in LAYER_MATRICES]
        if any(m.ggml_type not in INT_DOT_TYPES for m in matrices) or any(
            d % ACT_BLOCK for d in dims
        ):
            return None
        mats = TypedList()
        for m in matrices:
            view = m.data.view()
            view.flags.writeable = False  # one numba type for every element
            mats.append(view)
        codes = np.array([m.code for m in matrices], np.int64)
        c = config
        ones_e, ones_h = np.ones(c.n_embd, np.float32), np.ones(c.head_dim, np.float32)
        zq, zkv = (
            np.zeros(c.n_head * c.head_dim, np.float32),
            np.zeros(c.n_head_kv * c.head_dim, np.float32),
        )

        def pick(v, default):
            return default if v is None else v

        norms = np.stack([np.stack([L.attn_norm, L.ffn_norm, pick(L.post_attention_norm, ones_e),
                                    pick(L.post_ffw_norm, ones_e)]) for L in layers])  # fmt: skip
        head_norms = np.stack(
            [np.stack([pick(L.attn_q_norm, ones_h), pick(L.attn_k_norm, ones_h)]) for L in layers]
        )
        biases = np.stack([np.concatenate([pick(L.attn_q_b, zq), pick(L.attn_k_b, zkv),
                                           pick(L.attn_v_b, zkv)]) for L in layers])  # fmt: skip
        f32 = np.float32
        return cls(
            mats, codes, np.ascontiguousarray(norms, f32), np.ascontiguousarray(head_norms, f32),
            np.ascontiguousarray(biases, f32), type_mask(m.ggml_type for m in matrices),
        )  # fmt: skip


@njit(inline="always")
def plan_layer(mats, codes, il):  # pragma: no cover - compiled
    """Layer il's seven matrices and their type codes from ``DecodePlan.mats``/``codes``, in
    LAYER_MATRICES order (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)."""
    m = il * 7
    w = (mats[m], mats[m + 1], mats[m + 2], mats[m + 3], mats[m + 4], mats[m + 5], mats[m + 6])
    c = (codes[m], codes[m + 1], codes[m + 2], codes[m + 3], codes[m + 4], codes[m + 5],
         codes[m + 6])  # fmt: skip
    return w, c


def _tensor(gguf: GGUFFile, name: str, shape: tuple[int, ...]):
    info = gguf.tensors.get(name)
    if info is None:
        raise GGUFError(gguf.path, f"tensor {name!r} is missing")
    if tuple(int(d) for d in info.shape) != shape:
        got = tuple(info.shape)
        raise GGUFError(gguf.path, f"tensor {name!r} has shape {got}, expected {shape}")
    if info.ggml_type not in ENGINE_WEIGHT_TYPES:
        raise UnsupportedTensorType(gguf.path, name, GGMLType(info.ggml_type).name)
    return info


def _matrix(gguf: GGUFFile, name: str, n_in: int, n_out: int) -> QuantMatrix:
    info = _tensor(gguf, name, (n_in, n_out))
    return QuantMatrix(info.data, GGMLType(info.ggml_type), n_in)


def _vector(gguf: GGUFFile, name: str, n: int) -> np.ndarray:
    info = _tensor(gguf, name, (n,))
    if info.ggml_type != GGMLType.F32:  # norms are F32 in every llama.cpp file; a copy otherwise
        return QuantMatrix(info.data.reshape(1, -1), GGMLType(info.ggml_type), n).rows(
            np.zeros(1, np.int64)
        )[0]
    return np.asarray(info.data).reshape(-1).view(np.float32)  # (n,) zero-copy


# ----------------------------------------------------------------------------------------------
# KV cache and buffers


# KV cache element types: float32, or IEEE halves stored as uint16 bits ("f16", llama.cpp's
# default: half the memory and half the attention reads, values rounded to 11 significant bits).
KV_TYPES = {"f32": np.float32, "f16": np.uint16}


def check_kv_type(kv_type: str) -> None:
    """Raise ValueError unless ``kv_type`` is one of KV_TYPES and this CPU can use it."""
    if kv_type not in KV_TYPES:
        raise ValueError(f"KV cache type {kv_type!r} is not one of {', '.join(KV_TYPES)}")
    if kv_type == "f16" and not NATIVE_F16:
        raise ValueError("an f16 KV cache needs a CPU that converts halves (x86 F16C, ARM64)")


class KVCache:
    """Keys and values of every layer for ``n_ctx`` positions, contiguous per (layer, kv head),
    as float32 or, with ``kv_type="f16"``, as halves (``KV_TYPES``).

    Also holds the RoPE angles of its positions (float64 math, stored float32): one table per
    RoPE base (global, and local for sliding-window layers), ``layer_rope[il]`` the table of layer
    il, ``layer_window[il]`` its sliding window (0: global).  Allocated with ``np.empty``: pages
    become resident only as positions are written.
    """

    def __init__(self, config: ModelConfig, n_ctx: int, kv_type: str = "f32") -> None:
        c = config
        check_kv_type(kv_type)
        self.n_ctx = n_ctx
        self.n_past = 0
        self.kv_type = kv_type
        shape = (c.n_layer, c.n_head_kv, n_ctx, c.head_dim)
        self.k = np.empty(shape, KV_TYPES[kv_type])  # (n_layer, n_kv, n_ctx, hd)
        self.v = np.empty(shape, KV_TYPES[kv_type])  # (n_layer, n_kv, n_ctx, hd)
        self.cos, self.sin = rope_tables(c, n_ctx)  # (n_tables, n_ctx, rope_dim // 2) each
        self.layer_window = np.asarray(c.layer_window, np.int64)  # (n_layer,)
        self.layer_rope = (self.layer_window > 0).astype(np.int64)  # (n_layer,) table index

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def rope_tables(config: ModelConfig, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of theta(p, i) = p / rope_scale * freq_base^(-2i / rope_dim) / factor_i, as
    llama.cpp: table 0 for the global layers, table 1 (base rope_freq_base_swa, no linear
    scaling) for the sliding-window layers of a model that has them."""
    c = config
    half = c.rope_dim // 2
    factors = np.asarray(c.rope_freq_factors or np.ones(half), np.float64)  # (half,)
    bases = [(c.rope_freq_base, float(c.rope_scale or 1.0))]
    if c.parts.sliding_window:
        bases.append((c.parts.rope_freq_base_swa, 1.0))
    cos = np.empty((len(bases), n_ctx, half), np.float32)
    sin = np.empty((len(bases), n_ctx, half), np.float32)
    for i, (base, scale) in enumerate(bases):
        inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / c.rope_dim) / factors
        theta = np.outer(np.arange(n_ctx, dtype=np.float64) / scale, inv_freq)  # (n_ctx, half)
        cos[i], sin[i] = np.cos(theta), np.sin(theta)
    return cos, sin


class Workspace:
    """Activation buffers for up to ``n_batch`` positions, reused by every forward of a call."""

    def __init__(self, config: ModelConfig, n_batch: int) -> None:
        c = config
        q_dim, kv_dim = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
        self.n_batch = n_batch
        self.x = np.empty((n_batch, c.n_embd), np.float32)  # residual stream
        self.h = np.empty((n_batch, c.n_embd), np.float32)  # normalised input of a sub-block
        self.q = np.empty((n_batch, q_dim), np.float32)
        self.k = np.empty((n_batch, kv_dim), np.float32)
        self.v = np.empty((n_batch, kv_dim), np.float32)
        self.att = np.empty((n_batch, q_dim), np.float32)  # attention output, all heads
        self.o = np.empty((n_batch, c.n_embd), np.float32)  # a sub-block's output
        self.gate = np.empty((n_batch, c.n_ff), np.float32)
        self.up = np.empty((n_batch, c.n_ff), np.float32)
        self.logits = np.empty((1, c.n_vocab), np.float32)
        # 8-bit activations of one position (decode step): values, block scales, half sums
        self.act = [
            (np.empty((1, d), np.int8), np.empty((1, d // ACT_BLOCK), np.float32),
             np.empty((1, 2 * (d // ACT_BLOCK)), np.float32))
            for d in (c.n_embd, q_dim, c.n_ff)
        ]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# small kernels


@njit(cache=True, nogil=True)
def rms_norm(x, weight, eps, out):  # pragma: no cover - compiled
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight (sum of squares in float64)."""
    n, d = x.shape
    for t in range(n):
        ss = 0.0
        for i in range(d):
            ss += np.float64(x[t, i]) * x[t, i]
        scale = np.float32(1.0 / math.sqrt(ss / d + eps))
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]


@njit(cache=True, nogil=True)
def add_rms_norm(x, y, weight, eps, out):  # pragma: no cover - compiled
    """x += y (the residual), then out = rms_norm(x) * weight."""
    n, d = x.shape
    for t in range(n):
        ss = 0.0
        for i in range(d):
            s = x[t, i] + y[t, i]
            x[t, i] = s
            ss += np.float64(s) * s
        scale = np.float32(1.0 / math.sqrt(ss / d + eps))
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]


@njit(cache=True, nogil=True)
def head_rms_norm(x, weight, eps):  # pragma: no cover - compiled
    """RMSNorm of every head (``weight.shape[0]`` values) of every row of x, in place."""
    hd = weight.shape[0]
    for t in range(x.shape[0]):
        for b in range(0, x.shape[1], hd):
            ss = 0.0
            for i in range(hd):
                ss += np.float64(x[t, b + i]) * x[t, b + i]
            scale = np.float32(1.0 / math.sqrt(ss / hd + eps))
            for i in range(hd):
                x[t, b + i] = x[t, b + i] * scale * weight[i]


@njit(cache=True, nogil=True)
def add_bias(x, bias):  # pragma: no cover - compiled
    """x[t] += bias for every row, in place."""
    for t in range(x.shape[0]):
        for i in range(x.shape[1]):
            x[t, i] += bias[i]


GELU_A = np.float32(0.044715)  # GELU(tanh) as ggml: 0.5 x (1 + tanh(sqrt(2/pi) x (1 + a x^2)))
SQRT_2_OVER_PI = 0.79788456080286535587989211986876


@njit(inline="always")
def _gated_row(gate, up, gelu):  # pragma: no cover - compiled
    """gate = act(gate) * up over one row, in place; act = GELU(tanh) when ``gelu``, else SiLU."""
    for i in range(gate.shape[0]):
        g = gate[i]
        if gelu:
            u = np.float32(SQRT_2_OVER_PI) * g * (np.float32(1.0) + GELU_A * g * g)
            a = np.float32(0.5) * g * (np.float32(1.0) + np.tanh(u))
        else:
            a = g / (np.float32(1.0) + np.exp(-g))
        gate[i] = a * up[i]


@njit(cache=True, nogil=True)
def gated_act(gate, up, gelu):  # pragma: no cover - compiled
    """gate = act(gate) * up for every row (n, n_ff), in place, in the calling thread."""
    for t in range(gate.shape[0]):
        _gated_row(gate[t], up[t], gelu)


@njit(cache=True, parallel=True)
def gated_act_rows(gate, up, gelu):  # pragma: no cover - compiled
    """``gated_act`` of a prompt batch, its rows split between the engine's threads."""
    for t in prange(gate.shape[0]):
        _gated_row(gate[t], up[t], gelu)


@njit(cache=True, nogil=True)
def _rope_rows(x, n_heads, head_dim, rope_dim, cos, sin, neox):  # pragma: no cover - compiled
    """Rotate, in place, every head of every row: pairs (2i, 2i+1) (NORM) or (i, i + rope_dim/2)
    (NEOX), i < rope_dim / 2, by the angles of the row's position."""
    half = rope_dim // 2
    for t in range(x.shape[0]):
        for h in range(n_heads):
            b = h * head_dim
            for i in range(half):
                c, s = cos[t, i], sin[t, i]
                i0, i1 = (b + i, b + i + half) if neox else (b + 2 * i, b + 2 * i + 1)
                x0, x1 = x[t, i0], x[t, i1]
                x[t, i0] = x0 * c - x1 * s
                x[t, i1] = x0 * s + x1 * c


@njit(cache=True, nogil=True)
def rope_store(q, k, v, k_cache, v_cache, pos0, cos, sin, rope_dim, neox):  # pragma: no cover
    """RoPE on q and k in place; k and v stored in the layer's cache at positions pos0.."""
    hd = k_cache.shape[2]
    _rope_rows(q, q.shape[1] // hd, hd, rope_dim, cos, sin, neox)
    _rope_rows(k, k_cache.shape[0], hd, rope_dim, cos, sin, neox)
    for t in range(q.shape[0]):
        for h in range(k_cache.shape[0]):
            kc, vc = k_cache[h, pos0 + t], v_cache[h, pos0 + t]  # (hd,) float32 or f16 bits
            for d in range(hd):
                kv_store(kc, d, k[t, h * hd + d])
                kv_store(vc, d, v[t, h * hd + d])


# No fastmath here (nor in any kernel another kernel calls): numba links a copy of a callee into
# each caller and optimises it again, and a call goes to whichever copy was loaded first — the
# callee's own in a process that compiled it, the caller's copy in one that loaded the caller
# from the disk cache.  With fastmath the two copies reassociate the sums differently, so greedy
# output changed between the first run and later ones (docs/BENCHMARKS.md); exact float code
# gives the same bits either way (q . k stays vectorised: kernels.simd.vmla_f32).
@njit(cache=True, nogil=True)
def attend_pair(q, k_cache, v_cache, pos0, scale, window, out, th, scores, acc):  # pragma: no cover
    """One (position, head) pair ``th``: softmax(q k^T * scale) v over positions 0 .. pos0 + t,
    or only the last ``window`` of them when window > 0 (a sliding-window layer)."""
    n_kv, _, hd = k_cache.shape
    n_head = q.shape[1] // hd
    t, h = th // n_head, th % n_head
    kv = h // (n_head // n_kv)  # grouped-query: consecutive query heads share a kv head
    n_keys = pos0 + t + 1  # causal
    first = max(0, n_keys - window) if window > 0 else 0
    qh = q[t, h * hd : (h + 1) * hd]  # (hd,)
    hd8 = hd - hd % 8
    for j in range(first, n_keys):
        kj = k_cache[kv, j]  # (hd,)
        s8 = vzero()  # q . k in 8 lanes, summed in a fixed order: vectorised without fastmath
        for d in range(0, hd8, 8):
            s8 = vmla_f32(s8, qh, d, kj, d)
        s = vsum(s8)
        for d in range(hd8, hd):
            s += qh[d] * kv_value(kj, d)
        scores[j] = s * scale
    total = exp_span(scores, first, n_keys)  # scores[j] = exp(scores[j] - max)
    acc[:] = 0.0
    for j in range(first, n_keys):
        p = scores[j]
        vj = v_cache[kv, j]  # (hd,)
        for d in range(0, hd8, 8):
            vaxpy_f32(acc, d, p, vj, d)  # acc[d:d+8] += p * vj[d:d+8]
        for d in range(hd8, hd):
            acc[d] += p * kv_value(vj, d)
    inv = np.float32(1.0) / total
    for d in range(hd):
        out[t, h * hd + d] = acc[d] * inv


@njit(cache=True, nogil=True)
def attention_serial(q, k_cache, v_cache, pos0, scale, window, out):  # pragma: no cover
    """Causal grouped-query attention of n positions (the small case: one decode step)."""
    hd = k_cache.shape[2]
    n_pairs = q.shape[0] * (q.shape[1] // hd)
    scores = np.empty(pos0 + q.shape[0], np.float32)  # (n_keys,)
    acc = np.empty(hd, np.float32)  # (hd,)
    for th in range(n_pairs):
        attend_pair(q, k_cache, v_cache, pos0, scale, window, out, th, scores, acc)


@njit(cache=True, nogil=True, parallel=True)
def attention_parallel(q, k_cache, v_cache, pos0, scale, window, out):  # pragma: no cover
    """The same, (position, head) pairs spread over the threads (prompts, long contexts)."""
    hd = k_cache.shape[2]
    n_pairs = q.shape[0] * (q.shape[1] // hd)
    for th in prange(n_pairs):
        scores = np.empty(pos0 + q.shape[0], np.float32)  # (n_keys,)
        acc = np.empty(hd, np.float32)  # (hd,)
        attend_pair(q, k_cache, v_cache, pos0, scale, window, out, th, scores, acc)


# Multiply-adds of q k^T below which one thread is faster than waking the others.
ATTENTION_PARALLEL_MIN_WORK = 1 << 20


# ----------------------------------------------------------------------------------------------
# one decode step, all layers in one compiled call


def decode_layers_kernel(embd_code: int, mat_types: int) -> Any:
    """The compiled decode step for a token embedding of type ``embd_code`` and layer matrices
    of the types in the bit set ``mat_types`` (``kernels.type_mask``), made on first use: a
    closure over both constants, so only those types' decoder and dot products compile, and
    numba's disk cache keeps one entry per combination."""
    return _make_decode_layers(int(embd_code), int(mat_types))


@functools.cache  # one closure (and one compiled kernel) per combination
def _make_decode_layers(embd_code: int, mat_types: int) -> Any:
    @njit(cache=True, nogil=True, parallel=True)
    def decode_layers(
        token, embd, mats, codes, norms, head_norms, biases, k_cache, v_cache, pos, cos, sin,
        layer_rope, layer_window, rope_dim, scale, eps, embd_scale, flags, x, h, q, k, v,
        att, o, gate, up, a_embd, a_q, a_ff, counters, n_threads,
    ):  # pragma: no cover - compiled  # fmt: skip
        """Every layer for one new token at position ``pos``: the decode step without Python.

        Same computation as ``forward`` with n = 1 (same kernels, same 8-bit activations), in
        one parallel region: phase 0 is the token embedding, then each layer has the phases
        ``QKV``, ``ATTENTION``, ``ATTN_OUT``, ``GATE_UP``, ``DOWN`` (``kernels.phases``: the
        threads claim rows, or heads, of a phase; whoever finishes its last item does the serial
        work up to the next phase's input).  On return ``x + o`` is the final residual (the
        output norm comes next).  a_embd, a_q, a_ff: (values, scales, half sums) buffers of
        8-bit activations.  flags: (rope_neox, qk_norm, post_norms, ffn_gelu) of config.parts;
        the q/k/v biases are always added (zeros when the model has none).  counters: those of
        a fresh ``Phases(decode_phases(n_layer))``; n_threads: the caller's thread count.
        """
        neox, qk_norm, post_norms, gelu = flags
        n_q, n_kv, n_ff = q.shape[1], k.shape[1], gate.shape[1]
        n_embd, hd, n_layer = x.shape[1], k_cache[0].shape[2], norms.shape[0]
        n_head = n_q // hd
        for _ in prange(n_threads):  # every thread runs every phase
            scores, acc = np.empty(pos + 1, np.float32), np.empty(hd, np.float32)
            for ph in range(decode_phases(n_layer)):
                wait_open(counters, ph)
                il, kind = (ph - 1) // PHASES_PER_LAYER, (ph - 1) % PHASES_PER_LAYER
                w7, c7 = plan_layer(mats, codes, max(il, 0))
                wq, wk, wv, wo, wg, wu, wd = w7  # (n_out, row_bytes) each
                cq, ck, cv, co, cg, cu, cd = c7
                n_items, chunk = phase_items(ph, kind, n_q + 2 * n_kv, n_head, 2 * n_ff, n_embd)
                while True:
                    first = claim(counters, ph, chunk)
                    if first >= n_items:
                        break
                    last = min(first + chunk, n_items)
                    if ph == 0:  # the token embedding and the first layer's input
                        decode_row(embd_code, embd[token], x[0])  # (1, n_embd)
                        if embd_scale != 1.0:
                            for i in range(n_embd):
                                x[0, i] *= embd_scale
                        o[:] = 0.0
                        layer_input(x, o, norms[0, 0], eps, h, a_embd)
                    elif kind == QKV:  # q, k, v  (1, n_q), (1, n_kv), (1, n_kv)
                        xq, xd, xs = a_embd[0][0], a_embd[1][0], a_embd[2][0]
                        bias = biases[il]  # (n_q + 2 n_kv,)
                        for r in range(first, last):
                            if r < n_q:
                                q[0, r] = dot_int_in(mat_types, cq, wq[r], xq, xd, xs) + bias[r]
                            elif r < n_q + n_kv:
                                k[0, r - n_q] = dot_int_in(mat_types, ck, wk[r - n_q], xq, xd,
                                                           xs) + bias[r]  # fmt: skip
                            else:
                                rv = r - n_q - n_kv
                                v[0, rv] = dot_int_in(mat_types, cv, wv[rv], xq, xd, xs) + bias[r]
                    elif kind == ATTENTION:  # heads first .. last  (1, n_q)
                        for th in range(first, last):
                            attend_pair(q, k_cache[il], v_cache[il], pos, scale, layer_window[il],
                                    att, th, scores, acc)  # fmt: skip
                    elif kind == ATTN_OUT:  # (1, n_embd)
                        xq, xd, xs = a_q[0][0], a_q[1][0], a_q[2][0]
                        for r in range(first, last):
                            o[0, r] = dot_int_in(mat_types, co, wo[r], xq, xd, xs)
                    elif kind == GATE_UP:  # (1, n_ff) each
                        xq, xd, xs = a_embd[0][0], a_embd[1][0], a_embd[2][0]
                        for r in range(first, last):
                            if r < n_ff:
                                gate[0, r] = dot_int_in(mat_types, cg, wg[r], xq, xd, xs)
                            else:
                                up[0, r - n_ff] = dot_int_in(mat_types, cu, wu[r - n_ff], xq, xd,
                                                             xs)  # fmt: skip
                    else:  # DOWN  (1, n_embd)
                        xq, xd, xs = a_ff[0][0], a_ff[1][0], a_ff[2][0]
                        for r in range(first, last):
                            o[0, r] = dot_int_in(mat_types, cd, wd[r], xq, xd, xs)
                    if not finish(counters, ph, last - first, n_items):
                        continue
                    # this thread finished the phase: the serial work up to the next one
                    if ph > 0 and kind == QKV:
                        if qk_norm:
                            head_rms_norm(q, head_norms[il, 0], eps)
                            head_rms_norm(k, head_norms[il, 1], eps)
                        rt = layer_rope[il]
                        rope_store(q, k, v, k_cache[il], v_cache[il], pos, cos[rt], sin[rt],
                                   rope_dim, neox)  # fmt: skip
                    elif ph > 0:
                        after_phase(kind, il, norms, eps, post_norms, gelu, x, h, o, att, gate,
                                    up, a_embd, a_q, a_ff)  # fmt: skip
                    open_next(counters, ph)

    return decode_layers


# The phases of a decode step after its first (the token embedding), per layer, in order.
QKV, ATTENTION, ATTN_OUT, GATE_UP, DOWN = range(5)
PHASES_PER_LAYER = 5
ROW_CHUNK = 16  # matrix rows a thread claims at a time


@njit(cache=True, inline="always")  # also called from Python (``forward``): cached
def decode_phases(n_layer):  # pragma: no cover - compiled
    """Phases of a decode step: the token embedding, then ``PHASES_PER_LAYER`` per layer."""
    return 1 + PHASES_PER_LAYER * n_layer


@njit(inline="always")
def phase_items(ph, kind, n_qkv, n_heads, n_gate_up, n_embd):  # pragma: no cover - compiled
    """(items, items per claim) of phase ``ph`` of kind ``kind``: rows of its matrix product,
    or heads of the attention (one per claim: the threads are awake anyway)."""
    if ph == 0:
        return 1, 1
    if kind == QKV:
        return n_qkv, ROW_CHUNK
    if kind == ATTENTION:
        return n_heads, 1
    if kind == GATE_UP:
        return n_gate_up, ROW_CHUNK
    return n_embd, ROW_CHUNK


@njit(inline="always")
def layer_input(x, o, weight, eps, h, a):  # pragma: no cover - compiled
    """x += o (the residual), h = norm(x) * weight, and h as 8-bit activations into ``a``."""
    add_rms_norm(x, o, weight, eps, h)
    quantize_activations(h, a[0], a[1], a[2])


@njit(inline="always")
def after_phase(kind, il, norms, eps, post_norms, gelu, x, h, o, att, gate, up, a_embd, a_q,
                a_ff):  # pragma: no cover - compiled  # fmt: skip
    """The serial work after phase ``kind`` (not ``QKV``) of layer ``il``, by the thread that
    finished it, for every row (sequence) of the buffers: the next phase's input."""
    if kind == ATTENTION:
        quantize_activations(att, a_q[0], a_q[1], a_q[2])
    elif kind == ATTN_OUT:
        if post_norms:
            rms_norm(o, norms[il, 2], eps, o)
        layer_input(x, o, norms[il, 1], eps, h, a_embd)
    elif kind == GATE_UP:
        gated_act(gate, up, gelu)
        quantize_activations(gate, a_ff[0], a_ff[1], a_ff[2])
    else:  # DOWN: the next layer's input
        if post_norms:
            rms_norm(o, norms[il, 3], eps, o)
        if il + 1 < norms.shape[0]:
            layer_input(x, o, norms[il + 1, 0], eps, h, a_embd)


# ----------------------------------------------------------------------------------------------
# the forward pass


def forward(
    w: ModelWeights,
    cache: KVCache,
    tokens: np.ndarray,
    ws: Workspace,
    logits_out: np.ndarray | None = None,
    fused: bool = True,
) -> np.ndarray:
    """Run ``tokens`` ((n,) ints, n <= ws.n_batch) at positions cache.n_past.. ; advance the cache.

    Returns the logits of the last position ((n_vocab,), a view on ``ws.logits``), or, when
    ``logits_out`` ((n, n_vocab) float32) is given, fills it with the logits of every position.
    ``fused=False`` runs a decode step op by op, as a prompt batch runs (for tests).
    """
    c, parts = w.config, w.config.parts
    n = tokens.shape[0]
    pos0 = cache.n_past
    if pos0 + n > cache.n_ctx:
        raise ContextOverflow(pos0 + n, cache.n_ctx)
    assert 0 < n <= ws.n_batch
    eps = np.float32(c.rms_eps)
    scale = np.float32(parts.attn_scale)
    cos, sin = cache.cos[:, pos0 : pos0 + n], cache.sin[:, pos0 : pos0 + n]  # (n_tab, n, d/2)
    x, h, o = ws.x[:n], ws.h[:n], ws.o[:n]  # (n, n_embd)
    q, att = ws.q[:n], ws.att[:n]  # (n, n_head*hd)
    k, v = ws.k[:n], ws.v[:n]  # (n, n_kv*hd)
    gate, up = ws.gate[:n], ws.up[:n]  # (n, n_ff)

    work = n * c.n_head * (pos0 + n) * c.head_dim  # multiply-adds of q k^T
    attention = attention_parallel if work >= ATTENTION_PARALLEL_MIN_WORK else attention_serial
    if n >= BLAS_PATH_MIN_TOKENS:
        attention = attention_heads  # per head: two BLAS products and a causal softmax
    plan = w.decode_plan
    if fused and n == 1 and plan is not None:  # one decode step: all layers in one compiled call
        with FORWARD_LOCK:
            flags = (parts.rope_neox, parts.qk_norm, parts.post_norms, parts.ffn_gelu)
            decode_layers_kernel(w.token_embd.code, plan.mat_types)(
                tokens[0], w.token_embd.data, plan.mats, plan.codes, plan.norms, plan.head_norms,
                plan.biases, cache.k, cache.v, pos0, cos, sin, cache.layer_rope,
                cache.layer_window, c.rope_dim, scale, eps, np.float32(parts.embd_scale), flags,
                x, h, q, k, v, att, o, gate, up, *ws.act,
                Phases(decode_phases(c.n_layer)).counters, get_num_threads(),
            )  # fmt: skip
            cache.n_past = pos0 + 1
            return _output(w, x, o, h, eps, ws, logits_out)
    with FORWARD_LOCK:
        x[:] = w.token_embd.rows(tokens)  # (n, n_embd)
        if parts.embd_scale != 1.0:
            x *= np.float32(parts.embd_scale)
        o[:] = 0.0  # (n, n_embd): nothing to add before the first layer
        for il, L in enumerate(w.layers):
            # attention: x += [post_norm](attn_output(attention(rope(q), rope(k), v)))
            add_rms_norm(x, o, L.attn_norm, eps, h)  # x += o; h = norm(x)       (n, n_embd)
            L.attn_q.matmul(h, out=q)  # (n, n_head*hd)
            L.attn_k.matmul(h, out=k)  # (n, n_kv*hd)
            L.attn_v.matmul(h, out=v)  # (n, n_kv*hd)
            if parts.qkv_bias:
                add_bias(q, L.attn_q_b)
                add_bias(k, L.attn_k_b)
                add_bias(v, L.attn_v_b)
            if parts.qk_norm:  # RMSNorm over each head
                head_rms_norm(q, L.attn_q_norm, eps)
                head_rms_norm(k, L.attn_k_norm, eps)
            kc, vc = cache.k[il], cache.v[il]  # (n_kv, n_ctx, hd)
            rt, window = cache.layer_rope[il], cache.layer_window[il]
            rope_store(q, k, v, kc, vc, pos0, cos[rt], sin[rt], c.rope_dim, parts.rope_neox)
            attention(q, kc, vc, pos0, scale, window, att)  # (n, n_head*hd)
            L.attn_output.matmul(att, out=o)  # (n, n_embd)
            if parts.post_norms:
                rms_norm(o, L.post_attention_norm, eps, o)
            # feed-forward: x += [post_norm](ffn_down(act(ffn_gate(h)) * ffn_up(h)))
            add_rms_norm(x, o, L.ffn_norm, eps, h)  # (n, n_embd)
            L.ffn_gate.matmul(h, out=gate)  # (n, n_ff)
            L.ffn_up.matmul(h, out=up)  # (n, n_ff)
            gated_act_rows(gate, up, parts.ffn_gelu)  # (n, n_ff)
            L.ffn_down.matmul(gate, out=o)  # (n, n_embd)
            if parts.post_norms:
                rms_norm(o, L.post_ffw_norm, eps, o)
        cache.n_past = pos0 + n
        return _output(w, x, o, h, eps, ws, logits_out)


def _output(w, x, o, h, eps, ws: Workspace, logits_out: np.ndarray | None) -> np.ndarray:
    """Final residual, output norm and projection: every position or the last one."""
    if logits_out is not None:
        add_rms_norm(x, o, w.output_norm, eps, h)  # (n, n_embd)
        w.output.matmul(h, out=logits_out)  # (n, n_vocab)
        return logits_out
    n = x.shape[0]
    add_rms_norm(x[n - 1 :], o[n - 1 :], w.output_norm, eps, h[:1])  # last position only
    w.output.matmul(h[:1], out=ws.logits)  # (1, n_vocab)
    return ws.logits[0]


def prefill(
    w: ModelWeights, cache: KVCache, tokens: np.ndarray, ws: Workspace, all_logits: bool = False
) -> np.ndarray:
    """Feed a prompt in batches of ``ws.n_batch``; the logits of the last position, or of all."""
    n = tokens.shape[0]
    if cache.n_past + n > cache.n_ctx:
        raise ContextOverflow(cache.n_past + n, cache.n_ctx)
    out = np.empty((n, w.config.n_vocab), np.float32) if all_logits else None  # (n, n_vocab)
    last = None
    for s in range(0, n, ws.n_batch):
        chunk = tokens[s : s + ws.n_batch]
        last = forward(w, cache, chunk, ws, None if out is None else out[s : s + chunk.shape[0]])
    assert last is not None
    return out if out is not None else last
