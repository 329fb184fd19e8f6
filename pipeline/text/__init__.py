"""Free-text PHI tagging and scrubbing ("Clean Descriptors" / "Clean Structured Content").

Taggers find the PHI inside free text (names, IDs, dates, ages over 89,
institutions, places, phone numbers, e-mail, URLs) and :func:`scrub` replaces
each stretch by a placeholder such as ``[NAME]``, keeping the clinical words::

    >>> clean_text("CT CHEST for John Smith", HeaderContext()).text
    'CT CHEST for [NAME]'

The rule-based stack (:func:`default_tagger`) combines the file's own header
values (:class:`HeaderValueTagger`), shapes (:class:`PatternTagger`) and name
lists (:class:`DictionaryTagger`); a model tagger can join it behind
:class:`PhiTagger`.
"""

from pipeline.text.context import HeaderCollector, HeaderContext, relevant
from pipeline.text.header import HeaderValueTagger
from pipeline.text.names import DictionaryTagger
from pipeline.text.rules import PatternTagger
from pipeline.text.scrub import CleanResult, clean_text, scrub
from pipeline.text.spans import Entity, PhiSpan
from pipeline.text.tagger import CompositeTagger, PhiTagger, default_tagger

__all__ = [
    "CleanResult",
    "CompositeTagger",
    "DictionaryTagger",
    "Entity",
    "HeaderCollector",
    "HeaderContext",
    "HeaderValueTagger",
    "PatternTagger",
    "PhiSpan",
    "PhiTagger",
    "clean_text",
    "default_tagger",
    "relevant",
    "scrub",
]
