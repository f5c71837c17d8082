"""The repetition guard: DRY ("don't repeat yourself") penalties and the loop stop.

Two parts, both over the tokens *generated so far* (never the prompt: an answer may quote the
passages it was given, and attribution relies on such quotes):

* **DRY** (llama.cpp's ``dry`` sampler, after koboldcpp; design by p-e-w).  If the last tokens
  of the answer already appeared earlier in it, followed by token ``t``, then emitting ``t``
  would extend a verbatim repeat.  With ``n`` the length of the longest such repeat, ``t``'s
  logit loses ``multiplier * base ** (n - allowed_length)`` once ``n >= allowed_length``: short
  echoes ("blood pressure") cost nothing, a copied sentence soon costs more than any logit gap.
  A *sequence breaker* (a token whose text holds ``\\n``, ``:``, ``"`` or ``*`` by default) ends
  the repeat it is in, so list markers and line starts are not penalised, and a breaker token is
  itself never penalised.  Only single-token breakers (llama.cpp also matches multi-token ones).
* **The loop stop** (:class:`LoopDetector`): when the answer's last ``loop_stop_tokens`` tokens
  copy an earlier span of the answer, numbers aside (each run of digit tokens counts as one
  "number" token, so ``9. Numbness ...`` / ``10. Numbness ...`` or ``[5]`` / ``[6]`` repeat each
  other; breakers do not end it), generation is running in circles: it stops with finish
  reason ``"repetition"``.  The same stop catches *near* repeats, the loops of a small model
  that change a word or two each time round ("Side effects of DEC ... / Side effects of
  doxycycline ..."): once ``NEAR_REPEAT_SHARE`` of the last ``NEAR_REPEAT_WINDOW`` generated
  positions end a word trigram (``NEAR_REPEAT_NGRAM`` tokens, numbers as above) that the answer
  already held, it stops the same way.  The constants were chosen on the even half of the dev
  questions' answers (docs/assistant.md, *Repetition guard*).

``repeat_lengths`` computes, in one pass, for each position the length of the longest run ending
there that equals a suffix of the sequence (the reversed Z-algorithm, as llama.cpp's DRY).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's defaults
_FLOAT_MAX_LOG = 88.7228391  # log(float32 max): caps the exponent of base ** n
NEAR_REPEAT_NGRAM = 3  # tokens per n-gram compared (numbers folded, as for the exact stop)
NEAR_REPEAT_WINDOW = 48  # the last generated positions looked at
NEAR_REPEAT_SHARE = 0.6  # share of them ending an n-gram seen before in the answer: a loop


def repeat_lengths(tokens: Sequence[int], limit: int | None = None) -> list[int]:
    """``out[i]`` = the largest ``n`` such that ``tokens[i-n+1 .. i]`` equals the last ``n``
    tokens, for ``i < len(tokens) - 1`` (the last position, the suffix itself, is 0); capped by
    ``limit``.  Linear time (Z-algorithm on the reversed sequence)."""
    t = list(tokens)
    size = len(t)
    cap = size if limit is None else max(0, int(limit))
    out = [0] * size
    if size < 2:
        return out
    rev = t[::-1]  # rev[j] = the j-th token from the end
    z = [0] * size  # z[k] = longest common prefix of rev and rev[k:]
    left = right = 0  # the rightmost Z-box [left, right)
    for k in range(1, size):
        n = min(right - k, z[k - left]) if k < right else 0
        while k + n < size and rev[n] == rev[k + n]:
            n += 1
        z[k] = n
        if k + n > right:
            left, right = k, k + n
    for k in range(1, size):  # rev[k] is tokens[size - 1 - k]
        out[size - 1 - k] = min(z[k], cap)
    return out


def longest_repeat(tokens: Sequence[int]) -> int:
    """Length of the longest suffix of ``tokens`` that also occurs earlier (overlap allowed)."""
    return max(repeat_lengths(tokens), default=0)


class BreakerSet:
    """Which token ids are sequence breakers: their text holds one of ``breakers``.

    ``piece`` maps a token id to its bytes (``Tokenizer.piece``); each id is decoded once."""

    def __init__(self, piece: Callable[[int], bytes], breakers: Sequence[str]) -> None:
        self.piece = piece
        self.breakers = tuple(b for b in breakers if b)
        self._known: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        hit = self._known.get(token)
        if hit is None:
            text = self.piece(token).decode("utf-8", "replace")
            hit = self._known[token] = any(b in text for b in self.breakers)
        return hit


class LoopDetector:
    """Feeds on generated tokens; ``push`` says when the output has begun to run in circles."""

    NUMBER = -1  # stands for a run of digit tokens

    def __init__(self, piece: Callable[[int], bytes], stop_tokens: int) -> None:
        self.piece = piece
        self.stop_tokens = int(stop_tokens)
        self.seq: list[int] = []  # the generated tokens, each run of digit tokens as NUMBER
        self._digits: dict[int, bool] = {}
        self._grams: set[tuple[int, ...]] = set()  # every n-gram of seq so far
        self._reused: deque[bool] = deque(maxlen=NEAR_REPEAT_WINDOW)  # per position: seen?

    def _is_number(self, token: int) -> bool:
        hit = self._digits.get(token)
        if hit is None:
            text = self.piece(token).decode("utf-8", "replace").strip()
            hit = self._digits[token] = bool(text) and text.isdigit()
        return hit

    def push(self, token: int) -> bool:
        """Add one generated token; True once the last ``stop_tokens`` repeat earlier ones."""
        if self.stop_tokens <= 0:
            return False
        if self._is_number(token):
            if self.seq and self.seq[-1] == self.NUMBER:
                return False  # the same number continues: nothing new to compare
            self.seq.append(self.NUMBER)
        else:
            self.seq.append(int(token))
        if self._near_repeat():
            return True
        return len(self.seq) > self.stop_tokens and longest_repeat(self.seq) >= self.stop_tokens

    def _near_repeat(self) -> bool:
        """True once most of the last window's n-grams were already in the answer."""
        if len(self.seq) < NEAR_REPEAT_NGRAM:
            return False
        gram = tuple(self.seq[-NEAR_REPEAT_NGRAM:])
        self._reused.append(gram in self._grams)
        self._grams.add(gram)
        return (
            len(self._reused) == NEAR_REPEAT_WINDOW
            and sum(self._reused) >= NEAR_REPEAT_SHARE * NEAR_REPEAT_WINDOW
        )


def dry_penalties(
    tokens: Sequence[int],
    multiplier: float,
    base: float,
    allowed_length: int,
    is_breaker: Callable[[int], bool] | None = None,
) -> dict[int, float]:
    """Token id → the amount DRY subtracts from its logit after ``tokens`` (see the module)."""
    if multiplier == 0.0 or base < 1.0 or len(tokens) <= allowed_length:
        return {}
    limit = len(tokens)  # the repeat may not reach back over the last breaker
    if is_breaker is not None:
        for back, tok in enumerate(reversed(tokens)):
            if is_breaker(tok):
                limit = back
                break
    if limit < allowed_length:
        return {}
    lengths = repeat_lengths(tokens, limit)
    longest: dict[int, int] = {}  # next token -> the longest repeat it would extend
    for i in range(len(tokens) - 1):
        n = lengths[i]
        if n >= allowed_length:
            nxt = int(tokens[i + 1])
            if n > longest.get(nxt, -1):
                longest[nxt] = n
    max_exp = int(_FLOAT_MAX_LOG / np.log(base)) if base > 1.000001 else 0
    out: dict[int, float] = {}
    for tok, n in longest.items():
        if is_breaker is not None and is_breaker(tok):
            continue
        exponent = n - allowed_length
        if max_exp > 0:
            exponent = min(exponent, max_exp)
        out[tok] = float(multiplier * base**exponent)
    return out


def apply_dry(
    logits: np.ndarray,
    tokens: Sequence[int],
    multiplier: float,
    base: float,
    allowed_length: int,
    last_n: int = -1,
    is_breaker: Callable[[int], bool] | None = None,
) -> None:
    """Subtract the DRY penalties of ``tokens`` (their last ``last_n``; -1: all) in place."""
    if multiplier == 0.0 or last_n == 0:
        return
    window = tokens if last_n < 0 else tokens[-last_n:]
    for tok, penalty in dry_penalties(window, multiplier, base, allowed_length,
                                      is_breaker).items():
        if 0 <= tok < logits.shape[0]:
            logits[tok] -= np.float32(penalty)
