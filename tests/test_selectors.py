"""Behaviour of profile tag selectors: parsing, matching and error messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.selectors import SPECIFICITY, VALID_VRS, format_tag, is_private, parse_selector

tags = st.integers(min_value=0, max_value=0xFFFFFFFF)
vrs = st.sampled_from(sorted(VALID_VRS))


# --- forms that parse -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "tag"),
    [
        ("PatientName", "tag", 0x00100010),
        ("PatientID", "tag", 0x00100020),
        ("StudyInstanceUID", "tag", 0x0020000D),
        ("PixelData", "tag", 0x7FE00010),
        ("(0010,0010)", "tag", 0x00100010),
        ("(7fe0,0010)", "tag", 0x7FE00010),
        ("(0029,1010)", "tag", 0x00291010),
        ("  PatientName  ", "tag", 0x00100010),
    ],
)
def test_keyword_and_tag_selectors_select_exactly_one_tag(text: str, kind: str, tag: int) -> None:
    selector = parse_selector(text)
    assert selector.kind == kind
    assert selector.tag == tag
    assert selector.specificity == SPECIFICITY["tag"]
    assert selector.matches(tag, "LO", None)
    assert not selector.matches(tag + 1, "LO", None)
    assert not selector.matches(tag ^ 0x00010000, "LO", None)


def test_keyword_and_numeric_tag_are_the_same_selection() -> None:
    assert parse_selector("PatientBirthDate").tag == parse_selector("(0010,0030)").tag


@pytest.mark.parametrize(
    ("text", "matching", "not_matching"),
    [
        ("(0010,xxxx)", [0x00100010, 0x00100000, 0x0010FFFF, 0x00102160], [0x00200010, 0x00110010]),
        (
            "(50xx,xxxx)",
            [0x50000000, 0x50FF3000, 0x50123456, 0x5001ABCD],
            [0x51000000, 0x60003000, 0x05000000],
        ),
        ("(60xx,3000)", [0x60003000, 0x60023000, 0x60FF3000], [0x60003001, 0x60004000, 0x61003000]),
        ("(60XX,3000)", [0x601E3000], [0x601E3100]),
        ("(0029,xx10)", [0x00291010, 0x00291110, 0x00290010], [0x00291011, 0x00281010]),
    ],
)
def test_masks_match_any_hex_digit_where_x_stands(
    text: str, matching: list[int], not_matching: list[int]
) -> None:
    selector = parse_selector(text)
    assert selector.kind == "mask"
    assert selector.specificity == SPECIFICITY["mask"]
    for tag in matching:
        assert selector.matches(tag, "UN", None), format_tag(tag)
    for tag in not_matching:
        assert not selector.matches(tag, "UN", None), format_tag(tag)


@given(tag=tags)
def test_mask_with_only_x_matches_every_tag(tag: int) -> None:
    assert parse_selector("(xxxx,xxxx)").matches(tag, "UN", None)


@given(group=st.integers(0, 0xFF), element=st.integers(0, 0xFFFF))
def test_50xx_mask_matches_exactly_the_50_groups(group: int, element: int) -> None:
    selector = parse_selector("(50xx,xxxx)")
    assert selector.matches((0x5000 | group) << 16 | element, "OB", None)
    assert not selector.matches((0x5100 | group) << 16 | element, "OB", None)


@given(tag=tags, vr=vrs)
def test_vr_selector_matches_public_elements_by_vr_only(tag: int, vr: str) -> None:
    selector = parse_selector("VR:PN")
    assert selector.kind == "vr"
    assert selector.specificity == SPECIFICITY["vr"]
    assert selector.matches(tag, vr, None) == (vr == "PN" and not (tag >> 16) & 1)


@pytest.mark.parametrize("vr", ["DA", "DT", "TM", "PN", "UI", "SQ", "OB", "UN", "LO", "UT"])
def test_every_common_vr_is_a_valid_vr_selector(vr: str) -> None:
    assert parse_selector(f"VR:{vr}").vr == vr


def test_private_selector_matches_odd_groups_only() -> None:
    selector = parse_selector("private")
    assert selector.kind == "private"
    assert selector.specificity == SPECIFICITY["private"]
    assert selector.matches(0x00291010, "UN", "ANY")
    assert selector.matches(0x00091001, "LO", None)
    assert not selector.matches(0x00100010, "PN", None)
    assert not selector.matches(0x7FE00010, "OB", None)


@given(tag=tags)
def test_is_private_is_the_odd_group_test(tag: int) -> None:
    assert is_private(tag) == ((tag >> 16) % 2 == 1)
    assert parse_selector("private").matches(tag, "UN", None) == is_private(tag)


# --- private elements by creator --------------------------------------------------------

CSA = "SIEMENS CSA HEADER"


def test_private_element_selector_parses_group_offset_and_creator() -> None:
    selector = parse_selector(f"(0029,xx10)@{CSA}")
    assert selector.kind == "private-element"
    assert selector.creator == CSA
    assert selector.tag >> 16 == 0x0029
    assert selector.tag & 0xFF == 0x10
    assert selector.specificity == SPECIFICITY["private-element"]


@pytest.mark.parametrize(
    ("tag", "note"),
    [
        (0x00291010, "block 10, creator at (0029,0010)"),
        (0x00291110, "block 11, creator at (0029,0011)"),
        (0x0029FF10, "block FF, creator at (0029,00FF)"),
    ],
)
def test_private_element_selector_is_independent_of_the_block_number(tag: int, note: str) -> None:
    assert parse_selector(f"(0029,xx10)@{CSA}").matches(tag, "OB", CSA), note


@pytest.mark.parametrize(
    ("tag", "creator", "why"),
    [
        (0x00291010, "SIEMENS MEDCOM HEADER", "other creator"),
        (0x00291010, None, "no creator"),
        (0x00291020, CSA, "other element offset"),
        (0x00191010, CSA, "other group"),
        (0x00290010, CSA, "the private creator element itself"),
        (0x00290110, CSA, "element below 0x1000 is not a private data element"),
        (0x00281010, CSA, "even group"),
    ],
)
def test_private_element_selector_rejects_other_elements(
    tag: int, creator: str | None, why: str
) -> None:
    assert not parse_selector(f"(0029,xx10)@{CSA}").matches(tag, "OB", creator), why


def test_private_element_creator_is_compared_without_padding() -> None:
    selector = parse_selector("(0029,xx10)@ SIEMENS CSA HEADER ")
    assert selector.creator == CSA
    assert selector.matches(0x00291010, "OB", CSA + " ")


def test_private_element_creator_is_case_sensitive() -> None:
    assert not parse_selector(f"(0029,xx10)@{CSA}").matches(0x00291010, "OB", CSA.lower())


@given(block=st.integers(0x10, 0xFF), offset=st.integers(0, 0xFF))
def test_private_element_matches_its_offset_in_every_block(block: int, offset: int) -> None:
    selector = parse_selector(f"(0009,xx{offset:02X})@ACME 1.0")
    tag = 0x00090000 | block << 8 | offset
    assert selector.matches(tag, "LO", "ACME 1.0")
    assert not selector.matches(tag ^ 0x01, "LO", "ACME 1.0")


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("PatientNme", "unknown DICOM keyword 'PatientNme'"),
        ("patientname", "unknown DICOM keyword"),
        ("VR:XX", "unknown VR 'XX'"),
        ("VR:pn", "unknown VR 'pn'"),
        ("VR:", "unknown VR"),
        ("(0010,xx10)@SOME CREATOR", "even (public) group"),
        ("(0028,xx01)@ACME", "even (public) group"),
        ("", "empty selector"),
        ("   ", "empty selector"),
        ("(0010,001)", "cannot read selector"),
        ("(0010,00100)", "cannot read selector"),
        ("(0010 0010)", "cannot read selector"),
        ("0010,0010", "cannot read selector"),
        ("(00g0,0010)", "cannot read selector"),
        ("(0010,yyyy)", "cannot read selector"),
        ("(0029,xx10)@", "cannot read selector"),
        ("Patient Name", "cannot read selector"),
        ("1PatientName", "cannot read selector"),
        ("privat", "unknown DICOM keyword"),
        ("PRIVATE", "unknown DICOM keyword"),
    ],
)
def test_invalid_selectors_raise_value_error_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_selector(text)
    assert fragment in str(info.value)


def test_unreadable_selector_message_lists_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        parse_selector("@@@")
    message = str(info.value)
    for form in ("keyword", "(gggg,eeee)", "(0010,xxxx)", "VR:XX", "@CREATOR", "private"):
        assert form in message


@given(text=st.text(max_size=30))
def test_parse_selector_either_parses_or_raises_value_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except ValueError:
        return
    assert selector.kind in {"tag", "mask", "vr", "private-element", "private"}
    assert selector.specificity == SPECIFICITY[selector.kind]


@given(tag=tags)
def test_format_tag_round_trips_through_the_tag_selector(tag: int) -> None:
    text = format_tag(tag)
    assert len(text) == 11
    assert parse_selector(text).tag == tag
