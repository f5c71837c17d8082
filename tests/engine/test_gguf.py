"""The GGUF reader: real files against gguf-py, crafted files for every value type, split
models, and each kind of bad input (with a small crafted file)."""

from __future__ import annotations

import itertools
import mmap
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine.config import ModelConfig
from engine.constants import ENGINE_WEIGHT_TYPES, GGMLType, GGUFValueType
from engine.errors import GGUFError, SplitError, UnsupportedArchitecture, UnsupportedTensorType
from engine.gguf import GGUFFile, open_gguf
from tests.conftest import ROOT, require_module, shared_path
from tests.engine.gguf_craft import GGUFCraft, llama_craft

V = GGUFValueType


def _compare_with_gguf_py(path: Path) -> GGUFFile:
    gguf = require_module("gguf")
    ref = gguf.GGUFReader(str(path))
    g = GGUFFile.open(path)
    assert g.version == ref.fields["GGUF.version"].contents()
    keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert list(g.metadata) == keys
    for k in keys:
        want, got = ref.fields[k].contents(), g.metadata[k]
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, np.array(want), err_msg=k)
        else:
            assert got == want, k
    assert list(g.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info = g.tensors[t.name]
        assert info.shape == tuple(int(x) for x in t.shape)
        assert int(info.ggml_type) == int(t.tensor_type)
        assert info.n_bytes == int(t.n_bytes)
        assert info.data.shape == (info.n_rows, info.row_bytes)
        assert np.array_equal(info.data.reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1))
    return g


# ---------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------


def test_default_model_matches_gguf_py(default_model_path):
    with _compare_with_gguf_py(default_model_path) as g:
        assert g.version == 3 and len(g.tensors) == 272
        emb = g.tensors["token_embd.weight"]
        assert emb.shape == (576, 49152) and emb.n_rows == 49152
        assert emb.ggml_type == GGMLType.Q8_0 and emb.row_bytes == 576 // 32 * 34
        norm = g.tensors["output_norm.weight"].data.view(np.float32)  # (1, 576)
        assert norm.shape == (1, 576) and np.isfinite(norm).all()
        g.check_types(ENGINE_WEIGHT_TYPES)


@pytest.mark.parametrize(
    "parts",
    [
        ("tokenizer-tests", "ggml-vocab-llama-spm.gguf"),
        ("tokenizer-tests", "ggml-vocab-gpt-2.gguf"),
        ("models", "tiny-llama-spm.Q4_K_M.gguf"),
        ("models", "tiny-llama-spm.Q8_0.gguf"),
    ],
)
def test_shared_files_match_gguf_py(parts):
    g = _compare_with_gguf_py(shared_path(*parts))
    g.close()


def test_tensor_data_is_a_read_only_view_on_the_map(default_model_path):
    g = GGUFFile.open(default_model_path)
    t = g.tensors["token_embd.weight"]
    data = t.data
    assert _on_map(data) and not data.flags.writeable
    g.close()  # views taken before close stay valid: they still read the file's bytes
    with open(default_model_path, "rb") as f:
        f.seek(t.offset + (t.n_rows - 1) * t.row_bytes)
        last_row = f.read(t.row_bytes)
    assert len(last_row) == t.row_bytes and data[-1].tobytes() == last_row


def test_open_is_fast_and_does_not_read_tensors(default_model_path):
    tracemalloc.start()
    t0 = time.perf_counter()
    g = open_gguf(default_model_path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40e6, "opening must not copy the 98 MB of tensor data"
    assert elapsed < 20  # generous: a loaded CI machine; the benchmark measures the real time
    g.close()


# ---------------------------------------------------------------------------------------
# crafted valid files
# ---------------------------------------------------------------------------------------


def _all_value_types() -> GGUFCraft:
    c = GGUFCraft(alignment=64)
    c.add("general.alignment", 64, V.UINT32)
    for vt, v in [(V.UINT8, 200), (V.INT8, -5), (V.UINT16, 60000), (V.INT16, -300),
                  (V.UINT32, 4_000_000_000), (V.INT32, -7), (V.FLOAT32, 0.5), (V.BOOL, True),
                  (V.UINT64, 2**63), (V.INT64, -(2**40)), (V.FLOAT64, 1e-300)]:  # fmt: skip
        c.add(f"scalar.{vt.name.lower()}", v, vt)
    c.add("text.plain", "héllo ▁ 日本")
    c.add("text.empty", "")
    c.add("array.strings", ["a", "", "ü▁x", "<0x0A>"])
    c.add("array.i32", np.array([1, -2, 3], np.int32))
    c.add("array.f64", np.array([0.25, -1.5], np.float64))
    c.add("array.bool", np.array([True, False], np.bool_))
    c.add("array.empty", np.array([], np.uint8))
    c.add("array.nested", [np.array([1, 2], np.uint16), np.array([3], np.uint16)])
    c.add_tensor("f32", (8, 3), GGMLType.F32)
    c.add_tensor("q8", (64, 2), GGMLType.Q8_0)
    c.add_tensor("q4k", (256,), GGMLType.Q4_K)
    c.add_tensor("iq2", (256, 1, 1, 2), GGMLType.IQ2_XXS)
    return c


def test_every_value_type_round_trips(tmp_path):
    c = _all_value_types()
    path = c.write(tmp_path / "all.gguf")
    with GGUFFile.open(path) as g:
        md = g.metadata
        assert md["scalar.uint64"] == 2**63 and md["scalar.int64"] == -(2**40)
        assert md["scalar.bool"] is True and md["scalar.float32"] == 0.5
        assert md["text.plain"] == "héllo ▁ 日本" and md["text.empty"] == ""
        assert md["array.strings"] == ["a", "", "ü▁x", "<0x0A>"]
        assert md["array.i32"].tolist() == [1, -2, 3] and md["array.i32"].dtype == np.int32
        assert md["array.bool"].tolist() == [True, False]
        assert len(md["array.empty"]) == 0
        assert [a.tolist() for a in md["array.nested"]] == [[1, 2], [3]]
        assert g.field_types["array.strings"] == (V.ARRAY, V.STRING)
        assert g.alignment == 64 and g.data_offset % 64 == 0
        for t in c.tensors:
            info = g.tensors[t.name]
            assert info.shape == t.shape and info.offset % 64 == 0
            assert info.data.tobytes() == t.data
        assert g.tensors["iq2"].n_rows == 2
        with pytest.raises(UnsupportedTensorType) as e:
            g.check_types()
        assert e.value.tensor == "iq2" and e.value.type_name == "IQ2_XXS"
        assert "iq2" in str(e.value) and "IQ2_XXS" in str(e.value) and str(path) in str(e.value)


def test_crafted_file_reads_the_same_in_gguf_py(tmp_path):
    c = _all_value_types()
    c.kvs = [kv for kv in c.kvs if kv[0] != "array.nested"]  # gguf-py does not read nested arrays
    _compare_with_gguf_py(c.write(tmp_path / "x.gguf")).close()


def test_version_2_and_vocab_only(tmp_path):
    c = GGUFCraft(version=2).add("tokenizer.ggml.tokens", ["a", "b"])
    with GGUFFile.open(c.write(tmp_path / "v2.gguf")) as g:
        assert (
            g.version == 2 and g.tensors == {} and g.metadata["tokenizer.ggml.tokens"] == ["a", "b"]
        )


# ---------------------------------------------------------------------------------------
# bad input: each case a small crafted file, a typed error naming the file
# ---------------------------------------------------------------------------------------


def _fails(path: Path, exc=GGUFError, match: str = "") -> GGUFError:
    with pytest.raises(exc, match=match) as e:
        GGUFFile.open(path)
    assert str(path.name) in str(e.value) and e.value.path.name == path.name
    return e.value


def test_bad_magic(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("this is not a model, just text\n")
    _fails(p, match="not a GGUF")
    (tmp_path / "empty.gguf").write_bytes(b"")
    _fails(tmp_path / "empty.gguf", match="not a GGUF")


@pytest.mark.parametrize("version", [0, 1, 4, 2**31])
def test_unsupported_version(tmp_path, version):
    p = GGUFCraft(version=version).add("a", 1).write(tmp_path / "v.gguf")
    _fails(p, match=f"version {version} is not supported")


def test_truncated_header_at_every_byte(tmp_path):
    c = llama_craft()
    full = c.to_bytes()
    header = len(c.header_bytes())
    p = tmp_path / "cut.gguf"
    for n in range(4, header):
        p.write_bytes(full[:n])
        _fails(p, match="truncated|past the end")


def test_tensor_data_past_end_of_file(tmp_path):
    full = llama_craft().to_bytes()
    p = tmp_path / "short.gguf"
    p.write_bytes(full[:-100])
    e = _fails(p, match="past the end of the file")
    assert "output_norm.weight" in str(e) or "attn_q" in str(e)


def test_unknown_tensor_type_id(tmp_path):
    c = GGUFCraft().add_tensor("w", (32,), GGMLType.F32)
    c.tensors[0].ggml_type = 99
    e = _fails(c.write(tmp_path / "t.gguf"), UnsupportedTensorType, match="99")
    assert e.tensor == "w"


def test_unsupported_type_opens_but_fails_the_type_check(tmp_path):
    c = llama_craft().add_tensor("blk.0.ffn_down.weight", (256, 4), GGMLType.IQ2_XXS)
    with GGUFFile.open(c.write(tmp_path / "iq.gguf")) as g:
        with pytest.raises(UnsupportedTensorType, match=r"blk\.0\.ffn_down\.weight.*IQ2_XXS"):
            g.check_types(ENGINE_WEIGHT_TYPES)
        g.check_types([*ENGINE_WEIGHT_TYPES, GGMLType.IQ2_XXS])


def test_unknown_architecture(tmp_path):
    path = llama_craft(arch="mamba").write(tmp_path / "m.gguf")
    with GGUFFile.open(path) as g, pytest.raises(UnsupportedArchitecture, match="mamba") as e:
        ModelConfig.from_gguf(g)
    assert str(path) in str(e.value)


def test_crafted_llama_config(tmp_path):
    c = llama_craft()
    c.add("llama.rope.scaling.type", "linear").add("llama.rope.scaling.factor", 4.0)
    with GGUFFile.open(c.write(tmp_path / "l.gguf")) as g:
        cfg = ModelConfig.from_gguf(g)
    assert (cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == (64, 4, 2, 16)
    assert cfg.rope_scale == 4.0 and cfg.rope_freq_base == 10000.0 and cfg.tied_output
    assert cfg.n_vocab == 8 and cfg.bos_id == 1 and cfg.eos_id == 2 and cfg.eot_id is None
    assert cfg.add_bos and cfg.file_type == "Q8_0"
    old = llama_craft().add("llama.rope.scale_linear", 2.0)
    with GGUFFile.open(old.write(tmp_path / "old.gguf")) as g:
        assert ModelConfig.from_gguf(g).rope_scale == 2.0


def test_config_missing_key_names_it(tmp_path):
    c = llama_craft()
    c.kvs = [kv for kv in c.kvs if kv[0] != "llama.embedding_length"]
    with (
        GGUFFile.open(c.write(tmp_path / "k.gguf")) as g,
        pytest.raises(GGUFError, match="embedding_length"),
    ):
        ModelConfig.from_gguf(g)


def _absurd(tmp_path: Path, name: str, header: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(header + bytes(1024 - len(header)))  # a 1 KB file
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(GGUFError) as e:
        GGUFFile.open(p)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert name in str(e.value)
    assert peak < 5e6 and elapsed < 5, (peak, elapsed)


def test_absurd_tensor_count(tmp_path):
    _absurd(tmp_path, "tensors.gguf", b"GGUF" + struct.pack("<IQQ", 3, 2**60, 0))


def test_absurd_kv_count(tmp_path):
    _absurd(tmp_path, "kv.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 2**62))


def test_absurd_string_length(tmp_path):
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40)
    _absurd(tmp_path, "key.gguf", head)
    raw = struct.pack("<IQ", V.STRING, 2**40)
    _absurd(tmp_path, "value.gguf", GGUFCraft().add_raw("k", raw).header_bytes())


def test_absurd_array_length(tmp_path):
    for etype in (V.UINT8, V.FLOAT64, V.STRING, V.ARRAY):
        raw = struct.pack("<IIQ", V.ARRAY, etype, 2**60)
        _absurd(tmp_path, f"array{etype}.gguf", GGUFCraft().add_raw("k", raw).header_bytes())


def test_absurd_tensor_shape(tmp_path):
    c = GGUFCraft().add_tensor("w", (32, 4), GGMLType.F32)
    c.tensors[0].shape = (2**32, 2**31)
    _absurd(tmp_path, "shape.gguf", c.to_bytes()[:1024])


@pytest.mark.parametrize(
    "case, match",
    [
        ("dims", "dimensions"),
        ("misaligned", "aligned"),
        ("duplicate_tensor", "duplicate tensor"),
        ("duplicate_key", "duplicate metadata key"),
        ("value_type", "unknown value type"),
        ("alignment", "power-of-two"),
        ("block", "block size"),
    ],
)
def test_malformed_headers(tmp_path, case, match):
    c = GGUFCraft().add_tensor("w", (32, 2), GGMLType.Q8_0)
    if case == "dims":
        c.tensors[0].shape = (32, 1, 1, 1, 1)
    elif case == "misaligned":
        c.tensors[0].offset = 3
    elif case == "duplicate_tensor":
        c.add_tensor("w", (32,), GGMLType.F32)
    elif case == "duplicate_key":
        c.add("k", 1).add("k", 2)
    elif case == "value_type":
        c.add_raw("k", struct.pack("<I", 77))
    elif case == "alignment":
        c.add("general.alignment", 48, V.UINT32)
    elif case == "block":
        c.tensors[0].shape = (33, 2)
    _fails(c.write(tmp_path / f"{case}.gguf"), match=match)


# ---------------------------------------------------------------------------------------
# split models
# ---------------------------------------------------------------------------------------


def _on_map(a: np.ndarray) -> bool:
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def _byte_split(data: bytes, base: Path, cuts: list[int]) -> list[Path]:
    paths, edges = [], [0, *cuts, len(data)]
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        p = base.with_name(f"{base.name}-split-{'abc'[k]}")
        p.write_bytes(data[a:b])
        paths.append(p)
    return paths


def test_byte_split_opens_from_any_part(tmp_path):
    c = llama_craft(n_layer=3)
    whole = c.to_bytes()
    with GGUFFile.open(c.write(tmp_path / "whole.gguf")) as ref:
        emb = ref.tensors["token_embd.weight"]
        cut = emb.offset + emb.n_bytes // 2  # inside a tensor
        boundary = ref.tensors["output_norm.weight"].offset  # between two tensors
        parts = _byte_split(whole, tmp_path / "m.gguf", [cut, boundary])
        for given in [*parts, tmp_path / "m.gguf"]:
            with GGUFFile.open(given) as g:
                assert g.parts == parts and g.path == parts[0]
                assert list(g.metadata) == list(ref.metadata)
                assert g.metadata["tokenizer.ggml.tokens"] == ref.metadata["tokenizer.ggml.tokens"]
                for name, t in ref.tensors.items():
                    assert np.array_equal(g.tensors[name].data, t.data), name
                # the one tensor across the cut is a copy, the others views on the maps
                assert not _on_map(g.tensors["token_embd.weight"].data)
                assert all(
                    _on_map(t.data) for n, t in g.tensors.items() if n != "token_embd.weight"
                )


def test_byte_split_missing_part(tmp_path):
    whole = llama_craft().to_bytes()
    a, b = _byte_split(whole, tmp_path / "m.gguf", [len(whole) // 2])
    b.unlink()
    e = _fails(a, SplitError, match="split-b")
    assert "missing" in str(e)
    b.write_bytes(whole[len(whole) // 2 :])
    a.unlink()
    _fails(b, SplitError, match="split-a is missing")


def test_byte_split_mismatched_part(tmp_path):
    whole = llama_craft().to_bytes()
    other = llama_craft(n_embd=128).to_bytes()
    a, b = _byte_split(whole, tmp_path / "m.gguf", [len(whole) // 2])
    b.write_bytes(other[len(other) // 2 :])  # part b of another model, longer
    _fails(a, SplitError, match="another file")


def test_byte_split_of_a_real_model(tmp_path):
    src = shared_path("models", "tiny-llama-spm.Q4_K_M.gguf")
    data = src.read_bytes()
    parts = _byte_split(data, tmp_path / src.name, [len(data) // 3, 2 * len(data) // 3])
    with GGUFFile.open(src) as ref, GGUFFile.open(parts[1]) as g:
        assert list(g.tensors) == list(ref.tensors)
        for name, t in ref.tensors.items():
            assert np.array_equal(g.tensors[name].data, t.data), name


def _shards(tmp_path: Path, n: int = 3, **override) -> list[Path]:
    paths = []
    total = 4 + 2 * n  # llama_craft's 4 tensors and 2 per shard
    for i in range(n):
        c = llama_craft() if i == 0 else GGUFCraft()
        if i:
            c.tensors = []
        c.add("split.no", override.get("no", {}).get(i, i), V.UINT16)
        c.add("split.count", override.get("count", {}).get(i, n), V.UINT16)
        c.add("split.tensors.count", override.get("tensors", total), V.INT32)
        c.add_tensor(f"blk.{i}.ffn_up.weight", (64, 2), GGMLType.Q8_0, seed=i)
        c.add_tensor(f"blk.{i}.ffn_down.weight", (64, 2), GGMLType.F16, seed=10 + i)
        paths.append(c.write(tmp_path / f"model-{i + 1:05d}-of-{n:05d}.gguf"))
    return paths


def test_gguf_split_shards_open_as_one(tmp_path):
    paths = _shards(tmp_path)
    for given in paths:
        with GGUFFile.open(given) as g:
            assert g.path == paths[0] and g.parts == paths
            assert g.metadata["general.architecture"] == "llama"
            assert len(g.tensors) == 10 and "blk.2.ffn_down.weight" in g.tensors
            assert g.tensors["blk.2.ffn_down.weight"].data.shape == (2, 128)


def test_gguf_split_missing_shard(tmp_path):
    paths = _shards(tmp_path)
    paths[1].unlink()
    e = _fails(paths[2], SplitError, match="00002-of-00003")
    assert "missing" in str(e)


@pytest.mark.parametrize(
    "override",
    [{"no": {1: 2}}, {"count": {2: 4}}, {"tensors": 99}],
    ids=["wrong-number", "wrong-count", "tensor-count"],
)
def test_gguf_split_mismatched_shard(tmp_path, override):
    paths = _shards(tmp_path, **override)
    with pytest.raises(SplitError) as e:
        GGUFFile.open(paths[0])
    assert e.value.path in paths and e.value.path.name in str(e.value)


def test_single_file_named_like_a_shard(tmp_path):
    path = llama_craft().write(tmp_path / "m-00001-of-00001.gguf")
    with GGUFFile.open(path) as g:
        assert g.parts == [path] and len(g.tensors) == 4


def test_renamed_shard_is_refused(tmp_path):
    p = _shards(tmp_path)[0].rename(tmp_path / "renamed.gguf")
    _fails(p, SplitError, match="shard")


def test_import_engine_does_not_pull_heavy_packages():
    code = (
        "import engine, engine.gguf, engine.config, engine.tokenizer, engine.cli, sys;"
        "bad = [m for m in ('torch', 'langchain_core', 'langchain') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_reading_and_tokenizing_do_not_load_numba(default_model_path):
    """Opening a GGUF and tokenizing need neither numba nor its kernels (issue 3: ``load``
    compiles nothing tokenizing does not need); ``engine.load`` brings numba in."""
    code = (
        "import sys, engine; from engine.tokenizer import Tokenizer;"
        f"t = Tokenizer.from_file({str(default_model_path)!r}); t.encode('BP 140/90 mmHg');"
        "assert 'numba' not in sys.modules, 'numba imported';"
        "engine.load; assert 'numba' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cli_info_and_tokenize(default_model_path):
    def run(*args: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    info = run("info", str(default_model_path))
    assert "Q4_1" in info and "272 tensors" in info and "n_head_kv          3" in info
    out = run("tokenize", str(default_model_path), "<|im_start|>user", "--special")
    assert out.strip() == "[1, 4093]"
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "info", __file__], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "not a GGUF" in bad.stderr
