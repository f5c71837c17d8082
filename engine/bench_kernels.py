"""Micro-benchmark of the matrix kernels on SmolLM2-135M's shapes (and K-quant variants).

``python -m engine.bench_kernels [--threads N] [--types Q4_1,Q8_0,...] [--n-tok 1,256]``
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
    from engine.quants import quantize_weights

    layout = GGML_BLOCK_LAYOUT[ggml_type]
    if layout.block_size == 1:
        x = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(np.float32)
        return QuantMatrix(quantize_weights(x, ggml_type), ggml_type, n_in)
    rng = np.random.default_rng(seed)
    n_blocks = n_out * n_in // layout.block_size
    blocks = rng.integers(0, 256, size=(n_blocks, layout.type_size), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, layout.type_size // 2)) * 0.01).astype(np.float16)
    for offset in _scale_offsets(ggml_type):
        blocks[:, offset : offset + 2] = scales[:, 0:1].view(np.uint8).reshape(n_blocks, 2)
    return QuantMatrix(blocks.reshape(n_out, -1), ggml_type, n_in)


def _scale_offsets(ggml_type: GGMLType) -> tuple[int, ...]:
    return {
        GGMLType.Q4_0: (0,),
        GGMLType.Q4_1: (0, 2),
        GGMLType.Q5_0: (0,),
        GGMLType.Q5_1: (0, 2),
        GGMLType.Q8_0: (0,),
        GGMLType.Q2_K: (80, 82),
        GGMLType.Q3_K: (108,),
        GGMLType.Q4_K: (0, 2),
        GGMLType.Q5_K: (0, 2),
        GGMLType.Q6_K: (208,),
    }[ggml_type]


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


def bench_matmuls(types: list[GGMLType], n_toks: list[int], out_type: GGMLType = GGMLType.Q8_0) -> list[dict]:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--types", default="Q4_1,Q4_K,Q6_K")
    parser.add_argument("--n-tok", default="1,256")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time")
    args = parser.parse_args(argv)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if args.threads:
        set_threads(args.threads)
    types = [GGMLType[t] for t in args.types.split(",")]
    n_toks = [int(n) for n in args.n_tok.split(",")]
    t0 = time.perf_counter()
    rows = bench_matmuls(types, n_toks)
    for r in rows:
        if args.json:
            print(json.dumps(r))
            continue
        rate = f"{r['tokens_per_s']:8.1f} tok/s" if "tokens_per_s" in r else f"{r['rows_per_s']:10.3g} rows/s"
        print(f"{r['type']:5} n_tok={r['n_tok']:<4} {r['matrix']:34} {r['ms']:9.3f} ms {r['weight_GBps']:7.2f} GB/s {rate}")
    print(f"threads={get_threads()} wall={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
