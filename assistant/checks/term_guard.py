"""The drug-term guard: drug-like words of an answer that no shown passage holds.

No drug lexicon ships with the project's dependencies, so the rule is the naming stems drug
names share (the WHO International Nonproprietary Names stems, the common ones):

    A word of the answer is *drug-like* when it ends in one of :data:`DRUG_STEMS`
    (``-cillin``, ``-mycin``, ``-azole``, ``-pril``, ``-sartan``, ``-olol``, ``-statin``,
    ``-mab``, ``-vir``, ...) or starts with ``cef``, is at least :data:`MIN_LENGTH` letters
    long and is not one of the few English words with such an ending (:data:`NOT_DRUGS`,
    :data:`NOT_DRUG_ENDINGS`).  It is *unsupported* when
    no shown passage holds it as a word (case-insensitive).

So "cimeacillin" (no such drug) is flagged unless a passage writes it; "amoxicillin" is
flagged only when the passages never name it.  The rule misses drugs whose names carry no
such stem (aspirin, metformin) and says nothing about whether a named drug is used rightly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DRUG_STEMS: tuple[str, ...] = (
    "cillin", "mycin", "micin", "oxacin", "cycline", "azole", "conazole", "pril",
    "sartan", "olol", "alol", "statin", "mab", "nib", "vir", "virine", "dipine", "tidine",
    "prazole", "parin", "xaban", "gatran", "gliptin", "gliflozin", "glitazone", "glinide",
    "setron", "triptan", "lukast", "azepam", "azolam", "barbital", "caine", "dronate",
    "profen", "fenac", "semide", "thiazide", "sone", "olone", "asone", "terol", "tropium",
    "oxetine", "pramine", "triptyline", "peridol", "apine", "idone", "afil", "formin",
    "pam", "lam", "zosin", "tinib", "vudine", "navir", "previr", "asvir", "buvir",
)
# English words (and common non-drug medical words) that end in a stem above
NOT_DRUGS = frozenset({
    "april", "caine", "cocaine", "novocaine", "person", "reason", "season", "poison",
    "comparison", "prison", "venison", "unison", "crimson", "parson", "lesson", "mason",
    "spam", "scam", "islam", "program", "sam", "exam", "dam", "ham", "jam", "cram",
    "telegram", "diagram", "gram", "milligram", "kilogram", "microgram", "nanogram",
    "balsam", "flotsam", "jetsam", "wigwam", "madam", "saddam",
    "gauntlet", "mab", "nib", "reservoir", "memoir", "vir", "abovementioned",
    "idone", "pam", "lam", "sone",
})
NOT_DRUG_ENDINGS = ("sterol",)  # cholesterol, phytosterol: end in -terol, are not drugs
DRUG_PREFIXES = ("cef",)  # the cephalosporins' INN stem comes first
MIN_LENGTH = 6
_STEMS = tuple(sorted(set(DRUG_STEMS), key=len, reverse=True))
_WORD = re.compile(r"[A-Za-z][A-Za-z-]*[A-Za-z]")


def is_drug_like(word: str) -> bool:
    """``word`` looks like a drug name by the rule of the module docstring."""
    w = word.lower()
    if len(w) < MIN_LENGTH or w in NOT_DRUGS or "-" in w or w.endswith(NOT_DRUG_ENDINGS):
        return False
    return w.endswith(_STEMS) or w.startswith(DRUG_PREFIXES)


def drug_terms(text: str) -> list[str]:
    """The drug-like words of ``text``, in order, each once (as first written)."""
    seen: dict[str, str] = {}
    for m in _WORD.finditer(text):
        word = m.group()
        if is_drug_like(word) and word.lower() not in seen:
            seen[word.lower()] = word
    return list(seen.values())


def unsupported_terms(answer: str, passages: Sequence[str]) -> list[str]:
    """The drug-like words of ``answer`` that no passage holds as a word."""
    held = {w.lower() for text in passages for w in _WORD.findall(text)}
    return [t for t in drug_terms(answer) if t.lower() not in held]
