"""Continuous batching (``engine.decode.batch``, ``engine.decode.batcher``): sequences decoded
together get exactly the logits, and so the greedy text, they get alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import llama
from engine.decode.batch import BatchWorkspace, can_batch, forward_batch
from engine.decode.batcher import DecodeBatcher
from engine.errors import ContextOverflow
from engine.kernels import QuantMatrix, matmul_int, quantize_activations
from tests.engine.llama_reference import QT, write_tiny_llama

# The four-token K-quant dot products in both scale layouts (one scale per 32 values: Q4_K;
# two: Q3_K, Q6_K), IQ4_XS's, and a legacy type; the default model adds Q4_1 and Q8_0.  Each type
# compiles its own batched step (about half a minute on an empty cache), so not all are here.
INT_TYPES = [QT.Q4_0, QT.Q3_K, QT.Q4_K, QT.Q6_K, QT.IQ4_XS]
PROMPT = "the blood pressure of a dose"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batching")


def single_and_batched(
    model: engine.Model, n_seq: int, steps: int, kv_type: str = "f32"
) -> tuple[list, list]:
    """Greedy logits of ``n_seq`` prompts of different lengths, each decoded alone and all
    decoded together: lists of (steps, n_vocab) arrays."""
    w, c = model._weights(), model.config
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, c.n_vocab, size=3 + 2 * i) for i in range(n_seq)]
    caches, alone = [], []
    for p in prompts:
        cache, ws = llama.KVCache(c, 32, kv_type), llama.Workspace(c, 8)
        rows = [llama.prefill(w, cache, p, ws).copy()]
        for _ in range(steps):
            tok = np.array([int(np.argmax(rows[-1]))], np.int64)
            rows.append(llama.forward(w, cache, tok, ws).copy())
        alone.append(np.array(rows[1:]))
        cache = llama.KVCache(c, 32, kv_type)
        caches.append((cache, int(np.argmax(rows[0]))))
        llama.prefill(w, cache, p, llama.Workspace(c, 8))
    bws = BatchWorkspace(c, n_seq)
    together = [[] for _ in prompts]
    tokens = np.array([t for _, t in caches], np.int64)
    for _ in range(steps):
        logits = forward_batch(w, [cc for cc, _ in caches], tokens, bws)
        for i, row in enumerate(logits):
            together[i].append(row.copy())
        tokens = logits.argmax(axis=1).astype(np.int64)
    return alone, [np.array(t) for t in together]


def generate_concurrently(model: engine.Model, prompts: list[str], opts: dict) -> list[str]:
    """The texts of one streamed generation per prompt, each read in its own thread."""
    gens = [model.generate(p, stream=True, **opts) for p in prompts]
    texts = [""] * len(gens)

    def work(i: int) -> None:
        texts[i] = "".join(gens[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(gens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return texts


@pytest.mark.parametrize("qtype", INT_TYPES, ids=lambda t: t.name)
def test_batched_step_gives_each_sequence_its_own_logits_bit_for_bit(tiny_dir, qtype) -> None:
    model = engine.load(write_tiny_llama(tiny_dir / f"{qtype.name}.gguf", qtype, seed=5))
    assert can_batch(model._weights())
    alone, together = single_and_batched(model, n_seq=6, steps=4)  # 6: one group of 4, then 2
    for a, t in zip(alone, together, strict=True):
        assert np.array_equal(a, t)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma3"])
def test_batched_step_covers_every_family(tiny_dir, arch) -> None:
    extra = {"sliding_window": 4, "swa_pattern": 2} if arch == "gemma3" else {}
    path = write_tiny_llama(tiny_dir / f"{arch}.gguf", QT.Q4_K, seed=6, arch=arch, **extra)
    alone, together = single_and_batched(engine.load(path), n_seq=3, steps=6)
    for a, t in zip(alone, together, strict=True):
        assert np.array_equal(a, t)


def test_batched_step_with_an_f16_kv_cache(tiny_dir) -> None:
    model = engine.load(write_tiny_llama(tiny_dir / "Q4_K.gguf", QT.Q4_K, seed=5))
    alone, together = single_and_batched(model, n_seq=5, steps=4, kv_type="f16")
    for a, t in zip(alone, together, strict=True):
        assert np.array_equal(a, t)


def test_default_model_batched_equals_alone(default_model_path: Path) -> None:
    alone, together = single_and_batched(engine.load(default_model_path), n_seq=5, steps=3)
    for a, t in zip(alone, together, strict=True):
        assert np.array_equal(a, t)


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q6_K, QT.Q4_0], ids=lambda t: t.name)
def test_product_of_several_tokens_has_the_bits_of_one_at_a_time(tiny_dir, qtype) -> None:
    model = engine.load(write_tiny_llama(tiny_dir / f"p-{qtype.name}.gguf", qtype, seed=8))
    m: QuantMatrix = model._weights().layers[0].ffn_gate
    rng = np.random.default_rng(1)
    for n in (1, 3, 4, 5, 9):
        x = rng.standard_normal((n, m.n_in)).astype(np.float32)
        xq, xd = np.empty((n, m.n_in), np.int8), np.empty((n, m.n_in // 32), np.float32)
        xs = np.empty((n, m.n_in // 16), np.float32)
        quantize_activations(x, xq, xd, xs)
        y = np.empty((n, m.n_out), np.float32)
        matmul_int(m.code, m.data, xq, xd, xs, y)
        for t in range(n):
            one = np.empty((1, m.n_out), np.float32)
            matmul_int(m.code, m.data, xq[t : t + 1], xd[t : t + 1], xs[t : t + 1], one)
            assert np.array_equal(one[0], y[t]), (n, t)


def test_concurrent_generations_are_batched_and_equal_alone(default_model_path: Path) -> None:
    model = engine.load(default_model_path)
    prompts = [f"{PROMPT} number {i}" for i in range(4)]
    opts = dict(max_tokens=24, temperature=0.0, ignore_eos=True)
    alone = [model.generate(p, **opts) for p in prompts]
    batcher = model.batcher()
    steps0, seq0 = batcher.steps, batcher.sequence_steps
    assert generate_concurrently(model, prompts, opts) == alone
    # most steps ran several sequences at once (the first steps wait for the prompts)
    assert (batcher.sequence_steps - seq0) / (batcher.steps - steps0) > 2.0


def test_a_stalled_reader_does_not_hold_the_others(tiny_dir) -> None:
    """A generation whose reader stops pulling still counts as running: the others wait for
    it a moment each step, never more."""
    model = engine.load(write_tiny_llama(tiny_dir / "stall.gguf", QT.Q8_0, seed=9))
    model.generate(PROMPT, max_tokens=3, temperature=0.0, ignore_eos=True)  # compiled, not timed
    stalled = model.generate(PROMPT, max_tokens=50, temperature=0.0, stream=True,
                             ignore_eos=True)  # fmt: skip
    next(stalled)  # now running, and its reader goes quiet
    t0 = time.perf_counter()
    text = model.generate(PROMPT + " again", max_tokens=40, temperature=0.0, ignore_eos=True)
    assert text and time.perf_counter() - t0 < 40 * 0.05 + 5.0
    stalled.close()


def test_overflow_is_the_sequence_own_error(tiny_dir) -> None:
    model = engine.load(write_tiny_llama(tiny_dir / "ovf.gguf", QT.Q8_0, seed=10))
    w, c = model._weights(), model.config
    cache, ws = llama.KVCache(c, 3), llama.Workspace(c, 4)
    llama.prefill(w, cache, np.array([5, 6, 7], np.int64), ws)
    with pytest.raises(ContextOverflow):
        DecodeBatcher(w).step(cache, 8, ws)
    assert cache.n_past == 3


def test_float_weights_step_one_at_a_time_and_equal_alone(tiny_dir) -> None:
    """Float-weight layers have no fused plan: concurrent steps then run one after the other,
    still giving each generation what it gives alone."""
    model = engine.load(write_tiny_llama(tiny_dir / "F16.gguf", QT.F16, seed=13))
    assert not can_batch(model._weights())
    prompts = [f"{PROMPT} {i}" for i in range(3)]
    opts = dict(max_tokens=10, temperature=0.0, ignore_eos=True)
    alone = [model.generate(p, **opts) for p in prompts]
    assert generate_concurrently(model, prompts, opts) == alone
