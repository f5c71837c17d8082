"""How fast a generation-step product streams Q4_K weights, from the cache and from memory, with
and without software prefetch (the measurement behind ``kernels.simd.PREFETCH_AHEAD``).

    python scripts/bench_prefetch.py [--gib 1.6] [--threads 2] [--distances 512,2048,8192]

Times one token's product (8-bit activations, the engine's ``dot_q4_k`` loop body) over a
random Q4_K matrix of 4096 columns: one of 11008 rows (25 MB: it stays in a large last-level
cache) and one of ``--gib`` GiB (it streams from memory), and prints the weight bytes read per
second for: the engine's kernel (prefetching ``PREFETCH_AHEAD`` ahead), the same loop without
prefetch, with prefetch at each of ``--distances``, and with each row requested at once
before its product.  Variants are compiled here, not in the engine (best of 5 passes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.constants import GGMLType
from engine.kernels import quantize_activations
from engine.kernels.kquants import Q4, _super_block, dot_q4_k
from engine.kernels.simd import f16x2, prefetch, scales16_k, vaxpy, vmins, vsum, vzero

N_IN, ROW_BYTES = 4096, 144 * 4096 // 256


def q4_k_dot(ahead: int):
    """The Q4_K dot product with ``ahead`` bytes of prefetch per super-block (0: none)."""

    @njit(inline="always")
    def dot(row, xq, xd, xs):
        acc = vzero()
        for i in range(xd.shape[0] // 8):
            o = i * 144
            if ahead:
                for j in range(0, 144, 64):
                    prefetch(row, o + ahead + j)
                prefetch(row, o + ahead + 143)
            d, dmin = f16x2(row, o)
            sc = scales16_k(row, o + 4)
            acc = vaxpy(acc, vmins(sc, xs, 16 * i, True), -dmin)
            acc = vaxpy(acc, _super_block(Q4, row, o, xq, xd, 8 * i, sc), d)
        return vsum(acc)

    return dot


def product(dot, burst: int = 0):
    @njit(parallel=True)
    def run(w, xq, xd, xs, y):
        for r in prange(w.shape[0]):
            row = w[r]
            if burst:  # the whole row ``burst`` bytes ahead, before the product
                for j in range(0, row.shape[0], 64):
                    prefetch(row, burst + j)
            y[r] = dot(row, xq, xd, xs)

    return run


def random_q4_k(n_rows: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.integers(0, 256, size=(n_rows, ROW_BYTES), dtype=np.uint8)
    scales = np.frombuffer(np.full(2, 0.01, np.float16).tobytes(), np.uint8)
    w.reshape(-1, 144)[:, 0:4] = scales  # finite d and dmin
    return w


def gb_per_s(run, w: np.ndarray, acts: tuple[np.ndarray, ...]) -> float:
    y = np.empty(w.shape[0], np.float32)
    run(w, *acts, y)  # compile
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        run(w, *acts, y)
        best = min(best, time.perf_counter() - t0)
    return w.nbytes / best / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distances", default="512,2048,8192")
    args = ap.parse_args(argv)
    numba.set_num_threads(args.threads)
    x = np.random.default_rng(1).standard_normal((1, N_IN)).astype(np.float32)
    xq, xd = np.empty((1, N_IN), np.int8), np.empty((1, N_IN // 32), np.float32)
    xs = np.empty((1, N_IN // 16), np.float32)
    quantize_activations(x, xq, xd, xs)
    acts = (xq[0], xd[0], xs[0])
    variants = [("engine (dot_q4_k)", product(dot_q4_k)), ("no prefetch", product(q4_k_dot(0)))]
    variants += [(f"prefetch {d} B ahead", product(q4_k_dot(d)))
                 for d in map(int, args.distances.split(","))]  # fmt: skip
    variants.append(("whole row 2 rows ahead", product(q4_k_dot(0), burst=2 * ROW_BYTES)))
    n_big = int(args.gib * 2**30) // ROW_BYTES
    for label, w in (("11008 rows (cache)", random_q4_k(11008)),
                     (f"{n_big} rows ({args.gib} GiB, memory)", random_q4_k(n_big))):  # fmt: skip
        print(f"{label}, {GGMLType.Q4_K.name}, {args.threads} threads:")
        for name, run in variants:
            print(f"  {name:26s} {gb_per_s(run, w, acts):6.1f} GB/s", flush=True)
        del w
    return 0


if __name__ == "__main__":
    sys.exit(main())
