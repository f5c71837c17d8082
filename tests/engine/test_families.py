"""The model families (Llama-3, Qwen2, Qwen3, Gemma-3) on small random models, against float64.

Each model is written by gguf-py with its family's optional tensors (``write_tiny_llama(arch=…)``);
Llama-3 and Qwen3 carry their real vocabularies (llama.cpp's vocab-only GGUFs in
``../shared/tokenizer-tests``).  Both engine paths — prompt batches and single-token decode
steps (the fused one-call step) — must be as close to the exact computation as llama.cpp would
be (its rounding emulated in float64): RMS error ≤ 1.5 × llama.cpp's, top-1 ≥ llama.cpp's − 5
points.  The real models are in ``test_families_real.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import engine
from engine import llama
from engine.errors import GGUFError, UnsupportedArchitecture
from tests.conftest import shared_path
from tests.engine.llama_reference import QT, reference_logits, write_tiny_llama


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def _vocab(name: str) -> Path:
    return shared_path("tokenizer-tests", f"ggml-vocab-{name}.gguf")


# name -> (write_tiny_llama keywords, the parts config.parts must report)
FAMILIES = {
    "llama3-rope-freqs": (
        dict(arch="llama", qtype=QT.Q8_0, vocab="llama-bpe", rope_freqs=True, tied=True,
             n_embd=128, n_ff=256),
        {"rope_freq_factors": True, "rope_neox": False},
    ),
    "qwen2-bias": (
        dict(arch="qwen2", qtype=QT.Q4_0, n_embd=256, embd_type=QT.Q8_0),
        {"qkv_bias": True, "rope_neox": True},
    ),
    "qwen3-qk-norm": (
        dict(arch="qwen3", qtype=QT.Q5_0, vocab="qwen2", tied=True, n_embd=128, head_dim=64,
             n_ff=256),
        {"qk_norm": True, "qkv_bias": False, "rope_neox": True},
    ),
    "gemma3-swa": (
        dict(arch="gemma3", qtype=QT.Q8_0, tied=True, n_layer=3, head_dim=64, n_head_kv=1,
             sliding_window=5, swa_pattern=3),
        {"qk_norm": True, "post_norms": True, "ffn_gelu": True, "sliding_window": 5},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-families")


def tiny_model(tiny_dir: Path, name: str) -> Path:
    path = tiny_dir / f"{name}.gguf"
    if not path.exists():
        kw = dict(FAMILIES[name][0])
        if "vocab" in kw:
            kw["vocab"] = _vocab(kw["vocab"])
        write_tiny_llama(path, kw.pop("qtype"), seed=7, **kw)
    return path


def decode_logits(model: engine.Model, ids: list[int], fused: bool = True) -> np.ndarray:
    """Teacher-forced logits through single-token decode steps (the generation path)."""
    w, c = model._weights(), model.config
    cache, ws = llama.KVCache(c, len(ids)), llama.Workspace(c, 1)
    return np.stack([llama.forward(w, cache, np.asarray([t]), ws, fused=fused).copy()
                     for t in ids])  # fmt: skip


def check(ours: np.ndarray, exact: np.ndarray, like_llama_cpp: np.ndarray) -> tuple[float, float]:
    err, ref_err = rms(ours, exact), rms(like_llama_cpp, exact)
    assert err <= 1.5 * ref_err + 1e-4 * exact.std(), (err, ref_err)
    top1 = np.mean(ours.argmax(1) == exact.argmax(1))
    ref_top1 = np.mean(like_llama_cpp.argmax(1) == exact.argmax(1))
    assert top1 >= ref_top1 - 0.05, (top1, ref_top1)
    return err, ref_err


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_as_accurate_as_llama_cpp_on_both_paths(tiny_dir: Path, name: str) -> None:
    path = tiny_model(tiny_dir, name)
    model = engine.load(path, n_batch=8)  # several prompt batches: windows cross them
    for flag, value in FAMILIES[name][1].items():
        assert getattr(model.config.parts, flag) == value, flag
    assert model.config.architecture == FAMILIES[name][0]["arch"]
    ids = [int(i) for i in np.random.default_rng(1).integers(3, model.config.n_vocab, 24)]
    exact = reference_logits(path, ids)
    like_llama_cpp = reference_logits(path, ids, emulate_llama_cpp=True)
    check(model.logits(ids), exact, like_llama_cpp)  # prompt batches
    assert model._weights().decode_plan is not None  # the fused decode step runs
    check(decode_logits(model, ids), exact, like_llama_cpp)
    # the fused step and the op-by-op step compute the same thing
    np.testing.assert_allclose(decode_logits(model, ids[:6], fused=False),
                               decode_logits(model, ids[:6]), rtol=1e-4, atol=1e-4)  # fmt: skip


def test_gemma3_sliding_window_is_per_layer_and_matters(tiny_dir: Path) -> None:
    """Pattern 3: layers 0 and 1 local (window 5, RoPE base 10000), layer 2 global; the
    window changes the logits once a sequence is longer than it."""
    model = engine.load(tiny_model(tiny_dir, "gemma3-swa"))
    c = model.config
    assert c.layer_window == (5, 5, 0)
    assert c.parts.rope_freq_base_swa == 10000.0 and c.rope_freq_base == 1e6
    assert c.parts.embd_scale == pytest.approx(np.sqrt(c.n_embd))
    ids = list(range(3, 23))
    windowed = model.logits(ids)
    # the same weights (same seed) with a window longer than the sequence
    kw = dict(FAMILIES["gemma3-swa"][0], sliding_window=64)
    wide = write_tiny_llama(tiny_dir / "gemma3-wide.gguf", kw.pop("qtype"), seed=7, **kw)
    full = engine.load(wide).logits(ids)
    np.testing.assert_allclose(windowed[:5], full[:5], rtol=1e-5, atol=1e-5)
    assert rms(windowed[5:], full[5:]) > 1e-3 * full.std()


def test_llama3_rope_freqs_change_the_result(tiny_dir: Path) -> None:
    model = engine.load(tiny_model(tiny_dir, "llama3-rope-freqs"))
    f = model.config.rope_freq_factors
    assert f is not None and len(f) == model.config.rope_dim // 2 and f[-1] == pytest.approx(8)
    cos, sin = llama.rope_tables(model.config, 16)
    assert cos.shape == sin.shape == (1, 16, model.config.rope_dim // 2)
    # the lowest frequency turns 8 times slower than without factors
    base = model.config.rope_freq_base ** (-(model.config.rope_dim - 2) / model.config.rope_dim)
    assert np.arcsin(sin[0, 15, -1]) == pytest.approx(15 * base / 8, rel=1e-4)


def test_unsupported_architecture_names_every_family(tiny_dir: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tiny_dir / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitecture) as info:
        engine.load(path)
    assert info.value.architecture == "mamba"
    assert "llama, qwen2, qwen3, gemma3" in str(info.value)


def test_a_required_part_missing_is_an_error_naming_it(tiny_dir: Path) -> None:
    """qwen2 requires the Q/K/V biases: a file without them fails at the first forward."""
    gguf = pytest.importorskip("gguf")
    good = write_tiny_llama(tiny_dir / "qwen2-one-layer.gguf", QT.Q8_0, arch="qwen2", n_layer=1)
    reader = gguf.GGUFReader(str(good))
    bad = tiny_dir / "qwen2-without-bias.gguf"
    w = gguf.GGUFWriter(str(bad), "qwen2")
    for key, field in reader.fields.items():
        if not key.startswith(("GGUF.", "general.architecture")):
            w.add_key_value(key, field.contents(), field.types[0],
                            field.types[-1] if len(field.types) > 1 else None)  # fmt: skip
    for t in reader.tensors:
        if not t.name.endswith(".bias"):
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = engine.load(bad)
    assert model.config.parts.qkv_bias
    with pytest.raises(GGUFError, match=r"attn_q\.bias"):
        model.logits([1, 2])
