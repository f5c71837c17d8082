"""``Model``: what ``engine.load(path)`` returns — tokenize, detokenize, logits, generate.

Loading reads the header, metadata and tokenizer only: the weights stay on the memory map and
the numba kernels compile on the first forward (or load from numba's on-disk cache).  A Model is
shared between threads: weights are read-only, each call owns its KV cache, sized to what the
call needs, and forwards are serialised by ``engine.llama.FORWARD_LOCK``; the decode steps of
concurrent generations run together, one pass over the weights for all (``engine.decode.batcher``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.config import ModelConfig
from engine.decode.batcher import DecodeBatcher
from engine.errors import ContextOverflow
from engine.generation import Generation
from engine.gguf import GGUFFile
from engine.kernels import set_threads
from engine.llama import (
    DEFAULT_BATCH,
    KVCache,
    ModelWeights,
    Workspace,
    check_kv_type,
    prefill,
)
from engine.repetition import BreakerSet
from engine.sampling import Sampler, SamplingParams
from engine.tokenizer import Tokenizer

_SAMPLING = SamplingParams()  # generate()'s sampling defaults are SamplingParams' (llama.cpp's)


class Model:
    """A GGUF model of a supported family ready to run (see ``docs/DESIGN.md`` for the contract)."""

    def __init__(
        self,
        gguf: GGUFFile,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        kv_type: str = "f32",
    ) -> None:
        check_kv_type(kv_type)
        self.kv_type = kv_type  # the element type of every call's KV cache (KV_TYPES)
        self.gguf = gguf
        self.path = Path(gguf.path)
        self.config = ModelConfig.from_gguf(gguf)
        gguf.check_types()  # an unsupported tensor type fails now, not at the first forward
        self.tokenizer = Tokenizer.from_gguf(gguf)
        self.n_ctx_train = int(self.config.n_ctx_train)
        # the most positions one call may use (each call allocates only what it needs)
        self.n_ctx = min(int(n_ctx), self.n_ctx_train) if n_ctx else self.n_ctx_train
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be positive, got {n_ctx!r}")
        if n_batch < 1:
            raise ValueError(f"n_batch must be positive, got {n_batch!r}")
        self.n_batch = int(n_batch)
        self.n_threads = n_threads
        self._weights_cache: ModelWeights | None = None
        self._weights_lock = threading.Lock()
        self._batcher: DecodeBatcher | None = None

    # -- description -------------------------------------------------------------------------

    @property
    def quantization(self) -> str:
        return self.config.file_type

    @property
    def chat_template(self) -> str | None:
        return self.config.chat_template

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Model({str(self.path)!r}, {self.quantization}, n_layer={c.n_layer}, "
            f"n_embd={c.n_embd}, n_vocab={c.n_vocab}, n_ctx={self.n_ctx})"
        )

    # -- tokens ------------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    # -- compute -----------------------------------------------------------------------------

    def _weights(self) -> ModelWeights:
        """The weight views, built on first use (kernels compile on the first forward).

        Also applies ``n_threads`` to the calling thread (numba's thread count is per thread,
        and a shared Model is called from several)."""
        if self.n_threads:
            set_threads(int(self.n_threads))
        with self._weights_lock:
            if self._weights_cache is None:
                self._weights_cache = ModelWeights.from_gguf(self.gguf, self.config)
            return self._weights_cache

    def batcher(self) -> DecodeBatcher:
        """The model's continuous batcher: concurrent generations decode together."""
        weights = self._weights()
        with self._weights_lock:
            if self._batcher is None:
                self._batcher = DecodeBatcher(weights)
            return self._batcher

    def _check_ids(self, ids: Sequence[int]) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)  # (n,)
        bad = arr[(arr < 0) | (arr >= self.config.n_vocab)]
        if bad.size:
            n_vocab = self.config.n_vocab
            raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {n_vocab})")
        if arr.shape[0] > self.n_ctx:
            raise ContextOverflow(int(arr.shape[0]), self.n_ctx)
        return arr

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 (len(ids), n_vocab): the logits after each position, in a fresh context."""
        arr = self._check_ids(ids)
        if arr.shape[0] == 0:
            return np.zeros((0, self.config.n_vocab), np.float32)
        cache = KVCache(self.config, arr.shape[0], self.kv_type)
        ws = Workspace(self.config, min(self.n_batch, arr.shape[0]))
        return prefill(self._weights(), cache, arr, ws, all_logits=True)

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 256,
        temperature: float = _SAMPLING.temperature,
        top_k: int = _SAMPLING.top_k,
        top_p: float = _SAMPLING.top_p,
        min_p: float = _SAMPLING.min_p,
        repeat_penalty: float = _SAMPLING.repeat_penalty,
        repeat_last_n: int = _SAMPLING.repeat_last_n,
        seed: int | None = _SAMPLING.seed,
        stop: Sequence[str] | str = (),
        dry_multiplier: float = _SAMPLING.dry_multiplier,
        dry_base: float = _SAMPLING.dry_base,
        dry_allowed_length: int = _SAMPLING.dry_allowed_length,
        dry_penalty_last_n: int = _SAMPLING.dry_penalty_last_n,
        dry_sequence_breakers: Sequence[str] = _SAMPLING.dry_sequence_breakers,
        loop_stop_tokens: int = _SAMPLING.loop_stop_tokens,
        stream: bool = False,
        special: bool = True,
        cancel_event: threading.Event | None = None,
        ignore_eos: bool = False,
    ) -> str | Generation:
        """Generate up to ``max_tokens`` tokens after ``prompt``: the text, or a ``Generation``.

        A prompt string is tokenized with the GGUF's add_bos and ``special`` (ChatML markers are
        control tokens).  The call's KV cache holds prompt + max_tokens positions, capped by
        ``n_ctx``; a prompt longer than that raises ``ContextOverflow`` before anything runs.
        ``dry_*`` and ``loop_stop_tokens``: the repetition guard (``engine.repetition``).
        """
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, add_bos=bool(self.config.add_bos), special=special)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt is empty: there is no token to continue from")
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens!r}")
        self._check_ids(ids)
        params = SamplingParams(
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            min_p=float(min_p),
            repeat_penalty=float(repeat_penalty),
            repeat_last_n=int(repeat_last_n),
            seed=seed,
            dry_multiplier=float(dry_multiplier),
            dry_base=float(dry_base),
            dry_allowed_length=int(dry_allowed_length),
            dry_penalty_last_n=int(dry_penalty_last_n),
            dry_sequence_breakers=tuple(dry_sequence_breakers),
            loop_stop_tokens=int(loop_stop_tokens),
        )
        breakers = BreakerSet(self.tokenizer.piece, params.dry_sequence_breakers)
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        n_ctx = min(len(ids) + max(max_tokens, 1), self.n_ctx)
        gen = Generation(
            self, ids, max_tokens, Sampler(params, breakers), stops, n_ctx, cancel_event, ignore_eos
        )
        if stream:
            return gen
        return "".join(gen)


def load(
    path: str | Path,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_batch: int = DEFAULT_BATCH,
    kv_type: str = "f32",
) -> Model:
    """Open a GGUF model (split parts accepted): header, metadata and tokenizer only.

    ``kv_type``: "f32" (default) or "f16", the KV cache's element type (llama.cpp's default
    is f16: half the memory, values rounded to halves)."""
    return Model(
        GGUFFile.open(path), n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, kv_type=kv_type
    )
