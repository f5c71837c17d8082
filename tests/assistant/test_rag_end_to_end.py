"""The cited RAG chain end to end: a small real index, the real default model, the real CLI.

Every path carries the advisory notice: the chain's result, a streamed answer, the CLI's text
and JSON output, a refusal and an error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.answer import CITED, MATCHED, cited_numbers
from assistant.chain import build_chain
from assistant.checks.attribution import MATCH_MIN_WORDS
from assistant.cli import main
from assistant.config import Settings
from assistant.notice import ADVISORY_NOTICE

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "How often should adults be screened for high blood pressure?"
OFF_TOPIC = "Who won the football world cup in 1998?"
MAX_TOKENS = 12
CITING_QUESTION = "What is ascariasis?"
# Enough words for a quote of 8 or a sentence ending in [n]. 40 was not: a freshly compiled
# engine and one loaded from numba's cache differed in the last bits (fixed since, see
# docs/BENCHMARKS.md), and one of the two greedy answers reached its 8-word quote only after 40.
CITING_MAX_TOKENS = 64
N_CTX = 700  # a small context: the passages are fitted to it by the engine's token counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(small_index: Path, default_model_path: Path) -> Settings:
    return replace(Settings.from_env(), index_dir=small_index, model=str(default_model_path),
                   max_tokens=MAX_TOKENS, n_ctx=N_CTX, k=3, temperature=0.0)


def index_urls(small_index: Path) -> dict[str, tuple[str, str, str]]:
    """doc id → (title, source, url) as the corpus gives them."""
    import ingest

    wanted = {}
    with ingest.SAMPLE_CORPUS.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            wanted[rec["id"]] = (rec.get("title") or "", rec["source"], rec.get("url") or "")
    return wanted


def test_chain_answers_with_resolving_citations(settings: Settings, small_index: Path) -> None:
    chain = build_chain(settings)
    answer = chain.invoke(QUESTION)
    assert not answer.refused and answer.text
    assert answer.notice == ADVISORY_NOTICE and str(answer).endswith(ADVISORY_NOTICE)
    assert answer.passages and answer.passages[0].id in {"ngc-10822", "ngc-10799"}
    corpus = index_urls(small_index)
    for p in answer.passages:  # every passage resolves to its guideline's title, source, url
        assert (p.title, p.source, p.url) == corpus[p.id]
    by_number = {p.number: p for p in answer.passages}
    assert answer.citations
    for c in answer.citations:
        assert (c.id, c.title, c.source, c.url) == (by_number[c.number].id, *corpus[c.id])
    assert 0 < answer.usage["completion_tokens"] <= MAX_TOKENS
    assert answer.usage["prompt_tokens"] + MAX_TOKENS <= N_CTX
    assert answer.finish_reason in {"eos", "length", "stop"}
    assert answer.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert {"retrieve_s", "generate_s", "total_s", "engine_prompt_s"} <= answer.timings.keys()


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_greedy_answer_carries_a_citation_that_resolves(settings: Settings,
                                                       small_index: Path) -> None:
    """The default model, greedy, answers with a passage it cites by [n] or visibly quotes."""
    chain = build_chain(replace(settings, max_tokens=CITING_MAX_TOKENS, n_ctx=1024, k=2))
    answer = chain.invoke(CITING_QUESTION)
    assert not answer.refused and answer.text
    drawn = [c for c in answer.citations if c.kind in (CITED, MATCHED)]
    assert drawn, f"no passage cited or quoted in {answer.text!r}"
    corpus = index_urls(small_index)
    by_number = {p.number: p for p in answer.passages}
    for c in drawn:
        passage = by_number[c.number]
        assert (c.id, c.title, c.source, c.url) == (passage.id, *corpus[passage.id])
        assert c.title and c.source and c.url
        if c.kind == CITED:
            assert c.number in cited_numbers(answer.text)
        else:  # a matched source: the quote is the answer's and the passage's, 8+ words
            quote = _words(c.quote or "")
            assert len(quote) >= MATCH_MIN_WORDS
            assert " ".join(quote) in " ".join(_words(answer.text))
            assert " ".join(quote) in " ".join(_words(passage.text))
    shown = str(answer)
    assert shown.endswith(ADVISORY_NOTICE) and answer.notice == ADVISORY_NOTICE
    assert all(f"[{c.number}] {c.title}" in shown for c in drawn)


def test_streamed_answer_ends_with_sources_and_notice(settings: Settings) -> None:
    pieces = list(build_chain(settings).stream(QUESTION))
    assert len(pieces) >= 2 and "".join(pieces[:-1]).strip()
    assert "Sources:" in pieces[-1] and pieces[-1].endswith(ADVISORY_NOTICE)


def test_cli_text_and_json(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GUIDELINES_HOME", str(settings.home))
    args = ["ask", QUESTION, "--index", str(settings.index), "--model", settings.model,
            "--max-tokens", str(MAX_TOKENS), "--temperature", "0", "--k", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Sources:\n[1] " in out and out.rstrip().endswith(ADVISORY_NOTICE)
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notice"] == ADVISORY_NOTICE and data["answer"]
    assert data["citations"] and all({"id", "title", "source", "url"} <= c.keys()
                                     for c in data["citations"])
    assert data["passages"] and data["passages"][0]["text"]
    assert data["timings"]["total_s"] > 0 and data["usage"]["completion_tokens"] > 0


def test_off_topic_question_is_refused_without_the_model(settings: Settings,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    unloadable = replace(settings, model=str(ROOT / "no-such-model.gguf"))
    answer = build_chain(unloadable).invoke(OFF_TOPIC)  # the model is never loaded
    assert answer.refused and not answer.citations
    assert str(answer).endswith(ADVISORY_NOTICE)
    args = ["ask", OFF_TOPIC, "--index", str(settings.index), "--model", unloadable.model]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "do not cover this question" in out and out.rstrip().endswith(ADVISORY_NOTICE)
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["refused"] is True and data["notice"] == ADVISORY_NOTICE


def test_cli_errors_carry_the_notice(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "assistant", "ask", "What dose?", "--index", str(tmp_path / "x")]
    done = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no index at" in done.stderr and done.stderr.rstrip().endswith(ADVISORY_NOTICE)
    done = subprocess.run([*base, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert "no index at" in data["error"] and data["notice"] == ADVISORY_NOTICE


def test_missing_model_error_carries_the_notice(settings: Settings,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ask", QUESTION, "--index", str(settings.index), "--model", "/nowhere/model.gguf"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "/nowhere/model.gguf" in err and err.rstrip().endswith(ADVISORY_NOTICE)
