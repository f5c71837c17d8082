"""The fuzzing of the readers (scripts/fuzz.py) on a short budget, and its findings as
regression tests. The long run is the command in the README's "Reliability" table."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import zlib

import pytest

from tests.conftest import ROOT, SHARED, require_module

RUNS = 300  # inputs per target: seconds each; the README's run uses 100,000


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory: pytest.TempPathFactory,
                 default_model_path) -> dict[str, dict]:
    require_module("atheris", "atheris (the coverage-guided fuzzer) is in the test extra")
    workdir = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GUIDELINES_SHARED": str(SHARED)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--target", "all",
                           "--runs", str(RUNS), "--json", "--workdir", str(workdir)],
                          env=env, capture_output=True, text=True, timeout=900)
    results = {r["target"]: r for r in json.loads(proc.stdout)}
    assert proc.returncode == 0, json.dumps(results, indent=1)[-4000:]
    return results


@pytest.mark.parametrize("target", ["gguf", "tokenizer", "corpus"])
def test_short_fuzz_run_finds_nothing(fuzz_results: dict[str, dict], target: str) -> None:
    r = fuzz_results[target]
    assert r["findings"] == [] and r["returncode"] == 0
    assert r["inputs"] >= RUNS - 1  # libFuzzer's count includes one empty input
    assert sum(r["outcomes"].values()) == r["inputs"]
    assert r["outcomes"].get("ok", 0) > 0  # the seeds are real files that read
    assert r["max_seconds"] <= 1.0
    assert r["max_alloc_bytes"] <= 64 << 20
    assert r["alloc_measured"] == r["inputs"]  # by default every input's allocation
    assert r["seeds"] >= (8 if target == "gguf" and (SHARED / "models").is_dir() else 1)


def test_short_fuzz_run_checks_the_bpe_round_trip(fuzz_results: dict[str, dict]) -> None:
    assert fuzz_results["tokenizer"].get("bpe_roundtrip", 0) > 0


def test_damaged_gzip_body_is_a_corpus_error(tmp_path) -> None:
    """Fuzz finding: a .jsonl.gz whose deflate stream is damaged raised zlib.error."""
    from ingest.corpus import read_corpus
    from ingest.errors import CorpusError

    line = json.dumps({"id": "a", "source": "s", "clean_text": "x" * 200}) + "\n"
    data = bytearray(gzip.compress(line.encode() * 20, mtime=0))
    data[12:16] = b"\xff\x00\xff\x00"  # inside the deflate stream, past the gzip header
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(zlib.error):
        gzip.decompress(bytes(data))  # the damage is one zlib reports
    with pytest.raises(CorpusError, match=r"damaged\.jsonl\.gz"):
        list(read_corpus(path))


def test_stream_decoder_keeps_a_bounded_buffer() -> None:
    """Fuzz finding: on a vocabulary that cleans spaces (GPT-2) the stream decoder cleaned the
    whole text again at every token (quadratic: 0.18 s for a 247-token input)."""
    import random

    from engine.tokenizer import Tokenizer
    from tests.conftest import shared_path

    tok = Tokenizer.from_file(shared_path("tokenizer-tests", "ggml-vocab-gpt-2.gguf"))
    assert tok.vocab.clean_spaces
    text = (shared_path("data", "guidelines-sample.jsonl").read_text(encoding="utf-8")[:20000]
            + " it 's here . yes , he ' s ' re ' ve !? " * 50)
    rng = random.Random(5)
    tricky = tok.encode(" ' . , ! ? 's 're 've 'm x", add_bos=False)
    for ids in (tok.encode(text, add_bos=False), [rng.choice(tricky) for _ in range(3000)]):
        dec = tok.stream_decoder()
        pieces, longest = [], 0
        for i in ids:
            pieces.append(dec.feed(i))
            longest = max(longest, len(dec._raw))
        pieces.append(dec.flush())
        assert "".join(pieces) == tok.decode(ids)
        assert longest < 600  # bytes held back, not the whole text


def test_parquet_row_with_invalid_utf8_is_rejected_alone(tmp_path) -> None:
    """Fuzz finding: Parquet does not check that strings are UTF-8; one such row raised
    UnicodeDecodeError out of the reader (a traceback, and the whole build lost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest.corpus import Record, Rejection, read_corpus

    text = pa.array([b"First text.", b"bad \xf2\x28 text", b"Third text."], pa.binary())
    table = pa.table({"id": ["a", "b", "c"], "source": ["s"] * 3,
                      "clean_text": text.view(pa.string())})
    path = tmp_path / "bad-utf8.parquet"
    pq.write_table(table, path)
    items = list(read_corpus(path))
    assert [type(i) for i in items] == [Record, Rejection, Record]
    assert items[1].line == 2 and "invalid UTF-8" in items[1].reason
    assert [i.id for i in items if isinstance(i, Record)] == ["a", "c"]


def test_parquet_column_name_not_utf8_is_a_corpus_error(tmp_path) -> None:
    """Fuzz finding: a Parquet footer whose column name is not UTF-8 raised UnicodeDecodeError
    from pyarrow when the file was opened."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest.corpus import read_corpus
    from ingest.errors import CorpusError

    path = tmp_path / "bad-name.parquet"
    pq.write_table(pa.table({"id": ["a"], "source": ["s"], "clean_text": ["Text."]}), path,
                   store_schema=False)
    data = path.read_bytes()
    assert data.count(b"clean_text") >= 1  # the schema and the column chunk name it
    path.write_bytes(data.replace(b"clean_text", b"clean\x98text"))
    with pytest.raises(CorpusError, match=r"bad-name\.parquet"):
        list(read_corpus(path))


_ALLOCATION_BOUND_CHECK = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("fuzz_script", sys.argv[1])
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)


class Allocates:
    typed = (ValueError,)  # a fuzz target that holds data[0] MB of Python objects at once

    def __call__(self, data):
        held = [bytearray(1 << 20) for _ in range(data[0])]
        return f"ok {len(held)}"


bound, limit = 64 << 20, resource.getrlimit(resource.RLIMIT_AS)[1]
small, big = bytes([8]), bytes([200])
outcome, _, _, alloc = fuzz.run_input(Allocates(), small, True, bound, limit)
assert outcome == "ok 8" and 8 << 20 <= alloc < 10 << 20, (outcome, alloc)
assert fuzz.run_input(Allocates(), big, True, bound, limit)[3] >= 200 << 20
assert fuzz.run_input(Allocates(), small, False, bound, limit)[0] == "ok 8"
assert fuzz.run_input(Allocates(), big, False, bound, limit)[0] == "MemoryError"
assert resource.getrlimit(resource.RLIMIT_AS) == (limit, limit)
"""


def test_allocation_bound_holds_measured_or_not() -> None:
    """The harness measures an input's peak with tracemalloc, or (``--alloc-every N``, the
    inputs in between) bounds it by a soft address-space limit: both catch an input past the
    bound, and the limit is restored after the input.  In a fresh interpreter, as in a fuzz
    worker: an address-space limit in the test process would also bind its other threads."""
    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATION_BOUND_CHECK, str(ROOT / "scripts" / "fuzz.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("model,text", [("gpt2", "M"), ("llama", "<0x>"), ("llama", "<0xZZ>")])
def test_byte_token_that_is_not_hex_is_a_gguf_error(model: str, text: str) -> None:
    """Fuzz finding: a vocabulary whose token of type BYTE is not ``<0xXX>`` (a BPE vocab with
    ``M`` typed BYTE) loaded, and decoding that token raised ValueError from ``int(.., 16)``."""
    import numpy as np

    from engine.constants import TokenType
    from engine.errors import GGUFError
    from engine.tokenizer import Tokenizer
    from engine.tokenizer.vocab import read_vocab

    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", text, "a"]
    types = np.array([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE,
                      TokenType.BYTE, TokenType.NORMAL], np.int32)
    md = {"tokenizer.ggml.model": model, "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": []}
    with pytest.raises(GGUFError, match=rf"token 4 '{re.escape(text)}' has type BYTE"):
        read_vocab(md, "bad-vocab.gguf")
    types[4] = TokenType.NORMAL
    assert Tokenizer(read_vocab(md, "good.gguf")).decode([3], special=True) == "\n"


@pytest.mark.parametrize("shape", [(2**64 - 32, 0), (32, 0, 2**40, 2**40), (32, 2**63)])
def test_tensor_with_too_many_elements_is_a_gguf_error(tmp_path, shape) -> None:
    """Fuzz finding: a tensor of shape (2**64 - 32, 0) has no bytes, so it passed the
    end-of-file check, and its data view raised numpy's ValueError ("Maximum allowed dimension
    exceeded"). llama.cpp rejects more than 2**63 - 1 elements; a zero dimension does not
    excuse the others."""
    from engine.constants import GGMLType
    from engine.errors import GGUFError
    from engine.gguf import GGUFFile
    from tests.engine.gguf_craft import GGUFCraft

    c = GGUFCraft().add_tensor("w", (32, 1), GGMLType.F32)
    c.tensors[0].shape = shape
    path = c.write(tmp_path / "huge.gguf")
    with pytest.raises(GGUFError, match=r"huge\.gguf.*tensor 'w' has too many elements"):
        GGUFFile.open(path)
    c.tensors[0].shape = (32, 1)
    with GGUFFile.open(c.write(tmp_path / "ok.gguf")) as g:
        assert g.tensors["w"].data.shape == (1, 128)
