"""Benchmark: generation speed per weight byte of each quantization type, against Q4_1.

    .venv/bin/python scripts/bench_kquants.py [--types Q4_1,Q4_K,Q6_K,...] [--threads N]
                                              [--rounds R] [--json]

Issue 5: the K-quant path must not be more than 2x slower per weight byte than the Q4_1 path.
SmolLM2's 576-wide rows are not a multiple of the K-quants' 256-element super-block, so the
comparison uses Llama-shaped random models written by the test helper
``tests/engine/llama_reference.write_tiny_llama`` (needs the ``test`` extra for gguf-py): the
same shapes for every type, 6 layers, n_embd 1024, n_ff 2816, 16 heads / 4 KV heads, vocab
8192. Each type is measured by ``python -m engine bench``'s own measurement, the types in turn,
``--rounds`` times (best kept): on a shared machine only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench.speed import bench_engine  # noqa: E402
from engine.constants import GGMLType  # noqa: E402

SHAPE = {"n_vocab": 8192, "n_embd": 1024, "n_layer": 6, "n_head": 16, "n_head_kv": 4, "n_ff": 2816}
DEFAULT_TYPES = "Q4_1,Q4_0,Q8_0,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K"
BASELINE = "Q4_1"


def write_models(folder: Path, types: list[str]) -> dict[str, Path]:
    """One random Llama-shaped GGUF per type (the token embedding stays Q8_0 in all)."""
    from gguf import GGMLQuantizationType as QT

    from tests.engine.llama_reference import write_tiny_llama

    paths = {}
    for name in types:
        path = folder / f"bench-{name}.gguf"
        paths[name] = write_tiny_llama(path, QT[name], embd_type=QT.Q8_0, **SHAPE)
    return paths


def measure(path: Path, threads: int) -> dict:
    args = argparse.Namespace(
        model=path, prompt_tokens=64, gen_tokens=64, threads=threads, batch=None, profile=False
    )
    from engine.llama import DEFAULT_BATCH

    args.batch = DEFAULT_BATCH
    return bench_engine(args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--types", default=DEFAULT_TYPES, help=f"comma-separated ({DEFAULT_TYPES})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = p.parse_args()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in GGMLType.__members__]
    if unknown:
        raise SystemExit(f"unknown type(s): {', '.join(unknown)}")
    if BASELINE not in types:
        types.insert(0, BASELINE)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp), types)
        for _ in range(args.rounds):
            for name in types:
                r = measure(paths[name], args.threads)
                if name not in best or r["gen_gb_per_s"] > best[name]["gen_gb_per_s"]:
                    best[name] = r
    base = best[BASELINE]["gen_gb_per_s"]
    print(f"{'type':6} {'gen tok/s':>10} {'MiB/token':>10} {'GB/s':>7} {'slower per byte':>16}")
    for name in types:
        r = best[name]
        slower = base / r["gen_gb_per_s"]
        r["slower_per_byte_vs_q4_1"] = slower
        print(f"{name:6} {r['gen_tps']:10.1f} {r['weights_read_per_token_mb']:10.1f} "
              f"{r['gen_gb_per_s']:7.2f} {slower:15.2f}x")  # fmt: skip
    if args.json:
        fields = ("gen_tps", "gen_gb_per_s", "weights_read_per_token_mb", "slower_per_byte_vs_q4_1")
        print(json.dumps({k: {f: v[f] for f in fields} for k, v in best.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
