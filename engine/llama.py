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
fused dequantize-dot); the small kernels (``engine.ops``: norm, RoPE + attention, SwiGLU) are
numba, one compiled call each per layer, working in preallocated buffers.  A decode step of a
quantized model runs every layer in one compiled call instead
(``engine.decode.step``).  Nothing is compiled or read from the weights until the first forward.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from engine.config import ModelConfig
from engine.constants import ENGINE_WEIGHT_TYPES, GGMLType
from engine.decode.step import DecodePlan, run_decode_step
from engine.errors import ContextOverflow, GGUFError, UnsupportedTensorType
from engine.gguf import GGUFFile
from engine.kernels import ACT_BLOCK, BLAS_PATH_MIN_TOKENS, QuantMatrix
from engine.kernels.blas import attention_heads
from engine.kernels.simd import NATIVE_F16
from engine.ops import (
    ATTENTION_PARALLEL_MIN_WORK,
    add_bias,
    add_rms_norm,
    attention_parallel,
    attention_serial,
    gated_act_rows,
    head_rms_norm,
    rms_norm,
    rope_store,
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

    def layer_views(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(att, k, v) for ``forward`` op by op over n positions, in memory free at the time they
        live: the attention output in ``h`` (free from the q/k/v products to the next norm) when
        the widths match, k and v in ``gate`` and ``up`` (free until the feed-forward).  A prompt
        batch then never touches ``att``, ``k`` and ``v``, whose untouched pages cost no memory
        (24 MiB less at 7B, 512 positions); the decode step uses their first rows."""
        kv_dim = self.k.shape[1]
        att = self.h[:n] if self.att.shape[1] == self.h.shape[1] else self.att[:n]
        if kv_dim > self.gate.shape[1]:
            return att, self.k[:n], self.v[:n]
        k = self.gate.reshape(-1)[: n * kv_dim].reshape(n, kv_dim)  # contiguous
        v = self.up.reshape(-1)[: n * kv_dim].reshape(n, kv_dim)
        return att, k, v


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
    x, h, o = ws.x[:n], ws.h[:n], ws.o[:n]  # (n, n_embd)
    if fused and n == 1 and w.decode_plan is not None:  # one decode step: all layers, one call
        with FORWARD_LOCK:
            run_decode_step(w, (cache,), tokens, ws)
            cache.n_past = pos0 + 1
            return _output(w, x, o, h, eps, ws, logits_out)
    scale = np.float32(parts.attn_scale)
    cos, sin = cache.cos[:, pos0 : pos0 + n], cache.sin[:, pos0 : pos0 + n]  # (n_tab, n, d/2)
    q = ws.q[:n]  # (n, n_head*hd)
    att, k, v = ws.layer_views(n)  # (n, n_head*hd), (n, n_kv*hd) x 2: in buffers free meanwhile
    gate, up = ws.gate[:n], ws.up[:n]  # (n, n_ff)

    work = n * c.n_head * (pos0 + n) * c.head_dim  # multiply-adds of q k^T
    attention = attention_parallel if work >= ATTENTION_PARALLEL_MIN_WORK else attention_serial
    if n >= BLAS_PATH_MIN_TOKENS:
        attention = attention_heads  # per head: two BLAS products and a causal softmax
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
