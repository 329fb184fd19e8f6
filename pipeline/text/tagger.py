"""The tagger interface, the composite tagger and the default rule-based stack."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pipeline.text.context import HeaderContext
from pipeline.text.header import HeaderValueTagger
from pipeline.text.names import DictionaryTagger
from pipeline.text.rules import PatternTagger
from pipeline.text.spans import PhiSpan, merge_overlapping

if TYPE_CHECKING:
    from pipeline.profile.schema import TextSettings

logger = logging.getLogger(__name__)


@runtime_checkable
class PhiTagger(Protocol):
    """Anything that finds PHI spans in one text (rules now, an NER model later)."""

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the PHI spans of ``text``; ``context`` holds the file's header PHI."""
        ...


class CompositeTagger:
    """Runs several taggers and merges their spans.

    Overlapping spans become their union, with the entity of the most confident
    span of the group.
    """

    def __init__(self, taggers: Sequence[PhiTagger]) -> None:
        self.taggers: tuple[PhiTagger, ...] = tuple(taggers)

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the merged spans of every tagger, sorted by position."""
        if not text:
            return ()
        spans: list[PhiSpan] = []
        for tagger in self.taggers:
            spans.extend(tagger.tag(text, context))
        return merge_overlapping(spans)


@functools.cache
def default_tagger() -> CompositeTagger:
    """Return the rule-based stack (header, pattern, dictionary), built once per process."""
    tagger = CompositeTagger([HeaderValueTagger(), PatternTagger(), DictionaryTagger()])
    logger.debug("default PHI tagger built")
    return tagger


@functools.cache
def tagger_for(settings: TextSettings) -> PhiTagger:
    """Return the tagger a profile's text settings ask for, built once per settings.

    The rule-based stack when ``ner`` is false; the rules plus the transformer NER
    model (threshold ``ner_threshold``) when true: the Veil Serve ``ner`` deployment
    when its app runs on the connected Ray cluster, else an in-process
    :class:`~pipeline.text.ner.NerTagger` (same spans either way). The rules keep their
    certainty on header values; the model adds what they miss.
    """
    if not settings.ner:
        return default_tagger()
    from serving.client import resolve_ner  # no Ray import unless Ray is already in use

    tagger = CompositeTagger([*default_tagger().taggers, resolve_ner(settings)])
    logger.debug("PHI tagger with the NER model built")
    return tagger
