"""The compiled operations of a transformer block, shared by every forward path: RMSNorm (of
rows and of heads), biases, the gated activation (SwiGLU / GeGLU), RoPE with the KV-cache write,
and attention of one (position, head) pair, serial or over the threads.

Exact float code (no fastmath: see the note above ``attend_pair``), working in place in the
caller's buffers.  ``engine.llama.forward`` calls them op by op for a prompt batch;
``engine.decode.step`` inlines them into its one-region decode step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.kernels.blas import exp_span
from engine.kernels.simd import kv_store, kv_value, vaxpy_f32, vmla_f32, vsum, vzero


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
