"""Medical abbreviations: a question that says "COPD" also searches for "chronic obstructive
pulmonary disease" in BM25, and one that spells it out also searches for "COPD".

The list (``data/abbreviations.tsv``) is small and general, written from standard clinical usage,
not from any evaluation question. An abbreviation matches only as a whole word in capitals (so
"MS" the disease, not "ms"); an expansion matches case-insensitively as whole words.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

ABBREVIATIONS_FILE = Path(__file__).parent / "data" / "abbreviations.tsv"


@lru_cache(maxsize=1)
def abbreviations(path: Path = ABBREVIATIONS_FILE) -> dict[str, str]:
    """abbreviation -> expansion, from a TSV file (``#`` lines are comments)."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        abbr, sep, expansion = line.partition("\t")
        if not sep or not abbr.strip() or not expansion.strip():
            raise ValueError(f"{path}:{n}: expected 'ABBREVIATION<TAB>expansion', got {line!r}")
        out[abbr.strip()] = expansion.strip()
    return out


@lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern, list[tuple[re.Pattern, str]]]:
    table = abbreviations()
    short = re.compile(r"\b(" + "|".join(map(re.escape, sorted(table, key=len)[::-1])) + r")\b")
    long = [
        (re.compile(r"\b" + re.escape(exp) + r"\b", re.IGNORECASE), abbr)
        for abbr, exp in table.items()
    ]
    return short, long


def expansions(text: str) -> list[str]:
    """The other forms of the abbreviations and expansions the text holds, each once."""
    table = abbreviations()
    short, long = _patterns()
    out: list[str] = []
    for m in short.finditer(text):
        if table[m.group(1)] not in out:
            out.append(table[m.group(1)])
    for pattern, abbr in long:
        if pattern.search(text) and abbr not in out:
            out.append(abbr)
    return out


def expand_query(text: str) -> str:
    """The text followed by the other forms of its abbreviations and expansions."""
    extra = expansions(text)
    return f"{text} {' '.join(extra)}" if extra else text
