"""A fake of ``ui.backend.Services`` for layout tests only (the real path is tested beside it).

The question picks the behaviour: a normal cited answer; "nothing ..." a refusal with no
sources; "quoted ..." an answer whose only source was matched by its quoted words, not cited;
"boom ..." a few pieces then a generation error; "flagged ..." evidence sentences, then an
answer with a number no passage states (found by the real number guard).  Every ``ask`` is
recorded in CALLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from assistant.checks.number_guard import count_quantities, unsupported_numbers
from ui.backend import (
    EvidenceBlock,
    EvidenceView,
    IndexView,
    ModelMissing,
    ModelView,
    NoIndex,
    Options,
    Reply,
    SourceView,
)

CALLS: list[tuple[str, str, Options]] = []  # (question, model spec, options)

ANSWER_PIECES = ("Adults aged 50 to 75 ", "should be screened ", "for colorectal cancer [1].")
SOURCES = (
    SourceView(number=1, title="Screening for colorectal cancer: [USPSTF] *recommendation*",
               source="ngc", url="https://example.org/ngc-1", heading="Major Recommendations",
               passage="The USPSTF recommends screening for colorectal cancer in adults.",
               doc_id="ngc-1"),
    SourceView(number=2, title="Colorectal cancer facts", source="cdc", url="",
               heading="", passage="Colorectal cancer is the third most common cancer.",
               doc_id="cdc-2"),
)
# "quoted ...": the model wrote no [n]; passage 1 was found by its quoted words, 2 only given
QUOTED_SOURCES = (
    SourceView(number=1, title="Colorectal cancer screening", source="ngc", url="",
               heading="", passage="The USPSTF recommends screening for colorectal cancer in "
               "adults aged 50 to 75 years.", doc_id="ngc-1", kind="matched",
               quote="screening for colorectal cancer in adults aged 50 to 75 years"),
)
REFUSAL = "I found nothing relevant to this question in the indexed guidelines."


class FakeServices:
    def __init__(self, *, index_missing: bool = False, model_missing: bool = False) -> None:
        self.index_missing = index_missing
        self.model_missing = model_missing
        self.name = f"fake-{index_missing}-{model_missing}"

    def presets(self) -> dict[str, str]:
        return {"qwen2.5-coder-1.5b": "the default", "smollm2-135m": "the fast option",
                "meditron-7b": "Meditron-7B"}

    def open_index(self, path: Path) -> IndexView:
        if self.index_missing:
            raise NoIndex(f"no index at {path}", value=path,
                          fix=f"python -m ingest build --input corpus.jsonl --index {path}")
        return IndexView(path=path, documents=3, chunks=12, sources={"cdc": 4, "ngc": 8},
                         embedding_model="sentence-transformers/all-MiniLM-L6-v2")

    def load_model(self, spec: str) -> ModelView:
        if self.model_missing or not spec:
            raise ModelMissing(f"model {spec!r} is not downloaded yet", value=spec,
                               fix=f"python -m assistant fetch-model {spec}")
        return ModelView(spec=spec, path=Path(f"/models/{spec}.gguf"), quantization="Q4_1")

    def ask(self, index: IndexView, model: ModelView, question: str,
            options: Options) -> Iterator[str | Reply]:
        CALLS.append((question, model.spec, options))
        if question.startswith("nothing"):
            yield Reply(text=REFUSAL, refused=True)
            return
        if question.startswith("flagged"):
            passage = SOURCES[0].passage + " Adults aged 50 to 75 years."
            start = passage.index("Adults aged")
            evidence = (EvidenceView(number=1, text=passage[start:], title=SOURCES[0].title,
                                     source="ngc", passage=passage, start=start,
                                     end=len(passage)),)
            yield EvidenceBlock(evidence)
            text = "Screen adults aged 50 to 75 years [1], starting with 600 mg of aspirin."
            yield text
            yield Reply(text=text, sources=SOURCES[:1], evidence=evidence,
                        unsupported_numbers=tuple(unsupported_numbers(text, [passage])),
                        n_numbers=count_quantities(text))
            return
        if question.startswith("boom"):
            yield ANSWER_PIECES[0]
            raise RuntimeError("the engine ran out of context")
        if question.startswith("quoted"):
            text = "Do screening for colorectal cancer in adults aged 50 to 75 years."
            yield text
            yield Reply(text=text, sources=QUOTED_SOURCES)
            return
        if question.startswith("loop"):  # stopped by the repetition guard, with downloads
            text = "Screen adults aged 50 to 75. Screen adults aged 50 to 75."
            yield text
            yield Reply(text=text, sources=SOURCES[:1], markdown=f"# {question}\n\n{text}\n",
                        receipt_json='{"format": "guidelines-answer-receipt"}',
                        details={"finish_reason": "repetition"})
            return
        yield from ANSWER_PIECES
        details = {"n_generated_tokens": 11, "gen_s": 0.5, "finish_reason": "stop"}
        if options.history and question.startswith("and "):  # a follow-up, as the chain does it
            details["search_query"] = f"{options.history[-1]} {question}"
        yield Reply(text="".join(ANSWER_PIECES), sources=SOURCES[: options.k], details=details)
