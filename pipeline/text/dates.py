"""Finding dates written in free text, in the many ways people write them."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_MONTHS = {
    "JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6,
    "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12,
}
_MON = (
    r"(?<![A-Za-z])(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?"
    r"|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![A-Za-z])"
)
_DAY = r"(?P<d>0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?P<y>(?:18|19|20)\d\d|\d\d)"
_NOT_BEFORE = r"(?<![\d])(?<!\d[-/.])"
_NOT_AFTER = r"(?![\d])(?![-/.]\d)"
_NOT_MEASURE = r"(?!\s*(?:mm|cm|ml|mg|kg|min|sec|s\b|h\b|hrs?|x\b|%|/))"

#: (year or None, month, day); the year may have two digits (see ``two_digit_year``);
#: day 0 stands for "any day of that month" (``January 2024``).
Ymd = tuple[int | None, int, int]


@dataclass(frozen=True)
class DateCandidate:
    """A stretch of text that may be a date, with every reading of it."""

    start: int
    end: int
    readings: tuple[Ymd, ...]
    two_digit_year: bool

    def valid(self) -> bool:
        """True when at least one reading is a real calendar date."""
        return any(_is_date(y, m, d, self.two_digit_year) for y, m, d in self.readings)

    def matches(self, dates: frozenset[datetime.date]) -> bool:
        """True when one reading is one of ``dates`` (a missing year matches any year)."""
        for y, m, d in self.readings:
            for day in dates:
                if day.month != m or d not in (0, day.day):
                    continue
                if y is None or y == day.year or (self.two_digit_year and y == day.year % 100):
                    return True
        return False


def _is_date(y: int | None, m: int, d: int, two_digit: bool) -> bool:
    year = 2000 if y is None else (2000 + y if two_digit else y)
    if not 1800 <= year <= 2199:
        return False
    try:
        datetime.date(year, m, d or 1)
    except ValueError:
        return False
    return True


Handler = Callable[[re.Match[str]], tuple[tuple[Ymd, ...], bool]]


def _ymd(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    y = match.group("y")
    return ((int(y), int(match.group("m")), int(match.group("d"))),), len(y) == 2


def _ambiguous(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    a, b, y = int(match.group("a")), int(match.group("b")), match.group("y")
    return ((int(y), a, b), (int(y), b, a)), len(y) == 2


def _named(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    y: str | None = match.groupdict().get("y")
    month = _MONTHS[match.group("mon")[:3].upper()]
    year = int(y) if y else None
    return ((year, month, int(match.group("d"))),), y is not None and len(y) == 2


def _month_year(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    month = _MONTHS[match.group("mon")[:3].upper()]
    return ((int(match.group("y")), month, 0),), False


def _compact6(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    s = match.group(0)
    p, q, r = int(s[:2]), int(s[2:4]), int(s[4:])
    return ((p, q, r), (r, q, p), (r, p, q)), True


def _dotted(match: re.Match[str]) -> tuple[tuple[Ymd, ...], bool]:
    if match.group("a") is not None:
        a, b, y = match.group("a"), match.group("b"), match.group("y")
    else:
        a, b, y = match.group("a2"), match.group("b2"), match.group("y2")
    return ((int(y), int(a), int(b)), (int(y), int(b), int(a))), len(y) == 2


_I = re.IGNORECASE
#: Forms that are dates on their own (the pattern tagger flags every valid one).
_STRICT: tuple[tuple[re.Pattern[str], Handler], ...] = (
    # 20240105, 20240105101500.000 (DA / DT)
    (re.compile(r"(?<![\d.])(?P<y>(?:18|19|20)\d\d)(?P<m>[01]\d)(?P<d>[0-3]\d)"
                r"(?:[01]\d[0-5]\d(?:[0-5]\d(?:\.\d{1,6})?)?)?(?!\d)"), _ymd),
    # 2024-01-05, 2024/1/5, 2024.01.05
    (re.compile(_NOT_BEFORE + r"(?P<y>(?:18|19|20)\d\d)(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)"
                r"(?P<d>\d{1,2})(?:T\d\d:?\d\d(?::?\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?"
                r"(?!\d)(?![-/.]\d)"), _ymd),
    # 01/05/2024, 5-1-24, 05.01.2024, 5.1.2024, 05.01.24
    (re.compile(_NOT_BEFORE + r"(?P<a>\d{1,2})(?P<s>[-/])(?P<b>\d{1,2})(?P=s)"
                r"(?P<y>(?:18|19|20)\d\d|\d\d)" + _NOT_AFTER), _ambiguous),
    (re.compile(_NOT_BEFORE + r"(?:(?P<a>\d{1,2})\.(?P<b>\d{1,2})\.(?P<y>(?:18|19|20)\d\d)"
                r"|(?P<a2>\d\d)\.(?P<b2>\d\d)\.(?P<y2>\d\d))" + _NOT_AFTER), _dotted),
    # 05-JAN-2024, 5 January 2024, 05JAN24, 5th of January, 2024
    (re.compile(r"(?<![\d])" + _DAY + r"[-\s./]*(?:of\s+)?" + _MON + r"[-\s.,/]*" + _YEAR
                + r"(?!\d)", _I), _named),
    # Jan 5, 2024; January 5th 2024
    (re.compile(_MON + r"[-\s/]*" + _DAY + r"(?![\d])(?:,\s*|[-\s/]+)(?P<y>(?:18|19|20)\d\d)"
                r"(?!\d)", _I), _named),
    # January 2024
    (re.compile(_MON + r"[-\s,]*(?P<y>(?:18|19|20)\d\d)(?!\d)", _I), _month_year),
    # Jan 5 / 5 January (no year)
    (re.compile(_MON + r"\s+" + _DAY + r"(?![\d.,]\d|\d)" + _NOT_MEASURE, _I), _named),
    (re.compile(r"(?<![\d.])" + _DAY + r"\s+(?:of\s+)?" + _MON, _I), _named),
)
#: Extra forms that are only taken as a date when the header holds that date.
_LOOSE: tuple[tuple[re.Pattern[str], Handler], ...] = (
    (re.compile(r"(?<![\d.])\d{6}(?![\d])"), _compact6),
    (re.compile(_NOT_BEFORE + r"(?P<y>(?:18|19|20)\d\d)\s(?P<m>\d{1,2})\s(?P<d>\d{1,2})(?!\d)"),
     _ymd),
    (re.compile(_NOT_BEFORE + r"(?P<a>\d{1,2})\.(?P<b>\d{1,2})\.(?P<y>\d\d)" + _NOT_AFTER),
     _ambiguous),
)



def find_dates(text: str, *, loose: bool = False) -> Iterator[DateCandidate]:
    """Yield every date-like stretch of ``text`` with its possible readings.

    Parameters
    ----------
    text
        The (accent-folded) text.
    loose
        Also yield ambiguous forms (``050124``, ``5.1.24``) that are dates only
        when the header confirms them.
    """
    forms = _STRICT + _LOOSE if loose else _STRICT
    for regex, handler in forms:
        for match in regex.finditer(text):
            readings, two_digit = handler(match)
            yield DateCandidate(match.start(), match.end(), readings, two_digit)
