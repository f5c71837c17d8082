"""The generation loop: streaming, stop strings held back, EOS, max_tokens, seeds, cancellation,
threads sharing one model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import engine
from engine.errors import ContextOverflow
from engine.generation import StopMatcher
from tests.engine.llama_reference import QT, write_tiny_llama

PROMPT = "the blood pressure of a dose"
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> engine.Model:
    path = write_tiny_llama(tmp_path_factory.mktemp("gen") / "tiny.gguf", QT.Q8_0, seed=7)
    return engine.load(path)


@pytest.fixture(scope="module")
def smollm2(default_model_path: Path) -> engine.Model:
    return engine.load(default_model_path)


# -- stop strings ------------------------------------------------------------------------------


def feed(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out = []
    for p in pieces:
        text, stopped = matcher.push(p)
        out.append(text)
        if stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def test_stop_text_is_held_back_until_it_cannot_match() -> None:
    out, stopped = feed(StopMatcher(["</answer>"]), ["The dose is 5 mg", "</ans", "wer> extra"])
    assert stopped and "".join(out) == "The dose is 5 mg"
    assert out[1] == ""  # "</ans" could have been the stop string: held back
    out, stopped = feed(StopMatcher(["</answer>"]), ["5 mg </ans", "ible>", " ok"])
    assert not stopped and "".join(out) == "5 mg </ansible> ok"
    assert out[0] == "5 mg " and out[1] == "</ansible>"  # released once it could not match


def test_earliest_stop_wins_and_matches_across_pieces() -> None:
    out, stopped = feed(StopMatcher(["\n\n", "Question:"]), ["A", "nswer Ques", "tion: x\n\n"])
    assert stopped and "".join(out) == "Answer "
    out, stopped = feed(StopMatcher(["b", "abc"]), ["xa", "bc"])
    assert stopped and "".join(out) == "x"  # "abc" starts before "b"
    out, stopped = feed(StopMatcher(["STOP"]), ["STOP at once"])
    assert stopped and "".join(out) == ""
    out, stopped = feed(StopMatcher(["", "zz"]), ["no stop here"])  # empty stops are ignored
    assert not stopped and "".join(out) == "no stop here"


def test_generate_stops_on_a_stop_string(tiny: engine.Model) -> None:
    full = tiny.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    assert len(full) > 6
    stop = full[3:6]
    gen = tiny.generate(PROMPT, max_tokens=24, temperature=0, stop=[stop], stream=True,
                        ignore_eos=True)  # fmt: skip
    pieces = list(gen)
    assert "".join(pieces) == full[: full.index(stop)]
    assert gen.finish_reason == "stop" and gen.n_generated_tokens < 24


# -- the loop ----------------------------------------------------------------------------------


def test_stream_concatenation_equals_text_and_counts(tiny: engine.Model) -> None:
    kw = dict(max_tokens=20, temperature=0.9, seed=11, ignore_eos=True)
    text = tiny.generate(PROMPT, **kw)
    gen = tiny.generate(PROMPT, stream=True, **kw)
    assert gen.finish_reason is None
    pieces = list(gen)
    assert "".join(pieces) == text and all(isinstance(p, str) for p in pieces)
    assert gen.finish_reason == "length" and gen.n_generated_tokens == 20
    assert gen.n_prompt_tokens == len(tiny.tokenize(PROMPT))
    assert set(gen.timings) >= {"prompt_s", "gen_s"} and gen.timings["prompt_s"] > 0
    # the stream keeps the leading space a continuation has; decode of the ids alone drops it
    assert tiny.detokenize(gen.tokens) == text.removeprefix(" ")


def test_same_seed_same_text(tiny: engine.Model) -> None:
    kw = dict(max_tokens=16, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, ignore_eos=True)
    a = tiny.generate(PROMPT, seed=5, **kw)
    assert a == tiny.generate(PROMPT, seed=5, **kw)
    assert a != tiny.generate(PROMPT, seed=6, **kw)


def test_token_ids_prompt_and_max_tokens_zero(tiny: engine.Model) -> None:
    ids = tiny.tokenize(PROMPT)
    assert tiny.generate(ids, max_tokens=8, temperature=0, ignore_eos=True) == tiny.generate(
        PROMPT, max_tokens=8, temperature=0, ignore_eos=True
    )
    gen = tiny.generate(ids, max_tokens=0, stream=True)
    assert list(gen) == [] and gen.finish_reason == "length"
    with pytest.raises(ValueError, match="empty"):
        tiny.generate([], max_tokens=4)


def test_prompt_longer_than_the_context_raises_before_running(tmp_path: Path) -> None:
    model = engine.load(write_tiny_llama(tmp_path / "ctx.gguf", QT.Q4_0), n_ctx=16)
    long_prompt = " ".join(["blood"] * 40)
    with pytest.raises(ContextOverflow, match="do not fit in a context of 16 tokens"):
        model.generate(long_prompt, max_tokens=4, stream=True)


def test_cancel_from_another_thread(tiny: engine.Model) -> None:
    gen = tiny.generate(PROMPT, max_tokens=200, temperature=0, stream=True, ignore_eos=True)
    first = next(gen)
    t = threading.Thread(target=gen.cancel)
    t.start()
    t.join()
    rest = list(gen)
    n = gen.n_generated_tokens
    assert gen.finish_reason == "cancelled" and 1 <= n <= 3
    # what streamed before the cancel is the greedy answer's first n tokens, nothing after
    assert first + "".join(rest) == tiny.generate(PROMPT, max_tokens=n, temperature=0,
                                                  ignore_eos=True)
    event = threading.Event()
    event.set()
    assert tiny.generate(PROMPT, max_tokens=50, cancel_event=event) == ""
    gen = tiny.generate(PROMPT, max_tokens=50, stream=True)
    gen.close()
    assert list(gen) == [] and gen.finish_reason == "cancelled"


def test_threads_share_a_model(tiny: engine.Model) -> None:
    """Concurrent generations (each with its own KV cache) give what they give alone."""
    kws = [dict(max_tokens=12, temperature=0.8, seed=s, ignore_eos=True) for s in range(4)]
    alone = [tiny.generate(PROMPT, **kw) for kw in kws]
    together: list[str | None] = [None] * len(kws)

    def work(i: int) -> None:
        together[i] = "".join(tiny.generate(PROMPT, stream=True, **kws[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(kws))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


# -- the default model -------------------------------------------------------------------------


def test_default_model_answers_and_stops_at_end_of_turn(smollm2: engine.Model) -> None:
    gen = smollm2.generate(CHAT.format("Reply with the single word: yes"), max_tokens=32,
                           temperature=0, stream=True)  # fmt: skip
    text = "".join(gen)
    assert gen.finish_reason == "eos" and 0 < gen.n_generated_tokens < 32
    assert "yes" in text.lower() and "<|im_end|>" not in text


def test_default_model_streams_utf8_whole(smollm2: engine.Model) -> None:
    prompt = CHAT.format("Write the Greek letters alpha, beta and gamma as symbols: α β γ")
    gen = smollm2.generate(prompt, max_tokens=24, temperature=0, stream=True)
    pieces = list(gen)
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == smollm2.generate(prompt, max_tokens=24, temperature=0)
