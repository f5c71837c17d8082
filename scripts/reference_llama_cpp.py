"""llama.cpp's tokenizations and chat layouts, the references of the tokenizer and chat tests.

    .venv/bin/python scripts/reference_llama_cpp.py [--out FILE]

Needs the ``compare`` extra (llama-cpp-python), ``../shared`` and the test models fetched by the
test command (``python -m assistant fetch-model smollm2-135m qwen2.5-coder-0.5b gemma-3-270m``).
For every vocabulary (llama.cpp's test vocabularies and the real models' own), every text (the
``.inp`` cases of llama.cpp's tests, the 25 dev texts, texts with each family's chat markers and
seeded random texts) is tokenized in the three modes of ``tokenize-dev.json``: ``plain`` (no
BOS, no special tokens), ``special`` (special tokens parsed) and ``with_bos`` (the model's BOS).
llama.cpp's built-in chat layouts (``chatml``, ``llama3``, ``gemma``) render a few
conversations.  The file (default ``tests/engine/data/llama-cpp-reference.json``) is written
once and committed; the tests read it.

``--corpus`` writes nothing: it compares our tokenizer with llama.cpp's on every document of the
sample corpus (with BOS, without and with special tokens) for every vocabulary, and prints the
number of documents that differ.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GUIDELINES_SHARED", ROOT.parent / "shared"))
MODELS = Path.home() / ".cache/guidelines-assistant/models"
OUT = ROOT / "tests/engine/data/llama-cpp-reference.json"
SEPARATOR = "\n__ggml_vocab_test__\n"

VOCABS = {  # name → (file, where it lives)
    "llama-spm": SHARED / "tokenizer-tests/ggml-vocab-llama-spm.gguf",
    "gpt-2": SHARED / "tokenizer-tests/ggml-vocab-gpt-2.gguf",
    "llama-bpe": SHARED / "tokenizer-tests/ggml-vocab-llama-bpe.gguf",
    "qwen2": SHARED / "tokenizer-tests/ggml-vocab-qwen2.gguf",
    "phi-3": SHARED / "tokenizer-tests/ggml-vocab-phi-3.gguf",
    "smollm2-135m": MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b": MODELS / "qwen2.5-coder-0.5b-instruct.gguf",
    "gemma-3-270m": MODELS / "gemma-3-270m-q4_k_m.gguf",
}

CHAT_TEXTS = [
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]",
    "<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n  <|endoftext|>  x</s> y",
    "  leading <end_of_turn>  trailing  <|im_end|>\n\n  <|eot_id|> \n z",
    "a  b   c    d\n\n\n\te\t\tf \n \n g",
    "<table><tr><td>5 mg</td></tr></table> <b>bold</b> <unused0> <mask> [multimodal]",
    "Permethrin cream 5% is the drug of choice [1]. Ivermectin 200 µg/kg PO (2 doses) [2].",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|> <|endoftext|><|file_sep|>",
]

CONVERSATIONS = [
    [("system", "Be brief."), ("user", "Hi")],
    [("user", "  What dose?  ")],
    [("system", " Answer from the passages. "), ("user", "Passages:\n\n[1] x\n\nQuestion: y"),
     ("assistant", "It is x [1]. "), ("user", "And z?")],
    [("user", "Hi"), ("assistant", "Hello"), ("system", "Now be formal."), ("user", "Bye")],
]
LAYOUTS = ("chatml", "llama3", "gemma")


def random_texts(n: int, seed: int) -> list[str]:
    alphabet = [*"aZé ß\t\n  '\"stmdlrve.,!?-()0123456789", "\u00a0", "\u3000", "🦙", "日",
                "\u0301", "\u0661", "▁", "<s>", "</s>", "Ġ", "<|im_end|>", "<end_of_turn>",
                "<|eot_id|>", "<|end|>", "\n\n", "    "]  # fmt: skip
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(alphabet, rng.integers(1, 40))) for _ in range(n)]


def texts() -> list[str]:
    out: list[str] = []
    for name in ("llama-spm", "llama-bpe", "qwen2", "phi-3"):
        inp = Path(str(VOCABS[name]) + ".inp").read_text(encoding="utf-8")
        out += inp.split(SEPARATOR)
    dev = json.loads((SHARED / "reference/tokenize-dev.json").read_text(encoding="utf-8"))
    out += [case["text"] for case in dev["llama_spm"]]
    out += CHAT_TEXTS + random_texts(100, 7)
    return list(dict.fromkeys(out))


def tokenize_all(path: Path, all_texts: list[str]) -> dict[str, object]:
    """``plain``: the ids of every text; ``special`` and ``with_bos``: ``{index: ids}`` where
    they differ from ``plain`` (``with_bos``: from ``bos + plain``, with ``bos`` the ids of the
    empty text with BOS), to keep the file small."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)

    def ids(text: str, bos: bool, special: bool) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)

    plain = [ids(t, False, False) for t in all_texts]
    bos = ids("", True, False)
    out: dict[str, object] = {"plain": plain, "bos": bos}
    for mode, add_bos, special, prefix in (("special", False, True, []),
                                           ("with_bos", True, False, bos)):  # fmt: skip
        got = [ids(t, add_bos, special) for t in all_texts]
        out[mode] = {str(i): g for i, (g, p) in enumerate(zip(got, plain, strict=True))
                     if g != prefix + p}  # fmt: skip
    return out


def apply_layout(layout: str, conversation: list[tuple[str, str]]) -> str:
    import llama_cpp

    msgs = (llama_cpp.llama_chat_message * len(conversation))()
    keep = []
    for i, (role, content) in enumerate(conversation):
        r, c = role.encode(), content.encode()
        keep += [r, c]
        msgs[i].role, msgs[i].content = r, c
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(layout.encode(), msgs, len(conversation), True, buf,
                                            len(buf))  # fmt: skip
    if n < 0:
        raise RuntimeError(f"llama.cpp does not know the layout {layout!r}")
    return buf.raw[:n].decode("utf-8")


def compare_corpus() -> int:
    from llama_cpp import Llama

    sys.path.insert(0, str(ROOT))
    from engine.tokenizer import Tokenizer

    corpus = SHARED / "data/guidelines-sample.jsonl"
    docs = [json.loads(line)["clean_text"] for line in corpus.read_text("utf-8").splitlines()]
    differ = 0
    for name, path in VOCABS.items():
        ours = Tokenizer.from_file(path)
        ref = Llama(model_path=str(path), vocab_only=True, verbose=False)
        bad = sum(
            ours.encode(d, True, special) != ref.tokenize(d.encode(), add_bos=True, special=special)
            for d in docs
            for special in (False, True)
        )
        print(f"{name:<20} {2 * len(docs)} documents x modes, {bad} differ from llama.cpp")
        differ += bad
    return 1 if differ else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--corpus", action="store_true", help="compare on the sample corpus only")
    args = p.parse_args()
    if args.corpus:
        return compare_corpus()
    import llama_cpp

    all_texts = texts()
    vocabs = {}
    for name, path in VOCABS.items():
        print(f"tokenizing {len(all_texts)} texts x 3 modes with {path.name}", file=sys.stderr)
        vocabs[name] = {"file": path.name, **tokenize_all(path, all_texts)}
    chat = {layout: [apply_layout(layout, c) for c in CONVERSATIONS] for layout in LAYOUTS}
    ref = {
        "about": "llama.cpp (llama-cpp-python " + llama_cpp.__version__ + ") tokenizations "
        "and built-in chat layouts; written by scripts/reference_llama_cpp.py",
        "texts": all_texts,
        "vocabs": vocabs,
        "conversations": CONVERSATIONS,
        "chat": chat,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ref, ensure_ascii=False, separators=(",", ":")) + "\n",
                        encoding="utf-8")  # fmt: skip
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
