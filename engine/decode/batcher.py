"""Continuous batching: the decode steps of concurrent generations run as one batched step.

Each generation runs in its own thread (a page session, one prompt of LangChain's ``batch``).
After reading its prompt it asks the model's :class:`DecodeBatcher` for every next token's
logits (``step``).  The first thread to ask while no step is running leads: it waits a moment
for the other running sequences to ask too (a fraction of the last step's time, so a sequence
whose reader is slow costs the others little), takes every waiting step, runs them as one
``decode.batch.forward_batch`` and hands each thread its logits.  Sequences join and leave
between steps; a generation alone takes the single-sequence decode step, as before.

Batched or not, a sequence gets the same logits (``engine.decode.batch``), so greedy output
does not depend on who else is being served.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from engine.decode.batch import BatchWorkspace, can_batch, forward_batch
from engine.errors import ContextOverflow
from engine.llama import KVCache, ModelWeights, Workspace, forward

MAX_SEQUENCES = 8  # sequences in one batched step; more wait for the next step
GATHER_FRACTION = 0.25  # how long a leader waits for the others: this share of the last step
GATHER_MAX_S = 0.02  # ... and never longer than this


@dataclass(eq=False)  # compared by identity
class _Step:
    cache: KVCache
    token: int
    ws: Workspace  # the sequence's own buffers: its logits land in ws.logits[0]
    done: bool = False
    error: BaseException | None = None
    logits: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))


class DecodeBatcher:
    """Runs the decode steps of one model's concurrent sequences together (see the module
    docstring).  ``join``/``leave`` bracket a generation; ``step`` gives its logits."""

    def __init__(self, weights: ModelWeights, max_sequences: int = MAX_SEQUENCES) -> None:
        self.weights = weights
        self.max_sequences = max(1, int(max_sequences))
        self._cond = threading.Condition()
        self._waiting: list[_Step] = []
        self._running = 0  # sequences between their first and last step
        self._leading = False  # a thread is gathering or running a step
        self._last_step_s = 0.0
        self._ws: BatchWorkspace | None = None
        self.steps = 0  # batched steps run, and the sequence-steps they served (for tests)
        self.sequence_steps = 0

    def join(self) -> None:
        """A sequence starts generating: leaders now wait (briefly) for its steps too."""
        with self._cond:
            self._running += 1

    def leave(self) -> None:
        """The sequence has finished (or was cancelled): no one waits for it any more."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def step(self, cache: KVCache, token: int, ws: Workspace) -> np.ndarray:
        """The logits ((n_vocab,), a view on ``ws.logits``) after ``token`` at ``cache.n_past``,
        computed with whatever other sequences step now; advances the cache."""
        if cache.n_past + 1 > cache.n_ctx:  # this sequence's error alone, before it joins a step
            raise ContextOverflow(cache.n_past + 1, cache.n_ctx)
        mine = _Step(cache, int(token), ws)
        with self._cond:
            self._waiting.append(mine)
            self._cond.notify_all()
            while not mine.done and self._leading:
                self._cond.wait()
            if mine.done:
                return self._result(mine)
            self._leading = True
            batch = self._gather(mine)
        t0 = time.perf_counter()
        try:
            self._run(batch)
        except BaseException as exc:  # every sequence of the step sees the error
            for s in batch:
                s.error = exc
        finally:
            with self._cond:
                self._last_step_s = time.perf_counter() - t0
                for s in batch:
                    s.done = True
                self._leading = False
                self._cond.notify_all()
        return self._result(mine)

    def _gather(self, mine: _Step) -> list[_Step]:
        """(Lock held.) Wait until every running sequence has asked, or the gather time is up;
        take this thread's step and up to ``max_sequences - 1`` others."""
        deadline = time.monotonic() + min(GATHER_FRACTION * self._last_step_s, GATHER_MAX_S)
        while len(self._waiting) < min(self._running, self.max_sequences):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        others = [s for s in self._waiting if s is not mine][: self.max_sequences - 1]
        batch = [mine, *others]
        self._waiting = [s for s in self._waiting if s not in batch]
        return batch

    def _run(self, batch: list[_Step]) -> None:
        w = self.weights
        if len(batch) == 1 or not can_batch(w):
            for s in batch:  # one at a time, the fused single-sequence step
                s.logits = forward(w, s.cache, np.array([s.token], np.int64), s.ws)
            self._count(len(batch), len(batch))
            return
        if self._ws is None:
            self._ws = BatchWorkspace(w.config, self.max_sequences)
        tokens = np.array([s.token for s in batch], np.int64)  # (n,)
        logits = forward_batch(w, [s.cache for s in batch], tokens, self._ws)  # (n, n_vocab)
        for s, row in zip(batch, logits, strict=True):
            s.ws.logits[0] = row
            s.logits = s.ws.logits[0]
        self._count(1, len(batch))

    def _count(self, steps: int, sequence_steps: int) -> None:
        self.steps += steps
        self.sequence_steps += sequence_steps

    @staticmethod
    def _result(step: _Step) -> np.ndarray:
        if step.error is not None:
            raise step.error
        return step.logits
