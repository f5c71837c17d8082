"""The forward pass on small random Llama models of every tensor type, against float64 exact.

Each model is written by gguf-py (``tests/engine/llama_reference.py``); the engine's logits must
be as close to the exact computation as llama.cpp's would be (its rounding emulated in float64):
RMS error ≤ 1.5 × llama.cpp's, top-1 agreement ≥ llama.cpp's − 5 points.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import llama, ops
from engine.errors import ContextOverflow, GGUFError, UnsupportedTensorType
from tests.conftest import require_module
from tests.engine.llama_reference import QT, reference_logits, write_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
WEIGHT_TYPES = [
    QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
    QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_NL, QT.IQ4_XS,
]  # fmt: skip
TEXT = "the blood pressure of a dose is the dose of a blood pressure"


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-llama")


def check_against_exact(path: Path, ids: list[int], model: engine.Model | None = None) -> None:
    model = model or engine.load(path)
    ours = model.logits(ids)  # (n, n_vocab)
    exact = reference_logits(path, ids)
    like_llama_cpp = reference_logits(path, ids, emulate_llama_cpp=True)
    assert ours.dtype == np.float32 and ours.shape == exact.shape
    err, ref_err = rms(ours, exact), rms(like_llama_cpp, exact)
    # llama.cpp's own error sets the bar; 1e-4 of the logits' spread covers float32 rounding
    assert err <= 1.5 * ref_err + 1e-4 * exact.std(), (err, ref_err)
    top1 = np.mean(ours.argmax(1) == exact.argmax(1))
    ref_top1 = np.mean(like_llama_cpp.argmax(1) == exact.argmax(1))
    assert top1 >= ref_top1 - 0.05, (top1, ref_top1)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_every_weight_type_as_accurate_as_llama_cpp(tiny_dir: Path, qtype: QT) -> None:
    path = write_tiny_llama(tiny_dir / f"{qtype.name}.gguf", qtype, seed=int(qtype))
    model = engine.load(path)
    ids = model.tokenize(TEXT)
    check_against_exact(path, ids, model)
    # a decode step runs all layers in one compiled call (quantized types): same numbers
    w, c = model._weights(), model.config
    assert (w.decode_plan is None) == (qtype in (QT.F32, QT.F16, QT.BF16))
    last = []
    for fused in (True, False):
        cache, ws = llama.KVCache(c, len(ids)), llama.Workspace(c, 8)
        llama.prefill(w, cache, np.asarray(ids[:-1]), ws)
        last.append(llama.forward(w, cache, np.asarray(ids[-1:]), ws, fused=fused).copy())
    np.testing.assert_allclose(last[0], last[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ftype", ["IQ4_NL", "IQ4_XS"])
def test_files_quantized_by_llama_cpp_as_accurate_as_llama_cpp(tiny_dir: Path, ftype: str) -> None:
    """The i-quants as llama.cpp's own quantizer writes them (fitted scales, its choice of type
    per tensor), not random blocks: the same bar."""
    llama_cpp = require_module("llama_cpp")
    src = write_tiny_llama(tiny_dir / "llama-cpp-source.f32.gguf", QT.F32, seed=11)
    dst = tiny_dir / f"llama-cpp-{ftype}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0
    types = {t.tensor_type.name for t in require_module("gguf").GGUFReader(str(dst)).tensors}
    assert ftype in types, types
    model = engine.load(dst)
    assert model.config.file_type == ftype  # general.file_type, llama.cpp's name for the mix
    ids = model.tokenize(TEXT * 3)
    check_against_exact(dst, ids, model)  # a prompt batch: rows decoded to float32
    # one decode step after the prompt: the fused step's 8-bit integer products
    w, c = model._weights(), model.config
    assert w.decode_plan is not None
    cache, ws = llama.KVCache(c, len(ids)), llama.Workspace(c, 8)
    llama.prefill(w, cache, np.asarray(ids[:-1]), ws)
    out = llama.forward(w, cache, np.asarray(ids[-1:]), ws, fused=True)
    last = out.reshape(-1, c.n_vocab)[-1]
    exact = reference_logits(dst, ids)[-1]
    like_llama_cpp = reference_logits(dst, ids, emulate_llama_cpp=True)[-1]
    assert rms(last, exact) <= 1.5 * rms(like_llama_cpp, exact) + 1e-4 * exact.std()


@pytest.mark.parametrize(
    "variant",
    [
        {"tied": True, "embd_type": QT.Q8_0, "qtype": QT.Q4_1},  # SmolLM2's layout
        {"rope_dim": 32},  # RoPE on part of each head only
        {"rope_scale": 4.0},  # linear RoPE scaling
        {"n_head_kv": 4},  # multi-head (no grouping)
        {"n_head_kv": 1, "n_head": 8},  # multi-query, head_dim 32
    ],
    ids=["tied-q8-embd", "partial-rope", "rope-linear-4", "mha", "mqa"],
)
def test_architecture_variants(tiny_dir: Path, variant: dict) -> None:
    kw = dict(variant)
    qtype = kw.pop("qtype", QT.Q8_0)
    name = "-".join(f"{k}{v}" for k, v in sorted(variant.items()))
    path = write_tiny_llama(tiny_dir / f"variant-{name}.gguf", qtype, **kw)
    model = engine.load(path)
    ids = model.tokenize(TEXT * 3)
    assert len(ids) > 64  # more than one prompt batch
    check_against_exact(path, ids, model)


@pytest.mark.parametrize("qtype", [QT.F16, QT.Q8_0], ids=lambda t: t.name)
def test_incremental_decoding_equals_one_batch(tiny_dir: Path, qtype: QT) -> None:
    """Prompt batches of any size and token-by-token decoding see the same cache.

    F16 weights take the float path at every batch size: equal to float32 rounding.  Quantized
    weights use 8-bit activations for small batches (the float path for large ones), so they
    agree to the 8-bit rounding only, far below what a wrong position or cache would cost."""
    path = write_tiny_llama(tiny_dir / f"incremental-{qtype.name}.gguf", qtype, seed=3)
    model = engine.load(path)
    ids = np.asarray(model.tokenize(TEXT), np.int64)
    w, c = model._weights(), model.config
    cache = llama.KVCache(c, len(ids))
    full = llama.prefill(w, cache, ids, llama.Workspace(c, 64), all_logits=True)
    tol = 1e-4 if qtype == QT.F16 else 6e-2  # relative RMS (8-bit activations: about 2 %)

    def close(a: np.ndarray, b: np.ndarray) -> None:
        assert rms(a, b) <= tol * full.std(), rms(a, b) / full.std()

    for n_batch in (1, 3, 7):
        cache = llama.KVCache(c, len(ids))
        close(llama.prefill(w, cache, ids, llama.Workspace(c, n_batch), all_logits=True), full)
    cache, ws = llama.KVCache(c, len(ids)), llama.Workspace(c, 4)
    llama.prefill(w, cache, ids[:5], ws)
    for i in range(5, len(ids)):
        close(llama.forward(w, cache, ids[i : i + 1], ws), full[i])
    assert cache.n_past == len(ids)


def test_long_context_uses_parallel_attention(tiny_dir: Path) -> None:
    """Enough positions for the threaded attention kernel; still exact-equivalent."""
    path = write_tiny_llama(tiny_dir / "long.gguf", QT.Q8_0, seed=4, n_layer=1)
    model = engine.load(path)
    ids = (model.tokenize(TEXT * 12))[:250]
    n, c = len(ids), model.config
    assert n * c.n_head * n * c.head_dim >= ops.ATTENTION_PARALLEL_MIN_WORK
    check_against_exact(path, ids, model)


def test_context_overflow_is_a_clear_error(tiny_dir: Path) -> None:
    path = write_tiny_llama(tiny_dir / "ctx.gguf", QT.Q8_0)
    model = engine.load(path, n_ctx=8)
    with pytest.raises(ContextOverflow, match="9 tokens do not fit in a context of 8"):
        model.logits(list(range(3, 12)))
    with pytest.raises(ContextOverflow) as info:
        model.generate(list(range(3, 12)), max_tokens=4)
    assert (info.value.n_tokens, info.value.n_ctx) == (9, 8)
    # a prompt that fits stops at the end of the context instead of writing past it
    gen = model.generate(list(range(3, 9)), max_tokens=10, temperature=0, stream=True,
                         ignore_eos=True)  # fmt: skip
    "".join(gen)
    assert gen.finish_reason == "length" and gen.n_generated_tokens <= 3
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([1, 320])


def test_missing_and_unsupported_tensors(tiny_dir: Path) -> None:
    gguf = require_module("gguf")
    good = write_tiny_llama(tiny_dir / "good.gguf", QT.Q8_0, n_layer=1)
    reader = gguf.GGUFReader(str(good))
    for name, drop, retype in [("missing", "blk.0.ffn_up.weight", None),
                               ("iq2", None, "blk.0.ffn_up.weight")]:  # fmt: skip
        path = tiny_dir / f"{name}.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        for key, field in reader.fields.items():
            if key.startswith(("GGUF.", "general.architecture")):
                continue
            w.add_key_value(key, field.contents(), field.types[0],
                            field.types[-1] if len(field.types) > 1 else None)  # fmt: skip
        for t in reader.tensors:
            if t.name == drop:
                continue
            data = np.asarray(t.data)
            if t.name == retype:  # IQ2_XXS: 66-byte blocks of 256, not a type the engine runs
                data = np.zeros((data.shape[0], 66), np.uint8)
                w.add_tensor(t.name, data, raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS)
            else:
                w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    with pytest.raises(GGUFError, match=r"ffn_up\.weight"):
        engine.load(tiny_dir / "missing.gguf").logits([1, 2])
    with pytest.raises(UnsupportedTensorType, match="IQ2_XXS"):
        engine.load(tiny_dir / "iq2.gguf")


def test_load_compiles_and_reads_nothing(tiny_dir: Path) -> None:
    """``engine.load`` parses the header and tokenizer only; kernels compile on first forward."""
    path = write_tiny_llama(tiny_dir / "lazy.gguf", QT.Q4_K)
    code = (
        "import json, engine\n"
        "from engine import kernels, ops\n"
        f"m = engine.load({str(path)!r})\n"
        "m.tokenize('the dose')\n"
        "before = [len(f.signatures) for f in (ops.rms_norm, ops.add_rms_norm,"
        " ops.attention_serial)] + [len(kernels.compiled_types())]\n"
        "lazy = m._weights_cache is None\n"
        "m.logits([1, 5])\n"
        "after = len(ops.add_rms_norm.signatures)\n"
        "print(json.dumps([before, lazy, after]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=True)  # fmt: skip
    before, lazy, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == [0, 0, 0, 0] and lazy and after == 1


def test_f16_kv_cache_as_accurate_as_llama_cpp(tiny_dir: Path) -> None:
    """The f16 KV cache (llama.cpp's default) on both paths: a prompt batch long enough for the
    BLAS attention, and decode steps through the fused kernel; llama.cpp's emulated error,
    which includes its own f16 cache, is the bar."""
    path = write_tiny_llama(tiny_dir / "kv16.gguf", QT.Q4_K, seed=11)
    model = engine.load(path, kv_type="f16")
    ids = model.tokenize(TEXT * 6)[:80]
    assert len(ids) >= llama.BLAS_PATH_MIN_TOKENS
    check_against_exact(path, ids, model)  # model.logits: one prompt batch
    w, c = model._weights(), model.config
    cache, ws = llama.KVCache(c, len(ids), "f16"), llama.Workspace(c, 4)
    assert cache.k.dtype == np.uint16 and cache.nbytes * 2 == llama.KVCache(c, len(ids)).nbytes
    steps = np.array([llama.forward(w, cache, np.array([t], np.int64), ws).copy() for t in ids])
    exact = reference_logits(path, ids)
    like_llama_cpp = reference_logits(path, ids, emulate_llama_cpp=True)
    assert rms(steps, exact) <= 1.5 * rms(like_llama_cpp, exact) + 1e-4 * exact.std()
    f32 = engine.load(path)  # the float32 cache: the halves' rounding is all that differs
    assert rms(steps, f32.logits(ids)) < 0.05 * exact.std()


def test_kv_cache_type_is_checked(tiny_dir: Path) -> None:
    path = write_tiny_llama(tiny_dir / "kvbad.gguf", QT.Q8_0, seed=12)
    with pytest.raises(ValueError, match="'bf8' is not one of f32, f16"):
        engine.load(path, kv_type="bf8")
