"""One decode step for several sequences at once: every weight row is read once for all of them.

Generation is bound by reading the weights: each new token of one sequence streams the whole
model from memory.  Sequences decoded together share that stream, so four of them cost little
more than one (llama.cpp's server does the same, "continuous batching").  Here each sequence
keeps its own KV cache and position; only the matrix products see the batch, as rows of the
activations.  ``engine.batcher`` decides which sequences step together.

The step computes, for each sequence, exactly what ``engine.llama.forward`` computes for it
alone (the fused decode step): the same 8-bit activations, the same integer dot products
(``kernels.dot_int_tokens`` gives each token the bits ``dot_int_in`` gives it), the same norms,
RoPE and attention kernels.  So a sequence's logits, and its greedy text, do not depend on what
it was batched with.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange
from numba.typed import List as TypedList

from engine.config import ModelConfig
from engine.errors import ContextOverflow
from engine.kernels import (
    ACT_BLOCK,
    INT_DOT_TYPES,
    dot_int_tokens,
    quantize_activations,
    type_kernels,
)
from engine.kernels.decode import decode_row
from engine.kernels.phases import Phases, claim, finish, open_next, wait_open
from engine.llama import (
    ATTENTION,
    ATTN_OUT,
    FORWARD_LOCK,
    GATE_UP,
    PHASES_PER_LAYER,
    QKV,
    KVCache,
    ModelWeights,
    add_rms_norm,
    after_phase,
    attend_pair,
    decode_phases,
    head_rms_norm,
    layer_input,
    phase_items,
    plan_layer,
    rope_store,
)


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


def decode_batch_kernel(embd_code: int, mat_types: int) -> Any:
    """The compiled batched step for these types, made on first use (as
    ``llama.decode_layers_kernel``: only these types compile, one cache entry each)."""
    return _make_decode_batch(int(embd_code), int(mat_types))


@functools.cache  # one closure (and one compiled kernel) per combination
def _make_decode_batch(embd_code: int, mat_types: int) -> Any:
    @njit(cache=True, nogil=True, parallel=True)
    def decode_batch(
        tokens, embd, mats, codes, norms, head_norms, biases, k_caches, v_caches, pos, cos, sin,
        layer_rope, layer_window, rope_dim, scale, eps, embd_scale, flags, x, h, q, k, v,
        att, o, gate, up, a_embd, a_q, a_ff, counters, n_threads,
    ):  # pragma: no cover - compiled  # fmt: skip
        """Every layer for one new token of each sequence b (``tokens[b]`` at ``pos[b]``, its
        caches ``k_caches[b]``, ``v_caches[b]``; ``cos``/``sin``: (n_tables, n_seq, d/2), the
        angles of each sequence's position), in the phases of ``llama.decode_layers`` (a
        matrix row is one item for every sequence; an attention item is one (sequence, head)
        pair).  The arguments otherwise as ``llama.decode_layers``; on return ``x + o`` is each
        sequence's final residual."""
        neox, qk_norm, post_norms, gelu = flags
        n_seq = tokens.shape[0]
        n_q, n_kv, n_ff = q.shape[1], k.shape[1], gate.shape[1]
        n_embd, hd, n_layer = x.shape[1], k_caches[0][0].shape[2], norms.shape[0]
        n_head = n_q // hd
        for _ in prange(n_threads):  # every thread runs every phase
            scores, acc = np.empty(pos.max() + 1, np.float32), np.empty(hd, np.float32)
            for ph in range(decode_phases(n_layer)):
                wait_open(counters, ph)
                il, kind = (ph - 1) // PHASES_PER_LAYER, (ph - 1) % PHASES_PER_LAYER
                w7, c7 = plan_layer(mats, codes, max(il, 0))
                wq, wk, wv, wo, wg, wu, wd = w7
                cq, ck, cv, co, cg, cu, cd = c7
                n_items, chunk = phase_items(ph, kind, n_q + 2 * n_kv, n_seq * n_head, 2 * n_ff,
                                             n_embd)  # fmt: skip
                while True:
                    first = claim(counters, ph, chunk)
                    if first >= n_items:
                        break
                    last = min(first + chunk, n_items)
                    if ph == 0:  # the token embeddings and the first layer's input
                        for b in range(n_seq):
                            decode_row(embd_code, embd[tokens[b]], x[b])
                            if embd_scale != 1.0:
                                for i in range(n_embd):
                                    x[b, i] *= embd_scale
                        o[:] = 0.0
                        layer_input(x, o, norms[0, 0], eps, h, a_embd)
                    elif kind == QKV:  # q, k, v: each row once for every sequence
                        xq, xd, xs = a_embd
                        bias = biases[il]
                        for r in range(first, last):
                            if r < n_q:
                                dot_int_tokens(mat_types, cq, wq[r], xq, xd, xs, q, r)
                                for b in range(n_seq):
                                    q[b, r] += bias[r]
                            elif r < n_q + n_kv:
                                dot_int_tokens(mat_types, ck, wk[r - n_q], xq, xd, xs, k, r - n_q)
                                for b in range(n_seq):
                                    k[b, r - n_q] += bias[r]
                            else:
                                rv = r - n_q - n_kv
                                dot_int_tokens(mat_types, cv, wv[rv], xq, xd, xs, v, rv)
                                for b in range(n_seq):
                                    v[b, rv] += bias[r]
                    elif kind == ATTENTION:  # (sequence, head) pairs
                        for th in range(first, last):
                            b = th // n_head
                            attend_pair(q[b : b + 1], k_caches[b][il], v_caches[b][il], pos[b],
                                        scale, layer_window[il], att[b : b + 1], th % n_head,
                                        scores, acc)  # fmt: skip
                    elif kind == ATTN_OUT:
                        xq, xd, xs = a_q
                        for r in range(first, last):
                            dot_int_tokens(mat_types, co, wo[r], xq, xd, xs, o, r)
                    elif kind == GATE_UP:
                        xq, xd, xs = a_embd
                        for r in range(first, last):
                            if r < n_ff:
                                dot_int_tokens(mat_types, cg, wg[r], xq, xd, xs, gate, r)
                            else:
                                ru = r - n_ff
                                dot_int_tokens(mat_types, cu, wu[ru], xq, xd, xs, up, ru)
                    else:  # DOWN
                        xq, xd, xs = a_ff
                        for r in range(first, last):
                            dot_int_tokens(mat_types, cd, wd[r], xq, xd, xs, o, r)
                    if not finish(counters, ph, last - first, n_items):
                        continue
                    # this thread finished the phase: the serial work up to the next one
                    if ph > 0 and kind == QKV:
                        if qk_norm:
                            head_rms_norm(q, head_norms[il, 0], eps)
                            head_rms_norm(k, head_norms[il, 1], eps)
                        rt = layer_rope[il]
                        for b in range(n_seq):
                            rope_store(q[b : b + 1], k[b : b + 1], v[b : b + 1], k_caches[b][il],
                                       v_caches[b][il], pos[b], cos[rt][b : b + 1],
                                       sin[rt][b : b + 1], rope_dim, neox)  # fmt: skip
                    elif ph > 0:
                        after_phase(kind, il, norms, eps, post_norms, gelu, x, h, o, att, gate,
                                    up, a_embd, a_q, a_ff)  # fmt: skip
                    open_next(counters, ph)

    return decode_batch


def can_batch(w: ModelWeights) -> bool:
    """Whether ``forward_batch`` serves this model (every layer matrix has integer dots)."""
    return w.decode_plan is not None


def forward_batch(
    w: ModelWeights, caches: Sequence[KVCache], tokens: np.ndarray, ws: BatchWorkspace
) -> np.ndarray:
    """One new token for each sequence (``tokens[b]`` after ``caches[b]``'s positions); advance
    every cache.  Returns the logits, (n_seq, n_vocab), a view on ``ws.logits``."""
    c, parts, plan = w.config, w.config.parts, w.decode_plan
    assert plan is not None, "forward_batch needs integer-dot weights (can_batch)"
    n = len(caches)
    assert 0 < n <= ws.n_seq and tokens.shape == (n,)
    for cache in caches:
        if cache.n_past + 1 > cache.n_ctx:
            raise ContextOverflow(cache.n_past + 1, cache.n_ctx)
    pos = np.array([cache.n_past for cache in caches], np.int64)  # (n,)
    # the RoPE angles of each sequence's position: (n_tables, n, rope_dim / 2)
    cos = np.stack([cache.cos[:, cache.n_past] for cache in caches], axis=1)
    sin = np.stack([cache.sin[:, cache.n_past] for cache in caches], axis=1)
    k_caches, v_caches = TypedList([cc.k for cc in caches]), TypedList([cc.v for cc in caches])
    eps, scale = np.float32(c.rms_eps), np.float32(parts.attn_scale)
    x, h, o = ws.x[:n], ws.h[:n], ws.o[:n]
    flags = (parts.rope_neox, parts.qk_norm, parts.post_norms, parts.ffn_gelu)
    act = [tuple(a[:n] for a in bufs) for bufs in ws.act]
    with FORWARD_LOCK:
        decode_batch_kernel(w.token_embd.code, plan.mat_types)(
            tokens, w.token_embd.data, plan.mats, plan.codes, plan.norms, plan.head_norms,
            plan.biases, k_caches, v_caches, pos, cos, sin, caches[0].layer_rope,
            caches[0].layer_window, c.rope_dim, scale, eps, np.float32(parts.embd_scale), flags,
            x, h, ws.q[:n], ws.k[:n], ws.v[:n], ws.att[:n],
            o, ws.gate[:n], ws.up[:n], *act, Phases(decode_phases(c.n_layer)).counters,
            get_num_threads(),
        )  # fmt: skip
        for cache in caches:
            cache.n_past += 1
        add_rms_norm(x, o, w.output_norm, eps, h)  # (n, n_embd) final norm of every sequence
        logits = ws.logits[:n]  # (n, n_vocab)
        out = w.output
        if out.ggml_type in INT_DOT_TYPES:  # each row once for all; the bits of one at a time
            xq, xd, xs = act[0]
            quantize_activations(h, xq, xd, xs)
            type_kernels(out.code).matmul_int(out.data, xq, xd, xs, logits)
        else:  # float weights: the path a single sequence takes, one sequence at a time
            for b in range(n):
                out.matmul(h[b : b + 1], out=logits[b : b + 1])
    return logits
