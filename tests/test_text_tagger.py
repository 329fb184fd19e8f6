"""Behaviour of the PHI taggers and of the header context they rely on."""

from __future__ import annotations

import datetime

import pytest
from factories import make_ct
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.text import (
    CompositeTagger,
    DictionaryTagger,
    HeaderContext,
    HeaderValueTagger,
    PatternTagger,
    PhiSpan,
    PhiTagger,
    default_tagger,
)
from pipeline.text.context import name_parts
from pipeline.text.vocabulary import clinical_vocabulary, name_dictionary

EMPTY = HeaderContext()


def tagged(tagger: PhiTagger, text: str, context: HeaderContext = EMPTY) -> list[tuple[str, str]]:
    """Return (covered text, entity) for each span, in order."""
    return [(text[s.start:s.end], s.entity) for s in sorted(tagger.tag(text, context),
                                                          key=lambda s: s.start)]


# --- HeaderContext.from_dataset -------------------------------------------------------------

def nested_dataset() -> Dataset:
    ds = make_ct()
    other_id = Dataset()
    other_id.PatientID = "OLD-77123"
    other_id.IssuerOfPatientID = "Other Hospital"
    ds.OtherPatientIDsSequence = Sequence([other_id])
    observer = Dataset()
    observer.PersonName = "Quimby^Harriet"
    inner = Dataset()
    inner.VerifyingObserverName = "Abernathy^Theodore^^Dr^MD"
    inner.VerificationDateTime = "20231224083000"
    observer.VerifyingObserverSequence = Sequence([inner])
    ds.ContentSequence = Sequence([observer])
    ds.AdmissionID = "ADM-5550001"
    ds.PatientTelephoneNumbers = "555-867-5309"
    return ds


def test_from_dataset_collects_pn_parts_at_top_level_and_in_nested_sequences() -> None:
    context = HeaderContext.from_dataset(nested_dataset())
    assert {"DOE", "JOHNATHAN", "KILDARE", "LEONARD"} <= context.names
    assert {"QUIMBY", "HARRIET", "ABERNATHY", "THEODORE"} <= context.names
    assert "DR" not in context.names and "MD" not in context.names  # prefix / suffix
    assert "Q" not in context.names  # parts shorter than 2 characters


def test_from_dataset_collects_ids_dates_institutions_and_other() -> None:
    context = HeaderContext.from_dataset(nested_dataset())
    assert {"MRN8675309", "ACC24681357", "S12345", "OLD-77123", "ADM-5550001"} <= context.ids
    assert {datetime.date(1945, 3, 16), datetime.date(2024, 1, 5),
            datetime.date(2023, 12, 24)} <= context.dates
    assert context.institutions == {"SAINT ELSEWHERE HOSPITAL"}
    assert {"42 WALLABY WAY, SYDNEY", "555-867-5309"} <= context.other
    assert all(len(i) >= 3 for i in context.ids)


def test_from_dataset_can_leave_institutions_out() -> None:
    context = HeaderContext.from_dataset(make_ct(), include_institution=False)
    assert context.institutions == frozenset()
    assert "DOE" in context.names


@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
def test_from_dataset_ignores_unparseable_dates_and_placeholders() -> None:
    ds = Dataset()
    ds.PatientBirthDate = "19451399"
    ds.StudyDate = "garbage"
    ds.PatientName = "ANONYMIZED"
    ds.PatientID = "1"
    context = HeaderContext.from_dataset(ds)
    assert context.empty


def test_merge_is_the_union_and_empty_reports_no_values() -> None:
    a = HeaderContext(names=frozenset({"DOE"}))
    b = HeaderContext(ids=frozenset({"MRN1"}), dates=frozenset({datetime.date(2024, 1, 5)}))
    merged = a.merge(b)
    assert merged.names == {"DOE"} and merged.ids == {"MRN1"} and len(merged.dates) == 1
    assert HeaderContext().empty and not merged.empty


@pytest.mark.parametrize(("value", "parts"), [
    ("Doe^John^Q", {"DOE", "JOHN"}),
    ("de la Cruz^Juan", {"DE LA CRUZ", "CRUZ", "JUAN"}),
    ("O'Brien^Sean", {"O'BRIEN", "BRIEN", "SEAN"}),
    ("Smith-Jones^Ann", {"SMITH-JONES", "SMITH", "JONES", "ANN"}),
    ("Yamada^Tarou=山田^太郎", {"YAMADA", "TAROU", "山田", "太郎"}),
])
def test_name_parts_split_pn_components(value: str, parts: set[str]) -> None:
    assert name_parts(value) == parts


# --- HeaderValueTagger ----------------------------------------------------------------------

HEADER = HeaderContext(
    names=frozenset(name_parts("Doe^Johnathan") | name_parts("Head^Mary")),
    ids=frozenset({"MRN8675309", "00042517", "S12"}),
    dates=frozenset({datetime.date(1945, 3, 16)}),
    institutions=frozenset({"SAINT ELSEWHERE HOSPITAL"}),
    other=frozenset({"555-867-5309", "JDOE@EXAMPLE.ORG"}),
)


@pytest.mark.parametrize(("text", "expected"), [
    ("johnathan doe", [("johnathan", "NAME"), ("doe", "NAME")]),
    ("DOE^JOHNATHAN", [("DOE", "NAME"), ("JOHNATHAN", "NAME")]),
    ("Doe, Johnathan", [("Doe", "NAME"), ("Johnathan", "NAME")]),
    ("CT HEAD", [("HEAD", "NAME")]),  # the header beats the clinical vocabulary
    ("Doeberg", []),  # token boundaries
    ("mrn 8675309", [("mrn 8675309", "ID")]),
    ("id 42517 and 042517", [("42517", "ID"), ("042517", "ID")]),
    ("S12 is too short", [("S12", "ID")]),
    ("born 16.03.45", [("16.03.45", "DATE")]),
    ("born March 16, 1945", [("March 16, 1945", "DATE")]),
    ("born 1945/3/16", [("1945/3/16", "DATE")]),
    ("at St Elsewhere", [("St Elsewhere", "INSTITUTION")]),
    ("call (555) 867-5309", [("555) 867-5309", "PHONE")]),
    ("mail JDoe@Example.org", [("JDoe@Example.org", "EMAIL")]),
])
def test_header_values_are_found_in_any_case_and_shape(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert tagged(HeaderValueTagger(), text, HEADER) == expected


def test_header_tagger_without_context_finds_nothing() -> None:
    assert HeaderValueTagger().tag("John Smith 20240105", EMPTY) == ()


def test_header_ids_shorter_than_three_characters_are_never_matched() -> None:
    context = HeaderContext(ids=frozenset({"1", "07"}))
    assert HeaderValueTagger().tag("series 1 image 07", context) == ()


def test_slices_of_one_series_share_compiled_patterns_but_match_only_their_own_uids() -> None:
    from pipeline.text import header

    def slice_context(uid: str, day: int) -> HeaderContext:
        return HeaderContext(names=frozenset({"QUIMBY", "HARRIET"}),
                             ids=frozenset({"0055123", uid}),
                             dates=frozenset({datetime.date(2024, 1, day)}))

    first = slice_context("1.2.826.0.1.3680043.8.498.111", 5)
    second = slice_context("1.2.826.0.1.3680043.8.498.222", 6)
    assert header._matcher(first) is header._matcher(second)
    text = "QUIMBY 55123 uid 1.2.826.0.1.3680043.8.498.111"
    assert tagged(HeaderValueTagger(), text, first) == [
        ("QUIMBY", "NAME"), ("55123", "ID"), ("1.2.826.0.1.3680043.8.498.111", "ID")]
    assert tagged(HeaderValueTagger(), text, second) == [("QUIMBY", "NAME"), ("55123", "ID")]


# --- PatternTagger --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "covered", "entity"), [
    ("on 20240105 at", "20240105", "DATE"),
    ("on 2024-01-05 at", "2024-01-05", "DATE"),
    ("on 01/05/2024 at", "01/05/2024", "DATE"),
    ("on 5.1.2024 at", "5.1.2024", "DATE"),
    ("on 05-JAN-2024 at", "05-JAN-2024", "DATE"),
    ("on Jan 5, 2024 at", "Jan 5, 2024", "DATE"),
    ("on 5 January 2024 at", "5 January 2024", "DATE"),
    ("on 13/12/99 at", "13/12/99", "DATE"),
    ("seen Jan 5 here", "Jan 5", "DATE"),
    ("mrn 12345678", "12345678", "ID"),
    ("ref A1234567 here", "A1234567", "ID"),
    ("ssn 123-45-6789", "123-45-6789", "ID"),
    ("MRN: 4411", "4411", "ID"),
    ("call 617-555-0134 now", "617-555-0134", "PHONE"),
    ("call (617) 555-0134 now", "(617) 555-0134", "PHONE"),
    ("call +44 20 7946 0958 now", "+44 20 7946 0958", "PHONE"),
    ("mail a.b@example.co.uk now", "a.b@example.co.uk", "EMAIL"),
    ("see https://example.org/x?y=1.", "https://example.org/x?y=1", "URL"),
    ("see www.example.com now", "www.example.com", "URL"),
    ("a 93 y/o man", "93 y/o", "AGE"),
    ("age 94", "age 94", "AGE"),
    ("PatientAge 094Y", "094Y", "AGE"),
    ("a 101-year-old", "101-year-old", "AGE"),
])
def test_pattern_tagger_finds_shaped_phi(text: str, covered: str, entity: str) -> None:
    assert (covered, entity) in tagged(PatternTagger(), text)


@pytest.mark.parametrize("text", [
    "AXIAL 1.25MM", "120 KV", "512x512", "C2-C3", "a 63 y/o man", "age 45", "078Y",
    "DLP 12345.6 mGy*cm", "1500MS", "b1000", "TR 4000", "10000 IU", "BP 120/80",
    "Series 5 Image 123", "3.0T", "version 1.2.3",
])
def test_pattern_tagger_leaves_measurements_and_young_ages(text: str) -> None:
    assert PatternTagger().tag(text, EMPTY) == ()


# --- DictionaryTagger -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "name"), [
    ("CT CHEST for John Smith", "John Smith"),
    ("Seen by Dr. Kildare today", "Kildare"),
    ("DR KILDARE", "KILDARE"),
    ("Mrs. Featherstonehaugh called", "Featherstonehaugh"),
    ("signed by Maria Garcia", "Maria Garcia"),
    ("PATIENT JOHNSON^MARY^A", "JOHNSON^MARY^A"),
    ("Garcia, Maria seen", "Garcia, Maria"),
    ("Pieter de Vries", "Pieter de Vries"),
    ("Dr. J. Smith", "J. Smith"),
    ("John Q. Public", "John Q. Public"),
    ("Patient name: Kildare", "Kildare"),
    ("Robert Johnson MD", "Robert Johnson"),
    ("Hans Müller", "Hans Müller"),
])
def test_dictionary_tagger_finds_names_in_name_positions(text: str, name: str) -> None:
    assert tagged(DictionaryTagger(), text) == [(name, "NAME")]


@pytest.mark.parametrize("text", [
    "CHEST PA AND LATERAL", "LEFT KNEE 3 VIEWS", "MR BRAIN", "DR CHEST PORTABLE",
    "Parkinson disease", "Baker cyst", "Circle of Willis", "compare with prior",
    "Smith", "John", "MS lesions", "for chest pain",
])
def test_dictionary_tagger_leaves_clinical_text(text: str) -> None:
    assert DictionaryTagger().tag(text, EMPTY) == ()


def test_vocabulary_is_derived_from_pydicom_and_the_yaml_supplement() -> None:
    vocabulary = clinical_vocabulary()
    assert {"CHEST", "LUNG", "AXIAL", "ABDOMEN"} <= vocabulary  # pydicom concepts
    assert {"FLAIR", "LOCALIZER", "TOPOGRAM"} <= vocabulary  # dictionary or supplement
    assert "PARKINSON" not in vocabulary  # eponyms: capitalised only, not vocabulary


def test_name_dictionary_reads_faker_locales_once() -> None:
    names = name_dictionary()
    assert {"JOHN", "MARIA", "HANS", "PIETER"} <= names.first
    assert {"SMITH", "GARCIA", "MULLER", "ROSSI"} <= names.last
    assert name_dictionary() is names


# --- CompositeTagger ------------------------------------------------------------------------

class Fixed:
    """A tagger that returns fixed spans."""

    def __init__(self, *spans: PhiSpan) -> None:
        self.spans = spans

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        return self.spans


def test_composite_merges_overlaps_keeping_the_most_confident_entity() -> None:
    composite = CompositeTagger([
        Fixed(PhiSpan(0, 6, "ID", 0.6, "pattern")),
        Fixed(PhiSpan(4, 10, "DATE", 0.9, "header"), PhiSpan(12, 14, "NAME", 0.5, "dictionary")),
    ])
    assert composite.tag("x" * 20, EMPTY) == (
        PhiSpan(0, 10, "DATE", 0.9, "header"),
        PhiSpan(12, 14, "NAME", 0.5, "dictionary"),
    )


def test_default_tagger_is_a_cached_composite_of_the_three_rule_taggers() -> None:
    tagger = default_tagger()
    assert tagger is default_tagger()
    kinds = {type(t) for t in tagger.taggers}
    assert kinds == {HeaderValueTagger, PatternTagger, DictionaryTagger}
    assert isinstance(tagger, PhiTagger)


@pytest.mark.parametrize(("start", "end", "entity"), [(3, 3, "NAME"), (-1, 2, "NAME"),
                                                      (0, 2, "SECRET")])
def test_phi_span_rejects_invalid_values(start: int, end: int, entity: str) -> None:
    with pytest.raises(ValueError):
        PhiSpan(start, end, entity, 0.5, "pattern")
