"""The number guard: every number an answer states is looked up in the passages it was shown.

A small model can write a dose, a threshold or an age that no source holds.  The rule:

    Each *quantity* of the answer — a number, a range (``55 to 80 years``, ``2-3 mg``) or a
    ratio (``140/90 mmHg``), with the unit written after it, if any — is *supported* when one
    of the shown passages states the same value with the same unit.  A value the passage
    states without a unit, or inside a range or list, counts (``400`` or ``200 to 400 mg``
    support ``400 mg``); the same value with a different unit does not (``400 mL`` does not
    support ``400 mg``).  A quantity the answer writes without a unit needs only the value.
    A range or ratio is supported when the passages state it whole, or each of its numbers.

What is normalised before comparing: thousands separators (``1,000`` = ``1000``), trailing
zeros (``2.0`` = ``2``), spacing (``140 / 90`` = ``140/90``, ``30 %`` = ``30%``), range words
(``55 to 80`` = ``55-80`` = ``55–80``) and unit spellings (``mg`` = ``milligrams``, ``%`` =
``percent``, ``mm Hg`` = ``mmHg``, ``yrs`` = ``years``; :data:`UNITS`).

What is not a quantity: the answer's citation markers ``[1]``, ``[2-4]``; list numbering at the
start of a line or after a sentence's end (``1.``, ``2)``); digits inside a word or code
(``COVID-19``, ``H1N1``, ``CD4``, ``B12``). Years and other date parts are quantities like any
other (``in 2013`` must be in a source); a date written ``3/14/2013`` or ``2013-03-14`` is one
value. Numbers written as words (``five``) are not checked. The guard only reads text: it never
changes the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assistant.checks.attribution import CITATION_MARKER

# unit spellings (lower case, longest first when matching) -> canonical unit
UNITS: dict[str, str] = {}
for _canon, _spellings in {
    "%": ("%", "percent", "per cent", "pct"),
    "mg/kg": ("mg/kg", "mg per kg", "milligrams per kilogram"),
    "mg/dl": ("mg/dl", "mg per dl"),
    "mmol/l": ("mmol/l", "mmol per l", "mmol/litre", "mmol/liter"),
    "kg/m2": ("kg/m2", "kg/m²", "kg per m2"),
    "mg": ("mg", "mgs", "milligram", "milligrams", "milligramme", "milligrammes"),
    "mcg": ("mcg", "µg", "μg", "ug", "microgram", "micrograms"),
    "g": ("g", "gm", "gram", "grams", "gramme", "grammes"),
    "kg": ("kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"),
    "ml": ("ml", "millilitre", "millilitres", "milliliter", "milliliters", "cc"),
    "l": ("l", "litre", "litres", "liter", "liters"),
    "mmhg": ("mmhg", "mm hg", "millimeters of mercury", "millimetres of mercury"),
    "iu": ("iu", "international unit", "international units"),
    "units": ("unit", "units", "u"),
    "years": ("year", "years", "yr", "yrs", "year-old", "years-old", "-year-old",
              "years old", "year old"),
    "months": ("month", "months", "mo", "mos"),
    "weeks": ("week", "weeks", "wk", "wks"),
    "days": ("day", "days", "d"),
    "hours": ("hour", "hours", "hr", "hrs", "h"),
    "minutes": ("minute", "minutes", "min", "mins"),
    "seconds": ("second", "seconds", "sec", "secs", "s"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "times": ("times", "x", "×"),
    "doses": ("dose", "doses"),
    "mmol": ("mmol",),
    "meq": ("meq",),
    "bpm": ("bpm", "beats per minute"),
}.items():
    for _s in _spellings:
        UNITS[_s] = _canon

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_RANGE_JOIN = r"\s*(?:-|–|—|to|through)\s*"
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
# a number not glued to letters or digits before it (COVID-19, H1N1, B12 are names, not values)
_QUANTITY = re.compile(
    rf"(?<![\w.,/])(?<!\w-)(?P<a>{_NUM})"
    rf"(?:(?P<ratio>\s*/\s*)(?P<b>{_NUM})|(?P<range>{_RANGE_JOIN})(?P<c>{_NUM}))?"
    rf"(?:\s?(?P<unit>{_UNIT_ALT})(?![\w]))?"
    rf"(?!\w)",
    re.IGNORECASE,
)
# dates written with slashes or ISO dashes: one value, compared as written (normalised)
_DATE = re.compile(r"(?<![\w/.-])(\d{1,2}/\d{1,2}/\d{2,4}|\d{4}-\d{2}-\d{2})(?![\w/-])")
# "1." / "2)" opening a line or following a sentence's end: list numbering, not a value
_LIST_NUMBER = re.compile(r"(?m)(?:^\s*(?:[-*•]\s*)?|(?<=[.!?:;]\s))\(?\d{1,3}[.)](?=\s)")


@dataclass(frozen=True)
class Quantity:
    """One number, range, ratio or date of a text, with its canonical unit (``""``: none)."""

    text: str  # as written
    values: tuple[str, ...]  # canonical numbers: one, or two for a range / ratio
    kind: str  # "number", "range", "ratio" or "date" (one value: its parts joined by "/")
    unit: str

    @property
    def key(self) -> str:
        join = "/" if self.kind == "ratio" else "-"
        return join.join(self.values)


def canonical_number(text: str) -> str:
    """``"1,000"`` → ``"1000"``, ``"2.50"`` → ``"2.5"``, ``".5"`` → ``"0.5"``."""
    value = text.replace(",", "")
    if value.startswith("."):
        value = "0" + value
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value.lstrip("0") or "0" if "." not in value else value


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with each match of ``pattern`` replaced by spaces (offsets kept)."""
    return pattern.sub(lambda m: " " * len(m.group()), text)


def find_quantities(text: str) -> list[Quantity]:
    """The quantities of ``text`` (see the module docstring), in order."""
    clean = _blank(_blank(text, CITATION_MARKER), _LIST_NUMBER)
    found: list[tuple[int, Quantity]] = []
    for m in _DATE.finditer(clean):
        parts = re.split(r"[/-]", m.group())
        key = "/".join(canonical_number(p) for p in parts)
        found.append((m.start(), Quantity(m.group(), (key,), "date", "")))
    clean = _blank(clean, _DATE)
    for m in _QUANTITY.finditer(clean):
        unit = UNITS.get((m.group("unit") or "").lower(), "")
        a = canonical_number(m.group("a"))
        if m.group("b") is not None:
            q = Quantity(m.group().strip(), (a, canonical_number(m.group("b"))), "ratio", unit)
        elif m.group("c") is not None:
            q = Quantity(m.group().strip(), (a, canonical_number(m.group("c"))), "range", unit)
        else:
            q = Quantity(m.group().strip(), (a,), "number", unit)
        found.append((m.start(), q))
    return [q for _, q in sorted(found, key=lambda pq: pq[0])]


class SourceNumbers:
    """What the shown passages state: every value with the units it appears with."""

    def __init__(self, passages: Iterable[str]) -> None:
        self.units: dict[str, set[str]] = {}  # value -> units it is written with ("" = none)
        self.wholes: set[tuple[str, str, str]] = set()  # (kind, key, unit) of ranges / ratios
        for text in passages:
            for q in find_quantities(text):
                for v in q.values:
                    self.units.setdefault(v, set()).add(q.unit)
                if q.kind != "number":
                    self.wholes.add((q.kind, q.key, q.unit))

    def value_supported(self, value: str, unit: str) -> bool:
        units = self.units.get(value)
        if not units:
            return False
        return not unit or unit in units or "" in units

    def supports(self, q: Quantity) -> bool:
        if q.kind != "number" and ((q.kind, q.key, q.unit) in self.wholes
                                   or (q.kind, q.key, "") in self.wholes):
            return True
        return all(self.value_supported(v, q.unit) for v in q.values)


def unsupported_numbers(answer: str, passages: Sequence[str]) -> list[str]:
    """The quantities of ``answer`` that no passage states, as written, without repeats."""
    sources = SourceNumbers(passages)
    out: list[str] = []
    for q in find_quantities(answer):
        if not sources.supports(q) and q.text not in out:
            out.append(q.text)
    return out


def count_quantities(answer: str) -> int:
    """How many quantities ``answer`` states (the guard's denominator)."""
    return len(find_quantities(answer))
