"""Lexical retrieval: BM25 over the chunks' context line and text with SQLite FTS5.

The FTS5 index lives in the index database (porter stemming, diacritics folded) and is updated in
the same transactions as the chunks, so it is always consistent with the dense vectors. A query is
reduced to its distinct word stems minus English stop words (bm25s' list), each quoted, joined by
OR: no FTS5 syntax from the user's text is ever interpreted.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from bm25s.stopwords import STOPWORDS_EN_PLUS

from .abbreviations import expand_query
from .index import VISIBLE_AT

# BM25 weight of each FTS5 column (context line, text).
COLUMN_WEIGHTS = (1.0, 1.0)
MAX_QUERY_TERMS = 64
_WORD = re.compile(r"\w+")
_STOP = frozenset(STOPWORDS_EN_PLUS)


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any of the text's content words, or None when it has none."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word not in _STOP and word not in terms and not word.startswith("_"):
            terms.append(word)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms[:MAX_QUERY_TERMS])


def lexical_search(
    conn: sqlite3.Connection,
    generation: int,
    text: str,
    k: int,
    sources: Sequence[str] | None = None,
    weights: tuple[float, float] = COLUMN_WEIGHTS,
    abbreviations: bool = False,
) -> list[tuple[int, float]]:
    """(row id, BM25 score) of the ``k`` best chunks visible at ``generation``, best first.

    ``weights``: BM25 weights of the context line and the text; ``abbreviations``: add the other
    form of each medical abbreviation or expansion the text holds (see :mod:`.abbreviations`).
    """
    query = fts_query(expand_query(text) if abbreviations else text)
    if query is None or k <= 0:
        return []
    visible = VISIBLE_AT.replace("gen_", "c.gen_")
    where, params = "", []
    if sources is not None:
        sources = list(sources)
        if not sources:
            return []
        where = f" AND c.source IN ({','.join('?' * len(sources))})"
        params = sources
    sql = (
        f"SELECT c.rid, bm25(chunks_fts, {float(weights[0])}, {float(weights[1])}) AS s "
        f"FROM chunks_fts JOIN chunks c ON c.rid = chunks_fts.rowid "
        f"WHERE chunks_fts MATCH ? AND {visible}{where} ORDER BY s LIMIT ?"
    )
    rows = conn.execute(sql, [query, generation, generation, *params, k]).fetchall()
    return [(int(rid), -float(score)) for rid, score in rows]


def term_counts(conn: sqlite3.Connection, generation: int, words: Sequence[str]) -> dict[str, int]:
    """word -> how many chunks visible at ``generation`` hold it (FTS5 stemming, so
    ``treated`` counts ``treat``); words FTS5 cannot match count 0."""
    visible = VISIBLE_AT.replace("gen_", "c.gen_")
    sql = (
        "SELECT count(*) FROM chunks_fts JOIN chunks c ON c.rid = chunks_fts.rowid "
        f"WHERE chunks_fts MATCH ? AND {visible}"
    )
    counts: dict[str, int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        if not _WORD.fullmatch(word) or word.startswith("_"):
            counts[word] = 0
            continue
        counts[word] = int(conn.execute(sql, [f'"{word}"', generation, generation]).fetchone()[0])
    return counts
