"""One decode step for several sequences at once: every weight row is read once for all of them.

Generation is bound by reading the weights: each new token of one sequence streams the whole
model from memory.  Sequences decoded together share that stream, so four of them cost little
more than one (llama.cpp's server does the same, "continuous batching").  Here each sequence
keeps its own KV cache and position; only the matrix products see the batch, as rows of the
activations.  ``engine.decode.batcher`` decides which sequences step together.

The step is ``engine.decode.step``'s kernel, the one a single sequence's step runs too: each
sequence gets the same 8-bit activations, the same integer dot products (``dot_int_tokens``
gives each token the bits ``dot_int_in`` gives it), the same norms, RoPE and attention as
alone.  So a sequence's logits, and its greedy text, do not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.config import ModelConfig
from engine.decode.step import run_decode_step
from engine.errors import ContextOverflow
from engine.kernels import ACT_BLOCK, INT_DOT_TYPES, quantize_activations, type_kernels
from engine.llama import FORWARD_LOCK, KVCache, ModelWeights
from engine.ops import add_rms_norm


class BatchWorkspace:
    """Activation buffers for up to ``n_seq`` sequences of one decode step."""

    def __init__(self, config: ModelConfig, n_seq: int) -> None:
        c = config
        q_dim, kv_dim = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
        self.n_seq = n_seq
        f32 = np.float32
        self.x = np.empty((n_seq, c.n_embd), f32)  # residual stream, one row per sequence
        self.h = np.empty((n_seq, c.n_embd), f32)
        self.q = np.empty((n_seq, q_dim), f32)
        self.k = np.empty((n_seq, kv_dim), f32)
        self.v = np.empty((n_seq, kv_dim), f32)
        self.att = np.empty((n_seq, q_dim), f32)
        self.o = np.empty((n_seq, c.n_embd), f32)
        self.gate = np.empty((n_seq, c.n_ff), f32)
        self.up = np.empty((n_seq, c.n_ff), f32)
        self.logits = np.empty((n_seq, c.n_vocab), f32)
        # 8-bit activations (values, block scales, half sums) of the three product widths
        self.act = [
            (np.empty((n_seq, d), np.int8), np.empty((n_seq, d // ACT_BLOCK), f32),
             np.empty((n_seq, 2 * (d // ACT_BLOCK)), f32))
            for d in (c.n_embd, q_dim, c.n_ff)
        ]  # fmt: skip


def can_batch(w: ModelWeights) -> bool:
    """Whether ``forward_batch`` serves this model (every layer matrix has integer dots)."""
    return w.decode_plan is not None


def forward_batch(
    w: ModelWeights, caches: Sequence[KVCache], tokens: np.ndarray, ws: BatchWorkspace
) -> np.ndarray:
    """One new token for each sequence (``tokens[b]`` after ``caches[b]``'s positions); advance
    every cache.  Returns the logits, (n_seq, n_vocab), a view on ``ws.logits``."""
    c, plan = w.config, w.decode_plan
    assert plan is not None, "forward_batch needs integer-dot weights (can_batch)"
    n = len(caches)
    assert 0 < n <= ws.n_seq and tokens.shape == (n,)
    for cache in caches:
        if cache.n_past + 1 > cache.n_ctx:
            raise ContextOverflow(cache.n_past + 1, cache.n_ctx)
    eps = np.float32(c.rms_eps)
    x, h, o = ws.x[:n], ws.h[:n], ws.o[:n]
    with FORWARD_LOCK:
        run_decode_step(w, caches, tokens, ws)
        for cache in caches:
            cache.n_past += 1
        add_rms_norm(x, o, w.output_norm, eps, h)  # (n, n_embd) final norm of every sequence
        logits = ws.logits[:n]  # (n, n_vocab)
        out = w.output
        if out.ggml_type in INT_DOT_TYPES:  # each row once for all; the bits of one at a time
            xq, xd, xs = (a[:n] for a in ws.act[0])  # (n, n_embd) 8-bit activations
            quantize_activations(h, xq, xd, xs)
            type_kernels(out.code).matmul_int(out.data, xq, xd, xs, logits)
        else:  # float weights: the path a single sequence takes, one sequence at a time
            for b in range(n):
                out.matmul(h[b : b + 1], out=logits[b : b + 1])
    return logits
