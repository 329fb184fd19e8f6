"""Replacing PHI spans in text by entity placeholders."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.text.context import HeaderContext
from pipeline.text.spans import PhiSpan, merge_overlapping
from pipeline.text.tagger import PhiTagger, default_tagger

#: Text that may stand between two spans of one entity that are then merged
#: (``John Smith``, ``Doe^John``, ``Smith, John``).
_JOINABLE_GAP = re.compile(r"[\s^=,.'’-]{0,3}")


@dataclass(frozen=True)
class CleanResult:
    """The cleaned text and the spans that were replaced (offsets in the original)."""

    text: str
    spans: tuple[PhiSpan, ...]

    @property
    def changed(self) -> bool:
        """True when at least one span was replaced."""
        return bool(self.spans)


def scrub(text: str, spans: Sequence[PhiSpan]) -> str:
    """Replace each span of ``text`` by ``[ENTITY]`` (``[NAME]``, ``[ID]``, ``[DATE]``...).

    Overlapping spans are merged first (entity of the most confident one);
    spans of one entity that touch, or are separated only by spaces or PN / list
    separators, become a single placeholder.
    """
    if not spans:
        return text
    merged = _join_adjacent(text, merge_overlapping(s for s in spans if s.start < len(text)))
    out: list[str] = []
    pos = 0
    for span in merged:
        out.append(text[pos:span.start])
        out.append(f"[{span.entity}]")
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def _join_adjacent(text: str, spans: Sequence[PhiSpan]) -> list[PhiSpan]:
    out: list[PhiSpan] = []
    for span in spans:
        end = min(span.end, len(text))
        prev = out[-1] if out else None
        if (prev is not None and prev.entity == span.entity
                and _JOINABLE_GAP.fullmatch(text, prev.end, span.start)):
            out[-1] = PhiSpan(prev.start, end, prev.entity,
                              max(prev.confidence, span.confidence), prev.source)
        else:
            out.append(PhiSpan(span.start, end, span.entity, span.confidence, span.source))
    return out


def clean_text(text: str, context: HeaderContext, tagger: PhiTagger | None = None) -> CleanResult:
    """Tag ``text`` and replace its PHI; ``tagger`` defaults to :func:`default_tagger`."""
    active = default_tagger() if tagger is None else tagger
    if not text:
        return CleanResult(text, ())
    spans = tuple(active.tag(text, context))
    return CleanResult(scrub(text, spans), spans)
