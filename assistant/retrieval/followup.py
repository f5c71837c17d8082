"""Conversation follow-ups: "and in children?" or "what is the dose?" retrieve for the
conversation, not for their bare words.

A simple rule, no model: a question is a *follow-up* of the previous turn when it starts with a
continuation ("and …", "what about …", "in children?"), refers back ("it", "this", "they", …)
or names no topic of its own (its content words are all question aspects such as "dose",
"treatment", "symptoms"). A follow-up is retrieved as

* a continuation: the previous turn's query followed by the follow-up ("How is asthma treated?
  and in children?"): it asks the previous question again, narrowed;
* otherwise: the previous query's topic words (its content words less the aspects) followed by
  the follow-up ("asthma How is it diagnosed?"): a new question about the same subject.

The previous turn's query is its rewritten one, so a chain of follow-ups keeps its subject. Any
other question stands alone and is searched as asked. The word lists are general English and
general clinical question words, not taken from any evaluation question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
CONTINUATION = re.compile(
    r"^\s*(and|or|but|also|plus|what about|how about|what if|same|then|in|for|with|without|"
    r"during|after|before|among|versus|vs\.?)\b",
    re.IGNORECASE,
)


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


BACK_REFERENCE = _word_set(
    """
    it its it's this that these those they them their theirs such
    """
)
# Words that carry no subject: question words, auxiliaries, pronouns, determiners, prepositions.
FUNCTION_WORDS = _word_set(
    """
    a an the and or but also plus so then if of in on at to for from by with without about
    into over under during after before between among versus vs is are was were be been
    being am do does did done has have had having can could may might must shall should
    will would what which who whom whose when where why how i me my we us our you your he
    him his she her it its this that these those they them their there here any some all
    each every no not more most much many other same such than too very just only else
    please tell know explain give need want get
    """
)
# General aspects of a clinical question: they say what is asked, not what it is about.
ASPECTS = _word_set(
    """
    dose doses dosage dosing treatment treatments treat treated treating therapy therapies
    management manage managed symptom symptoms sign signs cause causes caused causing risk
    risks factor factors diagnosis diagnose diagnosed diagnosing test tests testing exam
    exams screening screen screened prevention prevent prevented preventing outlook
    prognosis complication complications side effect effects information info definition
    mean means meaning common frequency often people person patients patient children
    child kids adults adult elderly women men pregnancy pregnant infants babies teens next
    long duration recommended recommendation recommendations guideline guidelines option
    options drug drugs medication medications medicine medicines first line best
    """
)


@dataclass(frozen=True)
class Rewrite:
    """What a question is searched as: ``query``; ``rule`` says why ("standalone",
    "continuation", "reference" or "no topic")."""

    question: str
    query: str
    rule: str

    @property
    def rewritten(self) -> bool:
        return self.query != self.question


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def topic_words(text: str) -> list[str]:
    """The words of a question that name its subject (not function words, not aspects), as
    written, each once."""
    out: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(text):
        w = word.lower()
        if w not in FUNCTION_WORDS and w not in ASPECTS and w not in seen:
            out.append(word)
            seen.add(w)
    return out


def follow_up_rule(question: str) -> str | None:
    """Why ``question`` reads as a follow-up ("continuation", "reference", "no topic"), or None."""
    if CONTINUATION.match(question):
        return "continuation"
    words = _words(question)
    if any(w in BACK_REFERENCE for w in words) and len(topic_words(question)) <= 1:
        return "reference"
    if not topic_words(question):
        return "no topic"
    return None


def rewrite(question: str, previous: Sequence[str]) -> Rewrite:
    """The search query for ``question`` after the conversation's earlier queries
    (``previous``: each turn's search query, oldest first; the last one is used)."""
    question = " ".join(question.split())
    prior = next((p for p in reversed(previous) if p.strip()), None)
    rule = follow_up_rule(question) if prior else None
    if rule is None or prior is None:
        return Rewrite(question, question, "standalone")
    prior = " ".join(prior.split())
    if rule == "continuation":
        return Rewrite(question, f"{prior} {question}", rule)
    topic = topic_words(prior)
    if not topic:
        return Rewrite(question, f"{prior} {question}", rule)
    return Rewrite(question, f"{' '.join(topic)} {question}", rule)
