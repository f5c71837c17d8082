"""Glue of the RAG chain with stand-in parts (the real model and index: test_rag_end_to_end.py).

Retrieval → fitting → model → Answer; refusals never call the model; the notice on every path.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeStreamingListLLM
from langchain_core.retrievers import BaseRetriever

from assistant.answer import AnswerError, cited_numbers, resolve_citations
from assistant.chain import RAGChain
from assistant.notice import ADVISORY_NOTICE
from assistant.prompts import CITATION_REMINDER


class ListRetriever(BaseRetriever):
    docs: list[Document]
    calls: int = 0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: object
    ) -> list[Document]:
        self.calls += 1
        k = int(kwargs.get("k", len(self.docs)))
        return self.docs[:k]


class FailingRetriever(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: object
    ) -> list[Document]:
        raise OSError("index folder vanished")


def words(text: str) -> list[int]:
    return list(range(len(text.split())))


def fake_llm(*responses: str, fail_at: int | None = None) -> FakeStreamingListLLM:
    return FakeStreamingListLLM(
        responses=list(responses), custom_get_token_ids=words, error_on_chunk_number=fail_at
    )


DOCS = [
    Document(
        id="c1",
        page_content="Adults should get 150 minutes of activity a week.",
        metadata={
            "id": "g1",
            "title": "Activity",
            "source": "cdc",
            "url": "https://a/1",
            "heading": "Adults",
            "score": 0.9,
        },
    ),
    Document(
        id="c2",
        page_content="Children need 60 minutes daily.",
        metadata={
            "id": "g2",
            "title": "Kids",
            "source": "nhlbi",
            "url": "https://b/2",
            "score": 0.7,
        },
    ),
]


def test_invoke_returns_a_cited_answer_with_the_notice() -> None:
    chain = RAGChain(
        ListRetriever(docs=DOCS), fake_llm("Get 150 minutes weekly [1]."), max_tokens=32
    )
    answer = chain.invoke("How much activity?")
    assert answer.text == "Get 150 minutes weekly [1]."
    assert [
        (c.number, c.id, c.title, c.source, c.url, c.cited_in_text) for c in answer.citations
    ] == [(1, "g1", "Activity", "cdc", "https://a/1", True)]
    assert [p.chunk_id for p in answer.passages] == ["c1", "c2"]
    assert answer.notice == ADVISORY_NOTICE
    assert str(answer).endswith(ADVISORY_NOTICE)
    assert "[1] Activity — Adults (cdc) https://a/1" in str(answer)
    data = json.loads(json.dumps(answer.to_dict()))
    assert data["notice"] == ADVISORY_NOTICE and data["answer"] == answer.text
    assert data["citations"][0]["url"] == "https://a/1"


def test_stream_appends_sources_and_notice_when_it_ends() -> None:
    chain = RAGChain(ListRetriever(docs=DOCS), fake_llm("Sixty minutes [2]."), max_tokens=32)
    pieces = list(chain.stream({"question": "Kids?"}))
    assert len(pieces) > 2
    assert "".join(pieces[:-1]) == "Sixty minutes [2]."
    assert pieces[-1].endswith(ADVISORY_NOTICE) and "[2] Kids (nhlbi) https://b/2" in pieces[-1]


async def test_async_paths_carry_the_notice() -> None:
    chain = RAGChain(ListRetriever(docs=DOCS), fake_llm("A [1].", "B [2]."), max_tokens=32)
    answer = await chain.ainvoke("q")
    assert answer.notice == ADVISORY_NOTICE and answer.citations[0].number == 1
    pieces = [p async for p in chain.astream("q")]
    assert pieces[-1].endswith(ADVISORY_NOTICE)


def test_stream_answer_gives_pieces_then_the_answer() -> None:
    chain = RAGChain(ListRetriever(docs=DOCS), fake_llm("Yes [1][2]."), max_tokens=32)
    stream = chain.stream_answer("q")
    assert "".join(stream) == "Yes [1][2]."
    assert [c.number for c in stream.answer.citations] == [1, 2]


def test_nothing_relevant_refuses_without_calling_the_model() -> None:
    llm = fake_llm("should never be produced", fail_at=0)
    chain = RAGChain(ListRetriever(docs=[]), llm, max_tokens=32)
    answer = chain.invoke("What about unicorns?")
    assert answer.refused and answer.passages == [] and answer.citations == []
    assert "do not cover this question" in answer.text
    assert str(answer).endswith(ADVISORY_NOTICE)
    pieces = list(chain.stream("What about unicorns?"))
    assert pieces[-1].endswith(ADVISORY_NOTICE) and "do not cover" in pieces[0]
    assert llm.i == 0  # the model was never asked


def test_model_error_carries_the_notice() -> None:
    chain = RAGChain(ListRetriever(docs=DOCS), fake_llm("abcdef", fail_at=2), max_tokens=32)
    with pytest.raises(AnswerError) as e:
        chain.invoke("q")
    assert str(e.value).endswith(ADVISORY_NOTICE) and "model failed" in str(e.value)
    with pytest.raises(AnswerError) as e:
        list(chain.stream("q"))
    assert str(e.value).endswith(ADVISORY_NOTICE)


def test_retrieval_error_and_bad_input_carry_the_notice() -> None:
    chain = RAGChain(FailingRetriever(), fake_llm("x"), max_tokens=32)
    with pytest.raises(AnswerError) as e:
        chain.invoke("q")
    assert "index folder vanished" in str(e.value) and str(e.value).endswith(ADVISORY_NOTICE)
    with pytest.raises(AnswerError) as e:
        chain.invoke("   ")
    assert e.value.to_dict()["notice"] == ADVISORY_NOTICE


def test_passages_fitted_to_the_context() -> None:
    long_docs = [
        Document(id=f"c{i}", page_content="word " * 300, metadata={"id": f"g{i}", "title": "T"})
        for i in range(4)
    ]
    chain = RAGChain(ListRetriever(docs=long_docs), fake_llm("ok [1]"), max_tokens=100, n_ctx=800)
    answer = chain.invoke("q")
    assert [p.id for p in answer.passages] == [
        "g0",
        "g1",
    ]  # 2 x 300 words fit in 800 - 100 - prompt


def test_citation_parsing() -> None:
    assert cited_numbers("a [1], b [3, 2] c [2-4] d [12]") == [1, 3, 2, 4, 12]
    assert cited_numbers("no cites, [x], [ ], 5 mg [sic]") == []
    from assistant.answer import Passage

    passages = [Passage.from_document(i, d) for i, d in enumerate(DOCS, start=1)]
    cites, unresolved = resolve_citations("see [2] and [7]", passages)
    assert [c.id for c in cites] == ["g2"] and unresolved == [7]
    cites, unresolved = resolve_citations("no numbers", passages)
    assert [c.cited_in_text for c in cites] == [False, False] and unresolved == []


def test_a_chat_model_gets_system_and_user_messages() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage, SystemMessage

    seen = []

    class Recording(FakeListChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(messages)
            return super()._stream(messages, stop, run_manager, **kwargs)

    chat = Recording(responses=["Chat answer [2]."], custom_get_token_ids=words)
    answer = RAGChain(ListRetriever(docs=DOCS), chat, max_tokens=32).invoke("Kids?")
    assert answer.text == "Chat answer [2]." and answer.citations[0].id == "g2"
    system, user = seen[0]
    assert isinstance(system, SystemMessage) and "[1]" in system.content
    assert isinstance(user, HumanMessage) and "(from: Kids (nhlbi))" in user.content
    assert user.content.endswith(f"Question: Kids?\n\n{CITATION_REMINDER}")
