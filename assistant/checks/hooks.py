"""The checks around one answer, in the order the chain runs them.

Before the model: the evidence sentences of the retrieved passages and the refusal decision
(:func:`before_generation`), so a refusal needs no model; the evidence is then numbered as the
passages that fit the prompt (:func:`renumber`). After it: the number guard, the drug-term
guard and the model's own refusal (:func:`after_generation`), written into the
:class:`~assistant.answer.Answer`'s fields (``evidence``, ``unsupported_numbers``,
``n_numbers``, ``unsupported_terms``, ``refusal``). The checks only read: the model's text is
never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from assistant.answer import Answer, Passage
from assistant.checks.evidence import EvidenceSentence, embedder_of, select_evidence
from assistant.checks.number_guard import count_quantities, unsupported_numbers
from assistant.checks.refusal import (
    RefusalPolicy,
    RefusalSignals,
    decide,
    model_refused,
    term_counts_of,
)
from assistant.checks.term_guard import unsupported_terms


def passage_texts(passages: Sequence[Passage]) -> list[str]:
    """What the model is shown of each passage: its text, title and heading."""
    return [" ".join(x for x in (p.text, p.title, p.heading or "") if x) for p in passages]


def passage_titles(passages: Sequence[Passage]) -> list[str]:
    """Each passage's title and heading (the refusal's ``title_coverage`` reads them)."""
    return [" ".join(x for x in (p.title, p.heading or "") if x) for p in passages]


def passage_similarities(passages: Sequence[Passage]) -> list[float]:
    """The passages' cosine similarities with the question, where the retriever gives them."""
    return [p.similarity for p in passages if p.similarity is not None]


def before_generation(question: str, passages: Sequence[Passage], retriever: Any,
                      policy: RefusalPolicy | None
                      ) -> tuple[list[EvidenceSentence], RefusalSignals | None]:
    """(evidence sentences, refusal signals or None without a policy) for the shown passages."""
    evidence = select_evidence(question, [(p.number, p.text) for p in passages],
                               embedder_of(retriever))
    if policy is None:
        return evidence, None
    best = evidence[0].score if evidence else None
    signals = decide(question, passage_texts(passages), passage_titles(passages),
                     passage_similarities(passages) or None, best, policy,
                     term_counts_of(retriever))
    return evidence, signals


def after_generation(answer: Answer) -> Answer:
    """``answer`` with the guards' findings and, when the model refused, ``refused`` set."""
    shown = passage_texts(answer.passages)
    refused, refusal = answer.refused, answer.refusal
    if not refused and model_refused(answer.text):
        refused = True
        refusal = {**(refusal or {}), "refuse": True, "by": "model"}
    return replace(answer, refused=refused, refusal=refusal,
                   unsupported_numbers=unsupported_numbers(answer.text, shown),
                   n_numbers=count_quantities(answer.text),
                   unsupported_terms=unsupported_terms(answer.text, shown))


def renumber(evidence: Sequence[EvidenceSentence], retrieved: Sequence[Passage],
             shown: Sequence[Passage]) -> list[EvidenceSentence]:
    """``evidence`` found in the ``retrieved`` passages, numbered as the ``shown`` ones (the
    passages that fit the model's context); a sentence of a passage left out, or cut off by
    its truncation, is dropped."""
    by_chunk = {p.chunk_id: p for p in shown}
    out = []
    for e in evidence:
        source = retrieved[e.number - 1]
        target = by_chunk.get(source.chunk_id)
        if target is not None and target.text[e.start:e.end] == e.text:
            out.append(replace(e, number=target.number))
    return out
