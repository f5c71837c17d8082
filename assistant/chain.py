"""The cited RAG chain: question → retrieve → fit passages → prompt → model → :class:`Answer`.

``RAGChain`` is a LangChain ``Runnable``:

* ``invoke(question)`` returns an :class:`Answer` (text, citations resolved to id / title /
  source / url, the passages used, usage, timings and the advisory notice);
* ``stream(question)`` yields the answer's text pieces and, when the stream ends, one last
  piece holding the sources and the notice;
* ``stream_answer(question)`` gives the pieces and, once exhausted, the full ``Answer`` (the
  CLI and the page use it).

The input may carry ``"history"``: the conversation's earlier search queries (each turn's
``Answer.search_query or Answer.question``); a follow-up ("and in children?") is then searched
and asked as rewritten by :func:`assistant.retrieval.followup.rewrite`, and
``Answer.search_query`` says so.

When the retriever returns nothing (its score threshold removed every passage) the chain
answers with a refusal and does not call the model.  Any failure is raised as
:class:`AnswerError`, whose message ends with the notice.  The model may be our ``EngineLLM``
(a ChatML string prompt) or any LangChain chat model (system + user messages), such as a served
model through ``langchain-openai`` (``assistant.model.served``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForChainRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.outputs import LLMResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config

from assistant.answer import REFUSAL_TEXT, Answer, AnswerError, Passage, resolve_citations
from assistant.checks.hooks import after_generation, before_generation, renumber
from assistant.checks.refusal import RefusalPolicy
from assistant.model.chat_format import ChatFormat
from assistant.model.presets import ModelError, parse_served
from assistant.notice import ADVISORY_NOTICE
from assistant.prompts import (
    DEFAULT_REMINDER,
    SYSTEM_PROMPT,
    FittedPrompt,
    fit_passages,
    rag_messages,
)
from assistant.receipt import prompt_text, safe_receipt
from assistant.retrieval.followup import rewrite

DEFAULT_CONTEXT = 2048  # for a model that does not say its context length


@dataclass(frozen=True)
class _Prepared:
    """What the model step needs once the passages are retrieved, checked and fitted."""

    asked: str  # the question as the user asked it
    question: str  # what is searched and asked (a follow-up rewritten)
    search_query: str | None  # the rewritten query, when it was rewritten
    retriever_kwargs: dict[str, Any]
    fitted: FittedPrompt
    evidence: list[Any]
    shown: list[Passage]
    refusal: dict[str, Any] | None
    times: tuple[float, float]  # perf_counter at the start and after retrieval


def _drain(pieces: Generator[str, None, Answer]) -> Answer:
    """Run a generator of text pieces to its end; its return value."""
    while True:
        try:
            next(pieces)
        except StopIteration as stop:
            return stop.value


class _GenerationCapture(BaseCallbackHandler):
    """Keeps the model's last result: finish reason, token counts and engine timings."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        first = response.generations[0] if response.generations else []
        gen = first[0] if first else None
        info: dict[str, Any] = dict(getattr(gen, "generation_info", None) or {})
        message = getattr(gen, "message", None)
        if message is not None:  # a chat model: usage and metadata live on the message
            info.update(getattr(message, "response_metadata", {}) or {})
            usage = getattr(message, "usage_metadata", None)
            if usage:
                info.setdefault("n_prompt_tokens", usage.get("input_tokens"))
                info.setdefault("n_generated_tokens", usage.get("output_tokens"))
        self.info = info


def _question_of(value: Any) -> tuple[str, dict[str, Any], list[str]]:
    """``"q"`` or ``{"question": q, "sources": [...], "k": n, "history": [...]}`` → (q,
    retriever kwargs, the conversation's earlier search queries, oldest first)."""
    history: list[str] = []
    if isinstance(value, str):
        question, extra = value, {}
    elif isinstance(value, dict) and isinstance(value.get("question"), str):
        question = value["question"]
        extra = {k: value[k] for k in ("sources", "k") if value.get(k) is not None}
        history = value.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise AnswerError(f"history must be a list of strings, got {history!r:.80}")
    else:
        raise AnswerError("expected a question string or {'question': str}, "
                          f"got {type(value).__name__}")
    if not question.strip():
        raise AnswerError("the question is empty")
    return question, extra, history


class RAGChain(Runnable[Any, Answer]):
    """Cited answers from retrieved guideline passages (see the module docstring)."""

    def __init__(self, retriever: BaseRetriever, llm: BaseLanguageModel, *,
                 max_tokens: int | None = None, n_ctx: int | None = None,
                 system_prompt: str = SYSTEM_PROMPT,
                 reminder: str | None = DEFAULT_REMINDER,
                 refusal: RefusalPolicy | None = None) -> None:
        self.retriever = retriever
        self.refusal = refusal  # None: refuse only when retrieval finds nothing
        self.llm = llm
        if max_tokens is None:
            max_tokens = int(getattr(llm, "max_tokens", None) or 256)
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.system_prompt = system_prompt
        self.reminder = reminder  # restated after the question; None leaves it out

    # -- the steps ---------------------------------------------------------------------------

    @property
    def chat_format(self) -> ChatFormat:
        return getattr(self.llm, "chat_format", None) or ChatFormat()

    def context_length(self) -> int:
        model_ctx = getattr(self.llm, "context_length", None)
        ctx = model_ctx if isinstance(model_ctx, int) and model_ctx > 0 else DEFAULT_CONTEXT
        return min(ctx, self.n_ctx) if self.n_ctx else ctx

    def retrieve(self, question: str, config: RunnableConfig | None = None,
                 **kwargs: Any) -> list[Document]:
        return self.retriever.invoke(question, config, **kwargs)

    def fit(self, question: str, docs: list[Document]) -> FittedPrompt:
        fmt = self.chat_format

        def render(q: str, ps: Any) -> str:
            return fmt.render(rag_messages(q, ps, self.system_prompt, self.reminder))

        return fit_passages(question, docs, self.llm.get_num_tokens, self.context_length(),
                            self.max_tokens, render)

    def model_input(self, question: str, passages: list[Document]) -> Any:
        messages = rag_messages(question, passages, self.system_prompt,
                                self.reminder)
        if isinstance(self.llm, BaseChatModel):
            return [SystemMessage(messages[0][1]), HumanMessage(messages[1][1])]
        return self.chat_format.render(messages)

    def _llm_kwargs(self) -> dict[str, Any]:
        if isinstance(self.llm, BaseChatModel):
            return {}
        return {"stop": list(self.chat_format.stop)}

    # -- running -----------------------------------------------------------------------------

    def _prepare(self, value: Any, run_manager: CallbackManagerForChainRun | None,
                 config: RunnableConfig | None) -> Answer | _Prepared:
        """Retrieval, the checks before the model and the prompt: a refusal :class:`Answer`
        (the model is not loaded), or what :meth:`_answer_pieces` needs."""
        asked, retriever_kwargs, history = _question_of(value)
        search = rewrite(asked, history)
        # a rewritten follow-up is what is searched and what the model is asked
        question, search_query = search.query, (search.query if search.rewritten else None)
        t0 = time.perf_counter()
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager else config
        try:
            docs = self.retrieve(question, child, **retriever_kwargs)
        except Exception as e:
            raise AnswerError(f"retrieval failed: {e.__class__.__name__}: {e}", question) from e
        t_retrieved = time.perf_counter()
        retrieved = [Passage.from_document(i, d) for i, d in enumerate(docs, start=1)]
        evidence, signals = ([], None) if not docs else before_generation(
            question, retrieved, self.retriever, self.refusal)
        refusal = signals.to_dict() if signals is not None else None
        if not docs or (signals is not None and signals.refuse):  # without loading the model
            answer = Answer(asked, REFUSAL_TEXT, [], retrieved, refused=True, refusal=refusal,
                            timings={"retrieve_s": t_retrieved - t0,
                                     "total_s": time.perf_counter() - t0},
                            search_query=search_query)
            answer.receipt = safe_receipt(self, answer, None, retriever_kwargs)
            return answer
        try:
            fitted = self.fit(question, docs)
        except ModelError as e:  # the model file is missing: say how to fetch it
            raise AnswerError(str(e), question) from e
        except Exception as e:
            raise AnswerError(f"could not build the prompt: {e}", question) from e
        shown = [Passage.from_document(i, d) for i, d in enumerate(fitted.passages, start=1)]
        return _Prepared(asked, question, search_query, retriever_kwargs, fitted,
                         renumber(evidence, retrieved, shown), shown, refusal, (t0, t_retrieved))

    def _answer_pieces(self, prep: Answer | _Prepared,
                       run_manager: CallbackManagerForChainRun | None,
                       config: RunnableConfig | None) -> Generator[str, None, Answer]:
        """Yields the answer's text pieces (a refusal's text as one, without the model);
        returns the finished :class:`Answer`."""
        if isinstance(prep, Answer):
            yield REFUSAL_TEXT
            return prep
        capture = _GenerationCapture()
        if run_manager:
            manager = run_manager.get_child()
            manager.add_handler(capture, inherit=True)
            llm_config = patch_config(config, callbacks=manager)
        else:
            llm_config = {**(config or {}), "callbacks": [capture]}
        t0, t_retrieved = prep.times
        t_prompt = time.perf_counter()
        parts: list[str] = []
        model_input = self.model_input(prep.question, prep.fitted.passages)
        try:
            for piece in self.llm.stream(model_input, llm_config, **self._llm_kwargs()):
                text = piece if isinstance(piece, str) else str(getattr(piece, "content", piece))
                if text:
                    parts.append(text)
                    yield text
        except AnswerError:
            raise
        except Exception as e:
            raise AnswerError(f"the model failed: {e.__class__.__name__}: {e}",
                              prep.question) from e
        t_end = time.perf_counter()
        answer = self._build_answer(prep.question, "".join(parts), prep.fitted, capture.info,
                                    {"retrieve_s": t_retrieved - t0,
                                     "prompt_s": t_prompt - t_retrieved,
                                     "generate_s": t_end - t_prompt,
                                     "total_s": t_end - t0})
        answer.evidence, answer.refusal = prep.evidence, prep.refusal
        answer = replace(after_generation(answer), question=prep.asked,
                         search_query=prep.search_query)
        answer.receipt = safe_receipt(self, answer, prompt_text(model_input),
                                      prep.retriever_kwargs)
        return answer

    def _pieces(self, value: Any, run_manager: CallbackManagerForChainRun | None,
                config: RunnableConfig | None) -> Generator[str, None, Answer]:
        """Yields the answer's text pieces (a refusal's text as one); returns the Answer."""
        prep = self._prepare(value, run_manager, config)
        return (yield from self._answer_pieces(prep, run_manager, config))

    def _build_answer(self, question: str, text: str, fitted: FittedPrompt, info: dict[str, Any],
                      timings: dict[str, float]) -> Answer:
        passages = [Passage.from_document(i, d) for i, d in enumerate(fitted.passages, start=1)]
        citations, unresolved = resolve_citations(text, passages, question=question)
        engine_timings = info.get("timings") or {}
        timings = {**timings, **{f"engine_{k}": float(v) for k, v in engine_timings.items()}}
        usage = {"prompt_tokens": int(info.get("n_prompt_tokens") or fitted.n_prompt_tokens),
                 "completion_tokens": int(info.get("n_generated_tokens") or 0)}
        return Answer(question, text.strip(), citations, passages, refused=False,
                      unresolved_citations=unresolved, finish_reason=info.get("finish_reason"),
                      model=info.get("model_name") or info.get("model"), usage=usage,
                      timings=timings)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Answer:
        def run(value: Any, run_manager: CallbackManagerForChainRun,
                config: RunnableConfig) -> Answer:
            return _drain(self._pieces(value, run_manager, config))

        return self._call_with_config(run, input, config)

    def stream_answer(self, input: Any, config: RunnableConfig | None = None) -> AnswerStream:
        """An iterator of text pieces; after it ends, ``.answer`` is the full :class:`Answer`."""
        return AnswerStream(self, input, config)

    def stream(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> Iterator[str]:
        """The answer's text pieces, then ``"\\n\\n"`` + sources + the notice as the last piece."""

        def transform(inputs: Iterator[Any], run_manager: CallbackManagerForChainRun,
                      config: RunnableConfig) -> Iterator[str]:
            for value in inputs:
                answer = yield from self._pieces(value, run_manager, config)
                yield stream_tail(answer)

        yield from self._transform_stream_with_config(iter([input]), transform, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Answer:
        return await asyncio.to_thread(self.invoke, input, config)

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[str]:
        iterator = iter(self.stream(input, config))
        done = object()
        while (piece := await asyncio.to_thread(next, iterator, done)) is not done:
            yield piece  # type: ignore[misc]


def stream_tail(answer: Answer) -> str:
    """What a stream appends when it ends: how generation ended (the repetition guard), the
    rewritten search (a follow-up), the guards' findings, the sources, then the notice."""
    parts = [f"({answer.status_note()})"] if answer.status_note() else []
    if answer.search_query:
        parts.append(f"(searched for: {answer.search_query})")
    parts += [x for x in (answer.checks_text(), answer.sources_text()) if x]
    return "".join(f"\n\n{x}" for x in parts) + f"\n\n{ADVISORY_NOTICE}"


class AnswerStream:
    """Iterate for the answer's text pieces; then ``.answer`` holds the whole Answer."""

    def __init__(self, chain: RAGChain, value: Any, config: RunnableConfig | None) -> None:
        self._chain, self._value, self._config = chain, value, config
        self._prepared: _Prepared | None = None
        self._answer: Answer | None = None
        self._iterator = self._run()

    def _run(self) -> Iterator[str]:
        prep = self._chain._prepare(self._value, None, self._config)
        self._prepared = None if isinstance(prep, Answer) else prep
        self._answer = yield from self._chain._answer_pieces(prep, None, self._config)

    def __iter__(self) -> Iterator[str]:
        return self._iterator

    @property
    def evidence(self) -> list[Any]:
        """The evidence sentences, once the passages are chosen (before the first piece of
        an answer; empty for a refusal)."""
        return list(self._prepared.evidence) if self._prepared else []

    @property
    def passages(self) -> list[Passage]:
        """The numbered passages shown to the model (once chosen, as ``evidence``)."""
        return list(self._prepared.shown) if self._prepared else []

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise RuntimeError("the stream has not finished yet")
        return self._answer


def build_chain(settings: Any, *, llm: BaseLanguageModel | None = None,
                retriever: BaseRetriever | None = None) -> RAGChain:
    """The chain the CLI and the page use, from :class:`assistant.config.Settings`."""
    from assistant.model.llm import EngineLLM
    from assistant.retrieval.retriever import GuidelineRetriever

    served = parse_served(settings.model)
    if llm is None and served is not None:
        from assistant.model.served import served_chat_model

        llm = served_chat_model(served, max_tokens=settings.max_tokens,
                                temperature=settings.temperature, seed=settings.seed,
                                timeout=settings.served_timeout, api_key=settings.served_api_key)
    if llm is None:
        llm = EngineLLM(model=settings.model, models_dir=str(settings.models_dir),
                        max_tokens=settings.max_tokens, temperature=settings.temperature,
                        seed=settings.seed, n_ctx=settings.n_ctx)
    if retriever is None:
        retriever = GuidelineRetriever(index_path=str(settings.index), k=settings.k,
                                       score_threshold=settings.min_similarity)
    return RAGChain(retriever, llm, max_tokens=settings.max_tokens, n_ctx=settings.n_ctx,
                    refusal=settings.refusal_policy)
