"""Accuracy against the exact float64 computation, with llama.cpp's own error as the bar.

Dev data (``../shared/reference``): per position of a teacher-forced sequence, llama.cpp's logits
and the exact ones at 256 vocabulary ids, llama.cpp's RMS error and top-1 agreement; greedy
continuations of ChatML prompts by llama.cpp and by the exact computation.  The engine must have
RMS error ≤ 1.5 × llama.cpp's, top-1 agreement ≥ llama.cpp's − 5 points, and a greedy
continuation equal to one of the two for at least 16 tokens.  The test's own exact reference
(``llama_reference.py``) is checked against the shared exact values first, so that the
random-model tests in ``test_llama.py`` can use it for every other tensor type.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
from tests.conftest import shared_path
from tests.engine.llama_reference import reference_logits

TINY = [("Q8_0", "tiny-llama-spm.Q8_0.gguf"), ("Q4_K_M", "tiny-llama-spm.Q4_K_M.gguf")]


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def tiny_entry(tag: str) -> dict:
    data = json.loads(shared_path("reference", "tiny-llama-spm-dev.json").read_text())
    return next(e for e in data["tiny"] if e["tag"] == tag)


@pytest.fixture(scope="module")
def smollm2_dev() -> dict:
    return json.loads(shared_path("reference", "smollm2-q4_1-dev.json").read_text())


@pytest.fixture(scope="module")
def smollm2(default_model_path) -> engine.Model:
    return engine.load(default_model_path)


def check_teacher_forced(model: engine.Model, e: dict) -> tuple[float, float]:
    ours = model.logits(e["tokens"])  # (n, n_vocab)
    exact = np.asarray(e["exact_col_logits"])  # (n, 256)
    err = rms(ours[:, e["cols"]], exact)
    top1 = float(np.mean(ours.argmax(axis=1) == np.asarray(e["exact_argmax"])))
    assert err <= 1.5 * e["ref_rms_vs_exact"], (err, e["ref_rms_vs_exact"])
    assert top1 >= e["ref_top1_vs_exact"] - 0.05, (top1, e["ref_top1_vs_exact"])
    return err, top1


@pytest.mark.parametrize("tag,file", TINY)
def test_reference_forward_equals_shared_exact(tag: str, file: str) -> None:
    """Our float64 reference reproduces the shared exact logits; its llama.cpp emulation
    reproduces llama.cpp's error.  (Validates the yardstick of test_llama.py.)"""
    e, path = tiny_entry(tag), shared_path("models", file)
    exact = reference_logits(path, e["tokens"])
    assert np.abs(exact[:, e["cols"]] - np.asarray(e["exact_col_logits"])).max() < 1e-3
    assert list(exact.argmax(axis=1)) == e["exact_argmax"]
    emulated = reference_logits(path, e["tokens"], emulate_llama_cpp=True)
    ratio = rms(emulated[:, e["cols"]], np.asarray(e["exact_col_logits"])) / e["ref_rms_vs_exact"]
    assert 0.7 < ratio < 1.4, ratio


@pytest.mark.parametrize("tag,file", TINY)
def test_tiny_llama_spm_teacher_forced(tag: str, file: str) -> None:
    check_teacher_forced(engine.load(shared_path("models", file)), tiny_entry(tag))


def test_smollm2_teacher_forced(smollm2: engine.Model, smollm2_dev: dict) -> None:
    for e in smollm2_dev["teacher_forced"]:
        check_teacher_forced(smollm2, e)


def test_smollm2_greedy_follows_llama_cpp_or_exact(smollm2, smollm2_dev) -> None:
    for e in smollm2_dev["greedy_q4_1"]:
        ids = smollm2.tokenize(e["prompt"], add_bos=smollm2.config.add_bos, special=True)
        assert ids == e["prompt_tokens"]
        gen = smollm2.generate(e["prompt"], max_tokens=16, temperature=0.0, repeat_penalty=1.0,
                               stream=True)  # fmt: skip
        "".join(gen)
        assert gen.n_generated_tokens == 16
        assert gen.tokens in (e["greedy"][:16], e["exact_greedy"][:16]), e["prompt"]


def test_golden_greedy_text(smollm2, smollm2_dev) -> None:
    """Like llama2.c's test: the default model's greedy answer, word for word (llama.cpp's text,
    which the exact computation also gives for all 48 tokens)."""
    e = smollm2_dev["greedy_q4_1"][0]
    assert e["greedy"] == e["exact_greedy"]
    text = smollm2.generate(e["prompt"], max_tokens=len(e["greedy"]), temperature=0.0,
                            repeat_penalty=1.0)  # fmt: skip
    assert text == e["text"]


@pytest.mark.slow
def test_reference_forward_equals_shared_exact_smollm2(default_model_path, smollm2_dev) -> None:
    e = smollm2_dev["teacher_forced"][0]
    exact = reference_logits(default_model_path, e["tokens"])
    assert np.abs(exact[:, e["cols"]] - np.asarray(e["exact_col_logits"])).max() < 1e-3
    emulated = reference_logits(default_model_path, e["tokens"], emulate_llama_cpp=True)
    ratio = rms(emulated[:, e["cols"]], np.asarray(e["exact_col_logits"])) / e["ref_rms_vs_exact"]
    assert 0.7 < ratio < 1.4, ratio
