"""SentencePiece-style tokenization as llama.cpp does it (``llm_tokenizer_spm_session``).

The text (spaces already escaped to ``▁``) starts as one symbol per character. Repeatedly, the
adjacent pair whose concatenation is a vocab token of highest score is merged (leftmost on ties),
until no pair forms a token. A final symbol that is not a token falls back to its UTF-8 bytes
(``<0xXX>`` tokens).

Speed: when no vocab token has ``▁`` after another character (true of the Llama-2 vocab), no
merge can cross the start of a ``▁`` run, so the text is cut there and each word is merged on
its own (with a cache); the result is the same as merging the whole text at once.
"""

from __future__ import annotations

import heapq

import regex

from engine.tokenizer.vocab import Vocab

SPACE = "\u2581"  # ▁, SentencePiece's escaped space
_WORDS = regex.compile(f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+")
_INNER_SPACE = regex.compile(f"[^{SPACE}]{SPACE}")


class SpmModel:
    """Score-ordered merges over characters, with byte fallback."""

    CACHE_SIZE = 1 << 16

    def __init__(self, vocab: Vocab) -> None:
        self.token_to_id = vocab.token_to_id
        self.scores = vocab.scores.tolist()
        self.byte_ids = [self._byte_token(vocab, b) for b in range(256)]
        self.split_words = not any(SPACE in t[1:] and _INNER_SPACE.search(t) for t in vocab.tokens)
        self._cache: dict[str, tuple[int, ...]] = {}

    @staticmethod
    def _byte_token(vocab: Vocab, b: int) -> int | None:
        i = vocab.token_to_id.get(f"<0x{b:02X}>")
        if i is None:
            i = vocab.token_to_id.get(chr(b)) if b < 0x80 else None
        return i if i is not None else vocab.unk_id

    def encode(self, text: str) -> list[int]:
        """Token ids of already-escaped text (``▁`` for spaces)."""
        if not self.split_words:
            return list(self._merge(text))
        out: list[int] = []
        cache = self._cache
        for word in _WORDS.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._merge(word)
                if len(cache) >= self.CACHE_SIZE:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def _merge(self, text: str) -> tuple[int, ...]:
        n = len(text)
        if n == 0:
            return ()
        t2i, scores = self.token_to_id, self.scores
        sym = list(text)  # text of the symbol starting at each index ("" once merged away)
        nxt = [*range(1, n), -1]
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []

        def try_add(left: int, right: int) -> None:
            t = sym[left] + sym[right]
            i = t2i.get(t)
            if i is not None:
                heapq.heappush(heap, (-scores[i], left, right, len(t)))

        for i in range(n - 1):
            try_add(i, i + 1)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = sym[left], sym[right]
            if not a or not b or len(a) + len(b) != size:
                continue  # one side was merged since: stale pair
            sym[left], sym[right] = a + b, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            if prv[left] >= 0:
                try_add(prv[left], left)
            if nxt[left] >= 0:
                try_add(left, nxt[left])
        ids: list[int] = []
        i = 0
        while i >= 0:
            tid = t2i.get(sym[i])
            if tid is not None:
                ids.append(tid)
            else:
                ids.extend(self.byte_ids[b] for b in sym[i].encode("utf-8", "surrogatepass"))
            i = nxt[i]
        return tuple(x for x in ids if x is not None)
