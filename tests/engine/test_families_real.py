"""The real models of the new families against the committed reference data.

``tests/engine/data/families-reference.json`` (made by ``scripts/reference_families.py``): per
model, a teacher-forced chat prompt with the exact float64 logits at 256 vocabulary ids and
llama.cpp's own error on them, and greedy continuations by llama.cpp and by the exact
computation.  Both engine paths (prompt batches and single-token decode steps) must have RMS
error ≤ 1.5 × llama.cpp's and top-1 agreement ≥ llama.cpp's − 5 points; greedy decoding must
follow llama.cpp's continuation or the exact one for 16 tokens.  The models are test fixtures
fetched into the models directory (``$GUIDELINES_HOME/models``) by the test command; a test
skips, saying so, when its model is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import llama

DATA = Path(__file__).with_name("data") / "families-reference.json"
REFERENCE = json.loads(DATA.read_text())


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def model_path(name: str) -> Path:
    from assistant.config import Settings

    path = Settings.from_env().models_dir / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the test command fetches it)")
    if path.stat().st_size != REFERENCE[name]["file_bytes"]:
        pytest.fail(f"{path} has {path.stat().st_size} bytes, the reference was made on "
                    f"{REFERENCE[name]['file_bytes']}")  # fmt: skip
    return path


@pytest.fixture(scope="module", params=sorted(REFERENCE))
def real(request: pytest.FixtureRequest) -> tuple[engine.Model, dict]:
    name = request.param
    return engine.load(model_path(name)), REFERENCE[name]


def decode_logits(model: engine.Model, tokens: list[int]) -> np.ndarray:
    """Teacher-forced logits through single-token decode steps (the fused generation step)."""
    w, c = model._weights(), model.config
    cache, ws = llama.KVCache(c, len(tokens)), llama.Workspace(c, 1)
    return np.stack([llama.forward(w, cache, np.asarray([t]), ws).copy() for t in tokens])


def test_both_paths_as_accurate_as_llama_cpp(real: tuple[engine.Model, dict]) -> None:
    model, ref = real
    assert model.config.architecture == ref["family"]
    for e in ref["teacher_forced"]:
        exact = np.asarray(e["exact_col_logits"])  # (n, 256)
        for logits in (model.logits(e["tokens"]), decode_logits(model, e["tokens"])):
            err = rms(logits[:, e["cols"]], exact)
            top1 = float(np.mean(logits.argmax(1) == np.asarray(e["exact_argmax"])))
            assert err <= 1.5 * e["ref_rms_vs_exact"], (err, e["ref_rms_vs_exact"])
            assert top1 >= e["ref_top1_vs_exact"] - 0.05, (top1, e["ref_top1_vs_exact"])


def test_greedy_follows_llama_cpp_or_exact(real: tuple[engine.Model, dict]) -> None:
    model, ref = real
    for g in ref["greedy"]:
        gen = model.generate(g["prompt_tokens"], max_tokens=16, temperature=0.0,
                             repeat_penalty=1.0, stream=True, ignore_eos=True)  # fmt: skip
        "".join(gen)
        assert gen.n_generated_tokens == 16
        assert gen.tokens in (g["greedy"] and g["greedy"][:16], g["exact_greedy"][:16]), g["prompt"]
