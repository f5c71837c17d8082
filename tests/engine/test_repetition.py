"""The repetition guard: DRY penalties (unit) and the loop stop, through the real engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.repetition import (
    NEAR_REPEAT_WINDOW,
    BreakerSet,
    LoopDetector,
    apply_dry,
    dry_penalties,
    longest_repeat,
    repeat_lengths,
)
from engine.sampling import Sampler, SamplingParams


def _naive_repeat_lengths(t: list[int]) -> list[int]:
    out = []
    for i in range(len(t)):
        n = 0
        if i < len(t) - 1:
            while n <= i and t[i - n] == t[len(t) - 1 - n]:
                n += 1
        out.append(n)
    return out


def test_repeat_lengths_llama_cpp_example() -> None:
    a, b, c, y = 1, 2, 3, 9
    # llama.cpp's comment: "a b c c b c y a b c" -> repeat counts 0 0 3 1 0 2 0 0 0 0
    assert repeat_lengths([a, b, c, c, b, c, y, a, b, c]) == [0, 0, 3, 1, 0, 2, 0, 0, 0, 0]


def test_repeat_lengths_match_a_naive_scan() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        t = [int(x) for x in rng.integers(0, 3, size=int(rng.integers(0, 40)))]
        assert repeat_lengths(t) == _naive_repeat_lengths(t)


def test_repeat_lengths_cap_and_longest_repeat() -> None:
    t = [5, 6, 7, 8, 5, 6, 7, 8]
    assert repeat_lengths(t)[3] == 4
    assert repeat_lengths(t, limit=2)[3] == 2
    assert longest_repeat(t) == 4
    assert longest_repeat([1, 1, 1, 1]) == 3  # overlapping: a period-1 loop
    assert longest_repeat([1, 2, 3]) == 0
    assert longest_repeat([]) == 0


def test_dry_penalises_the_token_that_would_extend_a_repeat() -> None:
    # "x a b c ... a b" -> emitting c would repeat "a b c": repeat length 2
    t = [7, 1, 2, 3, 8, 1, 2]
    pen = dry_penalties(t, multiplier=0.8, base=1.75, allowed_length=2)
    assert pen == {3: pytest.approx(0.8)}
    longer = [1, 2, 3, 4, 9, 1, 2, 3]  # repeat of 3 -> 0.8 * 1.75
    assert dry_penalties(longer, 0.8, 1.75, 2) == {4: pytest.approx(1.4)}
    assert dry_penalties(t, 0.8, 1.75, allowed_length=3) == {}  # too short a repeat
    assert dry_penalties(t, 0.0, 1.75, 2) == {}  # off


def test_dry_penalty_grows_exponentially_and_is_capped() -> None:
    t = list(range(50)) + list(range(40))  # repeat of 40
    pen = dry_penalties(t, 0.8, 1.75, 2)
    assert pen[40] == pytest.approx(0.8 * 1.75**38)
    huge = list(range(400)) + list(range(399))
    assert np.isfinite(np.float32(dry_penalties(huge, 1.0, 1.75, 2)[399]))


def test_a_breaker_ends_the_repeat_and_is_never_penalised() -> None:
    nl = 0
    t = [1, 2, 3, nl, 4, 1, 2, 3, nl, 4]  # the last token after the breaker: repeat <= 1
    assert dry_penalties(t, 0.8, 1.75, 2, is_breaker=lambda x: x == nl) == {}
    t2 = [1, 2, nl, 9, 1, 2]  # "1 2" then nl: nl would extend, but is a breaker
    assert dry_penalties(t2, 0.8, 1.75, 2, is_breaker=lambda x: x == nl) == {}
    assert dry_penalties(t2, 0.8, 1.75, 2) == {nl: pytest.approx(0.8)}


def test_breaker_set_reads_token_text() -> None:
    pieces = {0: b"\n", 1: b" word", 2: b'"', 3: b" [", 4: b":"}
    brk = BreakerSet(pieces.__getitem__, ("\n", ":", '"', "*"))
    assert [brk(i) for i in range(5)] == [True, False, True, False, True]


def test_apply_dry_and_sampler_look_at_generated_tokens_only() -> None:
    logits = np.zeros(10, np.float32)
    apply_dry(logits, [1, 2, 3, 5, 1, 2], 0.8, 1.75, 2)
    assert logits[3] == pytest.approx(-0.8) and np.count_nonzero(logits) == 1
    # the prompt repeats "1 2 3" but the sampler only looks after n_prompt
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0, dry_multiplier=5.0))
    row = np.zeros(10, np.float32)
    row[3] = 1.0
    assert sampler.sample(row, [1, 2, 3, 5, 1, 2], n_prompt=4) == 3  # generated: [1, 2]
    assert sampler.sample(row, [1, 2, 3, 5, 1, 2], n_prompt=0) != 3


def test_sampling_params_reject_bad_dry_settings() -> None:
    for bad in ({"dry_multiplier": -1.0}, {"dry_base": 0.5}, {"dry_allowed_length": 0},
                {"dry_penalty_last_n": -2}, {"loop_stop_tokens": -1}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_loop_detector_sees_numbered_lines_as_a_loop() -> None:
    pieces = {0: b"\n", 1: b"1", 2: b"2", 3: b".", 4: b" Numb", 5: b"ness", 6: b" in", 7: b" arms",
              8: b"3", 9: b"0"}
    det = LoopDetector(pieces.__getitem__, stop_tokens=10)
    line = [3, 4, 5, 6, 7, 0]
    stream = [1, *line, 2, *line, 8, 9, *line, 1, 2, *line]  # "1. ...", "2. ...", "30. ..."
    hits = [det.push(t) for t in stream]
    assert any(hits)
    first = hits.index(True)
    assert first >= 10 + 6  # needs a full copy of 10 tokens before it says so
    off = LoopDetector(pieces.__getitem__, stop_tokens=0)
    assert not any(off.push(t) for t in stream)


# -- through the real engine ------------------------------------------------------------------

def _chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


# SmolLM2 greedy (no repeat penalty) runs in circles on both: a list line "N. **Beverages**"
# again and again, and a paragraph on migraine repeating itself (measured: normalised repeats of
# 122 and 61 tokens in 160).  Markdown's "*" is a DRY breaker, so the list needs the loop stop.
LIST_LOOP = _chat("List twenty foods that are rich in iron.")
PROSE_LOOP = _chat("What is the acute treatment for a migraine attack?")
MAX_TOKENS = 160
COMMON = {"max_tokens": MAX_TOKENS, "temperature": 0.0, "repeat_penalty": 1.0,
          "stop": ["<|im_end|>"], "stream": True}


def _normalised_repeat(model, tokens: list[int]) -> int:
    det = LoopDetector(model.tokenizer.piece, 10**9)
    for t in tokens:
        det.push(t)
    return longest_repeat(det.seq)


@pytest.fixture(scope="module")
def model(default_model_path: Path):
    import engine

    return engine.load(default_model_path)


@pytest.mark.slow
def test_real_model_loop_is_stopped(model) -> None:
    plain = model.generate(LIST_LOOP, **COMMON)
    text = "".join(plain)
    assert plain.finish_reason == "length", text
    assert _normalised_repeat(model, plain.tokens) >= 64, text

    stopped = model.generate(LIST_LOOP, loop_stop_tokens=32, **COMMON)
    text_stopped = "".join(stopped)
    assert stopped.finish_reason == "repetition"
    assert stopped.n_generated_tokens < MAX_TOKENS
    assert text.startswith(text_stopped)  # the same answer, cut where it began to loop


@pytest.mark.slow
def test_real_model_loop_is_avoided_by_dry(model) -> None:
    plain = model.generate(PROSE_LOOP, **COMMON)
    text = "".join(plain)
    assert _normalised_repeat(model, plain.tokens) >= 40, text

    dry = model.generate(PROSE_LOOP, dry_multiplier=0.8, **COMMON)
    text_dry = "".join(dry)
    assert _normalised_repeat(model, dry.tokens) < 16, text_dry


def test_loop_detector_stops_near_repeats() -> None:
    """A list whose lines change one word each time round ("- Side effects of X") is a loop
    although no 10-token span repeats exactly; a list of different lines is not."""
    words = {i: f" w{i}".encode() for i in range(100, 200)}
    pieces = {0: b"\n", 1: b"-", 2: b" Side", 3: b" effects", 4: b" of", 5: b" the",
              6: b" treatment", 7: b" with", **words}
    looping = [t for i in range(20) for t in (1, 2, 3, 4, 5, 6, 7, 100 + i, 0)]  # 9 a line
    det = LoopDetector(pieces.__getitem__, stop_tokens=10**6)  # the exact stop never fires
    hits = [det.push(t) for t in looping]
    assert any(hits) and hits.index(True) >= NEAR_REPEAT_WINDOW
    varied = [t for i in range(20) for t in (1, 100 + 5 * i, 101 + 5 * i, 102 + 5 * i, 0)]
    det = LoopDetector(pieces.__getitem__, stop_tokens=10**6)
    assert not any(det.push(t) for t in varied)


def test_near_repeat_stop_on_real_answers(default_model_path: Path) -> None:
    """Real answers of the chain on even-half dev questions: the two that ran in circles with
    a word changed each time round are stopped, none of the 16 that ended by themselves is."""
    import json

    from engine.gguf import GGUFFile
    from engine.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(GGUFFile.open(default_model_path))
    data = json.loads((Path(__file__).parent / "data" / "near-loops.json").read_text("utf-8"))

    def first_stop(text: str) -> int | None:
        det = LoopDetector(tok.piece, stop_tokens=32)
        ids = tok.encode(text, add_bos=False)
        return next((i for i, t in enumerate(ids) if det.push(t)), None)

    for case in data["loops"]:
        assert first_stop(case["answer"]) is not None, case["question"]
    for case in data["answers"]:
        assert first_stop(case["answer"]) is None, case["question"]
