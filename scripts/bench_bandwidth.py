"""The machine's memory read bandwidth, the limit of token generation on a large model.

Generating one token reads every weight once, so ``tokens/s <= bandwidth / bytes_per_token``.
This probe sums a buffer far larger than the caches with a numba ``prange`` loop on the given
number of threads (the same kind of loop as the engine's kernels) and keeps the best of a few
passes::

    python scripts/bench_bandwidth.py --gib 2 --threads 2             # prints GB/s
    python scripts/bench_bandwidth.py --model MODEL.gguf              # + the tok/s limit

With ``--model`` it also prints the bytes a decode step reads (the file's tensor data) and the
generation limit ``bandwidth / bytes``: a measured generation speed divided by it is the
"fraction of the machine's limit" of the README's tables.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _sum_rows(buf: np.ndarray) -> int:  # buf: (rows, 8192) uint64
    total = 0
    for r in prange(buf.shape[0]):
        s = 0
        row = buf[r]
        for j in range(row.shape[0]):
            s += row[j]
        total += s
    return total


def read_bandwidth(gib: float = 2.0, threads: int = 2, passes: int = 5) -> float:
    """Best read bandwidth over ``passes`` sums of a ``gib`` GiB buffer, in GB/s (10^9 B/s)."""
    numba.set_num_threads(threads)
    n = int(gib * 2**30) // 8
    buf = np.ones(n // 8192 * 8192, dtype=np.uint64).reshape(-1, 8192)
    _sum_rows(buf[:2])  # compile or load from the cache
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        _sum_rows(buf)
        best = min(best, time.perf_counter() - t0)
    return buf.nbytes / best / 1e9


def model_bytes(path: str) -> int:
    """Bytes of tensor data in a GGUF file: what one decode step reads."""
    from engine.gguf import open_gguf

    g = open_gguf(path)
    return int(sum(t.n_bytes for t in g.tensors.values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="buffer size (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--model", help="a GGUF file: also print its generation limit in tok/s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out: dict[str, float] = {"threads": args.threads,
                             "read_gb_s": read_bandwidth(args.gib, args.threads, args.passes)}
    if args.model:
        out["model_gb"] = model_bytes(args.model) / 1e9
        out["gen_limit_tok_s"] = out["read_gb_s"] / out["model_gb"]
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:18s} {v:.3f}" if isinstance(v, float) else f"{k:18s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
