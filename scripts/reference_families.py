"""Reference data for the real models of the new families: llama.cpp's error and the exact one.

    PYTHONPATH=. .venv/bin/python scripts/reference_families.py [--out FILE.json]

For each model (Qwen2.5-Coder-0.5B-Instruct, ``qwen2``; Gemma-3-270M Q4_K_M, ``gemma3``; found
in the models directory, ``$GUIDELINES_HOME/models``): a teacher-forced sequence (a chat prompt
and an answer, tokenized by llama.cpp) with the exact float64 logits on the dequantized weights
(``tests/engine/llama_reference.py``) at 256 vocabulary ids, their argmax, and llama.cpp's own
RMS error and top-1 agreement against them (llama-cpp-python, the ``compare`` extra); greedy
continuations of two chat prompts by llama.cpp and by the exact computation.  Without
llama-cpp-python (``--emulate``), llama.cpp's side is its rounding emulated in float64
(``reference_logits(emulate_llama_cpp=True)``, checked against real llama.cpp on the shared
references by ``test_accuracy.py``) and the entry says ``"yardstick": "emulated"``.  The test
``tests/engine/test_families_real.py`` holds the engine to llama.cpp's numbers without needing
llama.cpp.  Takes a few minutes and a few GB of memory (the exact side keeps the weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine.llama_reference import Weights, reference_logits  # noqa: E402

DEFAULT_OUT = ROOT / "tests/engine/data/families-reference.json"
N_COLS = 256
GREEDY_TOKENS = 16
QUESTIONS = ["What is hypertension?", "How is scabies treated?"]
ANSWER = (
    "Hypertension is diagnosed when blood pressure measured on two or more occasions is at least "
    "140/90 mm Hg. Lifestyle changes such as reducing salt intake are recommended for all patients."
)


def chatml(question: str) -> str:
    return (f"<|im_start|>system\nYou are a careful clinical assistant.<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip


def gemma_turns(question: str) -> str:
    return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"


# file name in the models directory -> (family, chat prompt of a question, add BOS)
MODELS = {
    "qwen2.5-coder-0.5b-instruct.gguf": ("qwen2", chatml, False),
    "gemma-3-270m-q4_k_m.gguf": ("gemma3", gemma_turns, True),
}


def llama_cpp_model(path: Path, n_ctx: int):
    from engine.bench.speed import llama_cpp_model as load  # weight repacking off (see there)

    return load(path, n_ctx=n_ctx, n_threads=2, n_threads_batch=2, logits_all=True,
                verbose=False)


def teacher_forced(path: Path, llm, W: Weights, tokens: list[int]) -> dict:
    exact = reference_logits(path, tokens, weights=W)  # (n, n_vocab) float64
    if llm is None:
        ref = reference_logits(path, tokens, emulate_llama_cpp=True, weights=W)
    else:
        llm.reset()
        llm.eval(tokens)
        ref = np.array(llm.scores[: len(tokens)], np.float64)  # (n, n_vocab) llama.cpp
    rng = np.random.default_rng(0)
    top = set(np.argsort(exact, axis=1)[:, -4:].reshape(-1).tolist())  # the likely ids
    rest = rng.choice(exact.shape[1], N_COLS, replace=False).tolist()
    cols = sorted(list(top) + [c for c in rest if c not in top][: N_COLS - len(top)])[:N_COLS]
    err = float(np.sqrt(np.mean((ref[:, cols] - exact[:, cols]) ** 2)))
    top1 = float(np.mean(ref.argmax(1) == exact.argmax(1)))
    return {
        "tokens": tokens,
        "cols": cols,
        "exact_col_logits": np.round(exact[:, cols], 4).tolist(),
        "exact_argmax": exact.argmax(1).tolist(),
        "ref_rms_vs_exact": err,
        "ref_top1_vs_exact": top1,
    }


def greedy(path: Path, llm, W: Weights, prompt: list[int]) -> dict:
    exact: list[int] = []
    for _ in range(GREEDY_TOKENS):
        exact.append(int(reference_logits(path, prompt + exact, weights=W)[-1].argmax()))
    if llm is None:  # no llama.cpp: its greedy is not known
        return {"prompt_tokens": prompt, "greedy": None, "exact_greedy": exact}
    ours = []
    llm.reset()
    for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        ours.append(int(tok))
        if len(ours) >= GREEDY_TOKENS:
            break
    return {"prompt_tokens": prompt, "greedy": ours, "exact_greedy": exact}


def main() -> int:
    from assistant.config import Settings

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", type=Path, default=Settings.from_env().models_dir)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--emulate",
        action="store_true",
        help="without llama-cpp-python: llama.cpp's rounding emulated in float64",
    )
    p.add_argument("--only", help="one model file name")
    p.add_argument("--prompts", type=int, default=len(QUESTIONS), help="greedy prompts per model")
    args = p.parse_args()
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name, (family, chat, add_bos) in MODELS.items():
        path = args.models_dir / name
        if args.only and name != args.only:
            continue
        if not path.exists():
            print(f"{path} is absent: skipped")
            continue
        t0 = time.perf_counter()
        llm = None if args.emulate else llama_cpp_model(path, 512)
        W = Weights(path, keep=True)
        tok_model = None
        if llm is None:
            import engine

            tok_model = engine.load(path)

        def tok(text: str, llm=llm, add_bos=add_bos, tok_model=tok_model) -> list[int]:
            if llm is None:
                return tok_model.tokenize(text, add_bos=add_bos, special=True)
            return llm.tokenize(text.encode(), add_bos=add_bos, special=True)

        entry = {"family": family, "file_bytes": path.stat().st_size,
                 "yardstick": "emulated" if llm is None else "llama.cpp",
                 "teacher_forced": [teacher_forced(path, llm, W, tok(chat(QUESTIONS[0]) + ANSWER))],
                 "greedy": [dict(prompt=chat(q), **greedy(path, llm, W, tok(chat(q))))
                            for q in QUESTIONS[: args.prompts]]}  # fmt: skip
        e, gs = entry["teacher_forced"][0], entry["greedy"]
        print(f"{name}: {len(e['tokens'])} positions, llama.cpp RMS vs exact "
              f"{e['ref_rms_vs_exact']:.4f}, top-1 {e['ref_top1_vs_exact']:.3f}; greedy equal to "
              f"exact for {[first_diff(g['greedy'] or [], g['exact_greedy']) for g in gs]} "
              f"tokens ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        out[name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")
    return 0


def first_diff(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


if __name__ == "__main__":
    sys.exit(main())
