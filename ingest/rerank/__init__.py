"""Re-ranking: every step that re-orders or filters a search's candidates, in one place.

A search (``ingest.search.Index.search``) fuses its dense and lexical rankings into a list of
``(row id, score)``, best first, then runs the steps a setting names
(``HybridSettings.rerank``, and the retriever's threshold and MMR), each a callable
``step(query, ranked) -> ranked`` given a :class:`Query` (the question, its vector, ``k`` and
read access to the index's vectors). A new re-ranker is one file in this package holding its
step class, and one line in :data:`STEPS`.

A step is named by a string: ``"parts"``, or with parameters ``"parts:depth=10"``,
``"threshold:min_similarity=0.3"`` (values are numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .base import Query, Scored
from .doc import DocPassages
from .mmr import Mmr
from .parts import BestSentence
from .restated import Restated
from .threshold import Threshold


class Step(Protocol):
    def __call__(self, query: Query, ranked: list[Scored]) -> list[Scored]: ...


# name -> the step's class (its keyword parameters are the spec's name=value pairs)
STEPS: dict[str, Callable[..., Step]] = {
    "doc": DocPassages,
    "parts": BestSentence,
    "restated": Restated,
    "threshold": Threshold,
    "mmr": Mmr,
}


class RerankSpecError(ValueError):
    """A re-ranking step name or parameter that does not exist."""

    def __init__(self, spec: str, why: str) -> None:
        super().__init__(f"re-ranking step {spec!r}: {why}")
        self.spec = spec


def make_step(spec: str) -> Step:
    """The step a spec names: ``"name"`` or ``"name:key=value,key=value"``."""
    name, _, args = spec.partition(":")
    cls = STEPS.get(name.strip())
    if cls is None:
        raise RerankSpecError(spec, f"unknown step; known: {', '.join(STEPS)}")
    params: dict[str, float] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise RerankSpecError(spec, f"{item!r} is not key=number") from None
        if not eq:
            raise RerankSpecError(spec, f"{item!r} is not key=number")
    try:
        return cls(**params)
    except TypeError as e:
        raise RerankSpecError(spec, str(e)) from None


def make_steps(specs: Sequence[str]) -> list[Step]:
    return [make_step(s) for s in specs]


def run(steps: Sequence[Step], query: Query, ranked: list[Scored]) -> list[Scored]:
    """``ranked`` through each step in turn."""
    for step in steps:
        if not ranked:
            break
        ranked = step(query, ranked)
    return ranked


__all__ = ["STEPS", "Query", "RerankSpecError", "Scored", "Step", "make_step", "make_steps", "run"]
