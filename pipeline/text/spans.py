"""Spans of PHI found in free text, and the helpers that combine them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Entity = Literal[
    "NAME", "ID", "DATE", "AGE", "INSTITUTION", "LOCATION", "PHONE", "EMAIL", "URL", "OTHER"
]
ENTITIES: frozenset[str] = frozenset(
    {"NAME", "ID", "DATE", "AGE", "INSTITUTION", "LOCATION", "PHONE", "EMAIL", "URL", "OTHER"}
)
SOURCES: frozenset[str] = frozenset({"header", "pattern", "dictionary", "model"})


@dataclass(frozen=True)
class PhiSpan:
    """One stretch ``text[start:end]`` that holds PHI.

    Parameters
    ----------
    start, end
        Character offsets (``end`` exclusive) in the original text.
    entity
        One of :data:`ENTITIES`.
    confidence
        0 to 1; used to pick the entity when spans overlap.
    source
        ``"header"``, ``"pattern"``, ``"dictionary"`` or ``"model"``.
    """

    start: int
    end: int
    entity: str
    confidence: float
    source: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError("a PHI span needs 0 <= start < end")
        if self.entity not in ENTITIES:
            raise ValueError("unknown PHI entity")


def fold(text: str) -> str:
    """Return ``text`` with accents stripped, one character for one character.

    The result has the same length as ``text``, so offsets found in it are
    offsets in ``text``. Only letters that decompose into an ASCII base letter
    plus combining marks are changed (``é`` -> ``e``, ``Ü`` -> ``U``).
    """
    if text.isascii():
        return text
    return "".join(_fold_char(ch) for ch in text)


def _fold_char(ch: str) -> str:
    if ch.isascii():
        return ch
    base = unicodedata.normalize("NFD", ch)[0]
    return base if base.isascii() and base.isalpha() else ch


def merge_overlapping(spans: Iterable[PhiSpan]) -> tuple[PhiSpan, ...]:
    """Merge spans that overlap into their union.

    The merged span takes entity, source and confidence of the most confident
    span in the group (ties: the longer, then the earlier one).
    """
    ordered = sorted(spans, key=lambda s: (s.start, -s.end))
    out: list[PhiSpan] = []
    group: list[PhiSpan] = []
    end = -1
    for span in ordered:
        if group and span.start < end:
            group.append(span)
            end = max(end, span.end)
            continue
        if group:
            out.append(_union(group, end))
        group, end = [span], span.end
    if group:
        out.append(_union(group, end))
    return tuple(out)


def _union(group: list[PhiSpan], end: int) -> PhiSpan:
    best = max(group, key=lambda s: (s.confidence, s.end - s.start, -s.start))
    return PhiSpan(group[0].start, end, best.entity, best.confidence, best.source)


_INITIAL_AFTER = re.compile(r"[\s^,=]+([^\W\d_])(?:\.|(?=[\s^,=]|$))")
_INITIAL_BEFORE = re.compile(r"(?<![^\W\d_])([^\W\d_])\.?[\s^,=]+$")


def absorb_initials(text: str, spans: Iterable[PhiSpan]) -> tuple[PhiSpan, ...]:
    """Grow NAME spans over the single-letter initials that belong to them.

    An initial is taken when it stands between two NAME spans (``John Q. Doe``),
    follows a NAME span after a PN separator ``^`` (``Doe^John^Q``), or precedes a
    NAME span with a period (``J. Smith``).
    """
    ordered = sorted(spans, key=lambda s: s.start)
    starts = {s.start for s in ordered if s.entity == "NAME"}
    out: list[PhiSpan] = []
    for span in ordered:
        if span.entity != "NAME":
            out.append(span)
            continue
        start, end = span.start, span.end
        after = _INITIAL_AFTER.match(text, end)
        if after is not None:
            rest = re.match(r"[\s^,=.]*", text[after.end():])
            nxt = after.end() + (rest.end() if rest else 0)
            if "^" in text[end:after.start(1)] or nxt in starts:
                end = after.end()
        lo = max(0, start - 4)
        window = text[lo:start]
        before = _INITIAL_BEFORE.search(window)
        if before is not None and "." in window[before.start():]:
            at = lo + before.start()
            if at == 0 or not text[at - 1].isalpha():
                start = at
        out.append(PhiSpan(start, end, span.entity, span.confidence, span.source))
    return tuple(out)
