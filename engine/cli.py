"""``python -m engine SUBCOMMAND``: look inside GGUF files, tokenize, run and benchmark models.

Each subcommand is two functions, ``configure_X(parser)`` (its arguments) and ``run_X(args)``
(returns the exit code), registered in ``COMMANDS``. To add one, write the pair and add a
``Command`` to the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.bench.speed import configure_bench, run_bench
from engine.constants import ENGINE_WEIGHT_TYPES, GGUFValueType, Keys
from engine.errors import EngineError
from engine.gguf import GGUFFile
from engine.sampling import SamplingParams


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------

_BIG_ARRAY_KEYS = {Keys.TOKENS, Keys.SCORES, Keys.TOKEN_TYPE, Keys.MERGES}


def configure_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file (any part of a split model)")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    p.add_argument("--full", action="store_true", help="print long metadata values in full")


def run_info(args: argparse.Namespace) -> int:
    from engine.arch import SUPPORTED_ARCHITECTURES
    from engine.config import ModelConfig
    from engine.tokenizer import Tokenizer

    with GGUFFile.open(args.model) as g:
        size = sum(p.stat().st_size for p in g.parts)
        print(f"file      {g.path}" + (f"  ({len(g.parts)} parts)" if len(g.parts) > 1 else ""))
        print(f"GGUF v{g.version}, {_size(size)}, {len(g.metadata)} metadata keys, "
              f"{len(g.tensors)} tensors, alignment {g.alignment}")  # fmt: skip
        print("\nmetadata")
        for key, value in g.metadata.items():
            print(f"  {key:<44} {_show(value, g.field_types[key], args.full)}")
        _print_tensor_types(g)
        if args.tensors:
            print("\ntensors")
            for t in g.tensors.values():
                print(f"  {t.name:<32} {t.ggml_type.name:<6} {t.shape!s:<22} {_size(t.n_bytes)}")
        if g.architecture in SUPPORTED_ARCHITECTURES:
            config = ModelConfig.from_gguf(g)
            print(f"\narchitecture {config.architecture}: {', '.join(config.parts.found())}")
            print("\nconfig")
            for k, v in asdict(config).items():
                if k in ("layer_window", "rope_freq_factors") and v:
                    v = f"{len(v)} values, {sorted(set(v))[:4]}{' ...' if len(set(v)) > 4 else ''}"
                if k not in ("chat_template", "parts"):
                    print(f"  {k:<18} {v}")
        else:
            print(f"\narchitecture {g.architecture!r}: not supported by the engine (supported: "
                  f"{', '.join(SUPPORTED_ARCHITECTURES)})")  # fmt: skip
        if Keys.TOKENS in g.metadata:
            tok = Tokenizer.from_gguf(g)
            print(f"\ntokenizer {tok!r}; bos {tok.bos_id}, eos {tok.eos_id}, eot {tok.eot_id}, "
                  f"add_bos {tok.add_bos}, end of generation {sorted(tok.eog_ids)}")  # fmt: skip
    return 0


def _print_tensor_types(g: GGUFFile) -> None:
    by_type: dict[str, list[int]] = {}
    for t in g.tensors.values():
        c = by_type.setdefault(t.ggml_type.name, [0, 0])
        c[0] += 1
        c[1] += t.n_bytes
    if not by_type:
        print("\ntensor types: none (vocab-only file)")
        return
    print("\ntensor types")
    supported = {t.name for t in ENGINE_WEIGHT_TYPES}
    for name, (count, n_bytes) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
        note = "" if name in supported else "  (not supported by the engine)"
        print(f"  {name:<8} {count:>5} tensors  {_size(n_bytes):>10}{note}")


def _show(value: Any, types: tuple[GGUFValueType, ...], full: bool) -> str:
    if types[0] == GGUFValueType.ARRAY:
        n = len(value)
        head = f"[{types[1].name.lower()} x {n}]"
        if not full and n > 8:
            sample = list(value[:4].tolist() if isinstance(value, np.ndarray) else value[:4])
            return f"{head} {json.dumps(sample, ensure_ascii=False)[:-1]}, ...]"
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return f"{head} {json.dumps(items, ensure_ascii=False)}"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    if not full and len(text) > 100:
        text = text[:97] + "..."
    return text


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ----------------------------------------------------------------------------------------
# tokenize
# ----------------------------------------------------------------------------------------


def configure_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file (a vocab-only file works)")
    p.add_argument("text", help="text to tokenize; '-' reads standard input")
    p.add_argument("--no-bos", action="store_true", help="do not add BOS (even if the model asks)")
    p.add_argument("--special", action="store_true", help="parse special tokens (<|im_start|>)")
    p.add_argument("--pieces", action="store_true", help="print each id with its text")


def run_tokenize(args: argparse.Namespace) -> int:
    from engine.tokenizer import Tokenizer

    text = sys.stdin.read() if args.text == "-" else args.text
    tok = Tokenizer.from_file(args.model)
    ids = tok.encode(text, add_bos=not args.no_bos, special=args.special)
    if args.pieces:
        for i in ids:
            piece = tok.token_to_bytes(i).decode("utf-8", "backslashreplace")
            print(f"{i:>7} {json.dumps(piece, ensure_ascii=False)}")
    else:
        print(ids)
    return 0


# ----------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------

LLAMA2_TURN = "[INST] {text} [/INST]"


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="GGUF file (any part of a split model)")
    p.add_argument("-p", "--prompt", required=True, help="prompt text; '-' reads standard input")
    p.add_argument("-n", "--n-predict", type=int, default=256, help="tokens to generate at most")
    d = SamplingParams()  # llama.cpp's defaults, written once (engine.sampling)
    p.add_argument("--temp", type=float, default=d.temperature, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--min-p", type=float, default=d.min_p)
    p.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty)
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt as one chat user turn")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all)")
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context size cap")
    p.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                   help="KV cache element type (f16: half the memory, as llama.cpp's default)")


def chat_prompt(tokenizer: Any, user: str, system: str | None) -> str:
    """One user turn in the model's chat layout, found from the vocabulary's markers
    (``engine.tokenizer.chat``: ChatML, Llama-3, Gemma); Llama-2's ``[INST]`` without any."""
    from engine.tokenizer.chat import chat_turns_for

    turns = chat_turns_for(tokenizer)
    if turns is not None:
        return turns.render([*([("system", system)] if system else []), ("user", user)])
    text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}" if system else user
    return LLAMA2_TURN.format(text=text)


def run_run(args: argparse.Namespace) -> int:
    import engine

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = engine.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads,
                        kv_type=args.kv_type)  # fmt: skip
    prompt = chat_prompt(model.tokenizer, text, args.system) if args.chat else text
    gen = model.generate(
        prompt, max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
        top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty, seed=args.seed,
        stop=args.stop, stream=True,
    )  # fmt: skip
    if not args.chat:
        print(text, end="", flush=True)  # like llama.cpp's CLI: the prompt, then its continuation
    try:
        for piece in gen:
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        gen.close()
    print()
    t = gen.timings
    n_gen = gen.n_generated_tokens
    gen_tps = (n_gen - 1) / t["gen_s"] if n_gen > 1 and t["gen_s"] > 0 else 0.0
    print(f"[{gen.n_prompt_tokens} prompt tokens in {t['prompt_s']:.2f} s; {n_gen} generated at "
          f"{gen_tps:.1f} tok/s; finish: {gen.finish_reason}]", file=sys.stderr)  # fmt: skip
    return 0


# ----------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "info": Command("metadata, tensor types and config of a GGUF", configure_info, run_info),
    "tokenize": Command("token ids of a text, as llama.cpp gives them", configure_tokenize,
                        run_tokenize),
    "run": Command("generate text from a prompt, streamed (like llama.cpp's CLI)", configure_run,
                   run_run),
    "bench": Command("prompt and generation speed (optionally side by side with llama.cpp)",
                     configure_bench, run_bench),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
