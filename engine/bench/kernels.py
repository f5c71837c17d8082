"""Micro-benchmark of the matrix kernels on SmolLM2-135M's shapes (and K-quant variants).

``python -m engine.bench.kernels [--threads N] [--types Q4_1,Q8_0,...] [--n-tok 1,256]``
prints, per weight type and shape, the time of ``QuantMatrix.matmul``, the weight bytes
streamed per second and output rows per second, then the sum over one SmolLM2 token (30
layers of q/k/v/o/gate/up/down + the 49152-row output).  Random weights: speed does not
depend on the values.  ``bench_matmuls`` is what ``python -m engine bench`` can call.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from engine.constants import GGML_BLOCK_LAYOUT, GGMLType
from engine.kernels import QuantMatrix, get_threads, set_threads

# (name, n_out, n_in, count per token) for SmolLM2-135M: 30 layers, dim 576, ffn 1536,
# 9 heads / 3 KV heads of 64; the tied Q8_0 token embedding is the output matrix.
SMOLLM2_MATRICES = [
    ("attn_q", 576, 576, 30),
    ("attn_k", 192, 576, 30),
    ("attn_v", 192, 576, 30),
    ("attn_output", 576, 576, 30),
    ("ffn_gate", 1536, 576, 30),
    ("ffn_up", 1536, 576, 30),
    ("ffn_down", 576, 1536, 30),
]
SMOLLM2_OUTPUT = ("output", 49152, 576, 1)


def random_quant_matrix(ggml_type: GGMLType, n_out: int, n_in: int, seed: int = 0) -> QuantMatrix:
    """Random bytes with small finite f16 scales (valid blocks of any type)."""
    from engine.quants import quant_type, quantize_weights

    layout = GGML_BLOCK_LAYOUT[ggml_type]
    if layout.block_size == 1:
        x = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(np.float32)
        return QuantMatrix(quantize_weights(x, ggml_type), ggml_type, n_in)
    rng = np.random.default_rng(seed)
    n_blocks = n_out * n_in // layout.block_size
    blocks = rng.integers(0, 256, size=(n_blocks, layout.type_size), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, layout.type_size // 2)) * 0.01).astype(np.float16)
    for offset in quant_type(ggml_type).f16_offsets:
        blocks[:, offset : offset + 2] = scales[:, 0:1].view(np.uint8).reshape(n_blocks, 2)
    return QuantMatrix(blocks.reshape(n_out, -1), ggml_type, n_in)


# Weight types whose products llama.cpp's CPU backend takes with Q8_K activations (its
# vec_dot_type); the others' with Q8_0 / Q8_1.
Q8_K_ACTIVATION_TYPES = frozenset(
    {GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.IQ4_XS}
)

CLOCK = time.perf_counter  # --cpu-time: time.process_time (one thread on a busy machine)


def time_matmul(m: QuantMatrix, n_tok: int, min_seconds: float = 0.3) -> float:
    """Best seconds per ``matmul`` call of ``n_tok`` rows (a few repetitions)."""
    x = np.random.default_rng(1).standard_normal((n_tok, m.n_in)).astype(np.float32)
    out = np.empty((n_tok, m.n_out), np.float32)
    m.matmul(x, out=out)  # compile / warm
    best, spent, reps = float("inf"), 0.0, 0
    while spent < min_seconds or reps < 3:
        t0 = CLOCK()
        m.matmul(x, out=out)
        dt = CLOCK() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def bench_matmuls(
    types: list[GGMLType], n_toks: list[int], out_type: GGMLType = GGMLType.Q8_0
) -> list[dict]:
    """Time every SmolLM2 matrix for each layer type and token count; one dict per case."""
    rows = []
    for ggml_type in types:
        for n_tok in n_toks:
            total_s, total_bytes = 0.0, 0
            for name, n_out, n_in, count in [*SMOLLM2_MATRICES, SMOLLM2_OUTPUT]:
                t = out_type if name == "output" else ggml_type
                if n_in % GGML_BLOCK_LAYOUT[t].block_size:
                    continue
                m = random_quant_matrix(t, n_out, n_in)
                dt = time_matmul(m, n_tok)
                total_s += dt * count
                total_bytes += m.nbytes * count
                rows.append(
                    {
                        "type": t.name,
                        "matrix": name,
                        "shape": [n_out, n_in],
                        "n_tok": n_tok,
                        "ms": dt * 1e3,
                        "weight_GBps": m.nbytes / dt / 1e9,
                        "rows_per_s": n_out * n_tok / dt,
                    }
                )
            rows.append(
                {
                    "type": ggml_type.name,
                    "matrix": "one SmolLM2 token (all matrices)",
                    "n_tok": n_tok,
                    "ms": total_s * 1e3,
                    "weight_GBps": total_bytes / total_s / 1e9,
                    "tokens_per_s": n_tok / total_s,
                }
            )
    return rows


def llamacpp_scheme_product(w: np.ndarray, x: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """x @ w.T as llama.cpp's CPU backend computes it, simulated in float64: activations
    quantized to its vec_dot type (Q8_1 with f16 scale and sum for Q4_1/Q5_1, Q8_0 with f16
    scale for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_K with f32 scale per 256 for the K-quants and IQ4_XS)."""
    from engine.quants import quantize_q8_0, quantize_q8_k

    if ggml_type in Q8_K_ACTIVATION_TYPES:
        qs, d = quantize_q8_k(x)
        xs = qs.reshape(*x.shape[:-1], -1, 256) * d[..., None].astype(np.float64)
    else:
        qs, d = quantize_q8_0(x)
        d16 = d.astype(np.float16).astype(np.float64)
        xs = qs.reshape(*x.shape[:-1], -1, 32) * d16[..., None]
    return xs.reshape(x.shape) @ w.T


def accuracy(m: QuantMatrix, x: np.ndarray) -> dict:
    """RMS error of our product and of llama.cpp's scheme against exact float64."""
    from engine.quants import dequantize

    w = dequantize(m.data, m.ggml_type).astype(np.float64)
    exact = x.astype(np.float64) @ w.T
    ours = m.matmul(x).astype(np.float64)
    ref = llamacpp_scheme_product(w, x, m.ggml_type)
    scale = np.sqrt(np.mean(exact**2))
    return {
        "type": m.ggml_type.name,
        "shape": [m.n_out, m.n_in],
        "n_tok": x.shape[0],
        "rms_exact": float(scale),
        "rms_err_ours": float(np.sqrt(np.mean((ours - exact) ** 2))),
        "rms_err_llamacpp_scheme": float(np.sqrt(np.mean((ref - exact) ** 2))),
    }


def crossover(types: list[GGMLType], n_toks: list[int]) -> list[dict]:
    """Time the three paths (8-bit integer dots, float tiles, BLAS bands) on ffn_up's shape for
    each n_tok."""
    from engine import kernels

    saved = kernels.FLOAT_PATH_MIN_TOKENS, kernels.BLAS_PATH_MIN_TOKENS
    paths = {"int_ms": (1 << 30, 1 << 30), "float_ms": (0, 1 << 30), "blas_ms": (0, 0)}
    rows = []
    try:
        for ggml_type in types:
            m = random_quant_matrix(ggml_type, 1536, 576 if ggml_type.name[-1] != "K" else 1536)
            for n_tok in n_toks:
                row = {"type": ggml_type.name, "n_tok": n_tok}
                for path, thresholds in paths.items():
                    kernels.FLOAT_PATH_MIN_TOKENS, kernels.BLAS_PATH_MIN_TOKENS = thresholds
                    row[path] = time_matmul(m, n_tok, min_seconds=0.1) * 1e3
                rows.append(row)
    finally:
        kernels.FLOAT_PATH_MIN_TOKENS, kernels.BLAS_PATH_MIN_TOKENS = saved
    return rows


def activations(n_tok: int, n_in: int, seed: int = 2) -> np.ndarray:
    """Hidden-state-like rows: unit normal with a few large outlier channels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
    x[:, rng.choice(n_in, 4, replace=False)] *= 25
    return x


def accuracy_cases(types: list[GGMLType], n_toks: list[int], gguf_path: str | None):
    """(matrix, activations) pairs: random matrices, or the first of each type in a GGUF."""
    mats = []
    if gguf_path:
        import gguf  # dev-only reference reader

        seen = set()
        for t in gguf.GGUFReader(gguf_path).tensors:
            ggml_type = GGMLType(int(t.tensor_type))
            if ggml_type in types and ggml_type not in seen and len(t.shape) == 2:
                seen.add(ggml_type)
                data = np.asarray(t.data).view(np.uint8)
                n_in = int(t.shape[0])
                mats.append(QuantMatrix(data.reshape(int(t.shape[1]), -1)[:4096], ggml_type, n_in))
    else:
        mats = [random_quant_matrix(t, 512, 1536) for t in types]
    for m in mats:
        for n_tok in n_toks:
            yield m, activations(n_tok, m.n_in)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m engine.bench.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--types", default="Q4_1,Q4_K,Q6_K")
    parser.add_argument("--n-tok", default="1,256")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time")
    parser.add_argument(
        "--crossover", action="store_true", help="int vs float vs BLAS path per n_tok"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="RMS error vs float64 and llama.cpp"
    )
    parser.add_argument(
        "--gguf", help="with --accuracy: real matrices of this file (needs gguf-py)"
    )
    args = parser.parse_args(argv)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if args.threads:
        set_threads(args.threads)
    types = [GGMLType[t] for t in args.types.split(",")]
    n_toks = [int(n) for n in args.n_tok.split(",")]
    t0 = time.perf_counter()
    if args.crossover:
        rows = crossover(types, n_toks)
    elif args.accuracy:
        rows = [accuracy(m, x) for m, x in accuracy_cases(types, n_toks, args.gguf)]
    else:
        rows = bench_matmuls(types, n_toks)
    for r in rows:
        if args.json or args.crossover or args.accuracy:
            print(json.dumps(r))
            continue
        rate = (
            f"{r['tokens_per_s']:8.1f} tok/s"
            if "tokens_per_s" in r
            else f"{r['rows_per_s']:10.3g} rows/s"
        )
        head = f"{r['type']:5} n_tok={r['n_tok']:<4} {r['matrix']:34}"
        print(f"{head} {r['ms']:9.3f} ms {r['weight_GBps']:7.2f} GB/s {rate}")
    print(f"threads={get_threads()} wall={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
