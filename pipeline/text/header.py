"""Tagging the file's own header values (certain PHI) wherever they recur in text."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.text.context import HeaderContext
from pipeline.text.dates import find_dates
from pipeline.text.spans import PhiSpan, absorb_initials, fold, merge_overlapping
from pipeline.text.vocabulary import clinical_vocabulary

logger = logging.getLogger(__name__)

_CONFIDENCE = 0.99
_LETTER_BEFORE = r"(?<![^\W\d_])"
_LETTER_AFTER = r"(?![^\W\d_])"
_NAME_SEP = r"[\s^=,.'’-]+"
_UNSPACED = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_ID_SEPARATORS = re.compile(r"[-\s./_#:]+")
_ID_GAP = r"[-\s./_#]?"
_WORDS = re.compile(r"[^\W_]+")
#: Words of institution names that identify nothing on their own.
INSTITUTION_WORDS = frozenset({
    "HOSPITAL", "HOSPITALS", "HOSP", "MEDICAL", "MED", "MEDICINE", "CENTER", "CENTRE", "CTR",
    "CLINIC", "CLINICS", "CLINICAL", "HEALTH", "HEALTHCARE", "CARE", "UNIVERSITY", "UNIV",
    "COLLEGE", "SCHOOL", "INSTITUTE", "FOUNDATION", "GENERAL", "MEMORIAL", "COMMUNITY",
    "REGIONAL", "COUNTY", "CHILDREN", "CHILDRENS", "SAINT", "ST", "MOUNT", "MT", "DEPARTMENT",
    "DEPT", "RADIOLOGY", "IMAGING", "SYSTEM", "NETWORK", "GROUP", "ASSOCIATES", "PRACTICE",
    "INFIRMARY", "TRUST", "NHS", "KLINIKUM", "KLINIK", "CHU", "CENTRO", "OSPEDALE", "HOPITAL",
    "ZIEKENHUIS", "UNIVERSITAIR", "UNIVERSITY'S", "INC", "LLC", "LTD",
})
#: Words of postal addresses that identify nothing on their own.
ADDRESS_WORDS = frozenset({
    "STREET", "ST", "ROAD", "RD", "AVENUE", "AVE", "WAY", "LANE", "LN", "DRIVE", "DR",
    "BOULEVARD", "BLVD", "COURT", "CT", "PLACE", "PL", "SUITE", "STE", "APT", "APARTMENT",
    "UNIT", "FLOOR", "BUILDING", "BLDG", "NORTH", "SOUTH", "EAST", "WEST", "PO", "BOX", "CITY",
    "STATE", "COUNTY", "HIGHWAY", "HWY", "SQUARE", "SQ", "TERRACE", "PARKWAY", "PKWY",
})
_EQUIVALENTS = {
    "SAINT": r"(?:SAINT|ST\.?)", "ST": r"(?:SAINT|ST\.?)", "MOUNT": r"(?:MOUNT|MT\.?)",
    "MT": r"(?:MOUNT|MT\.?)", "CENTER": r"(?:CENTER|CENTRE|CTR\.?)",
    "CENTRE": r"(?:CENTER|CENTRE|CTR\.?)", "HOSPITAL": r"(?:HOSPITAL|HOSP\.?)",
    "UNIVERSITY": r"(?:UNIVERSITY|UNIV\.?)",
}


@dataclass(frozen=True)
class _Matcher:
    """The compiled regexes of one context."""

    regexes: tuple[tuple[re.Pattern[str], str], ...]


class HeaderValueTagger:
    """Tags the values of the file's own header (names, IDs, dates, institutions...).

    Matching is case- and accent-insensitive, on token boundaries, tolerant of PN
    separators (``^``, ``=``), of either name order, of dates in any supported
    format, and of IDs written with or without separators or leading zeros.
    The clinical vocabulary never protects a header name. Compiled matchers are
    cached per context.
    """

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the spans of ``text`` that repeat a value of ``context``."""
        if not text or context.empty:
            return ()
        folded = fold(text)
        spans: list[PhiSpan] = []
        if _may_match(text, context):
            matcher = _matcher(context)
            for regex, entity in matcher.regexes:
                spans.extend(
                    PhiSpan(m.start(), m.end(), entity, _CONFIDENCE, "header")
                    for m in regex.finditer(folded)
                )
            uids = _uids(context)
            if uids:
                spans.extend(_uid_spans(folded, uids))
        if context.dates and any(ch.isdigit() for ch in text):
            spans.extend(
                PhiSpan(c.start, c.end, "DATE", _CONFIDENCE, "header")
                for c in find_dates(folded, loose=True)
                if c.matches(context.dates)
            )
        if not spans:
            return ()
        return merge_overlapping(absorb_initials(folded, spans))


def _squash(text: str) -> str:
    """Upper-cased letters and digits only: every header match survives squashing."""
    return "".join(ch for ch in fold(text).upper().replace("ẞ", "SS") if ch.isalnum())


@functools.lru_cache(maxsize=256)
def _keys(context: HeaderContext) -> tuple[str, ...]:
    """Strings one of which every match of the context's regexes contains, squashed.

    A cheap superset test that lets most texts skip compiling and running the
    regexes of :func:`_matcher` (each match of a pattern built below contains,
    once squashed, the key derived here from the same value).
    """
    keys: set[str] = set()
    keys.update(_squash(name) for name in context.names if len(name) >= 2)
    for value in context.ids:
        canonical = _squash(value)
        stripped = canonical.lstrip("0")
        if len(canonical) >= 3:  # shorter IDs get no pattern (see _id_pattern)
            keys.add(stripped if len(stripped) >= 3 else canonical)
    for value in context.institutions:
        keys.update(_place_keys(value, INSTITUTION_WORDS, institution=True))
    for value in context.other:
        if _is_phone(value) and "@" not in value:
            keys.add(re.sub(r"\D", "", value))
        else:
            keys.add(_squash(value))
            keys.update(_place_keys(value, ADDRESS_WORDS, institution=False))
    return tuple(sorted(k for k in keys if k))


def _place_keys(value: str, generic: frozenset[str], *, institution: bool) -> set[str]:
    """Keys of the patterns :func:`_place_patterns` builds for one value."""
    words = _WORDS.findall(value.upper())
    if institution and not any(w not in generic for w in words):
        return set()
    keys = {_squash(value)}
    if not institution:
        keys.update(_squash(p) for p in re.split(r"[,^;\n\r]+", value) if len(p.strip()) >= 3)
    keys.update(w for w in words if w.isalpha() and len(w) >= 4 and w not in generic)
    return keys


def _may_match(text: str, context: HeaderContext) -> bool:
    """False only when no name, ID, institution or other value can match (see _keys)."""
    squashed = _squash(text)
    return any(key in squashed for key in _keys(context))


_UID = re.compile(r"\d+(?:\.\d+){3,}")
_UID_RUN = re.compile(r"(?<![\d.])\d[\d.]{8,}\d(?![\d.])")


def _uid_spans(text: str, uids: frozenset[str]) -> Iterator[PhiSpan]:
    for m in _UID_RUN.finditer(text):
        if m.group(0) in uids:
            yield PhiSpan(m.start(), m.end(), "ID", _CONFIDENCE, "header")


@functools.lru_cache(maxsize=256)
def _uids(context: HeaderContext) -> frozenset[str]:
    """The instance UIDs among the context's IDs (matched whole, not by a regex)."""
    return frozenset(v for v in context.ids if _UID.fullmatch(v))


def _matcher(context: HeaderContext) -> _Matcher:
    """The compiled regexes for ``context``: those of its names, IDs other than UIDs,
    institutions and other values, which the slices of one series share (their UIDs,
    dates and times differ), so a series compiles them once."""
    uids = _uids(context)
    return _compile(HeaderContext(names=context.names, ids=context.ids - uids,
                                  institutions=context.institutions, other=context.other))


@functools.lru_cache(maxsize=256)
def _compile(context: HeaderContext) -> _Matcher:
    """Compile the regexes for one context of no UIDs and no dates (cached)."""
    vocabulary = clinical_vocabulary()
    regexes: list[tuple[re.Pattern[str], str]] = []

    def add(alternatives: Iterable[str], entity: str, before: str, after: str) -> None:
        alts = sorted({a for a in alternatives if a}, key=len, reverse=True)
        if alts:
            body = "|".join(alts)
            regexes.append((re.compile(f"{before}(?:{body}){after}", re.IGNORECASE), entity))

    names = [fold(n) for n in context.names if len(n) >= 2]
    add((_phrase(n, _NAME_SEP) for n in names if not _UNSPACED.search(n)),
        "NAME", _LETTER_BEFORE, _LETTER_AFTER)
    # scripts written without spaces between words (CJK): no token boundary to require
    add((_phrase(n, _NAME_SEP) for n in names if _UNSPACED.search(n)), "NAME", "", "")
    for value in context.ids:
        pattern = _id_pattern(fold(value))
        if pattern is not None:
            regexes.append((re.compile(pattern, re.IGNORECASE), "ID"))
    inst = [fold(v) for v in context.institutions]
    add(_place_patterns(inst, INSTITUTION_WORDS, vocabulary, institution=True),
        "INSTITUTION", _LETTER_BEFORE, _LETTER_AFTER)
    emails = [v for v in context.other if "@" in v]
    phones = [v for v in context.other if "@" not in v and _is_phone(v)]
    places = [fold(v) for v in context.other - set(emails) - set(phones)]
    add((re.escape(fold(v)) for v in emails), "EMAIL", r"(?<![\w.+-])", r"(?![\w-])")
    add((_digits_pattern(v) for v in phones), "PHONE", r"(?<!\d)", r"(?!\d)")
    add(_place_patterns(places, ADDRESS_WORDS, vocabulary, institution=False),
        "LOCATION", _LETTER_BEFORE, _LETTER_AFTER)
    logger.debug("compiled header matcher with %d regexes", len(regexes))
    return _Matcher(tuple(regexes))


def _phrase(value: str, separator: str) -> str:
    """Return a regex for the words of ``value`` with any ``separator`` between them."""
    words = _WORDS.findall(value.upper())
    return separator.join(_EQUIVALENTS.get(w, _escape(w)) for w in words)


def _escape(word: str) -> str:
    """Escape one upper-cased word; ``SS`` also matches ``ß`` (``HEß`` upper-cases to ``HESS``)."""
    return "(?:SS|ß|ẞ)".join(re.escape(piece) for piece in word.split("SS"))


def _id_pattern(value: str) -> str | None:
    """Return a regex for one ID, tolerant of separators and leading zeros."""
    canonical = _ID_SEPARATORS.sub("", value.upper())
    stripped = canonical.lstrip("0")
    if len(canonical) < 3:
        return None
    if len(stripped) < 3:
        stripped, zeros = canonical, ""
    else:
        zeros = "0*" if stripped[0].isdigit() else ""
    body = zeros + _ID_GAP.join(re.escape(ch) for ch in stripped)
    before = r"(?<!\d)(?<!\d[.,])" if stripped[0].isdigit() else r"(?<![A-Za-z0-9])"
    after = r"(?!\d)(?![.,]\d)" if stripped[-1].isdigit() else r"(?![A-Za-z0-9])"
    return before + body + after


def _is_phone(value: str) -> bool:
    digits = sum(ch.isdigit() for ch in value)
    return digits >= 7 and re.fullmatch(r"[\d\s().+\-/xEXT]+", value.upper()) is not None


def _digits_pattern(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return r"[\s().+\-/]*".join(digits)


def _place_patterns(
    values: Iterable[str], generic: frozenset[str], vocabulary: frozenset[str], *,
    institution: bool,
) -> Iterator[str]:
    """Yield regexes for institution or address values.

    The whole value; each comma-separated part of an address; each distinctive
    word (not generic, not clinical vocabulary, at least 4 letters) with the
    generic words around it; and each other non-generic word when it stands
    next to a generic one (``St. Elsewhere``, ``Elsewhere Hospital``). An
    institution made of generic words only (a department called "Radiology")
    identifies nobody and is not matched.
    """
    gen = "|".join(sorted((_EQUIVALENTS.get(w, re.escape(w)) for w in generic),
                          key=len, reverse=True))
    sep = r"[\s,.'’-]+"
    prefix = rf"(?:(?:{gen}|OF|THE){sep})"
    suffix = rf"(?:{sep}(?:{gen}))"
    for value in values:
        words = _WORDS.findall(value.upper())
        specific = [w for w in words if w.isalpha() and len(w) >= 4 and w not in generic]
        if institution and not any(w not in generic for w in words):
            continue
        yield _phrase(value, r"[\s^,.'’-]+")
        if not institution:
            for part in re.split(r"[,^;\n\r]+", value):
                if len(part.strip()) >= 3:
                    yield _phrase(part, r"[\s^,.'’-]+")
        for word in specific:
            body = re.escape(word)
            if word in vocabulary:
                yield f"{prefix}+{body}{suffix}*|{body}{suffix}+"
            else:
                yield f"{prefix}*{body}{suffix}*"
