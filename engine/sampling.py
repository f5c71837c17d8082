"""Choosing the next token from the logits, as llama.cpp's default sampler chain does.

The chain, in llama.cpp's order (``common/sampling.cpp``, llama-cpp-python's ``_init_sampler``):

1. repeat penalty over the last ``repeat_last_n`` tokens of the context (prompt + generated):
   a logit > 0 is divided by the penalty, a logit <= 0 is multiplied by it, once per distinct token;
2. DRY over the generated tokens (``engine.repetition``; off unless ``dry_multiplier`` > 0);
3. temperature <= 0: greedy, the arg-max of the penalised logits (the remaining steps are skipped);
4. top-k: keep the k largest logits (k <= 0 keeps all);
5. top-p: keep the smallest set of the most probable tokens whose probability reaches p;
6. min-p: keep tokens whose probability is at least ``min_p`` times the largest one;
7. temperature: divide the logits by it;
8. draw from the softmax with a seeded ``numpy.random.Generator`` (same seed → same tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.repetition import DEFAULT_SEQUENCE_BREAKERS, apply_dry


@dataclass(frozen=True)
class SamplingParams:
    """The knobs of :class:`Sampler`; defaults are llama.cpp's."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64  # 0 disables the penalty, -1 means the whole context
    seed: int | None = None
    # the repetition guard (engine.repetition), over the generated tokens only
    dry_multiplier: float = 0.0  # 0 disables DRY (llama.cpp's default; 0.8 is its usual value)
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1  # -1: every generated token
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_SEQUENCE_BREAKERS
    loop_stop_tokens: int = 0  # stop when this many last tokens repeat earlier output; 0: never

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number, got {self.temperature!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be within [0, 1], got {self.top_p!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be within [0, 1], got {self.min_p!r}")
        if not (self.repeat_penalty > 0.0 and np.isfinite(self.repeat_penalty)):
            raise ValueError(f"repeat_penalty must be positive, got {self.repeat_penalty!r}")
        if self.repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be >= -1, got {self.repeat_last_n!r}")
        if not (self.dry_multiplier >= 0.0 and np.isfinite(self.dry_multiplier)):
            raise ValueError(f"dry_multiplier must be >= 0, got {self.dry_multiplier!r}")
        if not (self.dry_base >= 1.0 and np.isfinite(self.dry_base)):
            raise ValueError(f"dry_base must be >= 1, got {self.dry_base!r}")
        if self.dry_allowed_length < 1:
            raise ValueError(f"dry_allowed_length must be >= 1, got {self.dry_allowed_length!r}")
        if self.dry_penalty_last_n < -1:
            raise ValueError(f"dry_penalty_last_n must be >= -1, got {self.dry_penalty_last_n!r}")
        if self.loop_stop_tokens < 0:
            raise ValueError(f"loop_stop_tokens must be >= 0, got {self.loop_stop_tokens!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def apply_repeat_penalty(
    logits: np.ndarray, history: Sequence[int], penalty: float, last_n: int
) -> None:
    """Penalise, in place, every distinct token among the last ``last_n`` of ``history``."""
    if penalty == 1.0 or last_n == 0 or len(history) == 0:
        return
    window = history if last_n < 0 else history[-last_n:]
    ids = np.unique(np.asarray(window, dtype=np.int64))  # each token once, however often seen
    ids = ids[(ids >= 0) & (ids < logits.shape[0])]
    seen = logits[ids]
    logits[ids] = np.where(seen <= 0.0, seen * penalty, seen / penalty)


def _top_k(ids: np.ndarray, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits (all when k <= 0), sorted in decreasing order (ties: lower id first)."""
    n = logits.shape[0]
    if 0 < k < n:
        part = np.argpartition(-logits, k - 1)[:k]
        ids, logits = ids[part], logits[part]
    order = np.lexsort((ids, -logits))
    return ids[order], logits[order]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum()


class Sampler:
    """Stateful sampler: holds the seeded generator so that a run is reproducible."""

    def __init__(self, params: SamplingParams,
                 is_breaker: Callable[[int], bool] | None = None) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.is_breaker = is_breaker  # DRY's sequence breakers (engine.repetition.BreakerSet)

    def sample(self, logits: np.ndarray, history: Sequence[int], n_prompt: int = 0) -> int:
        """The next token id from one row of logits (float32, (n_vocab,)) given the context;
        ``history[n_prompt:]`` are the generated tokens (what DRY looks at)."""
        p = self.params
        logits = np.array(logits, dtype=np.float32, copy=True)  # (n_vocab,) never the caller's
        apply_repeat_penalty(logits, history, p.repeat_penalty, p.repeat_last_n)
        if p.dry_multiplier > 0.0:
            apply_dry(logits, history[n_prompt:], p.dry_multiplier, p.dry_base,
                      p.dry_allowed_length, p.dry_penalty_last_n, self.is_breaker)
        if p.greedy:
            return int(np.argmax(logits))  # first of equal maxima, as llama.cpp's greedy
        ids, cand = _top_k(np.arange(logits.shape[0]), logits, p.top_k)  # sorted, decreasing
        if p.top_p < 1.0:
            cum = np.cumsum(_softmax(cand))
            keep = int(np.searchsorted(cum, p.top_p, side="left")) + 1  # first index reaching p
            ids, cand = ids[:keep], cand[:keep]
        if p.min_p > 0.0 and cand.shape[0] > 1:
            keep_mask = cand >= cand[0] + np.float32(np.log(p.min_p))
            ids, cand = ids[keep_mask], cand[keep_mask]
        probs = _softmax(cand / np.float32(p.temperature))
        r = self.rng.random()
        i = int(np.searchsorted(np.cumsum(probs), r * probs.sum(), side="right"))
        return int(ids[min(i, ids.shape[0] - 1)])
