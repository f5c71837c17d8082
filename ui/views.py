"""How one answer is drawn: its text, its numbered sources and the advisory notice.

Used for the answer being streamed and for every earlier answer in the conversation, so a
refusal, an error and a cited answer all end the same way: sources (or why there are none),
then the notice.
"""

from __future__ import annotations

import hashlib
import re

import streamlit as st

from assistant.answer import KIND_LABELS, QUOTE_SHOWN_CHARS, UNSUPPORTED_MARK, shorten
from assistant.checks.attribution import MATCH_MIN_WORDS
from ui.backend import EvidenceView, Reply, SetupProblem, SourceView

NOTICE_ICON = ":material/info:"
ERROR_ICON = ":material/error:"
SETUP_TITLES = {
    "no-index": "No index yet",
    "index-unusable": "Index cannot be used",
    "model-missing": "Model missing",
    "setup": "Not ready",
}

MATCHED_NOTE = (f"*Matched*: a sentence of the answer shares {MATCH_MIN_WORDS} or more "
                "consecutive words with that passage, though the model did not cite it by "
                "number. The answer is shown as the model wrote it.")
GIVEN_NOTE = ("The answer neither cites a passage by number nor quotes one; these are the "
              "passages it was given.")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$])")


def escape_md(text: str) -> str:
    """``text`` shown literally by ``st.markdown`` (corpus titles may hold ``[`` or ``*``)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def source_line(source: SourceView) -> str:
    """``[n] Title · ORG`` with the title linked to the document when it has a URL."""
    title = escape_md(source.title or source.doc_id or "untitled document")
    if source.url.startswith(("http://", "https://")):
        title = f"[{title}]({source.url})"
    org = f" · {escape_md(source.source.upper())}" if source.source else ""
    return f"**\\[{source.number}\\]** {title}{org}"


def source_kind_line(source: SourceView) -> str | None:
    """For a source matched by quoted text, that and the quote; None for the other kinds
    (cited sources need no note; "given" ones are explained once, under the list)."""
    if source.kind != "matched":
        return None
    quote = escape_md(shorten(source.quote, QUOTE_SHOWN_CHARS))
    return f"{KIND_LABELS['matched']}: “{quote}”"


CLOSEST_TITLE = "**Closest sources found** (not relevant enough to answer)"
EVIDENCE_TITLE = "**Evidence from the sources** (the passages' own sentences, best first)"
FLAG = f":red-background[⚠ {UNSUPPORTED_MARK}]"


def mark_unsupported(text: str, flagged: tuple[str, ...]) -> str:
    """``text`` with a visible flag after each number or term of ``flagged`` (as written)."""
    for item in sorted(set(flagged), key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w.]){re.escape(item)}(?![\w])")
        text = pattern.sub(lambda m: f"{m.group()} {FLAG}", text)
    return text


def checks_line(reply: Reply) -> str | None:
    """The footer: how many numbers (and drug names) were not found in the sources."""
    parts = []
    n = len(reply.unsupported_numbers)
    if reply.n_numbers:
        parts.append(f"{n} of {reply.n_numbers} numbers not found in the sources"
                     + (": " + ", ".join(escape_md(x) for x in reply.unsupported_numbers)
                        if n else ""))
    if reply.unsupported_terms:
        parts.append(f"{len(reply.unsupported_terms)} drug names not found in the sources: "
                     + ", ".join(escape_md(x) for x in reply.unsupported_terms))
    return " · ".join(parts) if parts else None


def highlighted_passage(view: EvidenceView) -> str:
    """The passage as Markdown with the evidence sentence highlighted."""
    a, b = view.start, view.end

    def md(text: str) -> str:
        return escape_md(text).replace("\n", "  \n")

    if not (0 <= a < b <= len(view.passage)):
        return md(view.passage)
    return (md(view.passage[:a]) + f":orange-background[{md(view.passage[a:b])}]"
            + md(view.passage[b:]))


EVIDENCE_PASSAGE_LABEL = ", the sentence highlighted"  # ends an evidence passage's expander
ANSWER_TITLE = "**Answer**"  # between the evidence sentences and the model's text


def render_evidence(evidence: tuple[EvidenceView, ...]) -> None:
    """The evidence sentences, each with its citation and its passage, highlighted."""
    if not evidence:
        return
    st.markdown(EVIDENCE_TITLE)
    for view in evidence:
        origin = escape_md(view.title) + (f" · {escape_md(view.source.upper())}"
                                          if view.source else "")
        st.markdown(f"> {escape_md(' '.join(view.text.split()))} **\\[{view.number}\\]**")
        st.caption(origin)
        with st.expander(f"Passage [{view.number}]{EVIDENCE_PASSAGE_LABEL}"):
            st.markdown(highlighted_passage(view))
    st.markdown(ANSWER_TITLE)


def render_sources(sources: tuple[SourceView, ...], refused: bool) -> None:
    if not sources:
        if refused:
            st.caption("No sources: nothing relevant to this question was found in the index.")
        return
    closest = all(s.kind == "closest" for s in sources)
    st.markdown(CLOSEST_TITLE if closest else "**Sources**")
    for source in sources:
        st.markdown(source_line(source))
        kind_line = source_kind_line(source)
        if kind_line:
            st.caption(kind_line)
        label = f"Passage [{source.number}]"
        if source.heading:
            label += f" — {source.heading}"
        with st.expander(label):
            st.text(source.passage)
    if any(s.kind == "matched" for s in sources):
        st.caption(MATCHED_NOTE)
    if any(s.kind == "given" for s in sources):
        st.caption(GIVEN_NOTE)


def render_notice(notice: str) -> None:
    st.info(notice, icon=NOTICE_ICON)


def render_details(reply: Reply) -> None:
    details = reply.details
    if details.get("search_query"):
        st.caption(f"Searched for (a follow-up, with the previous question): "
                   f"{escape_md(str(details['search_query']))}")
    parts = []
    if details.get("n_generated_tokens") is not None:
        parts.append(f"{details['n_generated_tokens']} tokens")
    if details.get("gen_s"):
        parts.append(f"{details['gen_s']:.1f} s generating")
    if details.get("finish_reason") == "length":
        parts.append("stopped at the max tokens limit")
    if details.get("finish_reason") == "repetition":
        parts.append("stopped: the answer began repeating itself")
    if parts:
        st.caption(" · ".join(parts))
    unresolved = details.get("unresolved_citations")
    if unresolved:
        cited = ", ".join(f"[{n}]" for n in unresolved)
        st.warning(f"The answer cites {cited}, which matches no passage it was given.")


def marked_text(reply: Reply) -> str:
    """The answer's text with its unsupported numbers and terms flagged."""
    return mark_unsupported(reply.text, (*reply.unsupported_numbers, *reply.unsupported_terms))


def render_reply_tail(reply: Reply) -> None:
    """Everything under the answer text: error, sources, details, the notice."""
    if reply.error:
        st.error(f"The answer could not be completed: {reply.error}", icon=ERROR_ICON)
    checks = checks_line(reply)
    if checks and (reply.unsupported_numbers or reply.unsupported_terms):
        st.warning(checks, icon=":material/warning:")
    elif checks:
        st.caption(checks)
    render_sources(reply.sources, reply.refused)
    render_details(reply)
    render_downloads(reply)
    render_notice(reply.notice)


def render_downloads(reply: Reply) -> None:
    """"Download answer" (Markdown: answer, sources, receipt, notice) and the JSON receipt."""
    if not reply.markdown:
        return
    key = f"{hashlib.sha256(reply.markdown.encode()).hexdigest()[:12]}-{id(reply)}"
    left, right = st.columns(2)
    with left:
        st.download_button("Download answer", reply.markdown, file_name="answer.md",
                           mime="text/markdown", key=f"answer-md-{key}",
                           icon=":material/download:")
    if reply.receipt_json:
        with right:
            st.download_button("Download receipt", reply.receipt_json,
                               file_name="answer-receipt.json", mime="application/json",
                               key=f"answer-receipt-{key}",
                               help="python -m assistant replay answer-receipt.json "
                                    "reproduces this answer")


def render_reply(reply: Reply) -> None:
    """A whole earlier answer, from the conversation history."""
    render_evidence(reply.evidence)
    if reply.text:
        st.markdown(marked_text(reply))
    render_reply_tail(reply)


def render_setup_problem(problem: SetupProblem) -> None:
    title = SETUP_TITLES.get(problem.kind, SETUP_TITLES["setup"])
    st.error(f"**{title}.** {problem.message}", icon=ERROR_ICON)
    if problem.fix:
        st.code(problem.fix, language="bash")
