"""Test-only yardsticks for the forward pass of every family, independent of ``engine`` (whose
type classes give only the byte offsets of the scale fields, for writing random blocks).

* :func:`reference_logits` — the exact computation: float64 numpy on the weights dequantized by
  gguf-py (``gguf.quants.dequantize``), read with gguf-py's ``GGUFReader``; architectures
  ``llama`` (with ``rope_freqs``), ``qwen2``, ``qwen3`` and ``gemma3``, after llama.cpp's
  ``src/models/*.cpp`` (written here from those files, not from the engine).  With
  ``emulate_llama_cpp=True`` it rounds where llama.cpp's CPU backend rounds (8-bit activation
  blocks before every quantized product, f16 activations for f16 weights, an f16 KV cache and
  f16 attention inputs), which gives llama.cpp's expected error on any model and type.
* :func:`write_tiny_llama` — a small random-weight GGUF (gguf-py's ``GGUFWriter``) of any of
  those architectures, with a byte-fallback SentencePiece vocabulary or the vocabulary of a
  llama.cpp vocab-only GGUF, its matrices in any supported tensor type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import quants  # only the scale fields' offsets, for random blocks
from tests.conftest import require_module

gguf = require_module("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFReader, GGUFWriter  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

# ----------------------------------------------------------------------------------------------
# the exact computation


def _fields(reader: GGUFReader) -> dict:
    out = {}
    skip = ("tokens", "scores", "token_type", "merges")  # big tokenizer arrays: not needed here
    for key, field in reader.fields.items():
        if not (key.startswith("tokenizer.ggml.") and key.endswith(skip)):
            out[key] = field.contents()
    return out


# Which activation quantization llama.cpp's CPU backend uses for each weight type (vec_dot_type).
_ACT_BLOCK = {
    QT.Q4_0: 32, QT.Q4_1: 32, QT.Q5_0: 32, QT.Q5_1: 32, QT.Q8_0: 32,
    QT.Q2_K: 256, QT.Q3_K: 256, QT.Q4_K: 256, QT.Q5_K: 256, QT.Q6_K: 256,
    QT.IQ4_NL: 32, QT.IQ4_XS: 256,
}  # fmt: skip


def _round_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


def _round_bf16(x: np.ndarray) -> np.ndarray:
    b = np.asarray(x, np.float32).view(np.uint32)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000  # round to nearest even
    return b.view(np.float32).astype(np.float64)


def _round_q8(x: np.ndarray, block: int) -> np.ndarray:
    """Activations as llama.cpp's q8_0 (block 32) or q8_K (block 256) hold them."""
    n, d = x.shape
    b = x.astype(np.float32).reshape(n, d // block, block)
    if block == 32:  # q8_0 / q8_1: d = amax / 127, q = round(x / d), d stored f16 (q8_1: f32 sum)
        amax = np.abs(b).max(axis=-1, keepdims=True)
        scale = amax / np.float32(127)
        inv = np.where(scale > 0, np.float32(1) / np.where(scale > 0, scale, 1), 0)
        q = np.round(b * inv)
        scale = scale.astype(np.float16).astype(np.float32)
    else:  # q8_K: iscale = -127 / (signed max), d = 1 / iscale in f32
        idx = np.abs(b).argmax(axis=-1)[..., None]
        vmax = np.take_along_axis(b, idx, axis=-1)
        iscale = np.where(vmax != 0, np.float32(-127) / np.where(vmax != 0, vmax, 1), 0)
        q = np.minimum(np.round(b * iscale), 127)
        scale = np.where(iscale != 0, 1 / np.where(iscale != 0, iscale, 1), 0)
    return (q * scale).reshape(n, d).astype(np.float64)


class Weights:
    """A GGUF's tensors dequantized by gguf-py.  ``keep=True`` keeps each dequantized matrix
    (float64: 8 bytes per weight) for repeated forwards (greedy runs)."""

    def __init__(self, path: Path, keep: bool = False) -> None:
        self.reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.md = _fields(self.reader)
        self.kept: dict[str, np.ndarray] | None = {} if keep else None

    def matrix(self, name: str) -> tuple[np.ndarray, QT]:
        t = self.tensors[name]
        w = None if self.kept is None else self.kept.get(name)
        if w is None:
            w = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
            w = w.reshape(int(np.prod(t.shape[1:])), int(t.shape[0]))  # (n_out, n_in)
            if self.kept is not None:
                self.kept[name] = w
        return w, t.tensor_type

    def vector(self, name: str) -> np.ndarray:
        return self.matrix(name)[0].reshape(-1)


def reference_logits(
    path: str | Path,
    tokens: list[int],
    emulate_llama_cpp: bool = False,
    weights: Weights | None = None,
) -> np.ndarray:
    """float64 (len(tokens), n_vocab) logits of a GGUF, teacher-forced from position 0
    (``weights``: a ``Weights`` of the same file kept between calls)."""
    W = weights or Weights(Path(path))
    md = W.md
    a = md["general.architecture"]
    n_embd, n_layer = md[f"{a}.embedding_length"], md[f"{a}.block_count"]
    n_head = md[f"{a}.attention.head_count"]
    n_kv = md.get(f"{a}.attention.head_count_kv", n_head)
    hd = md.get(f"{a}.attention.key_length", n_embd // n_head)
    rope_dim = md.get(f"{a}.rope.dimension_count", hd)
    base = md.get(f"{a}.rope.freq_base", 10000.0)
    scale = md.get(f"{a}.rope.scaling.factor", md.get(f"{a}.rope.scale_linear", 1.0)) or 1.0
    eps = md[f"{a}.attention.layer_norm_rms_epsilon"]
    emu = emulate_llama_cpp
    neox = a in ("qwen2", "qwen3", "gemma3")  # llama.cpp's LLAMA_ROPE_TYPE_NEOX families
    gemma = a == "gemma3"
    window = md.get(f"{a}.attention.sliding_window", 0) if gemma else 0
    pattern = md.get(f"{a}.attention.sliding_window_pattern", 6)

    def mm(x: np.ndarray, name: str) -> np.ndarray:
        w, qt = W.matrix(name)
        if emu and qt in _ACT_BLOCK:
            x = _round_q8(x, _ACT_BLOCK[qt])
        elif emu and qt == QT.F16:
            x = _round_f16(x)
        elif emu and qt == QT.BF16:
            x = _round_bf16(x)
        return x @ w.T

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * W.vector(name)

    def proj(x: np.ndarray, name: str) -> np.ndarray:  # a product plus its bias, if any
        y = mm(x, name + ".weight")
        return y + W.vector(name + ".bias") if name + ".bias" in W.tensors else y

    n = len(tokens)
    factors = W.vector("rope_freqs.weight") if "rope_freqs.weight" in W.tensors else 1.0
    inv_freq = base ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim) / factors
    theta = np.outer(np.arange(n, dtype=np.float64) / scale, inv_freq)  # (n, rope_dim/2)
    # Gemma-3's local layers: RoPE base 10000 without scaling
    theta_local = np.outer(
        np.arange(n, dtype=np.float64),
        10000.0 ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim),
    )

    def rope(x: np.ndarray, heads: int, th: np.ndarray) -> np.ndarray:
        cos, sin = np.cos(th)[:, None, :], np.sin(th)[:, None, :]  # (n, 1, rope_dim/2)
        x = x.reshape(n, heads, hd).copy()  # (n, heads, hd)
        if neox:  # NEOX style: dimension i with i + rope_dim/2
            i0, i1 = slice(0, rope_dim // 2), slice(rope_dim // 2, rope_dim)
        else:  # NORM style: adjacent pairs
            i0, i1 = slice(0, rope_dim, 2), slice(1, rope_dim, 2)
        x0, x1 = x[..., i0].copy(), x[..., i1].copy()
        x[..., i0] = x0 * cos - x1 * sin
        x[..., i1] = x0 * sin + x1 * cos
        return x

    def head_norm(x: np.ndarray, heads: int, name: str) -> np.ndarray:
        x = x.reshape(n, heads, hd)
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * W.vector(name)

    emb, _ = W.matrix("token_embd.weight")
    x = emb[np.asarray(tokens)]  # (n, n_embd)
    if gemma:
        x = x * np.sqrt(n_embd)
    causal = np.triu(np.full((n, n), -np.inf), 1)  # (n, n)
    ij = np.arange(n)[:, None] - np.arange(n)[None, :]  # query pos - key pos
    for il in range(n_layer):
        p = f"blk.{il}."
        local = window > 0 and il % pattern < pattern - 1
        mask = np.where(ij >= window, -np.inf, causal) if local else causal
        h = norm(x, p + "attn_norm.weight")
        q, k = proj(h, p + "attn_q"), proj(h, p + "attn_k")
        if p + "attn_q_norm.weight" in W.tensors:
            q = head_norm(q, n_head, p + "attn_q_norm.weight")
            k = head_norm(k, n_kv, p + "attn_k_norm.weight")
        q = rope(q, n_head, theta_local if local else theta)  # (n, n_head, hd)
        k = rope(k, n_kv, theta_local if local else theta)  # (n, n_kv, hd)
        v = proj(h, p + "attn_v").reshape(n, n_kv, hd)  # (n, n_kv, hd)
        if emu:  # f16 KV cache; q and the probabilities meet f16 operands
            q, k, v = _round_f16(q), _round_f16(k), _round_f16(v)
        att = np.empty((n, n_head, hd))
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask  # (n, n) (scale: all but Gemma-27B)
            pr = np.exp(s - s.max(axis=-1, keepdims=True))
            pr /= pr.sum(axis=-1, keepdims=True)
            if emu:
                pr = _round_f16(pr)
            att[:, hh] = pr @ v[:, kv]
        o = mm(att.reshape(n, n_head * hd), p + "attn_output.weight")
        if gemma:
            o = norm(o, p + "post_attention_norm.weight")
        x = x + o
        h = norm(x, p + "ffn_norm.weight")
        g = mm(h, p + "ffn_gate.weight")
        if gemma:  # GELU, tanh approximation
            act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))
        else:  # SiLU
            act = g / (1 + np.exp(-g))
        o = mm(act * mm(h, p + "ffn_up.weight"), p + "ffn_down.weight")
        if gemma:
            o = norm(o, p + "post_ffw_norm.weight")
        x = x + o
    out_name = "output.weight" if "output.weight" in W.tensors else "token_embd.weight"
    return mm(norm(x, "output_norm.weight"), out_name)


# ----------------------------------------------------------------------------------------------
# tiny random models


def copy_tokenizer(vocab: Path, w: GGUFWriter) -> int:
    """Copy the ``tokenizer.*`` keys of a (vocab-only) GGUF into ``w``; the vocabulary size."""
    r = GGUFReader(str(vocab))
    n_vocab = 0
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        sub = field.types[1] if len(field.types) > 1 else None
        w.add_key_value(key, value, field.types[0], sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    return n_vocab


# Types gguf-py cannot quantize: their blocks are random bytes with the f16 scale fields
# (``engine.quants``' ``f16_offsets``) set to moderate, finite scales.
RANDOM_BLOCK_TYPES = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_NL, QT.IQ4_XS)


def quantized_tensor(w: np.ndarray, qtype: QT, rng: np.random.Generator) -> np.ndarray:
    """float32 (n_out, n_in) → the bytes (or F32/F16 values) GGUFWriter stores for ``qtype``."""
    if qtype == QT.F32:
        return w.astype(np.float32)
    if qtype == QT.F16:
        return w.astype(np.float16)
    if qtype not in RANDOM_BLOCK_TYPES:
        return quantize(w.astype(np.float32), qtype)
    layout = quants.quant_type(int(qtype))
    offsets = layout.f16_offsets
    n_out, n_in = w.shape
    nb = n_in // layout.block_size
    blocks = rng.integers(0, 256, size=(n_out * nb, layout.type_size), dtype=np.uint8)
    for off in offsets:
        d = rng.uniform(0.5, 1.5, n_out * nb).astype(np.float16)
        blocks[:, off : off + 2] = d.view(np.uint8).reshape(-1, 2)
    target = float(np.std(w))  # rescale every scale field so the weights have w's spread
    got = float(np.std(dequantize(blocks, qtype)))
    for off in offsets:
        d = blocks[:, off : off + 2].copy().view(np.float16).astype(np.float32) * (target / got)
        blocks[:, off : off + 2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(n_out, nb * layout.type_size)


SPM_WORDS = ["▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁blood", "▁pressure", "▁dose"]


def spm_vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, 256 byte tokens, then words and letters: a byte-fallback SPM vocab."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    extra = SPM_WORDS + ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    extra += ["▁" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    extra += [f"▁w{i}" for i in range(n_vocab)]
    extra = list(dict.fromkeys(extra))  # each piece once
    tokens += extra[: n_vocab - len(tokens)]
    types += [1] * (n_vocab - len(types))
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores, types


def write_tiny_llama(
    path: Path,
    qtype: QT,
    *,
    n_vocab: int = 320,
    n_embd: int = 256,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 512,
    rope_dim: int | None = None,
    rope_scale: float | None = None,
    tied: bool = False,
    embd_type: QT | None = None,
    seed: int = 0,
    arch: str = "llama",
    vocab: Path | None = None,
    head_dim: int | None = None,
    rope_freqs: bool = False,
    sliding_window: int = 0,
    swa_pattern: int | None = None,
) -> Path:
    """A random-weight GGUF of architecture ``arch`` (llama, qwen2, qwen3, gemma3) whose
    matrices are of type ``qtype`` (norms and biases stay F32), with that architecture's
    tensors (qwen2: Q/K/V biases; qwen3, gemma3: Q/K norms; gemma3: post-norms) and, for llama,
    ``rope_freqs`` (Llama-3.1 frequency factors) if asked.  ``vocab``: a llama.cpp vocab-only
    GGUF whose tokenizer is copied (n_vocab is then its size); else a small SPM vocabulary."""
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}-{qtype.name}")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    if head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_rope_dimension_count(rope_dim or hd)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1e6)
    if rope_scale:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_scale)
    if sliding_window:
        w.add_sliding_window(sliding_window)
    if swa_pattern:
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", swa_pattern)
    w.add_layer_norm_rms_eps(1e-5)
    if vocab is None:
        w.add_vocab_size(n_vocab)
        tokens, scores, types = spm_vocab(n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
    else:
        n_vocab = copy_tokenizer(vocab, w)

    def mat(name: str, n_out: int, n_in: int, t: QT = qtype) -> None:
        values = rng.standard_normal((n_out, n_in)).astype(np.float32) / np.sqrt(n_in)
        w.add_tensor(name, quantized_tensor(values, t, rng), raw_dtype=t)

    def vec(name: str, n: int = n_embd, mean: float = 1.0) -> None:
        w.add_tensor(name, (mean + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd, embd_type or qtype)
    if rope_freqs:  # like Llama-3.1's: 1 for high frequencies up to 8 for the lowest
        w.add_tensor("rope_freqs.weight", np.geomspace(1.0, 8.0, (rope_dim or hd) // 2,
                                                       dtype=np.float32))  # fmt: skip
    for i in range(n_layer):
        vec(f"blk.{i}.attn_norm.weight")
        mat(f"blk.{i}.attn_q.weight", n_head * hd, n_embd)
        mat(f"blk.{i}.attn_k.weight", n_head_kv * hd, n_embd)
        mat(f"blk.{i}.attn_v.weight", n_head_kv * hd, n_embd)
        if arch == "qwen2":
            vec(f"blk.{i}.attn_q.bias", n_head * hd, 0.0)
            vec(f"blk.{i}.attn_k.bias", n_head_kv * hd, 0.0)
            vec(f"blk.{i}.attn_v.bias", n_head_kv * hd, 0.0)
        if arch in ("qwen3", "gemma3"):
            vec(f"blk.{i}.attn_q_norm.weight", hd)
            vec(f"blk.{i}.attn_k_norm.weight", hd)
        mat(f"blk.{i}.attn_output.weight", n_embd, n_head * hd)
        if arch == "gemma3":
            vec(f"blk.{i}.post_attention_norm.weight")
            vec(f"blk.{i}.post_ffw_norm.weight")
        vec(f"blk.{i}.ffn_norm.weight")
        mat(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    vec("output_norm.weight")
    if not tied:
        mat("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
