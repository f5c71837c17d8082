"""``python -m assistant replay RECEIPT.json``: run an answer's question again and compare.

The receipt (:mod:`assistant.receipt`; the file may also be a whole ``ask --json`` output) names
the model file, the index, every sampler setting and the retrieval settings.  Replay loads the
same model file and index, answers the question again with those settings, and compares the two
receipts part by part, inputs first (model, engine, index, sampler, retrieval settings), then
what they produced (the passages and their order, the prompt, the answer).

Exit status: 0 the answer is identical; 1 it differs (the report says which parts differ, and
where the two answers part); 2 the receipt cannot be replayed (not a receipt, a missing field,
the model file or index folder not found).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from assistant.receipt import RECEIPT_FORMAT, RECEIPT_VERSION

MAX_RECEIPT_BYTES = 16 << 20
IDENTICAL, DIFFERENT, CANNOT_REPLAY = 0, 1, 2

# field of the receipt -> (type, what it names) checked before anything runs
REQUIRED = {
    "question": (str, "the question"),
    "model": (dict, "the model file"),
    "engine": (dict, "the engine version"),
    "sampler": (dict, "the sampler settings"),
    "retrieval": (dict, "the retrieval settings"),
    "index": (dict, "the index"),
    "chunks": (list, "the passages' chunk ids"),
    "answer_sha256": (str, "the answer's sha256"),
}


class ReceiptError(ValueError):
    """The file is not a replayable receipt; the message names the file and the field."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass
class Comparison:
    """The parts of two receipts that differ, in the order they explain each other."""

    identical: bool
    differences: list[tuple[str, str]] = field(default_factory=list)  # (part, what differs)
    deterministic: bool = True

    def report(self) -> str:
        if self.identical:
            return "identical: the replayed answer is the same, character for character"
        lines = ["different: the replayed answer is not the same"]
        lines += [f"  {part}: {what}" for part, what in self.differences]
        if not self.deterministic:
            lines.append("  (the original sampled at temperature > 0 without a seed: it was not "
                         "reproducible in the first place)")
        return "\n".join(lines)


def load_receipt(path: str | Path) -> dict[str, Any]:
    """Read and check a receipt (or an ``ask --json`` output holding one) from ``path``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ReceiptError(path, f"cannot be read ({e.strerror or e})") from e
    if size > MAX_RECEIPT_BYTES:
        raise ReceiptError(path, f"is {size} bytes, more than a receipt ({MAX_RECEIPT_BYTES})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReceiptError(path, f"is not JSON ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("receipt"), dict):
        data = data["receipt"]  # an `ask --json` output
    if not isinstance(data, dict) or data.get("format") != RECEIPT_FORMAT:
        raise ReceiptError(path, f"field 'format': not a {RECEIPT_FORMAT!r} receipt")
    if data.get("version") != RECEIPT_VERSION:
        raise ReceiptError(path, f"field 'version': {data.get('version')!r}, this version "
                                 f"replays version {RECEIPT_VERSION}")
    if data.get("error"):
        raise ReceiptError(path, f"field 'error': the answer had no receipt ({data['error']})")
    for key, (kind, what) in REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ReceiptError(path, f"field {key!r} ({what}): expected {kind.__name__}, "
                                     f"got {type(data.get(key)).__name__}")
    return data


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text[:16] + "…" if len(text) > 40 and all(c in "0123456789abcdef" for c in text) \
        else text


def _first_difference(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, n - 30)
    return (f"they part at character {n}: was {a[lo:n + 40]!r}, now {b[lo:n + 40]!r} "
            f"({len(a)} vs {len(b)} characters)")


def compare(old: dict[str, Any], new: dict[str, Any]) -> Comparison:
    """What differs between the original receipt and the replayed one."""
    diffs: list[tuple[str, str]] = []

    def field_diff(part: str, key: str, sub: str) -> None:
        a, b = (old.get(key) or {}).get(sub), (new.get(key) or {}).get(sub)
        if a != b:
            diffs.append((part, f"{sub} was {_short(a)}, now {_short(b)}"))

    field_diff("model", "model", "sha256")
    field_diff("model", "model", "quantization")
    field_diff("engine", "engine", "version")
    field_diff("engine", "engine", "source_sha256")
    field_diff("engine", "engine", "prompt_products")  # AMX here, BLAS there: not the same sums
    field_diff("index", "index", "generation")
    field_diff("index", "index", "manifest_sha256")
    for key in sorted(set(old["sampler"]) | set(new.get("sampler") or {})):
        field_diff("sampler", "sampler", key)
    for key in sorted(set(old["retrieval"]) | set(new.get("retrieval") or {})):
        field_diff("retrieval", "retrieval", key)
    if old["chunks"] != new.get("chunks"):
        diffs.append(("passages", f"chunk ids were {old['chunks']}, now {new.get('chunks')}"))
    if old.get("prompt_sha256") != new.get("prompt_sha256"):
        diffs.append(("prompt", f"sha256 was {_short(old.get('prompt_sha256'))}, "
                                f"now {_short(new.get('prompt_sha256'))}"))
    same_answer = old["answer_sha256"] == new.get("answer_sha256")
    if not same_answer:
        what = f"sha256 was {_short(old['answer_sha256'])}, now {_short(new.get('answer_sha256'))}"
        if isinstance(old.get("answer"), str) and isinstance(new.get("answer"), str):
            what += "; " + _first_difference(old["answer"], new["answer"])
        diffs.append(("answer", what))
    return Comparison(same_answer, diffs, bool(old.get("deterministic", True)))


def replay(receipt: dict[str, Any], settings: Any, *, model: str | None = None,
           index: str | None = None) -> tuple[Any, Comparison]:
    """Answer the receipt's question again (on ``model`` / ``index`` when given, else the
    receipt's own); (the new Answer, the comparison).  Raises ReceiptError when the model file
    or the index is not there."""
    from assistant.chain import build_chain
    from assistant.model.llm import EngineLLM
    from assistant.retrieval.retriever import GuidelineRetriever

    model_path = Path(model) if model else Path(receipt["model"].get("path") or "")
    if not model and not model_path.is_file():  # moved: look for the file in the models folder
        model_path = settings.models_dir / str(receipt["model"].get("file") or "")
    if not model_path.is_file():
        raise ReceiptError(model_path, "the receipt's model file is not there (pass --model)")
    index_path = Path(index) if index else Path(receipt["index"].get("path") or "")
    if not index_path.is_dir():
        raise ReceiptError(index_path, "the receipt's index folder is not there (pass --index)")
    sampler = {k: v for k, v in receipt["sampler"].items() if k not in ("n_ctx", "stop")}
    retrieval = receipt["retrieval"]
    n_ctx = receipt["sampler"].get("n_ctx")
    settings = replace(settings, index_dir=index_path, model=str(model_path),
                       max_tokens=int(sampler.get("max_tokens", settings.max_tokens)),
                       n_ctx=int(n_ctx) if n_ctx else settings.n_ctx)
    llm = EngineLLM(model=str(model_path), models_dir=str(settings.models_dir),
                    n_ctx=settings.n_ctx, **sampler)
    retriever = GuidelineRetriever(index_path=str(index_path), k=int(retrieval.get("k") or 4),
                                   score_threshold=retrieval.get("min_similarity"),
                                   mode=retrieval.get("mode") or "hybrid")
    chain = build_chain(settings, llm=llm, retriever=retriever)
    request = {"question": receipt["question"], "sources": retrieval.get("sources")}
    answer = chain.invoke(request)
    return answer, compare(receipt, answer.receipt or {})


def replay_command(args: Any, settings: Any) -> int:
    """The CLI's ``replay``: prints the report (or JSON), returns the exit status."""
    import sys

    from assistant.answer import AnswerError
    from assistant.model.presets import ModelError
    from assistant.notice import ADVISORY_NOTICE

    try:
        receipt = load_receipt(args.receipt)
        answer, result = replay(receipt, settings, model=args.model, index=args.index)
    except (ReceiptError, ModelError, AnswerError) as e:
        message = e.message if isinstance(e, AnswerError) else str(e)
        if args.json:
            print(json.dumps({"status": "cannot-replay", "error": message,
                              "notice": ADVISORY_NOTICE}, ensure_ascii=False, indent=2))
        else:
            print(f"error: cannot replay: {message}\n\n{ADVISORY_NOTICE}", file=sys.stderr)
        return CANNOT_REPLAY
    if args.json:
        print(json.dumps({"status": "identical" if result.identical else "different",
                          "differences": [{"part": p, "what": w} for p, w in result.differences],
                          "receipt": receipt, "replayed": answer.receipt,
                          "notice": ADVISORY_NOTICE}, ensure_ascii=False, indent=2))
    else:
        print(f"question: {receipt['question']}")
        print(result.report())
        print(f"\n{ADVISORY_NOTICE}")
    return IDENTICAL if result.identical else DIFFERENT
