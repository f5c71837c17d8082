"""llama.cpp's tokenization of a text with a GGUF vocabulary: the reference for token lists that
the tests commit (llama-cpp-python, the ``compare`` extra; never needed to run the project).

    python scripts/llama_cpp_tokenize.py VOCAB.gguf "text" [--special] [--bos]
    python scripts/llama_cpp_tokenize.py --gpt2-without-pre "wait ... ok"

``--gpt2-without-pre``: the GPT-2 vocabulary of ``../shared/tokenizer-tests`` written without
``tokenizer.ggml.pre`` (tests/engine/test_tokenizer.py's ``_gpt2_craft(None)``), which llama.cpp
reads with its ``default`` pre-tokenizer. Prints the ids as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def llama_cpp_tokens(vocab: Path, text: str, special: bool = False, bos: bool = False) -> list:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(vocab), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("vocab", nargs="?", type=Path)
    p.add_argument("text")
    p.add_argument("--special", action="store_true", help="parse special tokens")
    p.add_argument("--bos", action="store_true", help="add BOS when the vocabulary asks")
    p.add_argument("--gpt2-without-pre", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vocab = args.vocab
        if args.gpt2_without_pre:
            from tests.engine.test_tokenizer import _gpt2_craft

            vocab = _gpt2_craft(None).write(Path(tmp) / "gpt2-without-pre.gguf")
        if vocab is None:
            p.error("give VOCAB.gguf or --gpt2-without-pre")
        print(json.dumps(llama_cpp_tokens(vocab, args.text, args.special, args.bos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
