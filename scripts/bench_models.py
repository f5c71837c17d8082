"""Llama-shaped random-weight GGUF models for side-by-side speed runs (issue 18).

Writes an F16 GGUF of a real model's shape with gguf-py, then quantizes it with llama.cpp
(llama-cpp-python from the ``compare`` extra) to the types asked for::

    python scripts/bench_models.py --shape 1.1b --types Q4_K_M,Q8_0,Q6_K --out ~/bench-models
    python scripts/bench_models.py --shape 7b --types Q4_K_M --out ~/bench-models

    python -m engine bench ~/bench-models/llama-1.1b.Q4_K_M.gguf --prompt-tokens 1024 \
        --gen-tokens 128 --threads 2 --compare

The weights are random (normal, std 0.02; norms 1): speed does not depend on their values. To save
RAM and time every layer shares one random draw per tensor shape (the file still holds n_layer
separate copies, so the engine reads as many bytes as a real model). The vocabulary is copied
from a vocab GGUF (default: llama.cpp's Llama-2 SentencePiece vocabulary, 32,000 tokens, as
TinyLlama and Llama-2-7B/Meditron-7B use). The 7B F16 file is about 13.5 GB and is deleted after
quantization unless ``--keep-f16``; quantizing the 7B takes about 12 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_VOCAB = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizer-tests" / (
    "ggml-vocab-llama-spm.gguf"
)


@dataclass(frozen=True)
class Shape:
    """Hyper-parameters of a Llama-architecture model."""

    name: str
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int


SHAPES = {
    # TinyLlama-1.1B
    "1.1b": Shape("llama-1.1b", n_embd=2048, n_layer=22, n_ff=5632, n_head=32, n_head_kv=4,
                  n_ctx=2048),
    # Llama-2-7B / Meditron-7B
    "7b": Shape("llama-7b", n_embd=4096, n_layer=32, n_ff=11008, n_head=32, n_head_kv=32,
                n_ctx=2048),
    # a small one for a quick check of this script
    "tiny": Shape("llama-tiny", n_embd=256, n_layer=2, n_ff=768, n_head=4, n_head_kv=2,
                  n_ctx=512),
}

# llama.cpp's LLAMA_FTYPE values for the quantization types offered here.
FTYPES = {
    "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30,
}  # fmt: skip


def copy_vocab(writer: Any, vocab_path: Path) -> int:
    """Copy every ``tokenizer.*`` key of ``vocab_path`` into ``writer``; return the vocab size."""
    import gguf

    reader = gguf.GGUFReader(str(vocab_path))
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        values = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, values)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(values)
        else:
            writer.add_key_value(key, values, field.types[0])
    if not n_vocab:
        raise SystemExit(f"{vocab_path}: no tokenizer.ggml.tokens")
    return n_vocab


def write_f16(shape: Shape, path: Path, vocab_path: Path, seed: int = 0) -> None:
    """Write the random F16 model (token_embd, output and norms in F32 like llama.cpp's F16)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"{shape.name}-random")
    n_vocab = copy_vocab(writer, vocab_path)
    head_dim = shape.n_embd // shape.n_head
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(1)  # MOSTLY_F16

    def draw(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    kv = shape.n_head_kv * head_dim
    shared = {  # one draw per shape, referenced by every layer
        "attn_q": draw(shape.n_embd, shape.n_embd),
        "attn_k": draw(kv, shape.n_embd),
        "attn_v": draw(kv, shape.n_embd),
        "attn_output": draw(shape.n_embd, shape.n_embd),
        "ffn_gate": draw(shape.n_ff, shape.n_embd),
        "ffn_up": draw(shape.n_ff, shape.n_embd),
        "ffn_down": draw(shape.n_embd, shape.n_ff),
    }
    ones = np.ones(shape.n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", draw(n_vocab, shape.n_embd))
    for i in range(shape.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        for name, arr in shared.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", arr)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", draw(n_vocab, shape.n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()


def quantize(src: Path, dst: Path, qtype: str, threads: int) -> None:
    """Quantize ``src`` to ``dst`` with llama.cpp's own quantizer."""
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit("quantizing needs llama-cpp-python: pip install -e '.[compare]'") from e
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama.cpp could not quantize {src} to {qtype} (code {rc})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    ap.add_argument("--types", default="Q4_K_M", help=f"comma list of {', '.join(FTYPES)}")
    ap.add_argument("--out", type=Path, default=Path("bench-models"))
    ap.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB,
                    help="a GGUF whose tokenizer.* keys are copied (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-f16", action="store_true")
    args = ap.parse_args(argv)
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    bad = [t for t in types if t not in FTYPES]
    if bad:
        ap.error(f"unknown type(s) {bad}; choose from {sorted(FTYPES)}")
    if not args.vocab.is_file():
        ap.error(f"vocab GGUF not found: {args.vocab} (pass --vocab)")
    shape = SHAPES[args.shape]
    args.out.mkdir(parents=True, exist_ok=True)
    f16 = args.out / f"{shape.name}.F16.gguf"
    if not f16.exists():
        print(f"writing {f16}", file=sys.stderr)
        tmp = f16.with_suffix(".gguf.partial")
        write_f16(shape, tmp, args.vocab)
        tmp.replace(f16)
    for qtype in types:
        dst = args.out / f"{shape.name}.{qtype}.gguf"
        if dst.exists():
            print(f"exists: {dst}", file=sys.stderr)
            continue
        print(f"quantizing {qtype} -> {dst}", file=sys.stderr)
        tmp = dst.with_suffix(".gguf.partial")
        quantize(f16, tmp, qtype, args.threads)
        tmp.replace(dst)
    if not args.keep_f16:
        f16.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
