"""Byte-level BPE as llama.cpp does it (``llm_tokenizer_bpe_session``).

1. Pre-tokenize: the text is cut by a list of regexes applied one after the other, each one
   inside the pieces the previous left (llama.cpp's ``unicode_regex_split``); a regex emits its
   matches and the text between them.
2. Byte-level mapping: each piece's UTF-8 bytes become the printable characters of GPT-2's
   ``bytes_to_unicode`` table.
3. Merges: inside a piece, repeatedly merge the adjacent pair of lowest merge rank (leftmost on
   ties); each final symbol is a token (or, if not in the vocab, its single bytes).

``\\s`` is spelled out as llama.cpp's whitespace set (Unicode White_Space) so that Python's
``regex`` and llama.cpp agree on it; letters and numbers are Unicode categories L and N.
"""

from __future__ import annotations

import heapq
from functools import lru_cache

import regex

from engine.tokenizer.vocab import Vocab

# llama.cpp's whitespace codepoints (unicode-data: White_Space).
_WS = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

_GPT2 = (
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^{_WS}\p{{L}}\p{{N}}]+"
    rf"|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (
    rf"{_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}"
    rf"| ?[^{_WS}\p{{L}}\p{{N}}]+[\r\n]*|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
_QWEN2 = (
    rf"{_CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}"
    rf"| ?[^{_WS}\p{{L}}\p{{N}}]+[\r\n]*|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)

# Regex family (vocab.PreTokenizer.family) → the regexes llama.cpp applies, in order.
PRE_TOKENIZER_REGEXES: dict[str, tuple[str, ...]] = {
    "gpt2": (_GPT2,),
    "smollm": (r"\p{N}", _GPT2),
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_LATIN1_TO_BYTE_CHAR = str.maketrans({chr(b): c for b, c in BYTE_TO_CHAR.items()})


def byte_encode(text: str) -> str:
    """The byte-level form of ``text``: one printable character per UTF-8 byte."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1").translate(_LATIN1_TO_BYTE_CHAR)


@lru_cache(maxsize=16)
def _compiled(family: str) -> tuple[regex.Pattern, ...]:
    return tuple(regex.compile(r) for r in PRE_TOKENIZER_REGEXES[family])


def pre_tokenize(text: str, family: str) -> list[str]:
    """Cut ``text`` into pieces with the family's regexes, each inside the previous pieces."""
    pieces = [text]
    for rx in _compiled(family):
        out: list[str] = []
        for piece in pieces:
            last = 0
            for m in rx.finditer(piece):
                s, e = m.span()
                if s > last:
                    out.append(piece[last:s])
                if e > s:
                    out.append(piece[s:e])
                last = e
            if last < len(piece):
                out.append(piece[last:])
        pieces = out
    return pieces


class BpeModel:
    """Merge ranks and the per-piece BPE, with a bounded cache of pieces seen before."""

    CACHE_SIZE = 1 << 16
    CACHE_MAX_PIECE = 256

    def __init__(self, vocab: Vocab) -> None:
        self.token_to_id = vocab.token_to_id
        self.family = vocab.pre_tokenizer.family
        self.ignore_merges = vocab.pre_tokenizer.ignore_merges
        # Rank of each merge "left right", keyed by that string; the first of duplicates wins.
        # llama.cpp keys (left, right) split at the first space after position 0; byte-level
        # symbols never hold a space, so looking up left + " " + right finds the same merges.
        merges = vocab.merges
        self.ranks = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1), strict=True))
        self._cache: dict[str, tuple[int, ...]] = {}
        _compiled(self.family)

    def encode(self, text: str) -> list[int]:
        """Token ids of a text fragment (no special-token handling)."""
        out: list[int] = []
        cache = self._cache
        for piece in pre_tokenize(text, self.family):
            ids = cache.get(piece)
            if ids is None:
                ids = self._encode_piece(byte_encode(piece))
                if len(cache) >= self.CACHE_SIZE:
                    cache.clear()
                if len(piece) <= self.CACHE_MAX_PIECE:
                    cache[piece] = ids
            out.extend(ids)
        return out

    def _encode_piece(self, word: str) -> tuple[int, ...]:
        t2i = self.token_to_id
        if self.ignore_merges and word in t2i:
            return (t2i[word],)
        symbols = (
            _merge_short(word, self.ranks) if len(word) <= 48 else _merge_long(word, self.ranks)
        )
        ids: list[int] = []
        for s in symbols:
            i = t2i.get(s)
            if i is not None:
                ids.append(i)
                continue
            for b in s.encode("utf-8", "surrogatepass"):  # llama.cpp: each byte as a 1-byte token
                j = t2i.get(bytes([b]).decode("utf-8", "surrogateescape"))
                if j is not None:
                    ids.append(j)
        return tuple(ids)


def _merge_short(word: str, ranks: dict[str, int]) -> list[str]:
    """Merge the lowest-ranked adjacent pair (leftmost on ties) until none has a rank."""
    symbols = list(word)
    while len(symbols) > 1:
        best_rank, best_i = -1, -1
        for i in range(len(symbols) - 1):
            r = ranks.get(symbols[i] + " " + symbols[i + 1])
            if r is not None and (best_i < 0 or r < best_rank):
                best_rank, best_i = r, i
        if best_i < 0:
            break
        symbols[best_i : best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
    return symbols


def _merge_long(word: str, ranks: dict[str, int]) -> list[str]:
    """The same merges with llama.cpp's priority queue: O(n log n) for long pieces."""
    sym = list(word)  # text of the symbol starting at each index ("" once merged away)
    n = len(sym)
    nxt = [*range(1, n), -1]
    prv = list(range(-1, n - 1))
    heap: list[tuple[int, int, int, str]] = []

    def add(left: int, right: int) -> None:
        if left >= 0 and right >= 0:
            r = ranks.get(sym[left] + " " + sym[right])
            if r is not None:
                heapq.heappush(heap, (r, left, right, sym[left] + sym[right]))

    for i in range(n - 1):
        add(i, i + 1)
    while heap:
        _, left, right, text = heapq.heappop(heap)
        if not sym[left] or not sym[right] or sym[left] + sym[right] != text:
            continue  # outdated pair
        sym[left], sym[right] = text, ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        add(prv[left], left)
        add(left, nxt[left])
    out, i = [], 0
    while i >= 0:
        out.append(sym[i])
        i = nxt[i]
    return out


def bpe_token_bytes(text: str) -> bytes:
    """The bytes a normal byte-level token stands for (llama.cpp's ``llama_decode_text``)."""
    out = bytearray()
    for c in text:
        b = CHAR_TO_BYTE.get(c)
        if b is not None:
            out.append(b)
        else:  # not a byte-level character: llama.cpp writes a marker
            out += b"[UNK_BYTE_0x" + c.encode("utf-8").hex().encode() + text.encode() + b"]"
    return bytes(out)
