"""The generation loop: prompt → KV cache → sample → decode → stop strings → text pieces.

A :class:`Generation` is an iterator of text pieces whose concatenation is the generated text.
Stop strings are matched literally on the decoded text; text that could still be the beginning
of a stop string is held back until it no longer can.  The stop string itself (and anything
after it) is never emitted, nor is an end-of-generation token's text.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.llama import DEFAULT_BATCH, KVCache, Workspace, prefill
from engine.repetition import LoopDetector
from engine.sampling import Sampler

if TYPE_CHECKING:
    from engine.model import Model
    from engine.tokenizer import Tokenizer

# "repetition": the answer began repeating itself (SamplingParams.loop_stop_tokens)
FINISH_REASONS = ("stop", "length", "eos", "cancelled", "repetition")


class PieceDecoder:
    """Text of generated tokens as llama.cpp's CLI prints it: each token's piece (control tokens
    empty), never half a UTF-8 character, and no leading space removed — the text continues
    the prompt, so `` Paris`` after ``The capital of France is`` keeps its space."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.piece = tokenizer.piece
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token_id: int) -> str:
        return self.utf8.decode(self.piece(token_id))

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


class StopMatcher:
    """Holds back text that could begin a stop string; finds the earliest complete one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit, whether a stop string was found)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0  # longest suffix of pending that is a proper prefix of some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        """The held-back text, once no more text will come (no stop string can complete)."""
        out, self.pending = self.pending, ""
        return out


class Generation:
    """Iterator of text pieces from one generation request; see the module docstring.

    Attributes (valid during and after iteration): ``finish_reason`` (None while running, then
    one of ``FINISH_REASONS``), ``n_prompt_tokens``, ``n_generated_tokens``, ``tokens`` (the ids
    generated, an EOG token excluded) and ``timings`` (``prompt_s``: reading the prompt;
    ``ttft_s``: start to first token chosen; ``gen_s``: after the first token, until the end).
    """

    def __init__(
        self,
        model: Model,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampler: Sampler,
        stop: Sequence[str] = (),
        n_ctx: int | None = None,
        cancel_event: threading.Event | None = None,
        ignore_eos: bool = False,
    ) -> None:
        self.model = model
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.n_ctx = n_ctx if n_ctx is not None else len(self.prompt_ids) + max_tokens
        self.ignore_eos = ignore_eos
        self.finish_reason: str | None = None
        self.n_prompt_tokens = len(self.prompt_ids)
        self.n_generated_tokens = 0
        self.tokens: list[int] = []
        self.timings: dict[str, float] = {"prompt_s": 0.0, "ttft_s": 0.0, "gen_s": 0.0}
        self._stop = StopMatcher(stop)
        self._cancel = cancel_event if cancel_event is not None else threading.Event()
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """End the generation at the next token (safe to call from any thread)."""
        self._cancel.set()

    def close(self) -> None:
        """Cancel; and when not iterating right now, end it at once."""
        self._cancel.set()
        with contextlib.suppress(ValueError):  # "already executing": another thread iterates
            self._pieces.close()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def _run(self) -> Iterator[str]:
        model, cfg = self.model, self.model.config
        weights = model._weights()
        cache = KVCache(cfg, self.n_ctx, model.kv_type)
        ws = Workspace(cfg, max(1, min(model.n_batch or DEFAULT_BATCH, self.n_prompt_tokens)))
        decoder = PieceDecoder(model.tokenizer)
        history = list(self.prompt_ids)  # what the repeat penalty looks back over
        loops = LoopDetector(model.tokenizer.piece, self.sampler.params.loop_stop_tokens)

        t0 = time.perf_counter()
        if self._cancel.is_set():
            self.finish_reason = "cancelled"
            return
        if self.max_tokens <= 0:
            self.finish_reason = "length"
            return
        logits = prefill(weights, cache, np.asarray(self.prompt_ids, np.int64), ws)  # (n_vocab,)
        t1 = time.perf_counter()
        self.timings["prompt_s"] = t1 - t0
        batcher = model.batcher()  # decode steps run together with other running generations
        batcher.join()
        try:
            while True:
                tok = self.sampler.sample(logits, history, self.n_prompt_tokens)
                if self.n_generated_tokens == 0:
                    self.timings["ttft_s"] = time.perf_counter() - t0
                    t1 = time.perf_counter()
                if not self.ignore_eos and model.tokenizer.is_eog(tok):
                    self.finish_reason = "eos"
                    break
                history.append(tok)
                self.tokens.append(tok)
                self.n_generated_tokens += 1
                text, stopped = self._stop.push(decoder.feed(tok))
                if text:
                    yield text
                if stopped:
                    self.finish_reason = "stop"
                    return
                if loops.push(tok):
                    self.finish_reason = "repetition"
                    break
                if self.n_generated_tokens >= self.max_tokens or cache.n_past >= cache.n_ctx:
                    self.finish_reason = "length"
                    break
                if self._cancel.is_set():
                    self.finish_reason = "cancelled"
                    break
                logits = batcher.step(cache, tok, ws)  # (n_vocab,)
            tail, stopped = self._stop.push(decoder.flush())  # a last partial character
            if stopped:
                self.finish_reason = "stop"
            else:
                tail += self._stop.flush()  # no stop string can complete any more
            if tail:
                yield tail
        finally:
            batcher.leave()
            self.timings["gen_s"] = time.perf_counter() - t1
            if self.finish_reason is None:  # closed from outside while suspended
                self.finish_reason = "cancelled"
