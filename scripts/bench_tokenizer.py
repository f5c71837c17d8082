"""Benchmark of the tokenizer: load time and the time to tokenize a 600-character passage.

    .venv/bin/python scripts/bench_tokenizer.py [MODEL.gguf ...] [--runs N]

Targets (issue 3): loading the SmolLM2 tokenizer < 1 s; tokenizing a 600-character passage
< 5 ms after warm-up. Wall and CPU time are both printed: on a shared machine the CPU time is
the steadier of the two. Passages come from the shipped sample corpus.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.gguf import GGUFFile  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402

DEFAULT_MODELS = [
    Path.home() / ".cache/guidelines-assistant/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ROOT.parent / "shared/tokenizer-tests/ggml-vocab-llama-spm.gguf",
]
CORPUS = ROOT / "ingest/data/guidelines-sample.jsonl"
PASSAGE_CHARS = 600


def passages(n: int) -> list[str]:
    out = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["clean_text"]
            if len(text) >= PASSAGE_CHARS:
                out.append(text[:PASSAGE_CHARS])
            if len(out) == n:
                break
    return out


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench(path: Path, runs: int) -> None:
    loads = [timed(lambda: Tokenizer.from_file(path)) for _ in range(runs)]
    with GGUFFile.open(path) as g:
        tok = Tokenizer.from_gguf(g)
    texts = passages(runs + 1)
    first = [timed(lambda t=t: tok.encode(t)) for t in texts[1:]]  # each passage seen once
    tok.encode(texts[0])  # warm-up
    warm = [timed(lambda: tok.encode(texts[0])) for _ in range(runs)]
    n_tokens = len(tok.encode(texts[0]))

    def ms(xs: list[tuple[float, float]], k: int) -> str:
        return f"{1e3 * statistics.median(x[k] for x in xs):7.2f}"

    print(f"{path.name}  ({tok!r})")
    print(f"  load tokenizer (open + vocab)      wall {ms(loads, 0)} ms  cpu {ms(loads, 1)} ms")
    print(
        f"  600-char passage, warm ({n_tokens} tokens) wall {ms(warm, 0)} ms  cpu {ms(warm, 1)} ms"
    )
    print(f"  600-char passages, first sight     wall {ms(first, 0)} ms  cpu {ms(first, 1)} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, help="GGUF files (default: SmolLM2, llama-spm)")
    ap.add_argument("--runs", type=int, default=15, help="runs per measure (median reported)")
    args = ap.parse_args()
    models = args.models or [p for p in DEFAULT_MODELS if p.exists()]
    for p in models:
        bench(p, args.runs)
    heavy = [m for m in ("numba", "torch", "langchain_core") if m in sys.modules]
    print(f"modules imported for tokenizing that should not be: {heavy or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
