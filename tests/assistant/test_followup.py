"""Follow-up rewriting: the rule, and the chain searching the rewritten query."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeStreamingListLLM
from langchain_core.retrievers import BaseRetriever

from assistant.answer import AnswerError
from assistant.chain import RAGChain
from assistant.retrieval.followup import follow_up_rule, rewrite, topic_words


@pytest.mark.parametrize(
    ("previous", "question", "query", "rule"),
    [
        ("How is asthma treated?", "and in children?",
         "How is asthma treated? and in children?", "continuation"),
        ("How is asthma treated?", "What about pregnancy?",
         "How is asthma treated? What about pregnancy?", "continuation"),
        ("What is the treatment for latent TB infection?", "What is the dose?",
         "latent TB infection What is the dose?", "no topic"),
        ("What is babesiosis?", "How is it diagnosed?",
         "babesiosis How is it diagnosed?", "reference"),
        ("What is babesiosis?", "What are the symptoms of Lyme disease?",
         "What are the symptoms of Lyme disease?", "standalone"),
        ("What is babesiosis?", "Who should be screened for abdominal aortic aneurysm?",
         "Who should be screened for abdominal aortic aneurysm?", "standalone"),
    ],
)
def test_rewrite_rule(previous: str, question: str, query: str, rule: str) -> None:
    r = rewrite(question, [previous])
    assert (r.query, r.rule) == (query, rule)
    assert r.rewritten == (rule != "standalone")


def test_no_history_no_rewrite_and_chains_keep_the_subject() -> None:
    assert rewrite("and in children?", []).query == "and in children?"
    first = rewrite("How is it diagnosed?", ["What is babesiosis?"]).query
    second = rewrite("and the treatment?", ["What is babesiosis?", first])
    assert second.query == f"{first} and the treatment?"
    assert "babesiosis" in second.query


def test_topic_words_drop_function_words_and_aspects() -> None:
    assert topic_words("What are the symptoms of High Blood Pressure?") == [
        "High", "Blood", "Pressure"]
    assert follow_up_rule("What is the recommended dose?") == "no topic"
    assert follow_up_rule("What causes sickle cell disease?") is None


class RecordingRetriever(BaseRetriever):
    queries: list[str]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: object
    ) -> list[Document]:
        self.queries.append(query)
        return [Document(id="c1", page_content="Asthma in children is treated with inhalers.",
                         metadata={"id": "g1", "title": "Asthma", "source": "nhlbi"})]


def _chain(retriever: BaseRetriever) -> RAGChain:
    llm = FakeStreamingListLLM(responses=["Inhalers [1]."] * 3,
                               custom_get_token_ids=lambda t: list(range(len(t.split()))))
    return RAGChain(retriever, llm, max_tokens=16)


def test_the_chain_searches_the_rewritten_follow_up() -> None:
    retriever = RecordingRetriever(queries=[])
    chain = _chain(retriever)
    answer = chain.invoke({"question": "and in children?", "history": ["How is asthma treated?"]})
    assert retriever.queries == ["How is asthma treated? and in children?"]
    assert answer.question == "and in children?"
    assert answer.search_query == "How is asthma treated? and in children?"
    assert answer.to_dict()["search_query"] == answer.search_query
    alone = chain.invoke({"question": "How is asthma treated?", "history": []})
    assert alone.search_query is None and retriever.queries[-1] == "How is asthma treated?"


def test_bad_history_is_a_clear_error() -> None:
    with pytest.raises(AnswerError, match="history must be a list of strings"):
        _chain(RecordingRetriever(queries=[])).invoke({"question": "q?", "history": "oops"})


def test_session_file_round_trip_and_bad_file(tmp_path) -> None:
    from assistant.cli import _read_session, _write_session

    path = tmp_path / "s.json"
    assert _read_session(path) == []
    _write_session(path, [{"question": "How is asthma treated?", "search_query": None}])
    assert _read_session(path)[0]["question"] == "How is asthma treated?"
    path.write_text('{"turns": [1]}')
    with pytest.raises(ValueError, match=r"s\.json is not readable as a session"):
        _read_session(path)
