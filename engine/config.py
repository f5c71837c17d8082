"""``ModelConfig``: hyper-parameters of a GGUF model, and ``BlockParts``: which optional parts
its transformer block has — the architecture seam, read from the metadata and from which tensors
the file holds (``engine.arch.FAMILIES`` gives each family's traits)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.arch import FAMILIES, SUPPORTED_ARCHITECTURES
from engine.constants import LLAMA_FILE_TYPE_NAMES, GGMLType, Keys
from engine.errors import GGUFError, UnsupportedArchitecture
from engine.gguf import GGUFFile
from engine.tokenizer.vocab import default_add_bos, special_token_ids

OUTPUT_TENSOR = "output.weight"  # absent when the output projection is tied to token_embd
ROPE_FREQS_TENSOR = "rope_freqs.weight"  # Llama-3.1 RoPE frequency factors (rope_dim / 2)
# Optional tensors of layer 0 whose presence switches a part on (llama.cpp's tensor names).
Q_BIAS_TENSOR = "blk.0.attn_q.bias"
Q_NORM_TENSOR = "blk.0.attn_q_norm.weight"
POST_ATTN_NORM_TENSOR = "blk.0.post_attention_norm.weight"


@dataclass(frozen=True)
class BlockParts:
    """The optional parts of this model's blocks: what the one forward pass switches on.

    nanoGPT-style flags: ``engine/llama.py`` reads these and never the architecture's name."""

    rope_neox: bool  # RoPE rotates halves (i, i + rope_dim/2), not adjacent pairs
    qkv_bias: bool  # biases added to Q, K and V
    qk_norm: bool  # RMSNorm over each head of Q and K, before RoPE
    post_norms: bool  # RMSNorm of the attention and FFN outputs before the residual add
    ffn_gelu: bool  # FFN gate activation GELU(tanh) instead of SiLU
    embd_scale: float  # token embeddings are multiplied by this (sqrt(n_embd) for Gemma, else 1)
    rope_freq_factors: bool  # rope_freqs.weight divides each RoPE frequency
    sliding_window: int  # keys a local layer attends to (0: every layer is global)
    rope_freq_base_swa: float  # RoPE base of the local (sliding-window) layers
    attn_scale: float  # multiplies q·k (1/sqrt(head_dim) unless the family says otherwise)

    def found(self) -> list[str]:
        """Short names of the parts switched on (``python -m engine info``)."""
        names = ["NEOX RoPE" if self.rope_neox else "NORM RoPE"]
        names += [n for n, on in (("QKV bias", self.qkv_bias), ("Q/K norm", self.qk_norm),
                                  ("post-norms", self.post_norms),
                                  ("RoPE freq factors", self.rope_freq_factors)) if on]  # fmt: skip
        names.append("GELU(tanh) FFN" if self.ffn_gelu else "SiLU FFN")
        if self.embd_scale != 1.0:
            names.append(f"embeddings x {self.embd_scale:.4g}")
        if self.sliding_window:
            names.append(f"sliding window {self.sliding_window} (local RoPE base "
                         f"{self.rope_freq_base_swa:g})")  # fmt: skip
        return names


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a model of a supported family (Llama-2/3, Qwen2/3, Gemma-3)."""

    architecture: str
    name: str | None
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rms_eps: float
    rope_freq_base: float
    rope_scale: float  # linear factor: positions are divided by it (1.0 = no scaling)
    rope_scaling_type: str | None
    rope_dim: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    chat_template: str | None
    tied_output: bool
    file_type: str | None  # llama.cpp's name of the quantization mix, e.g. "Q4_K_M"
    parts: BlockParts
    layer_window: tuple[int, ...]  # per layer: sliding window (0 = global attention)
    rope_freq_factors: tuple[float, ...] | None  # rope_dim / 2 divisors (rope_freqs.weight)

    @property
    def n_gqa(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_head_kv

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Read the config; ``UnsupportedArchitecture`` unless the architecture is supported."""
        md = gguf.metadata
        arch = md.get(Keys.ARCHITECTURE)
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitecture(gguf.path, str(arch))
        r = _Reader(gguf, arch)
        n_embd = r.positive(Keys.EMBEDDING_LENGTH)
        n_head = r.positive(Keys.HEAD_COUNT)
        n_head_kv = r.positive(Keys.HEAD_COUNT_KV, default=n_head)
        if n_head % n_head_kv:
            raise GGUFError(gguf.path, f"{n_head} heads is not a multiple of {n_head_kv} KV heads")
        if Keys.KEY_LENGTH.format(arch=arch) not in md and n_embd % n_head:
            raise GGUFError(gguf.path, f"n_embd {n_embd} is not a multiple of {n_head} heads")
        head_dim = r.positive(Keys.KEY_LENGTH, default=n_embd // n_head)
        scale, scaling_type = _rope_scale(r)
        bos, eos, eot = special_token_ids(md, gguf.path)
        n_layer = r.positive(Keys.BLOCK_COUNT)
        rope_dim = r.positive(Keys.ROPE_DIMENSION_COUNT, default=head_dim)
        parts = _block_parts(r, n_embd, n_head, n_layer, head_dim)
        return cls(
            architecture=arch,
            name=md.get(Keys.NAME),
            n_vocab=_n_vocab(r),
            n_ctx_train=r.positive(Keys.CONTEXT_LENGTH),
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=r.positive(Keys.FEED_FORWARD_LENGTH),
            rms_eps=float(r.number(Keys.RMS_EPS)),
            rope_freq_base=float(r.number(Keys.ROPE_FREQ_BASE, default=10000.0)),
            rope_scale=scale,
            rope_scaling_type=scaling_type,
            rope_dim=rope_dim,
            bos_id=bos,
            eos_id=eos,
            eot_id=eot,
            add_bos=default_add_bos(md),
            chat_template=md.get(Keys.CHAT_TEMPLATE),
            tied_output=OUTPUT_TENSOR not in gguf.tensors,
            file_type=LLAMA_FILE_TYPE_NAMES.get(md.get(Keys.FILE_TYPE, -1)),
            parts=parts,
            layer_window=_layer_windows(r, parts.sliding_window, n_layer),
            rope_freq_factors=_rope_freq_factors(gguf, rope_dim)
            if parts.rope_freq_factors
            else None,
        )


class _Reader:
    """Typed access to ``{arch}.*`` keys with errors naming the file and key."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf, self.arch = gguf, arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.gguf.metadata.get(key.format(arch=self.arch), default)

    def number(self, key: str, default: float | None = None) -> float:
        v = self.get(key, default)
        name = key.format(arch=self.arch)
        if v is None:
            raise GGUFError(self.gguf.path, f"metadata key {name!r} is missing")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise GGUFError(self.gguf.path, f"metadata key {name!r} = {v!r} is not a number")
        return v

    def positive(self, key: str, default: int | None = None) -> int:
        v = self.number(key, default)
        if not isinstance(v, int) or v <= 0:
            name = key.format(arch=self.arch)
            raise GGUFError(
                self.gguf.path, f"metadata key {name!r} = {v!r} is not a positive integer"
            )
        return v


def _n_vocab(r: _Reader) -> int:
    n = r.get(Keys.VOCAB_SIZE)
    if n is None:
        tokens = r.gguf.metadata.get(Keys.TOKENS)
        if tokens is None:
            raise GGUFError(r.gguf.path, "neither a vocab size nor a token list in the metadata")
        return len(tokens)
    return r.positive(Keys.VOCAB_SIZE)


def _rope_scale(r: _Reader) -> tuple[float, str | None]:
    """Linear RoPE factor as llama.cpp reads it: ``rope.scaling.factor``, else the older
    ``rope.scale_linear``; 0 or absent means 1; scaling type ``none`` disables it."""
    scaling_type = r.get(Keys.ROPE_SCALING_TYPE)
    factor = r.get(Keys.ROPE_SCALING_FACTOR)
    if factor is None:
        factor = r.get(Keys.ROPE_SCALE_LINEAR)
    factor = float(factor or 0.0)
    if factor < 0:
        raise GGUFError(r.gguf.path, f"RoPE scaling factor {factor} is negative")
    if scaling_type == "none" or factor == 0.0:
        return 1.0, scaling_type
    if scaling_type not in (None, "linear"):
        warnings.warn(
            f"{r.gguf.path}: RoPE scaling type {scaling_type!r} is applied as linear scaling",
            stacklevel=3,
        )
    return factor, scaling_type


def _block_parts(r: _Reader, n_embd: int, n_head: int, n_layer: int, head_dim: int) -> BlockParts:
    """The family's traits, plus the optional tensors this file holds (layer 0 speaks for all;
    a layer missing one then fails at load, naming the tensor)."""
    fam, tensors = FAMILIES[r.arch], r.gguf.tensors
    window = int(r.get(Keys.SLIDING_WINDOW, 0) or 0) if fam.swa_pattern else 0
    if window < 0:
        raise GGUFError(r.gguf.path, f"sliding window {window} is negative")
    attn_scale = 1.0 / math.sqrt(head_dim)
    if r.arch == "gemma3" and n_layer == 62:  # llama.cpp: Gemma-3-27B scales by n_embd / n_head
        attn_scale = 1.0 / math.sqrt(n_embd / n_head)
    return BlockParts(
        rope_neox=fam.rope_neox,
        qkv_bias=fam.qkv_bias or Q_BIAS_TENSOR in tensors,
        qk_norm=fam.qk_norm or Q_NORM_TENSOR in tensors,
        post_norms=fam.post_norms or POST_ATTN_NORM_TENSOR in tensors,
        ffn_gelu=fam.ffn_gelu,
        embd_scale=math.sqrt(n_embd) if fam.embd_scale else 1.0,
        rope_freq_factors=ROPE_FREQS_TENSOR in tensors,
        sliding_window=window,
        rope_freq_base_swa=fam.rope_freq_base_swa,
        attn_scale=attn_scale,
    )


def _layer_windows(r: _Reader, window: int, n_layer: int) -> tuple[int, ...]:
    """Per layer, its sliding window or 0 (global): with a pattern p, layer il is local when
    il % p < p - 1 (llama.cpp's set_swa_pattern), so every p-th layer is global."""
    if not window:
        return (0,) * n_layer
    pattern = r.get(Keys.SLIDING_WINDOW_PATTERN, FAMILIES[r.arch].swa_pattern)
    if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
        raise GGUFError(r.gguf.path, f"sliding window pattern {pattern!r} is not a positive int")
    return tuple(window if il % pattern < pattern - 1 else 0 for il in range(n_layer))


def _rope_freq_factors(gguf: GGUFFile, rope_dim: int) -> tuple[float, ...]:
    info = gguf.tensors[ROPE_FREQS_TENSOR]
    if tuple(int(d) for d in info.shape) != (rope_dim // 2,) or info.ggml_type != GGMLType.F32:
        got = f"{info.ggml_type.name} {tuple(info.shape)}"
        raise GGUFError(
            gguf.path, f"tensor {ROPE_FREQS_TENSOR!r} is {got}, expected F32 ({rope_dim // 2},)"
        )
    factors = np.asarray(info.data).reshape(-1).view(np.float32)
    if not np.all(np.isfinite(factors) & (factors > 0)):
        raise GGUFError(gguf.path, f"tensor {ROPE_FREQS_TENSOR!r} holds a factor <= 0 or inf")
    return tuple(float(f) for f in factors)
