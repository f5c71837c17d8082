"""The model families the engine runs, and what each family's transformer block has.

One table, after llama.cpp's ``src/models/{llama,qwen2,qwen3,gemma3}.cpp`` and the hparams that
``llama-model.cpp`` sets per architecture.  ``engine.config.BlockParts`` resolves a family's
traits against one file (its metadata and the tensors it holds); the forward pass in
``engine/llama.py`` follows those flags and nothing else.

=========  ==========  ====================================================================
family     RoPE        block
=========  ==========  ====================================================================
llama      NORM pairs  pre-norm attention + SwiGLU; ``rope_freqs`` (Llama-3.1) if present
qwen2      NEOX halves Q/K/V biases; tied or separate output
qwen3      NEOX halves per-head RMSNorm of Q and K before RoPE; no biases
gemma3     NEOX halves embeddings × √n_embd; Q/K norms; norms after attention and FFN too;
                       GELU(tanh)-gated FFN; sliding-window attention on local layers (every
                       6th layer global) with local RoPE base 10000; tied output
=========  ==========  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """Traits of one architecture.  ``qkv_bias``, ``qk_norm`` and ``post_norms`` are required
    tensors in that family (their absence is an error naming the tensor); the other families may
    still have biases or Q/K norms, which the loader then finds by tensor presence."""

    rope_neox: bool = False  # rotate (i, i + rope_dim/2) instead of (2i, 2i + 1)
    qkv_bias: bool = False  # blk.N.attn_{q,k,v}.bias
    qk_norm: bool = False  # blk.N.attn_{q,k}_norm.weight, RMSNorm over each head
    post_norms: bool = False  # blk.N.post_attention_norm / post_ffw_norm (Gemma)
    ffn_gelu: bool = False  # GELU(tanh) gate instead of SiLU
    embd_scale: bool = False  # token embeddings multiplied by sqrt(n_embd)
    swa_pattern: int = 0  # with a sliding window: every swa_pattern-th layer is global
    rope_freq_base_swa: float = 0.0  # RoPE base of the sliding-window (local) layers


FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "qwen2": Family(rope_neox=True, qkv_bias=True),
    "qwen3": Family(rope_neox=True, qk_norm=True),
    "gemma3": Family(
        rope_neox=True,
        qk_norm=True,
        post_norms=True,
        ffn_gelu=True,
        embd_scale=True,
        swa_pattern=6,
        rope_freq_base_swa=10000.0,
    ),
}

# The architectures the engine runs (``general.architecture`` values), written once.
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(FAMILIES)
