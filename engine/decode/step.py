"""One decode step of every layer in one compiled call, for one sequence or several at once.

``DecodePlan`` lays a model's layers out for it (every matrix in one typed list, the vectors
stacked); ``decode_step_kernel`` gives the compiled step for the plan's types.  The step is one
parallel region (``kernels.phases``): phase 0 is the token embeddings, then each layer has the
phases ``QKV``, ``ATTENTION``, ``ATTN_OUT``, ``GATE_UP``, ``DOWN``.  The threads claim a phase's
items (16 matrix rows, computed for every sequence; or one (sequence, head) pair of attention);
whoever finishes its last item does the serial work up to the next phase's input
(``after_phase``) and opens it.

A sequence gets the same bits whatever it is batched with: each row's dot product for each
sequence has the bits of ``kernels.dot_int_in`` (``kernels.dot_int_rows``: that function for
one sequence, ``dot_int_tokens`` for several), and the norms, RoPE and attention run per
sequence.  ``engine.llama.forward`` runs a single sequence's step here (its
caches as one-element tuples), ``engine.decode.batch.forward_batch`` several (typed lists).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import get_num_threads, njit, prange
from numba.typed import List as TypedList

from engine.config import ModelConfig
from engine.kernels import (
    ACT_BLOCK,
    INT_DOT_TYPES,
    dot_int_rows,
    quantize_activations,
    type_mask,
)
from engine.kernels.decode import decode_row
from engine.kernels.phases import Phases, claim, finish, open_next, wait_open
from engine.ops import (
    add_bias,
    add_rms_norm,
    attend_pair,
    gated_act,
    head_rms_norm,
    rms_norm,
    rope_store,
)

if TYPE_CHECKING:
    from engine.decode.batch import BatchWorkspace
    from engine.llama import KVCache, LayerWeights, ModelWeights, Workspace


# The matrices of a layer in the order the decode step reads them.
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class DecodePlan:
    """Every layer's matrices in one typed list (7 per layer, LAYER_MATRICES order), their type
    codes and the vectors stacked: what ``decode_step_kernel`` needs to run all layers of one
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
# the kernel


def decode_step_kernel(embd_code: int, mat_types: int) -> Any:
    """The compiled decode step for a token embedding of type ``embd_code`` and layer matrices
    of the types in the bit set ``mat_types`` (``kernels.type_mask``), made on first use: a
    closure over both constants, so only those types' decoder and dot products compile, and
    numba's disk cache keeps one entry per combination (and per argument types: one sequence's
    caches as tuples, several as typed lists)."""
    return _make_decode_step(int(embd_code), int(mat_types))


def run_decode_step(
    w: ModelWeights, caches: Sequence[KVCache], tokens: np.ndarray,
    ws: Workspace | BatchWorkspace,
) -> None:  # fmt: skip
    """Every layer for one new token of each sequence: ``tokens[b]`` after ``caches[b]``'s
    positions, in the first ``len(caches)`` rows of ``ws``'s buffers (a ``llama.Workspace`` for
    one sequence, a ``decode.batch.BatchWorkspace`` for several).  On return ``ws.x + ws.o`` is
    each sequence's final residual.  The caller holds ``llama.FORWARD_LOCK``, has checked each
    cache's room, and advances the caches.  One sequence's caches go to the kernel as tuples,
    several as typed lists (numba compiles the two apart)."""
    c, parts, plan = w.config, w.config.parts, w.decode_plan
    assert plan is not None, "a decode step needs integer-dot weights (DecodePlan.build)"
    n = len(caches)
    pos = np.array([cache.n_past for cache in caches], np.int64)  # (n,)
    if n == 1:
        cache, p = caches[0], int(pos[0])
        k_caches, v_caches = (cache.k,), (cache.v,)
        cos, sin = cache.cos[:, p : p + 1], cache.sin[:, p : p + 1]  # (n_tables, 1, d/2)
    else:
        k_caches, v_caches = TypedList([cc.k for cc in caches]), TypedList([cc.v for cc in caches])
        # the RoPE angles of each sequence's position: (n_tables, n, d/2)
        cos = np.stack([cc.cos[:, cc.n_past] for cc in caches], axis=1)
        sin = np.stack([cc.sin[:, cc.n_past] for cc in caches], axis=1)
    flags = (parts.rope_neox, parts.qk_norm, parts.post_norms, parts.ffn_gelu)
    act = [tuple(a[:n] for a in bufs) for bufs in ws.act]  # 8-bit activations, 3 widths
    decode_step_kernel(w.token_embd.code, plan.mat_types)(
        tokens.astype(np.int64, copy=False), w.token_embd.data, plan.mats, plan.codes,
        plan.norms, plan.head_norms, plan.biases, k_caches, v_caches, pos, cos, sin,
        caches[0].layer_rope, caches[0].layer_window, c.rope_dim, np.float32(parts.attn_scale),
        np.float32(c.rms_eps), np.float32(parts.embd_scale), flags, ws.x[:n], ws.h[:n],
        ws.q[:n], ws.k[:n], ws.v[:n], ws.att[:n], ws.o[:n], ws.gate[:n], ws.up[:n], *act,
        Phases(decode_phases(c.n_layer)).counters, get_num_threads(),
    )  # fmt: skip


@functools.cache  # one closure (and one compiled kernel) per combination
def _make_decode_step(embd_code: int, mat_types: int) -> Any:
    @njit(cache=True, nogil=True, parallel=True)
    def decode_step(
        tokens, embd, mats, codes, norms, head_norms, biases, k_caches, v_caches, pos, cos, sin,
        layer_rope, layer_window, rope_dim, scale, eps, embd_scale, flags, x, h, q, k, v,
        att, o, gate, up, a_embd, a_q, a_ff, counters, n_threads,
    ):  # pragma: no cover - compiled  # fmt: skip
        """Every layer for one new token of each sequence b: ``tokens[b]`` at position
        ``pos[b]``, its caches ``k_caches[b]``, ``v_caches[b]`` ((n_layer, n_kv, n_ctx, hd)
        each); ``cos``/``sin``: (n_tables, n_seq, d/2), the angles of each sequence's position.

        Same computation as ``llama.forward`` op by op (same kernels, same 8-bit activations),
        in the phases of the module docstring.  On return ``x + o`` is each sequence's final
        residual (the output norm comes next).  x .. up: (n_seq, width) buffers; a_embd, a_q,
        a_ff: (values, scales, half sums) buffers of 8-bit activations of the three product
        widths.  flags: (rope_neox, qk_norm, post_norms, ffn_gelu) of config.parts; the q/k/v
        biases are always added (zeros when the model has none).  counters: those of a fresh
        ``kernels.phases.Phases(decode_phases(n_layer))``; n_threads: the caller's thread count
        (``numba.get_num_threads()`` inside would make the kernel uncachable)."""
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
                    elif kind == QKV:  # rows of q | k | v, each once for every sequence
                        xq, xd, xs = a_embd
                        kv0, v0 = n_q, n_q + n_kv  # where k's and v's rows start
                        dot_int_rows(mat_types, cq, wq, first, min(last, kv0), xq, xd, xs, q)
                        dot_int_rows(mat_types, ck, wk, max(first, kv0) - kv0,
                                     min(last, v0) - kv0, xq, xd, xs, k)  # fmt: skip
                        dot_int_rows(mat_types, cv, wv, max(first, v0) - v0, last - v0, xq, xd,
                                     xs, v)  # fmt: skip
                    elif kind == ATTENTION:  # (sequence, head) pairs: th = b * n_head + head
                        for th in range(first, last):
                            b = th // n_head  # row b of q and att, at position pos[b]
                            attend_pair(q, k_caches[b][il], v_caches[b][il], pos[b] - b, scale,
                                        layer_window[il], att, th, scores, acc)  # fmt: skip
                    elif kind == ATTN_OUT:
                        xq, xd, xs = a_q
                        dot_int_rows(mat_types, co, wo, first, last, xq, xd, xs, o)
                    elif kind == GATE_UP:  # rows of gate | up
                        xq, xd, xs = a_embd
                        dot_int_rows(mat_types, cg, wg, first, min(last, n_ff), xq, xd, xs, gate)
                        dot_int_rows(mat_types, cu, wu, max(first, n_ff) - n_ff, last - n_ff, xq,
                                     xd, xs, up)  # fmt: skip
                    else:  # DOWN
                        xq, xd, xs = a_ff
                        dot_int_rows(mat_types, cd, wd, first, last, xq, xd, xs, o)
                    if not finish(counters, ph, last - first, n_items):
                        continue
                    # this thread finished the phase: the serial work up to the next one
                    if ph > 0 and kind == QKV:
                        bias = biases[il]  # (n_q + 2 n_kv,): zeros when the model has none
                        add_bias(q, bias[:n_q])
                        add_bias(k, bias[n_q : n_q + n_kv])
                        add_bias(v, bias[n_q + n_kv :])
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

    return decode_step
