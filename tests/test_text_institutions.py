"""Institution names by shape (used for burned-in text)."""

from __future__ import annotations

import pytest

from pipeline.pixel.phi import decide
from pipeline.pixel.types import Recognition, TextBox
from pipeline.text import HeaderContext
from pipeline.text.institutions import InstitutionTagger

TAGGER = InstitutionTagger()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WESTWAY MEDICAL", "WESTWAY MEDICAL"),
        ("St Elsewhere Hospital", "St Elsewhere Hospital"),
        ("ST ELSEWHERE HOSP", "ST ELSEWHERE HOSP"),
        ("Mayo Clinic", "Mayo Clinic"),
        ("Saint Mary Hospital Trust", "Saint Mary Hospital Trust"),
        ("Mount Sinai Hospital", "Mount Sinai Hospital"),
        ("NEW SARAHFURT MEDICAL CENTER", "SARAHFURT MEDICAL CENTER"),
        ("CT CHEST", None),
        ("MEDICAL", None),
        ("CHEST MEDICAL", None),
        ("GE MEDICAL SYSTEMS", None),
        ("W 400 L 40", None),
    ],
)
def test_institution_names_are_found_by_their_shape(text, expected):
    spans = TAGGER.tag(text, HeaderContext())
    found = [text[s.start:s.end] for s in spans]
    assert found == ([expected] if expected else [])
    assert all(s.entity == "INSTITUTION" for s in spans)


def test_a_burned_in_institution_without_header_match_is_pixel_phi():
    box = TextBox(0, 0, 100, 20, 0.9, 0)
    findings = decide([box], [Recognition("WESTWAY MEDICAL", 0.97)], HeaderContext())
    assert [f.entity for f in findings] == ["INSTITUTION"]
