"""The header tagger's cheap prefilter never hides a match of the full regexes."""

from __future__ import annotations

from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text import HeaderContext
from pipeline.text.header import _matcher, _may_match, _uids
from pipeline.text.spans import fold

_FAKE = Faker(["en_US", "de_DE", "fr_FR", "es_ES"])
_FAKE.seed_instance(7)
NAMES = [_FAKE.name() for _ in range(200)]
COMPANIES = [_FAKE.company() for _ in range(100)]
ADDRESSES = [_FAKE.address().replace("\n", ", ") for _ in range(100)]
PHONES = [_FAKE.phone_number() for _ in range(50)]
SEPARATORS = st.sampled_from([" ", "^", ", ", "-", ".", "  ", "/", "#", ""])


def _regex_hits(text: str, context: HeaderContext) -> bool:
    matcher = _matcher(context)
    folded = fold(text)
    return any(regex.search(folded) for regex, _ in matcher.regexes) or any(
        uid in folded for uid in _uids(context)
    )


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    company=st.sampled_from(COMPANIES),
    address=st.sampled_from(ADDRESSES),
    phone=st.sampled_from(PHONES),
    patient_id=st.from_regex(r"[A-Z]{0,3}0{0,2}[0-9]{3,8}", fullmatch=True),
    pick=st.integers(min_value=0, max_value=4),
    sep=SEPARATORS,
    case=st.sampled_from([str.upper, str.lower, str.title, str]),
    noise=st.text(alphabet="abcdefghij XYZ0123456789.,-", max_size=20),
)
def test_prefilter_lets_through_every_text_a_header_regex_matches(
    name, company, address, phone, patient_id, pick, sep, case, noise
):
    family, _, given_name = name.partition(" ")
    context = HeaderContext(
        names=frozenset(p.upper() for p in name.replace(".", " ").split() if len(p) >= 2),
        ids=frozenset({patient_id}),
        institutions=frozenset({company.upper()}),
        other=frozenset({address.upper(), phone.upper()}),
    )
    planted = [
        f"{given_name}{sep}{family}",
        sep.join(patient_id),
        company,
        address.split(",")[0],
        phone,
    ][pick]
    text = f"{noise} {case(planted)} {noise}"
    if _regex_hits(text, context):
        assert _may_match(text, context)


def test_prefilter_rejects_unrelated_clinical_text():
    context = HeaderContext(
        names=frozenset({"KILDARE", "LEONARD"}), ids=frozenset({"MRN8675309"}),
        institutions=frozenset({"SAINT ELSEWHERE HOSPITAL"}),
    )
    assert not _may_match("CT CHEST WITH CONTRAST", context)
    assert _may_match("seen by kildare", context)
    assert _may_match("MRN 867-5309", context)
