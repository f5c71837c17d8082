"""``Index.term_counts``: how many chunks hold each word (the refusal policy's idf weights)."""

from __future__ import annotations

import ingest


def test_term_counts_match_the_chunks_holding_the_word(small_index) -> None:
    index = ingest.open_index(small_index)
    store = index.store
    with store.snapshot() as (conn, gen):
        texts = [row[0] for row in conn.execute(
            "SELECT context || ' ' || text FROM chunks WHERE gen_added <= ? AND "
            "(gen_deleted IS NULL OR gen_deleted > ?)", (gen, gen))]
    counts, n = index.term_counts(["the", "zzqxv", "a-b", "The"])
    assert n == len(texts) > 0
    assert counts["zzqxv"] == 0 and counts["a-b"] == 0  # not a word FTS5 can match: 0
    assert 0 < counts["the"] <= n
    holding = sum(" the " in f" {t.lower()} " for t in texts)
    assert counts["the"] >= holding  # stemming and tokenisation only add matches
    index.close()
