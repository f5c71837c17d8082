"""Sampling follows llama.cpp's chain: penalties, top-k, top-p, min-p, temperature, seeded draw."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sampling import Sampler, SamplingParams, apply_repeat_penalty

NO_FILTER = dict(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def draw(logits, n: int, seed: int = 0, history=(), **kw) -> np.ndarray:
    s = Sampler(SamplingParams(seed=seed, **kw))
    logits = np.asarray(logits, np.float32)
    return np.array([s.sample(logits, list(history)) for _ in range(n)])


def test_greedy_is_argmax_first_of_ties() -> None:
    logits = np.array([0.5, 3.0, -1.0, 3.0], np.float32)
    assert draw(logits, 5, temperature=0.0).tolist() == [1] * 5
    assert draw(logits, 1, temperature=-1.0).tolist() == [1]


def test_repeat_penalty_llama_cpp_semantics() -> None:
    logits = np.array([2.0, -2.0, 1.0, 0.0, 4.0], np.float32)
    out = logits.copy()
    apply_repeat_penalty(out, [0, 1, 1, 1, 3], penalty=2.0, last_n=64)
    # positive divided, negative (and zero) multiplied; each distinct token once
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0, 0.0, 4.0])
    out = logits.copy()
    apply_repeat_penalty(out, [0, 1, 4], penalty=2.0, last_n=1)  # only the last token
    np.testing.assert_array_equal(out, [2.0, -2.0, 1.0, 0.0, 2.0])
    for last_n, penalty in ((0, 2.0), (64, 1.0)):  # disabled
        out = logits.copy()
        apply_repeat_penalty(out, [0, 1], penalty=penalty, last_n=last_n)
        np.testing.assert_array_equal(out, logits)
    out = logits.copy()
    apply_repeat_penalty(out, [4] + [2] * 100, penalty=2.0, last_n=-1)  # -1: the whole context
    assert out[4] == 2.0 and out[2] == 0.5
    # greedy sees the penalised logits: token 4 falls from 4.0 to 2.0, tying token 0 (lower id wins)
    assert draw(logits, 1, temperature=0.0, history=[4], repeat_penalty=2.0).tolist() == [0]


def test_top_k_one_is_greedy_at_any_temperature() -> None:
    logits = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    got = draw(logits, 50, temperature=5.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    assert set(got.tolist()) == {int(np.argmax(logits))}


def test_temperature_draws_follow_the_softmax() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    for temp in (1.0, 0.5):
        got = draw(logits, 20000, seed=1, temperature=temp, **NO_FILTER)
        counts = np.bincount(got, minlength=4)
        p = np.exp(logits / temp) / np.exp(logits / temp).sum()
        np.testing.assert_allclose(counts / counts.sum(), p, atol=0.015)


def test_top_p_keeps_the_nucleus() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    # cumulative 0.5, 0.8, ...: p = 0.7 keeps the first two, renormalised (5:3)
    got = draw(logits, 8000, seed=2, temperature=1.0, top_k=0, top_p=0.7, min_p=0.0,
               repeat_penalty=1.0)  # fmt: skip
    counts = np.bincount(got, minlength=4)
    assert counts[2] == counts[3] == 0
    assert abs(counts[0] / counts[:2].sum() - 0.5 / 0.8) < 0.02
    # p exactly reached by the first token keeps only it
    assert set(draw(logits, 200, temperature=1.0, top_k=0, top_p=0.5, min_p=0.0).tolist()) == {0}


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    # min_p 0.25: keep p >= 0.125 → ids 0, 1, 2
    got = draw(logits, 5000, seed=3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.25,
               repeat_penalty=1.0)  # fmt: skip
    assert set(got.tolist()) == {0, 1, 2}


def test_top_k_then_temperature() -> None:
    logits = np.array([1.0, 3.0, 2.0, 0.0, 2.5], np.float32)
    got = draw(logits, 3000, seed=4, temperature=1.0, top_k=2, top_p=1.0, min_p=0.0,
               repeat_penalty=1.0)  # fmt: skip
    assert set(got.tolist()) == {1, 4}


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    logits = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    kw = dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    a, b = draw(logits, 40, seed=123, **kw), draw(logits, 40, seed=123, **kw)
    c = draw(logits, 40, seed=124, **kw)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_sampler_does_not_modify_the_logits() -> None:
    logits = np.array([1.0, -1.0, 2.0], np.float32)
    before = logits.copy()
    Sampler(SamplingParams(seed=0, repeat_penalty=1.5)).sample(logits, [0, 1, 2])
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    "kw",
    [{"top_p": 1.5}, {"min_p": -0.1}, {"repeat_penalty": 0.0}, {"repeat_last_n": -2},
     {"temperature": float("nan")}],
)  # fmt: skip
def test_bad_parameters_raise(kw: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        SamplingParams(**kw)
