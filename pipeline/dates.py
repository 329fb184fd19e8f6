"""DA / DT / AS values: parse, shift by whole days, generalize. Pure functions.

Errors are ValueError with no value in the message.
"""

from __future__ import annotations

import datetime as dt
import re

_DT = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$"
)
_AS = re.compile(r"^(\d{3})([DWMY])$")
_UNIT_DAYS = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}


def parse_da(value: str) -> dt.date:
    """Parse one DA value (``YYYYMMDD``; the ACR-NEMA ``YYYY.MM.DD`` form too)."""
    text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a DA value")
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _add_days(date: dt.date, days: int) -> dt.date:
    try:
        return date + dt.timedelta(days=days)
    except OverflowError as exc:
        raise ValueError("date out of range after shift") from exc


def _shift_da_single(value: str, days: int) -> str:
    if not value.strip():
        return value
    return _add_days(parse_da(value), days).strftime("%Y%m%d")


def shift_da(value: str, days: int) -> str:
    """Shift a DA value or range (``A-B``, ``-B``, ``A-``) by ``days``."""
    if "-" in value.strip():
        start, _, end = value.strip().partition("-")
        return f"{_shift_da_single(start, days)}-{_shift_da_single(end, days)}"
    return _shift_da_single(value, days)


def _match_dt(value: str) -> re.Match[str]:
    match = _DT.match(value.strip())
    if match is None:
        raise ValueError("not a DT value")
    return match


def shift_dt(value: str, days: int) -> str:
    """Shift a DT value by ``days``, keeping its precision, time and offset."""
    if not value.strip():
        return value
    year, month, day, rest, zone = _match_dt(value).groups()
    base = dt.date(int(year), int(month or 1), int(day or 1))
    shifted = _add_days(base, days)
    out = f"{shifted.year:04d}"
    if month:
        out += f"{shifted.month:02d}"
    if day:
        out += f"{shifted.day:02d}"
    return out + (rest or "") + (zone or "")


def da_to_granularity(value: str, granularity: str) -> str:
    """Reduce a DA value to its year (``YYYY0101``) or month (``YYYYMM01``)."""
    if not value.strip():
        return value
    date = parse_da(value)
    return f"{date.year:04d}0101" if granularity == "year" else f"{date.year:04d}{date.month:02d}01"


def dt_to_granularity(value: str, granularity: str) -> str:
    """Reduce a DT value to ``YYYY`` or ``YYYYMM``."""
    if not value.strip():
        return value
    match = _match_dt(value)
    year, month = match.group(1), match.group(2) or "01"
    return year if granularity == "year" else year + month


def parse_dt_date(value: str) -> dt.date:
    """Return the calendar date of a DT value (missing month/day read as 1)."""
    year, month, day = _match_dt(value).group(1, 2, 3)
    return dt.date(int(year), int(month or 1), int(day or 1))


def age_in_years(value: str) -> float:
    """Return an AS value (``078Y``, ``011M``...) in years."""
    match = _AS.match(value.strip())
    if match is None:
        raise ValueError("not an AS value")
    return int(match.group(1)) * _UNIT_DAYS[match.group(2)] / 365.25


def generalize_age(value: str, *, band_years: int | None, max_age: int | None) -> str:
    """Cap ages over ``max_age`` to ``max_age + 1`` years; floor others to bands."""
    if not value.strip():
        return value
    years = age_in_years(value)
    if max_age is not None and years > max_age:
        return f"{max_age + 1:03d}Y"
    if band_years and band_years > 1 and value.strip().endswith("Y"):
        return f"{int(years) // band_years * band_years:03d}Y"
    return value


def years_between(birth: dt.date, when: dt.date) -> int:
    """Whole years from ``birth`` to ``when``."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
