"""Behaviour of free-text cleaning: what is redacted, what clinical text is kept."""

from __future__ import annotations

import datetime
import re
import time

import pytest
from faker import Faker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.text import (
    CleanResult,
    HeaderContext,
    PhiSpan,
    clean_text,
    default_tagger,
    scrub,
)
from pipeline.text.context import name_parts
from pipeline.text.spans import fold


def ctx(
    *,
    names: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    dates: tuple[datetime.date, ...] = (),
    institutions: tuple[str, ...] = (),
    other: tuple[str, ...] = (),
) -> HeaderContext:
    """Build a context the way ``from_dataset`` would (PN values split into parts)."""
    parts: set[str] = set()
    for name in names:
        parts |= name_parts(name)
    return HeaderContext(
        names=frozenset(parts),
        ids=frozenset(i.upper() for i in ids),
        dates=frozenset(dates),
        institutions=frozenset(i.upper() for i in institutions),
        other=frozenset(o.upper() for o in other),
    )


EMPTY = HeaderContext()
SMITH = ctx(names=("Smith^John",))
JAN5 = datetime.date(2024, 1, 5)

CASES = [
    # (text, header context, expected)
    ("CT CHEST for John Smith", EMPTY, "CT CHEST for [NAME]"),
    ("CT CHEST for John Smith", SMITH, "CT CHEST for [NAME]"),
    ("CT CHEST for SMITH, JOHN", SMITH, "CT CHEST for [NAME]"),
    ("Smith^John^Q follow up", SMITH, "[NAME] follow up"),
    ("MRI BRAIN W/WO", EMPTY, "MRI BRAIN W/WO"),
    ("MRI BRAIN W/WO", SMITH, "MRI BRAIN W/WO"),
    ("Seen by Dr. Kildare on 01/05/2024", EMPTY, "Seen by Dr. [NAME] on [DATE]"),
    ("prior MRN8675309 compare", ctx(ids=("MRN8675309",)), "prior [ID] compare"),
    ("prior MRN-8675309 compare", ctx(ids=("MRN8675309",)), "prior [ID] compare"),
    ("prior 0008675309 compare", ctx(ids=("8675309",)), "prior [ID] compare"),
    ("series 1 of 3", ctx(ids=("1",)), "series 1 of 3"),
    ("Call 617-555-0134 or jdoe@example.org", EMPTY, "Call [PHONE] or [EMAIL]"),
    ("see https://pacs.example.org/study?id=7 now", EMPTY, "see [URL] now"),
    ("Pt is a 93 y/o woman", EMPTY, "Pt is a [AGE] woman"),
    ("Pt is a 63 y/o woman", EMPTY, "Pt is a 63 y/o woman"),
    ("age 94", EMPTY, "[AGE]"),
    ("Scanned at Saint Elsewhere Hospital", ctx(institutions=("Saint Elsewhere Hospital",)),
     "Scanned at [INSTITUTION]"),
    ("Outside films from St. Elsewhere", ctx(institutions=("Saint Elsewhere Hospital",)),
     "Outside films from [INSTITUTION]"),
    ("Lives at 42 Wallaby Way, Sydney", ctx(other=("42 Wallaby Way^Sydney",)),
     "Lives at [LOCATION]"),
    ("DOB 16.03.45", ctx(dates=(datetime.date(1945, 3, 16),)), "DOB [DATE]"),
    ("SSN 123-45-6789", EMPTY, "SSN [ID]"),
    # a surname that is a clinical word is still PHI when the header says so
    ("CT HEAD WO CONTRAST", ctx(names=("Head^Mary",)), "CT [NAME] WO CONTRAST"),
    ("CHEST PA AND LATERAL", ctx(names=("Chest^Anna",)), "[NAME] PA AND LATERAL"),
    ("CT HEAD WO CONTRAST", EMPTY, "CT HEAD WO CONTRAST"),
]


@pytest.mark.parametrize(("text", "context", "expected"), CASES)
def test_clean_text_redacts_phi_and_keeps_clinical_words(
    text: str, context: HeaderContext, expected: str
) -> None:
    assert clean_text(text, context).text == expected


DATE_FORMATS = [
    "20240105", "2024-01-05", "2024/01/05", "01/05/2024", "1/5/2024", "05.01.2024",
    "5.1.2024", "05-JAN-2024", "05JAN2024", "Jan 5, 2024", "January 5th, 2024",
    "5 January 2024", "5th of January 2024", "2024-01-05T10:15:00", "01-05-24",
]


@pytest.mark.parametrize("written", DATE_FORMATS)
@pytest.mark.parametrize("context", [EMPTY, ctx(dates=(JAN5,))], ids=["no-header", "header"])
def test_dates_in_any_supported_format_are_redacted(written: str, context: HeaderContext) -> None:
    assert clean_text(f"CT CHEST {written} compare", context).text == "CT CHEST [DATE] compare"


@pytest.mark.parametrize("written", ["050124", "240105", "5.1.24"])
def test_ambiguous_short_dates_are_redacted_only_when_the_header_has_them(written: str) -> None:
    text = f"ref {written} done"
    assert clean_text(text, ctx(dates=(JAN5,))).text == "ref [DATE] done"
    other_day = clean_text(text, ctx(dates=(datetime.date(2020, 2, 2),))).text
    assert "[DATE]" not in other_day  # six digits may still go as an [ID]


CLINICAL_TEXTS = [
    "AXIAL 1.25MM", "120 KV", "T2 FLAIR", "C2-C3", "512x512", "CHEST PA AND LATERAL",
    "LEFT KNEE 3 VIEWS", "MRI BRAIN W/WO", "CT ABDOMEN PELVIS W CONTRAST", "DWI b1000",
    "ep2d_diff_3scan_trace_p2", "t1_mprage_sag_p2_iso", "Thorax 1.0 B31f", "Lung 1.0 Bl57",
    "Mild degenerative changes at L4-L5 and L5-S1.", "Lesion measures 12 x 14 x 9 mm",
    "DLP 1234.5 mGy*cm", "TR 4000 TE 90", "Slice thickness 3 mm, 120 kVp, 250 mAs",
    "Possible Baker cyst.", "Parkinson disease evaluation", "Hodgkin lymphoma restaging",
    "Circle of Willis", "Fleischner criteria", "BI-RADS 4", "Bosniak 2F", "Gleason 7",
    "Siemens SOMATOM Force", "GE Discovery MR750", "Philips Ingenia 3.0T", "MR BRAIN",
    "Follow up nodule 6 months", "Contrast: Omnipaque 350, 100 mL IV", "Series 5 Image 123",
    "Judet views", "Waters view", "Salter-Harris II", "Matrix 256 x 256", "FOV 24 cm",
]


@pytest.mark.parametrize("text", CLINICAL_TEXTS)
def test_clinical_text_without_phi_is_left_unchanged(text: str) -> None:
    result = clean_text(text, EMPTY)
    assert result.text == text
    assert not result.changed


@pytest.mark.parametrize(
    ("entity", "placeholder"),
    [("NAME", "[NAME]"), ("ID", "[ID]"), ("DATE", "[DATE]"), ("AGE", "[AGE]"),
     ("INSTITUTION", "[INSTITUTION]"), ("PHONE", "[PHONE]"), ("URL", "[URL]")],
)
def test_scrub_replaces_a_span_by_its_entity_placeholder(entity: str, placeholder: str) -> None:
    assert scrub("ab XYZ cd", [PhiSpan(3, 6, entity, 0.9, "pattern")]) == f"ab {placeholder} cd"


def test_scrub_merges_overlapping_spans_into_their_union() -> None:
    spans = [PhiSpan(0, 5, "ID", 0.6, "pattern"), PhiSpan(3, 9, "DATE", 0.9, "pattern")]
    assert scrub("123456789 x", spans) == "[DATE] x"


@pytest.mark.parametrize(("text", "expected"), [
    ("John Smith", "[NAME]"), ("Smith^John", "[NAME]"), ("Smith, John", "[NAME]"),
])
def test_scrub_merges_adjacent_spans_of_one_entity(text: str, expected: str) -> None:
    a, b = (m.span() for m in re.finditer(r"[A-Za-z]+", text))
    spans = [PhiSpan(*b, "NAME", 0.9, "header"), PhiSpan(*a, "NAME", 0.9, "header")]
    assert scrub(text, spans) == expected


def test_scrub_keeps_adjacent_spans_of_different_entities_apart() -> None:
    spans = [PhiSpan(0, 4, "NAME", 0.9, "header"), PhiSpan(5, 13, "DATE", 0.9, "header")]
    assert scrub("John 20240105", spans) == "[NAME] [DATE]"


def test_scrub_without_spans_returns_the_text() -> None:
    assert scrub("CT HEAD", []) == "CT HEAD"


def test_clean_result_reports_whether_anything_changed() -> None:
    assert clean_text("CT CHEST for John Smith", EMPTY).changed
    assert not clean_text("CT CHEST", EMPTY).changed
    assert clean_text("", SMITH) == CleanResult("", ())


def test_clean_text_uses_the_given_tagger() -> None:
    class EverythingIsAName:
        def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
            return (PhiSpan(0, len(text), "NAME", 1.0, "model"),)

    assert clean_text("CT HEAD", EMPTY, EverythingIsAName()).text == "[NAME]"


def test_log_lines_never_carry_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="pipeline.text")
    context = ctx(names=("Zyxwvut^Qwerty",), ids=("ZQ998877",))
    clean_text("Qwerty Zyxwvut ZQ998877", context)
    assert "ZYXWVUT" not in caplog.text.upper()
    assert "ZQ998877" not in caplog.text.upper()


# --- property-based: planted header PHI never survives --------------------------------------

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR"]
FAKE = Faker(LOCALES)
DESCRIPTIONS = [
    "CT CHEST WITH CONTRAST", "MRI BRAIN W/WO", "AXIAL 1.25MM", "LEFT KNEE 3 VIEWS",
    "chest pa and lateral", "Follow up nodule", "T2 FLAIR", "US ABDOMEN COMPLETE",
    "compare with prior", "Stable appearance of the liver",
]
NAME_FORMS = ["{first} {last}", "{last}, {first}", "{last}^{first}", "Dr. {last}",
              "{FIRST} {LAST}", "{first_l} {last_l}", "{last}"]
DATE_FORMS = ["%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%d-%b-%Y", "%B %d, %Y",
              "%d %B %Y", "%m/%d/%y", "%b %d %Y"]
ID_FORMS = ["MRN########", "#######", "ACC########", "??######", "###-##-####"]
TEMPLATES = ["{desc} for {phi}", "{phi} {desc}", "{desc}. {phi}", "{desc} ({phi}) {desc2}",
             "prior {phi} {desc}", "{desc} per {phi}: {desc2}"]


def _survives(value: str, output: str) -> bool:
    """True when ``value`` appears in ``output`` as a whole, case- and accent-insensitive."""
    pattern = r"(?<![^\W_])" + re.escape(fold(value).upper()) + r"(?![^\W_])"
    return re.search(pattern, fold(output).upper()) is not None


@st.composite
def planted(draw: st.DrawFn) -> tuple[str, HeaderContext, list[str]]:
    """A clinical sentence with one header value planted, its context and the value's forms."""
    seed = draw(st.integers(0, 2**32 - 1))
    FAKE.seed_instance(seed)
    fake = FAKE[draw(st.sampled_from(LOCALES))]
    kind = draw(st.sampled_from(["name", "id", "date"]))
    if kind == "name":
        first, last = fake.first_name(), fake.last_name()
        form = draw(st.sampled_from(NAME_FORMS))
        phi = form.format(first=first, last=last, FIRST=first.upper(), LAST=last.upper(),
                          first_l=first.lower(), last_l=last.lower())
        context = ctx(names=(f"{last}^{first}",))
        forms = sorted(context.names)
    elif kind == "id":
        value = fake.bothify(draw(st.sampled_from(ID_FORMS))).upper()
        phi = value
        context = ctx(ids=(value,))
        forms = [value]
    else:
        day = fake.date_between(datetime.date(1920, 1, 1), datetime.date(2030, 12, 31))
        phi = day.strftime(draw(st.sampled_from(DATE_FORMS)))
        context = ctx(dates=(day,))
        forms = [phi]
    template = draw(st.sampled_from(TEMPLATES))
    text = template.format(desc=draw(st.sampled_from(DESCRIPTIONS)), phi=phi,
                           desc2=draw(st.sampled_from(DESCRIPTIONS)))
    return text, context, forms


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted())
def test_planted_header_values_never_survive(case: tuple[str, HeaderContext, list[str]]) -> None:
    text, context, forms = case
    out = clean_text(text, context).text
    for value in forms:
        assert not _survives(value, out), "a planted header value survived cleaning"


CLINICAL_WORDS = [
    "CT", "MRI", "CHEST", "HEAD", "BRAIN", "ABDOMEN", "PELVIS", "AXIAL", "CORONAL", "SAGITTAL",
    "T1", "T2", "FLAIR", "DWI", "ADC", "W/WO", "WITH", "WITHOUT", "CONTRAST", "LEFT", "RIGHT",
    "KNEE", "SHOULDER", "SPINE", "LUMBAR", "CERVICAL", "PA", "AP", "LATERAL", "VIEWS",
    "PORTABLE", "UPRIGHT", "1.25MM", "5MM", "120KV", "512x512", "C2-C3", "L4-L5", "BONE",
    "LUNG", "WINDOW", "ANGIO", "LOCALIZER", "SCOUT", "PROTOCOL", "ROUTINE", "FOLLOW", "UP",
    "NODULE", "MASS", "STABLE", "PRIOR", "COMPARE", "and", "of", "the", "normal", "mild",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(CLINICAL_WORDS), min_size=1, max_size=10))
def test_clinical_words_survive_when_no_phi_is_present(words: list[str]) -> None:
    text = " ".join(words)
    assert clean_text(text, EMPTY).text == text


# --- performance sanity (loose bound for a slow CI machine) --------------------------------

def test_default_tagger_is_built_once() -> None:
    assert default_tagger() is default_tagger()


def test_tagging_a_thousand_descriptions_is_fast() -> None:
    context = ctx(names=("Doe^Johnathan",), ids=("MRN8675309", "ACC24681357"),
                  dates=(datetime.date(1945, 3, 16), JAN5),
                  institutions=("Saint Elsewhere Hospital",))
    texts = [CLINICAL_TEXTS[i % len(CLINICAL_TEXTS)] + f" {i}" for i in range(1000)]
    default_tagger()  # built outside the measured loop
    start = time.perf_counter()
    for text in texts:
        clean_text(text, context)
    assert time.perf_counter() - start < 5.0
