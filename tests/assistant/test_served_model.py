"""A served model as the LLM, against a real OpenAI-compatible server the test starts:
llama-cpp-python's server (``python -m llama_cpp.server``, the ``serve`` extra) serving the default
SmolLM2 GGUF on a loopback port, reached through ``langchain-openai``.  The same chain, citations,
refusal and notice; streaming; a server down or silent gives a clear error in ``ask`` and on the
page, with the notice, without hanging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from assistant.answer import AnswerError
from assistant.chain import build_chain, stream_tail
from assistant.config import Settings
from assistant.model.presets import ModelError, ServedModel, parse_served
from assistant.notice import ADVISORY_NOTICE

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
QUESTION = "What blood pressure should adults with hypertension aim for?"
OFF_TOPIC = "What is the best recipe for a chocolate cake?"
MAX_TOKENS = 32
SERVED_NAME = "smollm2"
SLOW_TIMEOUT_S = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_served_spec():
    assert parse_served("smollm2-135m") is None
    assert parse_served("/models/x.gguf") is None
    got = parse_served("openai:http://127.0.0.1:8000/v1/#qwen2.5-7b")
    assert got == ServedModel("http://127.0.0.1:8000/v1", "qwen2.5-7b")
    assert got.spec == "openai:http://127.0.0.1:8000/v1#qwen2.5-7b"
    for bad in ("openai:http://h:1/v1", "openai:ftp://h/v1#m", "openai:#m", "openai:http://h#"):
        with pytest.raises(ModelError, match="openai:<http"):
            parse_served(bad)


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory) -> str:
    """``openai:<base_url>#smollm2``: llama-cpp-python's server on a free loopback port."""
    pytest.importorskip("llama_cpp.server", reason="the 'serve' extra is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path),
             "--model_alias", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "4096", "--n_threads", "2", "--verbose", "false",
             # one token per decode: llama.cpp's batched CPU path with its extra buffer types
             # (AMX / repacked weights) segfaults on our AMX machines in llama-cpp-python 0.3.36
             # (a model loaded with use_extra_bufts=False runs); the server has no flag for that
             "--n_batch", "1", "--n_ubatch", "1"],
            stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                    models = json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        assert [m["id"] for m in models["data"]] == [SERVED_NAME]
        yield f"openai:{base_url}#{SERVED_NAME}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def silent_server():
    """A loopback port that accepts connections and never answers (a stuck server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"openai:http://127.0.0.1:{listener.getsockname()[1]}/v1#{SERVED_NAME}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def _settings(index: Path, model: str, **kw) -> Settings:
    return Settings(index_dir=index, model=model, max_tokens=MAX_TOKENS, k=2, **kw)


def test_served_answer_streams_with_citations_and_notice(server, small_index):
    chain = build_chain(_settings(small_index, server))
    stream = chain.stream_answer(QUESTION)
    pieces = list(stream)
    answer = stream.answer
    assert len(pieces) > 1, "the served answer did not stream"
    assert "".join(pieces).strip() == answer.text and answer.text
    assert not answer.refused
    assert answer.passages and answer.citations  # the passages given are listed as sources
    assert answer.model == SERVED_NAME
    # max_tokens reaches the server (one piece per token; llama-cpp-python sends no usage)
    assert len(pieces) <= MAX_TOKENS
    assert answer.finish_reason in ("stop", "length")
    assert answer.notice == ADVISORY_NOTICE
    assert stream_tail(answer).endswith(ADVISORY_NOTICE)


def test_served_refusal_without_calling_the_server(small_index):
    dead = f"openai:http://127.0.0.1:{_free_port()}/v1#{SERVED_NAME}"  # nothing listens
    answer = build_chain(_settings(small_index, dead)).invoke(OFF_TOPIC)
    assert answer.refused and answer.notice == ADVISORY_NOTICE


def _ask(model: str, index: Path, *extra: str, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                     float]:
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "ask", "--index", str(index), "--max-tokens",
         str(MAX_TOKENS), "--k", "2", *extra, QUESTION],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "GUIDELINES_MODEL": model, "PYTHONPATH": str(ROOT), **env})
    return done, time.monotonic() - t0


def test_ask_through_the_served_model(server, small_index):
    done, _ = _ask(server, small_index, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["answer"] and out["notice"] == ADVISORY_NOTICE and out["citations"]
    assert out["model"] == SERVED_NAME


def test_ask_with_the_server_down_says_so_with_the_notice(small_index):
    port = _free_port()
    done, seconds = _ask(f"openai:http://127.0.0.1:{port}/v1#{SERVED_NAME}", small_index)
    assert done.returncode == 1
    assert f"the model server at http://127.0.0.1:{port}/v1" in done.stderr
    assert "cannot be reached" in done.stderr
    assert ADVISORY_NOTICE in done.stderr
    assert seconds < 120


def test_ask_with_a_silent_server_times_out_with_the_notice(silent_server, small_index):
    done, seconds = _ask(silent_server, small_index, "--json",
                         GUIDELINES_SERVED_TIMEOUT=str(SLOW_TIMEOUT_S))
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert f"did not answer within {SLOW_TIMEOUT_S} s" in out["error"]
    assert out["notice"] == ADVISORY_NOTICE
    assert seconds < 120


def test_chain_error_is_typed_for_a_silent_server(silent_server, small_index):
    chain = build_chain(_settings(small_index, silent_server, served_timeout=SLOW_TIMEOUT_S))
    t0 = time.monotonic()
    with pytest.raises(AnswerError, match="did not answer within") as err:
        list(chain.stream_answer(QUESTION))
    assert str(err.value).endswith(ADVISORY_NOTICE)
    assert time.monotonic() - t0 < 60


def _page(monkeypatch, index: Path, model: str) -> AppTest:
    monkeypatch.setenv("GUIDELINES_INDEX", str(index))
    monkeypatch.setenv("GUIDELINES_MODEL", model)
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value.startswith("A served model")
    at.sidebar.slider[0].set_value(2)
    at.sidebar.number_input[0].set_value(MAX_TOKENS)
    at.chat_input[0].set_value(QUESTION)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_answers_through_the_served_model(monkeypatch, server, small_index):
    at = _page(monkeypatch, small_index, server)
    sidebar = " ".join(e.value for e in at.sidebar.caption)
    assert "served at http://127.0.0.1" in sidebar
    answer = at.chat_message[-1]
    assert not answer.error, [e.value for e in answer.error]
    body = [e.value for e in answer.markdown]
    assert body[0].strip()
    assert any(t.startswith("**\\[") for t in body), body  # numbered sources
    assert [e.value for e in answer.info] == [ADVISORY_NOTICE]


def test_page_with_the_server_down_shows_the_error_and_the_notice(monkeypatch, small_index):
    port = _free_port()
    at = _page(monkeypatch, small_index, f"openai:http://127.0.0.1:{port}/v1#{SERVED_NAME}")
    answer = at.chat_message[-1]
    errors = [e.value for e in answer.error]
    assert errors and "cannot be reached" in errors[0], errors
    assert [e.value for e in answer.info] == [ADVISORY_NOTICE]
