"""Dequantization of every tensor type equals gguf-py's reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quants
from engine.constants import GGML_BLOCK_LAYOUT, GGMLType
from tests.conftest import require_module, shared_path

gguf = require_module("gguf")

ALL_TYPES = list(quants.QUANT_TYPES)

def random_blocks(ggml_type: GGMLType, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes with finite, moderate f16 scales (as a real quantizer would write)."""
    layout = GGML_BLOCK_LAYOUT[ggml_type]
    blocks = rng.integers(0, 256, size=(n_blocks, layout.type_size), dtype=np.uint8)
    if ggml_type in (GGMLType.F16, GGMLType.F32, GGMLType.BF16):
        # Any finite values: draw floats and store them in the type.
        values = rng.standard_normal((n_blocks, 1)).astype(np.float32) * 3
        return quants.quantize_weights(values, ggml_type).reshape(n_blocks, layout.type_size)
    for offset in quants.quant_type(ggml_type).f16_offsets:
        scale = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        blocks[:, offset : offset + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks_equal_gguf_py(ggml_type: GGMLType) -> None:
    rng = np.random.default_rng(int(ggml_type) + 1)
    blocks = random_blocks(ggml_type, 257, rng)
    cls = quants.QUANT_TYPES[ggml_type]
    ours = cls.dequantize(blocks)
    assert ours.dtype == np.float32
    assert ours.shape == (257, cls.block_size)
    ref = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(int(ggml_type))).reshape(257, -1)
    np.testing.assert_array_equal(ours, ref.astype(np.float32))


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_rows_shape_and_values(ggml_type: GGMLType) -> None:
    rng = np.random.default_rng(7)
    layout = GGML_BLOCK_LAYOUT[ggml_type]
    n_rows, blocks_per_row = 3, 5
    blocks = random_blocks(ggml_type, n_rows * blocks_per_row, rng)
    rows = blocks.reshape(n_rows, blocks_per_row * layout.type_size)
    out = quants.dequantize(rows, ggml_type)
    assert out.shape == (n_rows, blocks_per_row * layout.block_size)
    expected = quants.QUANT_TYPES[ggml_type].dequantize(blocks).reshape(out.shape)
    np.testing.assert_array_equal(out, expected)


def test_special_values_survive_f16_and_bf16() -> None:
    values = np.array([[0.0, -0.0, np.inf, -np.inf, 6.1e-5, 5.96e-8, 65504.0, 1e-40]], np.float32)
    for ggml_type in (GGMLType.F16, GGMLType.BF16):
        data = quants.quantize_weights(values, ggml_type)
        ref = gguf.quants.dequantize(data, gguf.GGMLQuantizationType(int(ggml_type)))
        np.testing.assert_array_equal(quants.dequantize(data, ggml_type), ref)


def test_unsupported_type_and_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="IQ2_XXS"):
        quants.dequantize(np.zeros((1, 66), np.uint8), GGMLType.IQ2_XXS)
    with pytest.raises(ValueError, match="Q4_0"):
        quants.dequantize(np.zeros((1, 17), np.uint8), GGMLType.Q4_0)
    with pytest.raises(ValueError, match="uint8"):
        quants.dequantize(np.zeros((1, 18), np.int16), GGMLType.Q4_0)
    with pytest.raises(ValueError, match="Q4_K"):
        quants.row_bytes(GGMLType.Q4_K, 100)
    assert quants.row_bytes(GGMLType.Q4_K, 512) == 2 * 144


@pytest.mark.parametrize(
    "ggml_type",
    [
        GGMLType.Q4_0,
        GGMLType.Q4_1,
        GGMLType.Q5_0,
        GGMLType.Q5_1,
        GGMLType.Q8_0,
        GGMLType.BF16,
        GGMLType.F16,
    ],
)
def test_reference_quantizers_equal_gguf_py(ggml_type: GGMLType) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block
    ours = quants.quantize_weights(x, ggml_type)
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(ggml_type)))
    np.testing.assert_array_equal(ours, ref.view(np.uint8).reshape(ours.shape))


def test_activation_quantizers() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    qs, d = quants.quantize_q8_0(x)
    assert qs.dtype == np.int8 and qs.shape == x.shape and d.shape == (3, 16)
    assert np.abs(qs).max() == 127
    np.testing.assert_allclose(
        qs.reshape(3, 16, 32) * d[..., None], x.reshape(3, 16, 32), atol=float(d.max()) / 2 * 1.0001
    )
    qs1, d1, s1 = quants.quantize_q8_1(x)
    np.testing.assert_allclose(s1, d1 * qs1.reshape(3, 16, 32).sum(axis=2), rtol=1e-6)
    qk, dk = quants.quantize_q8_k(x)
    assert dk.shape == (3, 2) and qk.min() >= -127
    np.testing.assert_allclose(
        qk.reshape(3, 2, 256) * dk[..., None],
        x.reshape(3, 2, 256),
        atol=float(np.abs(dk).max()) / 2 * 1.0001,
    )
    # The value of largest magnitude maps to -127 exactly (scale sign follows it).
    big = np.abs(x.reshape(6, 256)).argmax(axis=1)
    assert (qk.reshape(6, 256)[np.arange(6), big] == -127).all()


def _real_tensors(path, wanted: set[GGMLType], limit_rows: int = 64):
    reader = gguf.GGUFReader(path)
    seen = {}
    for t in reader.tensors:
        ggml_type = GGMLType(int(t.tensor_type))
        if ggml_type in wanted and ggml_type not in seen:
            data = np.asarray(t.data)
            rows = data.reshape(-1, data.shape[-1])[:limit_rows]
            seen[ggml_type] = (t.name, rows)
    return seen


@pytest.mark.parametrize(
    "file_parts, types",
    [
        (("models", "tiny-llama-spm.Q4_K_M.gguf"), {GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.F32}),
        (("models", "tiny-llama-spm.Q8_0.gguf"), {GGMLType.Q8_0}),
    ],
)
def test_dequantize_real_tensors_equal_gguf_py(file_parts, types) -> None:
    found = _real_tensors(shared_path(*file_parts), types)
    assert set(found) == types
    for ggml_type, (name, rows) in found.items():
        ref = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(int(ggml_type)))
        np.testing.assert_array_equal(
            quants.dequantize(rows.view(np.uint8), ggml_type), ref, err_msg=name
        )


def test_dequantize_default_model_tensors_equal_gguf_py(default_model_path) -> None:
    found = _real_tensors(default_model_path, {GGMLType.Q4_1, GGMLType.Q8_0})
    assert set(found) == {GGMLType.Q4_1, GGMLType.Q8_0}
    for ggml_type, (name, rows) in found.items():
        ref = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(int(ggml_type)))
        np.testing.assert_array_equal(quants.dequantize(rows, ggml_type), ref, err_msg=name)
