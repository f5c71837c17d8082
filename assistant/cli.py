"""``python -m assistant``: ``ask`` a question, ``replay`` an answer's receipt; set-up helpers
``fetch-model`` and ``paths``.

``ask "question"`` streams the answer, then its sources and the advisory notice; ``--json``
prints one JSON object instead (answer, citations, passages, notice, usage, timings, receipt);
``--receipt FILE`` writes the receipt alone.  ``replay FILE`` (:mod:`assistant.replay`) answers
the receipt's question again and says whether the answer is identical.  Every output, errors
included, carries the notice.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from assistant.config import DEFAULT_MODEL, Settings
from assistant.models import PRESETS, ModelError, fetch_model


def _cmd_fetch_model(args: argparse.Namespace, settings: Settings) -> int:
    try:
        path = fetch_model(args.preset, settings.models_dir)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_paths(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import SAMPLE_CORPUS

    values = {
        "home": settings.home,
        "index": settings.index,
        "models": settings.models_dir,
        "sample_corpus": SAMPLE_CORPUS,
    }
    wanted = [k for k in values if getattr(args, k)]
    for key in wanted or values:
        print(values[key] if wanted else f"{key}: {values[key]}")
    return 0


def _ask_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    overrides = {"model": args.model, "max_tokens": args.max_tokens,
                 "temperature": args.temperature, "k": args.k, "seed": args.seed}
    if args.index:
        overrides["index_dir"] = Path(args.index).expanduser()
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str, question: str, as_json: bool) -> int:
    from assistant.answer import AnswerError

    error = AnswerError(message, question)
    if as_json:
        print(json.dumps(error.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"error: {error}", file=sys.stderr)
    return 1


def _cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.answer import AnswerError
    from assistant.chain import build_chain, stream_tail

    settings = _ask_settings(args, settings)
    question = args.question
    if not settings.index.is_dir():
        from ingest import SAMPLE_CORPUS

        return _fail(f"no index at {settings.index}. Build one with: python -m ingest build "
                     f"--input {SAMPLE_CORPUS} --index {settings.index} (or pass --index DIR)",
                     question, args.json)
    try:
        chain = build_chain(settings)
        extra = {"sources": args.source} if args.source else {}
        stream = chain.stream_answer({"question": question, **extra})
        for piece in stream:
            if not args.json:
                print(piece, end="", flush=True)
        answer = stream.answer
    except AnswerError as e:
        if not args.json:
            print()
        return _fail(e.message, question, args.json)
    except ModelError as e:
        return _fail(str(e), question, args.json)
    except KeyboardInterrupt:
        return _fail("interrupted", question, args.json)
    if args.receipt and answer.receipt:
        Path(args.receipt).write_text(json.dumps(answer.receipt, ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(stream_tail(answer))
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.replay import replay_command

    return replay_command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-model", help="download a model preset into the models folder")
    fetch.add_argument("preset", nargs="?", default=DEFAULT_MODEL, choices=sorted(PRESETS))
    fetch.set_defaults(func=_cmd_fetch_model)

    paths = sub.add_parser("paths", help="print where models, indexes and the sample corpus are")
    for key in ("home", "index", "models", "sample_corpus"):
        paths.add_argument(f"--{key.replace('_', '-')}", action="store_true", dest=key)
    paths.set_defaults(func=_cmd_paths)

    ask = sub.add_parser("ask", help="answer a question from the guideline index, with citations")
    ask.add_argument("question")
    ask.add_argument("--index", metavar="DIR",
                     help="index folder (default: GUIDELINES_INDEX or the sample index)")
    ask.add_argument("--model", metavar="PATH_OR_PRESET",
                     help=f"GGUF path or preset ({', '.join(PRESETS)})")
    ask.add_argument("--max-tokens", type=int, metavar="N", help="answer length limit in tokens")
    ask.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default)")
    ask.add_argument("--k", type=int, metavar="N", help="passages to retrieve")
    ask.add_argument("--seed", type=int, help="sampling seed")
    ask.add_argument("--source", action="append", metavar="SOURCE",
                     help="only this corpus source (repeatable), e.g. --source cdc")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--receipt", metavar="FILE",
                     help="also write the answer's receipt (JSON) to FILE, for `replay`")
    ask.set_defaults(func=_cmd_ask)

    rep = sub.add_parser("replay", help="answer a receipt's question again and compare: exit 0 "
                                        "identical, 1 different, 2 cannot replay")
    rep.add_argument("receipt", help="a receipt JSON (ask --receipt) or an ask --json output")
    rep.add_argument("--model", metavar="PATH", help="GGUF file (default: the receipt's)")
    rep.add_argument("--index", metavar="DIR", help="index folder (default: the receipt's)")
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    rep.set_defaults(func=_cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings.from_env())
