"""Ray build against single-process build at equal cores: ``python -m ingest.bench.distributed``.

Both build the same documents into fresh indexes, alternately, on ``--cores`` CPUs: the
single-process build with ``--threads CORES``, the Ray build on a local Ray instance of ``CORES``
CPUs (one actor per CPU, one torch thread each; the instance is started once, before the rounds,
as a cluster outlives its builds).  Each is run on two corpus sizes (the ``--small`` and
``--large`` shortest documents per source of the input), so that its fixed cost (loading the
model, starting the actors) and its marginal rate (chunks per second once running) separate:
``rate = (chunks_large - chunks_small) / (seconds_large - seconds_small)``.  The overhead of Ray
is ``1 - rate_ray / rate_single``; the per-core rate scales to N machines.  The machine is shared
and noisy: one warm-up build of each kind is not counted, rounds alternate the two builds, and the
median of each is reported.

    python -m ingest.bench.distributed --input ../shared/data/guidelines-sample.jsonl \\
        --cores 2 --small 3 --large 12 --rounds 2 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..distributed import OBJECT_STORE_BYTES
from ..pipeline import build

FULL_CORPUS_CHUNKS = 430_000  # epfl-llm/guidelines: 37,970 guidelines (docs/retrieval.md)


def _shortest(input: Path, n_per_source: int, out: Path) -> Path:
    by_source: dict[str, list[str]] = {}
    with open(input, encoding="utf-8") as f:
        for line in f:
            by_source.setdefault(json.loads(line)["source"], []).append(line)
    with open(out, "w", encoding="utf-8") as f:
        for lines in by_source.values():
            f.writelines(sorted(lines, key=len)[:n_per_source])
    return out


def _one(corpus: Path, work: Path, cores: int, use_ray: bool) -> tuple[int, float]:
    index = Path(tempfile.mkdtemp(dir=work)) / "index"
    t0 = time.perf_counter()
    report = build(corpus, index, threads=1 if use_ray else cores, progress=False,
                   ray="" if use_ray else None, log=lambda s: None)
    return report.chunks_added, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ingest.bench.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, help="a JSONL corpus")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--small", type=int, default=3, help="documents per source, small corpus")
    p.add_argument("--large", type=int, default=12, help="documents per source, large corpus")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cores, object_store_memory=OBJECT_STORE_BYTES,
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    runs: dict[tuple[str, str], list[tuple[int, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            work = Path(tmp)
            corpora = {size: _shortest(args.input, n, work / f"{size}.jsonl")
                       for size, n in (("small", args.small), ("large", args.large))}
            for kind in ("single", "ray"):  # warm-up: page cache, imports (not counted)
                _one(corpora["small"], work, args.cores, kind == "ray")
            for r in range(args.rounds):
                for kind in (("single", "ray") if r % 2 == 0 else ("ray", "single")):
                    for size, corpus in corpora.items():
                        chunks, secs = _one(corpus, work, args.cores, kind == "ray")
                        runs.setdefault((kind, size), []).append((chunks, secs))
                        print(f"round {r + 1} {kind:6} {size:5} {chunks:5} chunks "
                              f"{secs:7.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    result = _summary(runs, args.cores, ray_start_s)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _summary(runs: dict, cores: int, ray_start_s: float) -> dict:
    out: dict = {"cores": cores, "ray_start_s": round(ray_start_s, 1)}
    for kind in ("single", "ray"):
        (cs, ts), (cl, tl) = (
            (runs[(kind, size)][0][0], statistics.median(t for _, t in runs[(kind, size)]))
            for size in ("small", "large")
        )
        rate = (cl - cs) / (tl - ts)
        out[kind] = {"chunks": [cs, cl], "seconds": [round(ts, 1), round(tl, 1)],
                     "chunks_per_s": round(rate, 2), "per_core": round(rate / cores, 2),
                     "fixed_s": round(ts - cs / rate, 1)}
    out["overhead"] = round(1 - out["ray"]["chunks_per_s"] / out["single"]["chunks_per_s"], 3)
    per_core = out["ray"]["per_core"]
    out["full_corpus_hours"] = {str(n): round(FULL_CORPUS_CHUNKS / (per_core * n) / 3600, 1)
                                for n in (8, 32)}
    return out


if __name__ == "__main__":
    sys.exit(main())
