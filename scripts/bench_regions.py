"""What one parallel region costs: the same Q4_K product in 1 region or split into many.

    python scripts/bench_regions.py [--rows 200000] [--threads 2]

A decode step used to open one numba ``prange`` region per matrix product (~90 for a 1.1B
step); each costs a wake-up of the OpenMP thread, which sleeps between regions under the
engine's default ``OMP_WAIT_POLICY=passive``.  This times a random Q4_K matrix of 2,048 columns
(the 1.1B's width) as one product, then cut into products of 5,632, 2,048 and 256 rows (one
region each), and prints the cost per region over the one-region time.  The engine's decode
step now runs in one region (``engine/kernels/phases.py``).  Compare with
``OMP_WAIT_POLICY=active`` (spinning threads: cheap regions on an idle machine, collapse on a
shared one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import engine  # noqa: F401  (sets the OpenMP wait policy before numba loads OpenMP)
from engine.bench.kernels import random_quant_matrix
from engine.constants import GGMLType
from engine.kernels import quantize_activations
from engine.kernels.kquants import Q4, dot_kquant

from numba import njit, prange, set_num_threads  # isort: skip


@njit(parallel=True)
def products(w, xq, xd, xs, y, rows):  # pragma: no cover - compiled
    """The rows of ``w`` · x, ``rows`` rows per parallel region."""
    for first in range(0, w.shape[0], rows):
        for r in prange(first, min(first + rows, w.shape[0])):
            y[r] = dot_kquant(Q4, w[r], xq[0], xd[0], xs[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="matrix rows (230 MB at 200,000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    set_num_threads(args.threads)
    n_in = 2048
    w = random_quant_matrix(GGMLType.Q4_K, args.rows, n_in).data
    x = np.random.default_rng(0).standard_normal((1, n_in)).astype(np.float32)
    xq, xd = np.empty((1, n_in), np.int8), np.empty((1, n_in // 32), np.float32)
    xs = np.empty((1, n_in // 16), np.float32)
    quantize_activations(x, xq, xd, xs)
    y = np.zeros(args.rows, np.float32)
    base = None
    for rows in (args.rows, 5632, 2048, 256):
        products(w, xq, xd, xs, y, rows)
        best = min(_timed(products, w, xq, xd, xs, y, rows) for _ in range(args.repeat))
        regions = -(-args.rows // rows)
        base = best if base is None else base
        extra = (best - base) / max(regions - 1, 1) * 1e6
        print(f"{regions:5d} regions of {min(rows, args.rows):6d} rows: {best * 1e3:7.2f} ms "
              f"({w.nbytes / best / 1e9:5.1f} GB/s), {extra:6.1f} µs per extra region")  # fmt: skip


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
