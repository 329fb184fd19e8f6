"""Pattern rules: dates, identifiers, phone numbers, e-mail, URLs, ages over 89."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipeline.text.context import HeaderContext
from pipeline.text.dates import find_dates
from pipeline.text.spans import PhiSpan, fold, merge_overlapping

_I = re.IGNORECASE
#: Units after a number: the number is a measurement, not an identifier.
_UNIT = (
    r"(?:mm|cm|m|km|um|nm|ms|us|s|sec|secs|min|mins|h|hr|hrs|hz|khz|mhz|ghz|kv|kvp|ma|mas|ml"
    r"|l|mg|g|kg|ug|mcg|iu|u|gy|cgy|mgy|bq|kbq|mbq|gbq|ci|mci|uci|ev|kev|mev|px|pixels?"
    r"|slices?|images?|frames?|views?|mm2|mm3|cm2|cm3|cc|t|hu|mmhg|bpm|deg|degrees?|kb|mb"
    r"|gb|bytes?|%)"
)
_NUMBER_UNIT = re.compile(r"\d+(?:[.,]\d+)?" + _UNIT + r"\Z", _I)
_DIMENSION = re.compile(r"\d+x\d+(?:x\d+)?\Z", _I)
_B_VALUE = re.compile(r"b\d+\Z", _I)

_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_LONG_NUMBER = re.compile(
    r"(?<![\d.,])(?<!\d[.,])\d{5,}(?!\d)(?![.,]\d)(?!\s?" + _UNIT + r"(?![A-Za-z]))", _I
)
_ALNUM = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]*\d[A-Za-z0-9]*(?![A-Za-z0-9])")
_PREFIXED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,5}[-#]\d{4,}(?![A-Za-z0-9])")
_CUED_ID = re.compile(
    r"(?<![A-Za-z])(?:MRN|MR|PID|ID|ACC|ACCN|ACCESSION|RECORD|CHART|ENCOUNTER|VISIT|ACCT"
    r"|ACCOUNT|SSN|NHS|MEDICARE|MEDICAID|INSURANCE|POLICY|PATIENT|PT)"
    r"(?:\s*(?:#|NO\.?|NUMBER|NUM|ID))?\s*[:#=]?\s*"
    r"(?P<id>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{2,}[A-Za-z0-9])(?![A-Za-z0-9])",
    _I,
)
_UID = re.compile(r"(?<![\d.])[012](?:\.\d+){4,}(?![\d.])")

_PHONE = re.compile(
    r"(?<![\d+])(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]?\d{4}(?![\d])"
    r"(?:\s*(?:ext\.?|x)\s*\d{1,5}(?!\d))?",
    _I,
)
_INTL_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}(?:[-.\s]?\(?\d{1,5}\)?){2,6}(?!\d)")
_CUED_PHONE = re.compile(
    r"(?<![A-Za-z])(?:tel|telephone|phone|ph|fax|pager|pgr|cell|mobile|beeper|call)\.?"
    r"\s*(?:no\.?|#)?\s*[:#]?\s*(?P<num>\+?\(?\d[\d\s().-]{3,}\d)(?!\d)",
    _I,
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_URL = re.compile(
    r"(?:(?:https?|ftps?|sftp)://|www\.)[^\s<>\"'\]\[]+"
    r"|(?<![@\w.-])(?:[A-Za-z0-9][A-Za-z0-9-]*\.)+(?:com|org|net|edu|gov|mil|info|biz|health|io)"
    r"(?:/[^\s<>\"']*)?(?![\w])",
    _I,
)
_IP = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
                 r"(?![\d.])")
_AGE_FORMS = (
    re.compile(r"(?<![\d.])(?P<n>\d{2,3})\s*-?\s*(?:y/o|y\.o\.?|yo|yrs?|years?|yr-old|year-old)"
               r"(?![A-Za-z])(?:[\s-]*old)?", _I),
    re.compile(r"(?<![A-Za-z])(?:age|aged)\s*(?:of|is|:|=)?\s*(?P<n>\d{2,3})(?![\d.])", _I),
    re.compile(r"(?<![A-Za-z\d])(?P<n>\d{3})\s?Y(?![A-Za-z\d])"),
)
_TRAILING = ".,;:!?)]}'\""
_TRIGGER = re.compile(r"[\d@.]")


class PatternTagger:
    """Tags PHI that has a recognisable shape, whatever the header says.

    Dates in many formats, identifiers (SSN, long numbers that are not
    measurements, letter-digit tokens with at least four digits, values after
    an ID cue such as ``MRN:``), phone numbers, e-mail addresses, URLs, IP
    addresses, DICOM-like UIDs, and ages over 89.
    """

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the spans of ``text`` that match a PHI pattern (``context`` unused)."""
        if _TRIGGER.search(text) is None:
            return ()  # every pattern needs a digit, an "@" or a "."
        return merge_overlapping(self._all(fold(text)))

    def _all(self, text: str) -> Iterator[PhiSpan]:
        for cand in find_dates(text):
            if cand.valid():
                confidence = 0.9 if any(y is not None for y, _m, _d in cand.readings) else 0.75
                yield PhiSpan(cand.start, cand.end, "DATE", confidence, "pattern")
        yield from _ids(text)
        for regex in (_PHONE, _INTL_PHONE):
            for m in regex.finditer(text):
                if sum(ch.isdigit() for ch in m.group(0)) >= 7:
                    yield PhiSpan(m.start(), m.end(), "PHONE", 0.85, "pattern")
        for m in _CUED_PHONE.finditer(text):
            if sum(ch.isdigit() for ch in m.group("num")) >= 4:
                yield PhiSpan(m.start("num"), m.end("num"), "PHONE", 0.85, "pattern")
        for m in _EMAIL.finditer(text):
            yield PhiSpan(m.start(), m.end(), "EMAIL", 0.95, "pattern")
        for m in _URL.finditer(text):
            end = m.end()
            while end > m.start() + 1 and text[end - 1] in _TRAILING:
                end -= 1
            yield PhiSpan(m.start(), end, "URL", 0.9, "pattern")
        for m in _IP.finditer(text):
            yield PhiSpan(m.start(), m.end(), "URL", 0.6, "pattern")
        for regex in _AGE_FORMS:
            for m in regex.finditer(text):
                if 90 <= int(m.group("n")) <= 130:
                    yield PhiSpan(m.start(), m.end(), "AGE", 0.9, "pattern")


def _ids(text: str) -> Iterator[PhiSpan]:
    for m in _SSN.finditer(text):
        yield PhiSpan(m.start(), m.end(), "ID", 0.95, "pattern")
    for m in _LONG_NUMBER.finditer(text):
        yield PhiSpan(m.start(), m.end(), "ID", 0.75, "pattern")
    for m in _ALNUM.finditer(text):
        token = m.group(0)
        if token.isdigit() or sum(ch.isdigit() for ch in token) < 4:
            continue
        if _NUMBER_UNIT.match(token) or _DIMENSION.match(token) or _B_VALUE.match(token):
            continue
        yield PhiSpan(m.start(), m.end(), "ID", 0.8, "pattern")
    for m in _PREFIXED.finditer(text):
        yield PhiSpan(m.start(), m.end(), "ID", 0.7, "pattern")
    for m in _CUED_ID.finditer(text):
        yield PhiSpan(m.start("id"), m.end("id"), "ID", 0.8, "pattern")
    for m in _UID.finditer(text):
        if len(m.group(0)) >= 12:
            yield PhiSpan(m.start(), m.end(), "ID", 0.6, "pattern")
