"""Behaviour of DA / DT / AS shifting and generalisation."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import assume, given, reject
from hypothesis import strategies as st

from pipeline.dates import (
    age_in_years,
    da_to_granularity,
    dt_to_granularity,
    generalize_age,
    parse_da,
    parse_dt_date,
    shift_da,
    shift_dt,
    years_between,
)

dates = st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2200, 12, 31))
offsets = st.integers(min_value=-36500, max_value=36500)
times = st.from_regex(r"\A([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?\Z")
zones = st.sampled_from(["", "+0000", "+0100", "-0500", "+1400", "-1200", "+0530"])


def da(date: dt.date) -> str:
    return date.strftime("%Y%m%d")


# --- DA ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200115", 10, "20200125"),
        ("20200115", -15, "20191231"),
        ("20200115", 0, "20200115"),
        ("20200228", 1, "20200229"),
        ("20210228", 1, "20210301"),
        ("20200301", -1, "20200229"),
        ("19991231", 1, "20000101"),
        ("20200115", -1095, "20170115"),
        ("20200115 ", 1, "20200116"),
        ("2020.01.15", 10, "20200125"),
    ],
)
def test_shift_da_single_value(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200101-20200201", 1, "20200102-20200202"),
        ("20200101-20200201", -1, "20191231-20200131"),
        ("-20200101", 1, "-20200102"),
        ("20200101-", 1, "20200102-"),
        ("2020.01.01-2020.02.01", 1, "20200102-20200202"),
    ],
)
def test_shift_da_ranges_shift_both_ends_and_keep_open_ends(
    value: str, days: int, expected: str
) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize("value", ["", "  "])
def test_shift_da_keeps_an_empty_value(value: str) -> None:
    assert shift_da(value, 30) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20200115", dt.date(2020, 1, 15)), ("2020.01.15", dt.date(2020, 1, 15))],
)
def test_parse_da_reads_dicom_and_acr_nema_forms(value: str, expected: dt.date) -> None:
    assert parse_da(value) == expected


@given(a=dates, b=dates, days=offsets)
def test_shifting_two_dates_by_the_same_offset_keeps_the_interval(
    a: dt.date, b: dt.date, days: int
) -> None:
    shifted_a = parse_da(shift_da(da(a), days))
    shifted_b = parse_da(shift_da(da(b), days))
    assert shifted_a - shifted_b == a - b
    assert shifted_a - a == dt.timedelta(days=days)


@given(date=dates, days=offsets)
def test_shift_da_then_back_is_identity(date: dt.date, days: int) -> None:
    assert shift_da(shift_da(da(date), days), -days) == da(date)


@given(a=dates, b=dates, days=offsets)
def test_shift_da_range_then_back_is_identity(a: dt.date, b: dt.date, days: int) -> None:
    value = f"{da(min(a, b))}-{da(max(a, b))}"
    shifted = shift_da(value, days)
    assert re.fullmatch(r"\d{8}-\d{8}", shifted)
    assert shift_da(shifted, -days) == value


# --- DT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2020", 0, "2020"),
        ("2020", 400, "2021"),
        ("2020", -1, "2019"),
        ("202001", 31, "202002"),
        ("202012", 31, "202101"),
        ("20200115", 10, "20200125"),
        ("2020011512", 1, "2020011612"),
        ("202001151230", 1, "202001161230"),
        ("20200115123045", -15, "20191231123045"),
        ("20200115123045.1", 1, "20200116123045.1"),
        ("20200115123045.123456", 1, "20200116123045.123456"),
        ("20200115123045.123456+0100", 1, "20200116123045.123456+0100"),
        ("20200115123045-0500", 1, "20200116123045-0500"),
        ("2020+0100", 0, "2020+0100"),
        ("202001-0800", 31, "202002-0800"),
        ("20200115+0000", 17, "20200201+0000"),
        (" 20200115 ", 1, "20200116"),
    ],
)
def test_shift_dt_keeps_precision_time_fraction_and_zone(
    value: str, days: int, expected: str
) -> None:
    assert shift_dt(value, days) == expected


@pytest.mark.parametrize("value", ["", "   "])
def test_shift_dt_keeps_an_empty_value(value: str) -> None:
    assert shift_dt(value, 30) == value


@given(date=dates, time=times, zone=zones, days=offsets)
def test_shift_dt_moves_only_the_date_and_back_is_identity(
    date: dt.date, time: str, zone: str, days: int
) -> None:
    value = da(date) + time + zone
    shifted = shift_dt(value, days)
    assert shifted[:8] == da(date + dt.timedelta(days=days))
    assert shifted[8:] == time + zone
    assert shift_dt(shifted, -days) == value


@given(a=dates, b=dates, days=offsets, time=times)
def test_shift_dt_keeps_the_interval_between_two_full_dates(
    a: dt.date, b: dt.date, days: int, time: str
) -> None:
    new_a = parse_dt_date(shift_dt(da(a) + time, days))
    new_b = parse_dt_date(shift_dt(da(b) + time, days))
    assert new_a - new_b == a - b


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020", dt.date(2020, 1, 1)),
        ("202004", dt.date(2020, 4, 1)),
        ("20200415", dt.date(2020, 4, 15)),
        ("20200415123000.5-0300", dt.date(2020, 4, 15)),
    ],
)
def test_parse_dt_date_reads_missing_month_and_day_as_one(value: str, expected: dt.date) -> None:
    assert parse_dt_date(value) == expected


# --- generalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "granularity", "expected"),
    [
        ("20200415", "year", "20200101"),
        ("20200415", "month", "20200401"),
        ("2020.04.15", "year", "20200101"),
        ("19450316", "month", "19450301"),
        ("", "year", ""),
    ],
)
def test_da_to_granularity(value: str, granularity: str, expected: str) -> None:
    assert da_to_granularity(value, granularity) == expected


@pytest.mark.parametrize(
    ("value", "granularity", "expected"),
    [
        ("20200415123000.123+0100", "year", "2020"),
        ("20200415123000.123+0100", "month", "202004"),
        ("2020", "year", "2020"),
        ("202004", "year", "2020"),
        ("20200415", "month", "202004"),
        ("", "month", ""),
    ],
)
def test_dt_to_granularity(value: str, granularity: str, expected: str) -> None:
    assert dt_to_granularity(value, granularity) == expected


@given(date=dates, time=times, zone=zones)
def test_year_generalisation_keeps_only_the_year(date: dt.date, time: str, zone: str) -> None:
    assert da_to_granularity(da(date), "year") == f"{date.year:04d}0101"
    assert dt_to_granularity(da(date) + time + zone, "year") == f"{date.year:04d}"


@pytest.mark.parametrize(
    ("value", "band", "max_age", "expected"),
    [
        ("090Y", None, 89, "090Y"),
        ("095Y", None, 89, "090Y"),
        ("120Y", None, 89, "090Y"),
        ("089Y", None, 89, "089Y"),
        ("001Y", None, 89, "001Y"),
        ("047Y", 5, None, "045Y"),
        ("047Y", 10, None, "040Y"),
        ("050Y", 10, None, "050Y"),
        ("003Y", 5, None, "000Y"),
        ("092Y", 5, 89, "090Y"),
        ("047Y", 1, None, "047Y"),
        ("011M", 5, 89, "011M"),
        ("052W", 5, 89, "052W"),
        ("030D", 5, 89, "030D"),
        ("999M", None, 80, "081Y"),
        ("999M", None, 89, "999M"),
        ("999W", None, 18, "019Y"),
        ("", 5, 89, ""),
        ("047Y", None, None, "047Y"),
    ],
)
def test_generalize_age(value: str, band: int | None, max_age: int | None, expected: str) -> None:
    assert generalize_age(value, band_years=band, max_age=max_age) == expected


@given(years=st.integers(0, 999))
def test_ages_over_89_become_090y_and_others_stay(years: int) -> None:
    out = generalize_age(f"{years:03d}Y", band_years=None, max_age=89)
    assert out == ("090Y" if years > 89 else f"{years:03d}Y")


@given(years=st.integers(0, 999), band=st.integers(2, 50))
def test_age_bands_floor_to_a_multiple_of_the_band(years: int, band: int) -> None:
    out = generalize_age(f"{years:03d}Y", band_years=band, max_age=None)
    value = int(out[:3])
    assert out.endswith("Y")
    assert value % band == 0
    assert value <= years < value + band


@pytest.mark.parametrize(
    ("value", "years"),
    [("078Y", 78.0), ("012M", 1.0), ("006M", 0.5), ("000D", 0.0)],
)
def test_age_in_years(value: str, years: float) -> None:
    assert age_in_years(value) == pytest.approx(years)


def test_age_in_weeks_and_days_convert_to_years() -> None:
    assert age_in_years("052W") == pytest.approx(364 / 365.25)
    assert age_in_years("365D") == pytest.approx(365 / 365.25)


@pytest.mark.parametrize(
    ("birth", "when", "expected"),
    [
        (dt.date(2000, 1, 1), dt.date(2000, 1, 1), 0),
        (dt.date(2000, 1, 1), dt.date(2020, 1, 1), 20),
        (dt.date(2000, 1, 2), dt.date(2020, 1, 1), 19),
        (dt.date(2000, 3, 1), dt.date(2020, 2, 29), 19),
        (dt.date(2000, 2, 29), dt.date(2021, 2, 28), 20),
        (dt.date(2000, 2, 29), dt.date(2021, 3, 1), 21),
        (dt.date(1930, 6, 15), dt.date(2020, 6, 14), 89),
        (dt.date(1930, 6, 15), dt.date(2020, 6, 15), 90),
    ],
)
def test_years_between(birth: dt.date, when: dt.date, expected: int) -> None:
    assert years_between(birth, when) == expected


@given(birth=dates, when=dates)
def test_years_between_agrees_with_adding_years(birth: dt.date, when: dt.date) -> None:
    assume(when >= birth)
    years = years_between(birth, when)
    assert years >= 0

    def anniversary(n: int) -> dt.date:
        try:
            return birth.replace(year=birth.year + n)
        except ValueError:  # 29 February in a common year: birthday counted on 1 March
            return dt.date(birth.year + n, 3, 1)

    assert anniversary(years) <= when
    if birth.year + years + 1 <= 9999:
        assert when < anniversary(years + 1)


# --- invalid values ---------------------------------------------------------------------


def _assert_no_part_of(value: str, message: str) -> None:
    assert value.strip() not in message
    for run in re.findall(r"\d{2,}", value):
        assert run not in message, (run, message)


@pytest.mark.parametrize(
    ("function", "value"),
    [
        (shift_da, "20201340"),
        (shift_da, "20200230"),
        (shift_da, "19451732"),
        (shift_da, "2020011"),
        (shift_da, "202001155"),
        (shift_da, "Doe^John"),
        (shift_da, "2020-01-15-2020"),
        (shift_da, "20200115-2020133"),
        (shift_da, "2020/01/15"),
        (shift_dt, "20201340"),
        (shift_dt, "20201340123000"),
        (shift_dt, "2020011512300"),
        (shift_dt, "20200115123000+01"),
        (shift_dt, "Doe^John"),
        (shift_dt, "19451732"),
        (da_to_granularity, "19451732"),
        (da_to_granularity, "Doe^John"),
        (dt_to_granularity, "1945031"),
        (parse_dt_date, "1945031X"),
    ],
)
def test_invalid_dates_raise_value_error_without_the_value(function, value: str) -> None:
    args = (value, 3) if function in (shift_da, shift_dt) else (value,)
    if function in (da_to_granularity, dt_to_granularity):
        args = (value, "year")
    with pytest.raises(ValueError) as info:
        function(*args)
    _assert_no_part_of(value, str(info.value))


@pytest.mark.parametrize("value", ["90Y", "090y", "090", "0090Y", "abcY", "Doe^John", "-12Y"])
def test_invalid_ages_raise_value_error_without_the_value(value: str) -> None:
    with pytest.raises(ValueError) as info:
        generalize_age(value, band_years=5, max_age=89)
    _assert_no_part_of(value, str(info.value))
    with pytest.raises(ValueError):
        age_in_years(value)


@given(value=st.text(alphabet="0123456789-+.^ ", min_size=4, max_size=24))
def test_shift_da_and_dt_either_succeed_or_raise_value_error_only(value: str) -> None:
    for function in (shift_da, shift_dt):
        try:
            function(value, 7)
        except ValueError as exc:
            _assert_no_part_of(value, str(exc))
        except OverflowError:  # past year 9999: see test_shift_out_of_the_calendar_...
            reject()


@pytest.mark.parametrize(
    ("function", "value", "days"),
    [
        (shift_da, "99991231", 1),
        (shift_da, "00010101", -1),
        (shift_dt, "99991231120000", 1),
        (shift_dt, "0001", -1),
    ],
)
def test_shift_out_of_the_calendar_raises_value_error(function, value: str, days: int) -> None:
    with pytest.raises(ValueError):
        function(value, days)


@pytest.mark.parametrize("value", ["202001151230.5", "201703091015.25+0100"])
def test_malformed_dt_is_not_passed_through_unshifted(value: str) -> None:
    try:
        shifted = shift_dt(value, 3)
    except ValueError:
        return
    assert shifted != value
