"""``AssistantServices``: the page's :class:`ui.backend.Services` over the assistant package.

Only the assistant's public pieces are used: ``build_chain`` (a fresh, cheap chain per question
with that question's settings), the shared model and index caches behind it, ``Settings`` and
the typed errors (``ModelError``, ``AnswerError``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.answer import Answer, AnswerError
from assistant.chain import build_chain
from assistant.config import Settings
from assistant.model.engine_runtime import get_engine_model, resolve_model_path
from assistant.model.presets import PRESETS, ModelError, parse_served
from assistant.receipt import answer_markdown
from assistant.retrieval.retriever import forget_indexes, open_index_cached
from ingest import IngestError, check_model
from ui.backend import (
    EvidenceBlock,
    EvidenceView,
    IndexUnusable,
    IndexView,
    ModelMissing,
    ModelView,
    NoIndex,
    Options,
    Reply,
    SourceView,
)
from ui.heap import release_free_memory

BUILD_COMMAND = "python -m ingest build --input {corpus} --index {index}"
FETCH_COMMAND = "python -m assistant fetch-model {preset}"
CLOSEST_SHOWN = 3  # passages listed under a refusal


def _build_fix(index: Path) -> str:
    from ingest import SAMPLE_CORPUS  # the shipped demo corpus (a constant, not internals)

    return BUILD_COMMAND.format(corpus=SAMPLE_CORPUS, index=index)


class AssistantServices:
    """The real services: the engine model, the guideline index and the cited RAG chain."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = f"assistant:{settings.models_dir}"  # a preset resolves within models_dir

    def presets(self) -> Mapping[str, str]:
        return {name: preset.description for name, preset in PRESETS.items()}

    def open_index(self, path: Path) -> IndexView:
        if not path.is_dir():
            raise NoIndex(f"there is no index at {path} yet. Build one from the sample corpus "
                          "(or your own JSONL guidelines) with:", value=path,
                          fix=_build_fix(path))
        forget_indexes()  # called only when the folder is new or was rebuilt: reopen it
        try:
            index = open_index_cached(path)
            check_model(index)  # the index's embedding model, loaded and checked once
            stats = dict(index.stats())
        except IngestError as e:  # typed: names the file at fault, and the fix when it knows one
            what = getattr(e, "what", str(e))
            fix = getattr(e, "fix", None)  # e.g. move a damaged index aside and rebuild it
            if fix:
                raise IndexUnusable(f"the index at {path} cannot be used: {what}. "
                                    f"{getattr(e, 'advice', 'To fix it')}:", value=path,
                                    fix=fix) from e
            raise IndexUnusable(f"the index at {path} cannot be used: {what}", value=path) from e
        except Exception as e:  # not an ingest error: still a setup problem, never a traceback
            raise IndexUnusable(f"the index at {path} cannot be opened ({type(e).__name__}: "
                                f"{e}). Rebuild it with:", value=path, fix=_build_fix(path)) from e
        return IndexView(path=path, documents=int(stats.get("documents", 0)),
                         chunks=int(stats.get("chunks", 0)), sources=_source_counts(stats),
                         embedding_model=str(stats.get("embedding_model", "")), handle=index)

    def load_model(self, spec: str) -> ModelView:
        if not spec:
            raise ModelMissing("no model chosen: pick a preset or give the path of a GGUF file.")
        try:
            served = parse_served(spec)
        except ModelError as e:
            raise ModelMissing(str(e), value=spec) from e
        if served is not None:  # nothing to load here: the server holds the model
            return ModelView(spec=spec, path=Path(served.base_url), quantization="served",
                             description=f"{served.model}, served at {served.base_url}")
        try:
            path = resolve_model_path(spec, self.settings.models_dir)
            model = get_engine_model(path)
        except ModelError as e:
            fix = FETCH_COMMAND.format(preset=spec) if spec in PRESETS else None
            raise ModelMissing(str(e), value=spec, fix=fix) from e
        except Exception as e:  # the engine's typed errors (GGUFError, ...) carry the file
            raise ModelMissing(f"{spec} cannot be loaded ({type(e).__name__}: {e})",
                               value=spec) from e
        preset = PRESETS.get(spec)
        return ModelView(spec=spec, path=path, quantization=str(getattr(model, "quantization", "")),
                         description=preset.description if preset else "", handle=model)

    def ask(self, index: IndexView, model: ModelView, question: str,
            options: Options) -> Iterator[str | EvidenceBlock | Reply]:
        spec = model.spec if model.quantization == "served" else str(model.path)
        settings = replace(self.settings, index_dir=index.path, model=spec,
                           k=options.k, temperature=options.temperature,
                           max_tokens=options.max_tokens)
        request: dict[str, Any] = {"question": question, "k": options.k,
                                   "sources": list(options.sources) or None,
                                   "history": list(options.history)}
        parts: list[str] = []
        try:
            stream = build_chain(settings).stream_answer(request)
            for piece in stream:
                if not parts and stream.evidence:  # known before the first piece
                    yield EvidenceBlock(evidence_views(stream.evidence, stream.passages))
                parts.append(piece)
                yield piece
            answer = stream.answer
        except AnswerError as e:
            yield Reply(text="".join(parts), error=e.message)
            return
        finally:
            release_free_memory()  # each answer runs on a new thread: see ui/heap.py
        yield reply_from_answer(answer)


def _source_counts(stats: Mapping[str, Any]) -> dict[str, int]:
    """Documents per source from ``stats()["per_source"]`` ({source: {documents, chunks}})."""
    per_source = stats.get("per_source") or stats.get("sources") or {}
    if not isinstance(per_source, Mapping):
        return {str(s): 0 for s in per_source}
    counts = {}
    for name, value in per_source.items():
        if isinstance(value, Mapping):
            value = value.get("documents", value.get("chunks", 0))
        counts[str(name)] = int(value or 0)
    return counts


def evidence_views(evidence: Any, passages: Any) -> tuple[EvidenceView, ...]:
    """The chain's evidence sentences with their passage's title, source and text."""
    by_number = {p.number: p for p in passages}
    views = []
    for e in evidence:
        p = by_number.get(e.number)
        views.append(EvidenceView(number=e.number, text=e.text, title=p.title if p else "",
                                  source=p.source if p else "", passage=p.text if p else "",
                                  start=e.start, end=e.end))
    return tuple(views)


def reply_from_answer(answer: Answer) -> Reply:
    """The chain's :class:`Answer` as the page shows it: numbered sources with their passage."""
    passages = {p.number: p for p in answer.passages}
    sources = []
    for c in answer.citations:
        passage = passages.get(c.number)
        sources.append(SourceView(
            number=c.number, title=c.title, source=c.source, url=c.url,
            heading=c.heading or "", passage=passage.text if passage else "", doc_id=c.id,
            kind=c.kind, quote=c.quote or ""))
    if answer.refused and not sources:  # a refusal lists the closest passages found
        sources = [SourceView(number=p.number, title=p.title, source=p.source, url=p.url,
                              heading=p.heading or "", passage=p.text, doc_id=p.id,
                              kind="closest") for p in answer.passages[:CLOSEST_SHOWN]]
    details = {"n_generated_tokens": answer.usage.get("completion_tokens"),
               "gen_s": answer.timings.get("generate_s"), "finish_reason": answer.finish_reason,
               "unresolved_citations": list(answer.unresolved_citations),
               "search_query": answer.search_query}
    return Reply(text=answer.text, sources=tuple(sources), notice=answer.notice,
                 refused=answer.refused, details=details,
                 evidence=evidence_views(answer.evidence, answer.passages),
                 unsupported_numbers=tuple(answer.unsupported_numbers),
                 unsupported_terms=tuple(answer.unsupported_terms), n_numbers=answer.n_numbers,
                 **answer_downloads(answer))


def answer_downloads(answer: Answer) -> dict[str, str]:
    """The Reply's downloads: the answer as Markdown, and its receipt as JSON."""
    receipt = json.dumps(answer.receipt, ensure_ascii=False, indent=2) if answer.receipt else ""
    return {"markdown": answer_markdown(answer), "receipt_json": receipt}
