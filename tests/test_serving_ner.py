"""The batched NER call the Serve deployment makes gives the in-process tagger's spans."""

from __future__ import annotations

import pytest

from pipeline.text import HeaderContext
from pipeline.text.ner import NerTagger
from serving.engines import tag_many

TEXTS = [
    "CT CHEST for John Smith, MRN 88412345, seen 03/14/2021 at Mercy General Hospital",
    "PATIENT: DOE~JANE  DOB 1950-02-01  ACC A1234567",
    "no text with identifiers here",
    "",
]


@pytest.fixture(scope="module")
def tagger() -> NerTagger:
    return NerTagger()


def test_batched_serve_call_equals_the_in_process_tagger(tagger: NerTagger) -> None:
    context = HeaderContext()
    expected = [tagger.tag(text, context) for text in TEXTS]
    assert tag_many(tagger, [(text, None) for text in TEXTS]) == expected
    assert any(expected), "the model found nothing: the comparison would prove nothing"


def test_per_request_threshold_is_honoured(tagger: NerTagger) -> None:
    strict = tag_many(tagger, [(TEXTS[0], 0.99)])[0]
    loose = tag_many(tagger, [(TEXTS[0], 0.05)])[0]
    assert len(strict) <= len(loose)
    assert NerTagger(threshold=0.05).tag(TEXTS[0], HeaderContext()) == loose
