"""Tokenizers against llama.cpp: its own vocab tests, the dev references, decoding and streaming."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from engine.gguf import GGUFFile
from engine.tokenizer import InvalidTokenId, Tokenizer
from tests.conftest import shared_path
from tests.engine.gguf_craft import GGUFCraft
from tests.engine.vocabs import LLAMA_CPP_VOCABS, MODEL_VOCABS, vocab_path

SEPARATOR = "\n__ggml_vocab_test__\n"


@cache
def _tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(path)


def spm() -> Tokenizer:
    return _tokenizer(shared_path("tokenizer-tests", "ggml-vocab-llama-spm.gguf"))


def gpt2() -> Tokenizer:
    return _tokenizer(shared_path("tokenizer-tests", "ggml-vocab-gpt-2.gguf"))


@pytest.fixture(scope="module")
def smollm2(default_model_path) -> Tokenizer:
    return _tokenizer(default_model_path)


def _vocab_cases(name: str) -> list[tuple[str, list[int]]]:
    texts = shared_path("tokenizer-tests", name + ".inp").read_text(encoding="utf-8")
    ids = shared_path("tokenizer-tests", name + ".out").read_text(encoding="utf-8")
    texts_l, ids_l = texts.split(SEPARATOR), ids.split("\n")
    assert len(texts_l) == len(ids_l)
    return [(t, [int(x) for x in i.split()]) for t, i in zip(texts_l, ids_l, strict=True)]


# ---------------------------------------------------------------------------------------
# conformance with llama.cpp
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"ggml-vocab-{v}.gguf" for v in LLAMA_CPP_VOCABS])
def test_llama_cpp_vocab_tests_pass(name):
    tok = _tokenizer(shared_path("tokenizer-tests", name))
    cases = _vocab_cases(name)
    assert len(cases) > 40
    failures = [(t, want, got) for t, want in cases if (got := tok.encode(t, False, False)) != want]
    assert not failures, f"{len(failures)}/{len(cases)} differ from llama.cpp: {failures[:3]}"


MODES = {
    "plain": {"add_bos": False, "special": False},
    "special": {"add_bos": False, "special": True},
    "with_bos": {"add_bos": True, "special": False},
}

# llama.cpp's tokenizations of 178 texts in every mode, by scripts/reference_llama_cpp.py
REFERENCE = Path(__file__).parent / "data" / "llama-cpp-reference.json"


@cache
def _reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("vocab", LLAMA_CPP_VOCABS + MODEL_VOCABS)
def test_llama_cpp_reference_in_every_mode(vocab):
    ref = _reference()
    texts, want = ref["texts"], ref["vocabs"][vocab]
    tok = _tokenizer(vocab_path(vocab))
    failures = []
    for i, text in enumerate(texts):
        for mode, kwargs in MODES.items():
            expected = want[mode].get(str(i)) if mode != "plain" else None
            if expected is None:  # the file keeps only the ids that differ from plain's
                expected = (want["bos"] if mode == "with_bos" else []) + want["plain"][i]
            if (got := tok.encode(text, **kwargs)) != expected:
                failures.append((mode, text, expected, got))
    assert len(texts) > 170
    assert not failures, f"{len(failures)}/{3 * len(texts)} differ from llama.cpp: {failures[:3]}"


@pytest.mark.parametrize("vocab", ["qwen2", "phi-3", "gemma-3-270m"])
def test_decode_round_trips_the_new_vocabularies(vocab):
    """(Not llama-bpe: llama.cpp cleans its spaces when decoding, " ," → ",".  A literal ``▁``
    decodes to a space in SentencePiece vocabularies, as in llama.cpp.)"""
    tok = _tokenizer(vocab_path(vocab))
    texts = [*TEXTS, *_reference()["texts"]]
    for text in [t for t in texts if "▁" not in t or tok.kind == "bpe"]:
        assert tok.decode(tok.encode(text)) == text, repr(text)


@pytest.mark.parametrize("vocab", ["llama_spm", "smollm2"])
def test_dev_reference_matches_in_every_mode(vocab, default_model_path):
    ref = json.loads(shared_path("reference", "tokenize-dev.json").read_text(encoding="utf-8"))
    tok = spm() if vocab == "llama_spm" else _tokenizer(default_model_path)
    failures = []
    for case in ref[vocab]:
        for mode, kwargs in MODES.items():
            got = tok.encode(case["text"], **kwargs)
            if got != case[mode]:
                failures.append((mode, case["text"], case[mode], got))
    assert len(ref[vocab]) == 25
    assert not failures, f"{len(failures)} differ from llama.cpp, first: {failures[0]}"


# ---------------------------------------------------------------------------------------
# special tokens, BOS, properties
# ---------------------------------------------------------------------------------------


def test_chatml_markers_are_parsed_only_when_asked(smollm2):
    text = "<|im_start|>user\nHi<|im_end|>\n"
    parsed = smollm2.encode(text, add_bos=False, special=True)
    assert parsed[0] == 1 and parsed.count(2) == 1
    plain = smollm2.encode(text, add_bos=False, special=False)
    assert 1 not in plain and 2 not in plain
    assert smollm2.decode(plain) == text  # as text they round-trip
    assert smollm2.decode(parsed) == "user\nHi\n"  # control tokens hidden by default
    assert smollm2.decode(parsed, special=True) == text


def test_chatml_markers_are_text_in_the_llama2_vocab():
    tok = spm()
    text = "<|im_start|>user\nHello<|im_end|>"
    assert tok.token_id("<|im_start|>") is None
    assert tok.encode(text, False, True) == tok.encode(text, False, False)
    assert tok.decode(tok.encode(text, False, True)) == text
    # but <s> and </s> are control tokens of that vocab
    assert tok.encode("<s>Hi</s>", False, True) == [1, *tok.encode("Hi", False, False), 2]


def test_add_bos_follows_the_model():
    tok = spm()
    assert tok.add_bos and tok.encode("Hi", add_bos=True)[0] == tok.bos_id == 1
    assert tok.encode("", add_bos=True) == [1] and tok.encode("", add_bos=False) == []


def test_smollm2_properties(smollm2):
    assert smollm2.n_vocab == 49152 and not smollm2.add_bos
    assert (smollm2.bos_id, smollm2.eos_id, smollm2.eot_id) == (1, 2, 2)  # eot: <|im_end|>
    assert smollm2.is_eog(2) and smollm2.is_eog(0) and not smollm2.is_eog(1)
    assert smollm2.encode("Hi", add_bos=True) == smollm2.encode("Hi", add_bos=False)
    assert smollm2.special_tokens[1] == "<|im_start|>" and len(smollm2.special_tokens) == 17
    assert smollm2.kind == "bpe"


def test_llama2_properties():
    tok = spm()
    assert (tok.bos_id, tok.eos_id, tok.eot_id, tok.n_vocab) == (1, 2, None, 32000)
    assert tok.eog_ids == {2} and tok.special_tokens == {1: "<s>", 2: "</s>"}


# ---------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------

TEXTS = [
    "Hello world",
    " leading space",
    "Give 0.5 mg/kg IV q6h; max 4 g/day (≥ 12 yrs).",
    "naïve café — 日本語 🦙 Ελληνικά",
    "tabs\tand\n\nnewlines  \n",
    "   ",
    "x",
]


@pytest.mark.parametrize("add_bos", [False, True])
def test_decode_round_trips_spm(add_bos):
    tok = spm()
    for t in TEXTS + [t for t, _ in _vocab_cases("ggml-vocab-llama-spm.gguf")]:
        assert tok.decode(tok.encode(t, add_bos=add_bos)) == t, repr(t)


def test_decode_round_trips_smollm2(smollm2):
    for t in TEXTS + [t for t, _ in _vocab_cases("ggml-vocab-gpt-2.gguf")]:
        assert smollm2.decode(smollm2.encode(t)) == t, repr(t)


def test_llama_cpp_space_cleaning_in_gpt2():
    tok = gpt2()  # gpt-2 cleans spaces when decoding, as llama.cpp does
    assert tok.decode(tok.encode("Hello , world ! it 's")) == "Hello, world! it's"


def test_token_to_bytes():
    tok = spm()
    assert tok.token_to_bytes(tok.token_id("▁Hello")) == b" Hello"
    assert tok.token_to_bytes(tok.token_id("<0x0A>")) == b"\n"
    assert tok.token_to_bytes(tok.token_id("<0xF0>")) == b"\xf0"
    assert tok.token_to_bytes(1) == b"<s>"
    assert tok.piece(1) == b"" and tok.piece(1, special=True) == b"<s>"
    g = gpt2()
    assert g.token_to_bytes(g.token_id("ĠHello")) == b" Hello"
    assert g.token_to_bytes(g.token_id("Ċ")) == b"\n"


def test_invalid_ids_raise():
    tok = spm()
    for bad in (-1, 32000, 10**9):
        with pytest.raises(InvalidTokenId) as e:
            tok.decode([5, bad])
        assert e.value.token_id == bad


def test_partial_utf8_decodes_to_replacement():
    tok = spm()
    assert tok.decode([tok.token_id("<0xF0>")]) == "\ufffd"


@pytest.mark.parametrize("which", ["spm", "smollm2", "gpt2"])
def test_stream_decoder_never_splits_a_character(which, smollm2):
    tok = {"spm": spm, "gpt2": gpt2}.get(which, lambda: smollm2)()
    text = "Dose: 5 µg/kg — ≥ 3 × daily 🦙🦙 日本語 , it 's done ."
    ids = tok.encode(text, add_bos=True)
    d = tok.stream_decoder()
    chunks = [d.feed(i) for i in ids] + [d.flush()]
    assert "".join(chunks) == tok.decode(ids)
    assert all("\ufffd" not in c for c in chunks)
    if which == "spm":  # 🦙 has no token: four byte tokens, emitted together on the last one
        llama = [tok.token_id(f"<0x{b:02X}>") for b in "🦙".encode()]
        d = tok.stream_decoder()
        assert [d.feed(i) for i in llama] == ["", "", "", "🦙"] and d.flush() == ""


def test_stream_decoder_special_flag(smollm2):
    ids = smollm2.encode("<|im_start|>assistant\nOK<|im_end|>", special=True)
    for special in (False, True):
        d = smollm2.stream_decoder(special=special)
        out = "".join(d.feed(i) for i in ids) + d.flush()
        assert out == smollm2.decode(ids, special=special)


# ---------------------------------------------------------------------------------------
# vocab handling
# ---------------------------------------------------------------------------------------


def _gpt2_craft(pre: str | None) -> GGUFCraft:
    md = GGUFFile.open(shared_path("tokenizer-tests", "ggml-vocab-gpt-2.gguf")).metadata
    c = GGUFCraft().add("general.architecture", "gpt2").add("tokenizer.ggml.model", "gpt2")
    if pre is not None:
        c.add("tokenizer.ggml.pre", pre)
    c.add("tokenizer.ggml.tokens", md["tokenizer.ggml.tokens"])
    c.add("tokenizer.ggml.token_type", np.asarray(md["tokenizer.ggml.token_type"], np.int32))
    c.add("tokenizer.ggml.merges", md["tokenizer.ggml.merges"])
    return c


def test_unknown_pre_tokenizer_falls_back_with_a_warning(tmp_path):
    path = _gpt2_craft("no-such-pre").write(tmp_path / "v.gguf")
    with pytest.warns(UserWarning, match="no-such-pre"):
        tok = Tokenizer.from_file(path)
    assert tok.decode(tok.encode("Hello world 123")) == "Hello world 123"
    # llama.cpp's default pre-tokenizer cuts punctuation runs apart from their space first.
    # Reference, llama-cpp-python 0.3.36 on this vocabulary without the pre key
    # (llama.cpp's "default") and on the GPT-2 file itself:
    #   python scripts/llama_cpp_tokenize.py --gpt2-without-pre "wait ... ok"
    #   python scripts/llama_cpp_tokenize.py ../shared/tokenizer-tests/ggml-vocab-gpt-2.gguf \
    #       "wait ... ok"
    assert tok.encode("wait ... ok") == [17077, 220, 986, 12876]
    assert gpt2().encode("wait ... ok") == [17077, 2644, 12876]


def test_known_pre_tokenizer_does_not_warn(tmp_path, recwarn):
    Tokenizer.from_file(_gpt2_craft("gpt-2").write(tmp_path / "v.gguf"))
    assert not [w for w in recwarn if "pre-tokenizer" in str(w.message)]


def test_unsupported_tokenizer_model(tmp_path):
    from engine.errors import GGUFError

    c = GGUFCraft().add("tokenizer.ggml.model", "bert").add("tokenizer.ggml.tokens", ["a"])
    with pytest.raises(GGUFError, match="bert"):
        Tokenizer.from_file(c.write(tmp_path / "b.gguf"))


# ---------------------------------------------------------------------------------------
# the fast paths give the same ids as the plain algorithms
# ---------------------------------------------------------------------------------------


def _random_texts(n: int, seed: int) -> list[str]:
    alphabet = [*"aZé ß\t\n  '\"stmdlrve.,!?-()0123456789", "\u00a0", "\u3000", "🦙", "日",
                "\u0301", "\u0661", "\x00", "▁", "<s>", "Ġ"]  # fmt: skip
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(alphabet, rng.integers(1, 40))) for _ in range(n)]


def test_spm_word_split_equals_whole_text_merge():
    from engine.tokenizer.spm import SPACE

    model = spm()._model
    assert model.split_words  # no Llama-2 token has ▁ after another character
    corpus = shared_path("data", "guidelines-sample.jsonl").read_text(encoding="utf-8")
    texts = [json.loads(line)["clean_text"][:3000] for line in corpus.splitlines()[:20]]
    for t in texts + _random_texts(500, 1):
        escaped = (" " + t).replace(" ", SPACE)
        assert model.encode(escaped) == list(model._merge(escaped)), repr(t)


def test_bpe_long_piece_merge_equals_short_merge(smollm2):
    from engine.tokenizer.bpe import _merge_long, _merge_short, byte_encode

    ranks = smollm2._model.ranks
    rng = np.random.default_rng(2)
    words = [
        "".join(rng.choice(list("abcdeghilmnorstuéü日"), rng.integers(2, 80))) for _ in range(500)
    ]
    for w in words:
        assert _merge_long(byte_encode(w), ranks) == _merge_short(byte_encode(w), ranks), w
    assert len(smollm2.encode("x" * 20000)) > 0  # one long piece: no quadratic blow-up


def test_smollm2_agrees_with_hf_tokenizers(smollm2, default_model_path):
    """An independent byte-level BPE (Hugging Face ``tokenizers``, SmolLM2's own pre-tokenizer:
    single digits, then GPT-2 byte-level) on the sample corpus and random text."""
    hf = pytest.importorskip("tokenizers")
    with GGUFFile.open(default_model_path) as g:
        tokens, merges = g.metadata["tokenizer.ggml.tokens"], g.metadata["tokenizer.ggml.merges"]
    ref = hf.Tokenizer(
        hf.models.BPE(
            {t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ", 1)) for m in merges]
        )
    )
    ref.pre_tokenizer = hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Digits(individual_digits=True),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    corpus = shared_path("data", "guidelines-sample.jsonl").read_text(encoding="utf-8")
    texts = [json.loads(line)["clean_text"] for line in corpus.splitlines()[:40]]
    for t in texts + _random_texts(2000, 3):
        assert smollm2.encode(t, add_bos=False) == ref.encode(t, add_special_tokens=False).ids, t


@pytest.mark.parametrize("vocab", ["llama-bpe", "qwen2", "phi-3", "gemma-3-270m"])
def test_vocabulary_only_loads_for_any_architecture(vocab, capsys):
    """``python -m engine tokenize`` reads only the tokenizer metadata, whatever the
    architecture (llama, qwen2, phi3, gemma3)."""
    from engine.cli import main

    path = vocab_path(vocab)
    assert main(["tokenize", str(path), "Hello world", "--no-bos"]) == 0
    assert capsys.readouterr().out.strip() == str(_tokenizer(path).encode("Hello world", False))
