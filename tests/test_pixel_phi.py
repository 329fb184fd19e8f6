"""Which OCR'd text boxes :func:`pipeline.pixel.phi.decide` flags as PHI."""

from __future__ import annotations

import datetime
import logging
import random
from pathlib import Path

import pytest
from faker import Faker
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.pixel.phi import Finding, decide, ocr_variants
from pipeline.pixel.types import Recognition, TextBox
from pipeline.registry import ModelRef
from pipeline.text import CompositeTagger, HeaderContext, PhiSpan, default_tagger
from pipeline.text.context import name_parts

BOX = TextBox(10, 20, 110, 40, 0.95)
DAY = datetime.date(2024, 1, 5)
CONTEXT = HeaderContext(
    names=frozenset(name_parts("DOE^JOHN")),
    ids=frozenset({"12345678"}),
    dates=frozenset({DAY}),
    institutions=frozenset({"ST ELSEWHERE HOSPITAL"}),
)
EMPTY = HeaderContext()


def one(text: str, context: HeaderContext = CONTEXT, **kwargs: object) -> Finding | None:
    """Decide on a single box reading ``text``; return its finding or None."""
    found = decide([BOX], [Recognition(text, 0.9)], context, **kwargs)  # type: ignore[arg-type]
    assert len(found) <= 1
    return found[0] if found else None


# --- corner-block lines and OCR noise -------------------------------------------------------

@pytest.mark.parametrize(("text", "entity"), [
    ("DOE^JOHN", "NAME"),
    ("DOEAJOHN", "NAME"),       # ^ read as A
    ("D0E JOHN", "NAME"),       # 0 for O
    ("DOE~JOHN", "NAME"),
    ("DOE-JOHN", "NAME"),
    ("DOEJOHN", "NAME"),        # ^ dropped
    ("doe john", "NAME"),
    ("JOHN D0E", "NAME"),
    ("D0EAJ0HN", "NAME"),
    ("MRN 12345678", "ID"),
    ("MRN12345678", "ID"),
    ("ID: 12345678", "ID"),
    ("MRN I2345G78", "ID"),     # 1 read as I, 6 read as G
    ("1234S678", "ID"),
    ("05/01/2024", "DATE"),
    ("01/05/2024", "DATE"),
    ("2024.01.05", "DATE"),
    ("05-JAN-2024", "DATE"),
    ("05JAN2024", "DATE"),
    ("20240105", "DATE"),
    ("O5/O1/2O24", "DATE"),     # O for 0
    ("2O24-0I-O5", "DATE"),
    ("ST ELSEWHERE HOSP", "INSTITUTION"),
    ("ST ELSEWHERE HOSPITAL", "INSTITUTION"),
    ("STELSEWHEREHOSPITAL", "INSTITUTION"),
    ("ELSEWHERE", "INSTITUTION"),
])
def test_header_values_are_found_through_ocr_noise(text: str, entity: str) -> None:
    finding = one(text)
    assert finding is not None
    assert finding.entity == entity
    assert finding.source == "header"


@pytest.mark.parametrize(("text", "day"), [
    ("17/2018", datetime.date(2018, 7, 17)),       # "07/17/2018" with its start cut off
    ("07.08.195", datetime.date(1950, 8, 7)),      # "07.08.1950" with its end cut off
    ("/10/1993", datetime.date(1993, 10, 7)),      # "Born 07/10/1993"
    ("Dct 02 1943", datetime.date(1943, 10, 2)),   # "Oct 02 1943", O read as D
])
def test_a_header_date_cut_short_is_still_that_date(text: str, day: datetime.date) -> None:
    finding = one(text, HeaderContext(dates=frozenset({day})))
    assert finding is not None and (finding.entity, finding.source) == ("DATE", "header")


@pytest.mark.parametrize("text", ["DOB 2±.08.1985", "D.O.B. O5.O6.l983", "Born: 7/1O/93?",
                                  "BIRTH DATE ##.12.1950", "dob:1950"])
def test_a_birth_date_label_makes_its_value_a_date_however_it_reads(text: str) -> None:
    finding = one(text, EMPTY)
    assert finding is not None and finding.entity == "DATE"


@pytest.mark.parametrize("text", ["DOB", "DOB: --", "Born 12", "ADOBE 1234", "DOBUTAMINE 2000 MG"])
def test_a_birth_date_label_without_a_date_is_not_one(text: str) -> None:
    finding = one(text, EMPTY)
    assert finding is None or finding.entity != "DATE"


@pytest.mark.parametrize(("text", "entity"), [
    ("Pt: Saah Gaci", "NAME"),          # "SARAH GARCIA" at 7 px, three letters lost
    ("Patient: JESSCA WAGNF", "NAME"),
    ("Patient Name; Qwv Zx", "NAME"),
    ("NAME: Jhn Sm1th", "NAME"),
    ("ame: /ma Pode", "NAME"),          # "Name: Anna Poole" at 7 px, first letter lost
    ("MRN 92B5584O1", "ID"),            # 8 read as B, 0 as O
    ("Acc# RA2985", "ID"),
    ("Accession No: E7660", "ID"),
    ("PID 53l7", "ID"),
    ("Ref: Daid Ned", "NAME"),          # the referring physician's "DAVID NEAL" at 7 px
    ("Referring: Jo Smth", "NAME"),
    ("Ref. Phys: Xy Zz", "NAME"),
])
def test_a_patient_label_makes_its_value_phi_however_it_reads(text: str, entity: str) -> None:
    finding = one(text, EMPTY)
    assert finding is not None and finding.entity == entity


@pytest.mark.parametrize("text", [
    "Patient Position: HFS", "Protocol Name: T2 FSE", "Pt: 45 Y", "Patient:", "Outpatient: Yes",
    "SID 1000", "Ex: 4521", "ACCEL 1234", "MRN", "ID: 12", "Acc: --",
    "Ref: 2.5", "Ref Line", "Preferred: yes", "REF: L", "Frame: 12 of 30", "ame: 12",
    "Game: on",
])
def test_a_label_without_its_value_or_inside_another_word_is_not_phi(text: str) -> None:
    assert one(text, EMPTY) is None


NEAR = HeaderContext(
    names=frozenset(name_parts("MORALES^NICOLE")),
    institutions=frozenset({"SUTTON CLINIC", "CHEN CLINIC"}),
    other=frozenset({"555 VALENTINE CAUSEWAY", "9929 SIMON WALK, RICHARDVILLE"}),
)


@pytest.mark.parametrize(("text", "entity"), [
    ("SUTIONCUNIC", "INSTITUTION"),     # "SUTTON CLINIC": two errors in 12 letters
    ("SUTION", "INSTITUTION"),          # one error in the distinctive word
    ("INCLINIC", "INSTITUTION"),        # "CHEN CLINIC" cut short at the start, E read I
    ("TTON CLINI", "INSTITUTION"),      # cut at both ends
    ("Pt: MORAIFS", "NAME"),            # one error in a 7-letter family name
    ("555 VALENTIME", "LOCATION"),      # an address word read with one error
    ("29 SINON WIALK", "LOCATION"),     # cut short at the start, two errors in 12 characters
])
def test_a_header_value_read_with_an_error_or_cut_short_is_still_that_value(
        text: str, entity: str) -> None:
    finding = one(text, NEAR)
    assert finding is not None and (finding.entity, finding.source) == (entity, "header")
    assert finding.confidence < 0.8  # found within edits: redacted, and sent for review


CUT_IDS = HeaderContext(ids=frozenset({"E269212827", "B8031078", "80207036"}))


@pytest.mark.parametrize("text", [
    "PIDB8031",           # "PID B8031078": the label glued on, the line cut short
    "B8O31",              # a 5-character prefix, 0 read as O
    "Accession:E269",     # after an ID label, 4 characters do: the rest is a box apart
    "Acc 2827",           # a suffix after a label
])
def test_a_header_id_cut_short_is_still_that_id(text: str) -> None:
    finding = one(text, CUT_IDS)
    assert finding is not None and (finding.entity, finding.source) == ("ID", "header")
    assert finding.confidence < 0.8  # redacted, and sent for review


@pytest.mark.parametrize("text", ["2827", "W 2827", "8020", "kV 8020", "B803", "Series 8031",
                                  "TR 8020 TE 70"])
def test_a_few_digits_of_a_header_id_without_a_label_are_not_it(text: str) -> None:
    assert one(text, CUT_IDS) is None


@pytest.mark.parametrize(("text", "name"), [
    ("Patient Gaett Kriht", "KNIGHT^GARRETT"),  # 8 px, colon lost, two errors in each
    ("Kriht, Gaett", "KNIGHT^GARRETT"),
    ("Patient Ncol Mraes", "MORALES^NICOLE"),
])
def test_two_name_parts_read_with_two_errors_each_are_the_name(text: str, name: str) -> None:
    context = HeaderContext(names=frozenset(name_parts(name)))
    finding = one(text, context)
    assert finding is not None and (finding.entity, finding.source) == ("NAME", "header")
    assert finding.confidence < 0.8  # found within edits: redacted, and sent for review


@pytest.mark.parametrize("text", [
    "Ncol",                  # one name part alone, two errors: too far to be taken for it
    "Ncol Ncol",             # the same part twice
    "Patient Ncol",
    "Patient Position HFS",
    "Ncol Protocol",
    "Ncol Mra",              # a word under four letters
])
def test_one_name_part_read_with_two_errors_is_not_the_name(text: str) -> None:
    assert one(text, HeaderContext(names=frozenset(name_parts("MORALES^NICOLE")))) is None


@pytest.mark.parametrize("text", [
    "CLINIC", "CLINICAL", "CORONAL", "Clinic hours", "NICE", "MORAL", "SUTURE", "VALENCIA",
    "W 400 L 40", "CENTRAL LINE", "ON THE CLINIC", "5 SALINE CAUSE",
])
def test_generic_words_and_short_likenesses_are_not_near_matches(text: str) -> None:
    assert one(text, NEAR) is None


@pytest.mark.parametrize("text", ["SL 2018", "07/17", "TR 4000 TE 90", "12:30:45"])
def test_too_little_of_a_header_date_is_not_a_match(text: str) -> None:
    assert one(text, HeaderContext(dates=frozenset({datetime.date(2018, 7, 17)}))) is None


@pytest.mark.parametrize("text", [
    "W 400 L 40", "W400L40", "120 kV", "kV 120", "mAs 200", "5 cm", "R", "L", "A", "P", "H",
    "F", "AXIAL", "SE 3 IM 12", "IMA 12", "1/2", "SCANNER", "HEAD FIRST SUPINE", "CHEST",
])
def test_clinical_overlays_are_not_findings(text: str) -> None:
    assert one(text) is None
    assert one(text, EMPTY) is None


@pytest.mark.parametrize(("text", "entity"), [
    ("SMITH^JANE", "NAME"),     # dictionary, no header
    ("SMITHAJANE", "NAME"),     # ^ read as A, names from the dictionary
    ("MRN 98765432", "ID"),     # pattern
    ("987654", "ID"),           # safety: 5+ digit run
    ("12345 mm", "ID"),         # safety wins over the unit
    ("03/07/1961", "DATE"),
])
def test_phi_without_header_match(text: str, entity: str) -> None:
    finding = one(text, EMPTY)
    assert finding is not None
    assert finding.entity == entity
    assert finding.source in ("pattern", "dictionary")


@pytest.mark.parametrize(("context", "text"), [
    (HeaderContext(names=frozenset({"AXIAL"})), "AXIAL"),
    (HeaderContext(ids=frozenset({"1234"})), "IMA 1234"),
    (HeaderContext(names=frozenset({"CHEST"})), "CHE5T"),
])
def test_header_match_beats_the_overlay_veto(context: HeaderContext, text: str) -> None:
    finding = one(text, context)
    assert finding is not None
    assert finding.source == "header"


def test_lone_name_part_inside_a_clinical_word_is_ignored() -> None:
    context = HeaderContext(names=frozenset({"ANN"}))
    assert one("SCANNER", context) is None
    assert one("ANN", context) is not None
    assert one("XANNQ", context) is not None  # not a clinical word: flagged (safety)


def test_short_name_parts_and_ids_are_not_matched_as_substrings() -> None:
    context = HeaderContext(names=frozenset({"LI"}), ids=frozenset({"123"}))
    assert one("CLINICAL 1230", context) is None


# --- confidence -----------------------------------------------------------------------------

def test_confidence_combines_match_type_and_recognizer_score() -> None:
    exact = decide([BOX], [Recognition("DOE^JOHN", 0.8)], CONTEXT)[0]
    folded = decide([BOX], [Recognition("D0EAJ0HN", 0.8)], CONTEXT)[0]
    assert exact.confidence == pytest.approx(0.99 * 0.8)
    assert folded.confidence == pytest.approx(0.9 * 0.8)


# --- modes, entity filtering, injection -----------------------------------------------------

TEXTS = ["DOE^JOHN", "AXIAL", "", "05/01/2024", "   "]


def recs(texts: list[str]) -> tuple[list[TextBox], list[Recognition]]:
    boxes = [TextBox(0, i * 10, 50, i * 10 + 8, 0.9, frame=i) for i in range(len(texts))]
    return boxes, [Recognition(t, 0.7 if t else 0.0) for t in texts]


def test_all_text_mode_flags_every_box_with_text() -> None:
    boxes, texts = recs(TEXTS)
    found = decide(boxes, texts, CONTEXT, mode="all-text")
    assert [f.box.frame for f in found] == [0, 1, 3]
    assert [f.entity for f in found] == ["NAME", "OTHER", "DATE"]
    assert {f.source for f in found} == {"all-text"}
    assert all(f.confidence == pytest.approx(0.7) for f in found)


def test_none_mode_flags_nothing() -> None:
    boxes, texts = recs(TEXTS)
    assert decide(boxes, texts, CONTEXT, mode="none") == []


def test_phi_only_mode_keeps_order_and_skips_overlays() -> None:
    boxes, texts = recs(TEXTS)
    found = decide(boxes, texts, CONTEXT)
    assert [(f.box.frame, f.entity) for f in found] == [(0, "NAME"), (3, "DATE")]


@pytest.mark.parametrize(("mode", "entities", "expected"), [
    ("phi-only", frozenset({"DATE"}), [3]),
    ("phi-only", frozenset({"NAME", "ID"}), [0]),
    ("phi-only", frozenset(), []),
    ("all-text", frozenset({"NAME"}), [0]),
    ("all-text", frozenset({"OTHER", "DATE"}), [1, 3]),
])
def test_entity_filter(mode: str, entities: frozenset[str], expected: list[int]) -> None:
    boxes, texts = recs(TEXTS)
    found = decide(boxes, texts, CONTEXT, mode=mode, entities=entities)  # type: ignore[arg-type]
    assert [f.box.frame for f in found] == expected


def test_entity_filter_picks_the_allowed_entity_of_a_mixed_box() -> None:
    finding = one("DOE^JOHN 05/01/2024", entities=frozenset({"DATE"}))
    assert finding is not None and finding.entity == "DATE"


class _Everything:
    """A tagger that calls every text a phone number."""

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        return (PhiSpan(0, len(text), "PHONE", 0.5, "model"),) if text else ()


def test_injected_tagger_is_used() -> None:
    finding = one("HELLO WORLD", EMPTY, tagger=_Everything())
    assert finding is not None
    assert (finding.entity, finding.source) == ("PHONE", "model")
    assert one("HELLO WORLD", EMPTY) is None


class _LetterReader:
    """Tags ``DRGO`` as a name: what a model makes of ``DR60`` with 6 and 0 read as
    letters. With ``model_ref`` it says it runs a model."""

    def __init__(self, model: bool) -> None:
        if model:
            self.model_ref = ModelRef(Path("."), "veil-phi-ner", "1", "shipped", "0" * 64)

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        at = text.find("DRGO")
        return (PhiSpan(at, at + 4, "NAME", 0.9, "model"),) if at >= 0 else ()


@pytest.mark.parametrize(("model", "flagged"), [(True, False), (False, True)])
def test_a_model_reads_the_text_as_recognised_and_rules_read_its_ocr_variants(
        model: bool, flagged: bool) -> None:
    tagger = CompositeTagger([*default_tagger().taggers, _LetterReader(model)])
    assert (one("20dB/DR60", EMPTY, tagger=tagger) is not None) is flagged
    assert one("20dB/DRGO", EMPTY, tagger=tagger) is not None  # as read: the model sees it


def test_mismatched_lengths_and_bad_mode_raise_without_text() -> None:
    with pytest.raises(ValueError) as info:
        decide([BOX, BOX], [Recognition("DOE^JOHN", 0.9)], CONTEXT)
    assert "DOE" not in str(info.value)
    with pytest.raises(ValueError):
        decide([BOX], [Recognition("x", 0.9)], CONTEXT, mode="some")  # type: ignore[arg-type]


def test_text_is_never_logged_nor_in_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    found = decide([BOX], [Recognition("DOE^JOHN 12345678", 0.9)], CONTEXT)
    assert found
    assert "DOE" not in repr(found) and "12345678" not in repr(found)
    assert "DOE" not in caplog.text and "12345678" not in caplog.text


# --- ocr_variants ---------------------------------------------------------------------------

def test_ocr_variants() -> None:
    variants = ocr_variants("MRN 1234S678 D0E~JOHN")
    assert variants[0] == "MRN 1234S678 D0E~JOHN"
    assert "MRN 12345678 D0E~JOHN" in variants
    assert "MRN 1234S678 D0E^JOHN" in variants
    assert any("DOE~JOHN" in v for v in variants)
    assert ocr_variants("AXIAL") == ["AXIAL"]


@pytest.mark.parametrize(("text", "entity"), [
    ("22.08. 1885", "DATE"),      # 1985 at 7 px: a space read after the separator, 9 as 8
    ("22 / 08 / 1885", "DATE"),
    ("AXIALMRN:1431", "ID"),      # two boxes read as one, the space and the ID's end lost
    ("CORONALMRN 1431", "ID"),
])
def test_spaced_separators_and_glued_labels_are_read_through(text: str, entity: str) -> None:
    finding = one(text, EMPTY)
    assert finding is not None and finding.entity == entity


@pytest.mark.parametrize("text", [
    "Im: 23 / 120", "1 / 2", "5 - 10 cm", "12 . 5 mm", "0.5 - 1.5", "TR 4000 / TE 90",
    "ADOBE 12", "AXIALDOB", "W1500 -600",
])
def test_overlays_with_spaced_separators_or_label_letters_stay_overlays(text: str) -> None:
    assert one(text, EMPTY) is None


# --- Hypothesis: Faker header values rendered through random OCR corruption ------------------

#: Confusions the OCR makes, both ways. Confusions outside these classes (say E read as F)
#: are not modelled: no character-level rule can tell them from a different value.
CONFUSIONS = {"O": "0", "0": "O", "I": "1l|", "1": "Il|", "L": "1|", "S": "5", "5": "S",
              "B": "8", "8": "B", "Z": "2", "2": "Z", "G": "6", "6": "G"}
CARETS = ["^", "A", "~", "-", " ", ""]


def corrupt(text: str, rng: random.Random) -> str:
    """Render ``text`` as a noisy OCR would: confusions, ^ misread, spaces dropped, case."""
    out: list[str] = []
    for ch in text:
        if ch == "^":
            out.append(rng.choice(CARETS))
        elif ch == " " and rng.random() < 0.5:
            continue
        elif ch.upper() in CONFUSIONS and rng.random() < 0.3:
            out.append(rng.choice(CONFUSIONS[ch.upper()]))
        else:
            out.append(ch.lower() if rng.random() < 0.3 else ch)
    return "".join(out)


FORMATS = ["%Y%m%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y-%m-%d", "%d-%b-%Y", "%Y.%m.%d",
           "%d %b %Y"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["name", "id", "date"]))
def test_corrupted_header_values_are_always_flagged(seed: int, kind: str) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    if kind == "name":
        family, given_name = fake.last_name().upper(), fake.first_name().upper()
        # a name with no part of 3+ characters is not matched (too many coincidences)
        assume(max(len(family), len(given_name)) >= 3)
        context = HeaderContext(names=frozenset(name_parts(f"{family}^{given_name}")))
        line = rng.choice([f"{family}^{given_name}", f"{given_name} {family}"])
    elif kind == "id":
        value = fake.bothify(rng.choice(["########", "??######", "#######?", "####-####"]))
        context = HeaderContext(ids=frozenset({value.upper()}))
        line = rng.choice(["", "MRN ", "ID: ", "PID"]) + value
    else:
        day = fake.date_between(datetime.date(1920, 1, 1), datetime.date(2030, 12, 31))
        context = HeaderContext(dates=frozenset({day}))
        line = day.strftime(rng.choice(FORMATS)).upper()
    text = corrupt(line, rng)
    found = decide([BOX], [Recognition(text, 0.8)], context)
    assert found, f"missed a {kind} (seed {seed})"
    assert found[0].entity == {"name": "NAME", "id": "ID", "date": "DATE"}[kind]



def test_pieces_are_cut_from_ids_not_uids() -> None:
    """An organisation's UID root is shared by every study: UIDs give no pieces."""
    from pipeline.pixel.phi import _id_pieces

    keys, pieces = _id_pieces(frozenset({"1.2.840.113619.2.55.3.12345", "B8031078"}))
    assert keys == ("BBO3IO7B",)  # folded: 8 as B, 0 as O, 1 as I
    assert ("BBO3I", True) in pieces  # 5 characters, 4 digits: enough alone
    assert ("BBO3", False) in pieces  # 4 characters, 3 digits: after a label only
    assert all(not p.startswith("IZB4O") for p, _ in pieces)
