"""Usage periods and intervals: parsing, calendar arithmetic without drift, manual resets; then properties that
tie `add`, `index_at`, `period_at` and `resets_between` together."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.credit.periods import Interval, ManualReset, Reset, period_at, resets_between

EXAMPLES = settings(max_examples=int(os.environ.get("METERD_PROPERTY_EXAMPLES", "100")), deadline=None)
MINUTE = timedelta(minutes=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "iso", "name"),
    [
        ("DAY", "P1D", "DAY"),
        ("WEEK", "P1W", "WEEK"),
        ("MONTH", "P1M", "MONTH"),
        ("YEAR", "P1Y", "YEAR"),
        ("month", "P1M", "MONTH"),
        ("P1D", "P1D", "DAY"),
        ("P7D", "P1W", "WEEK"),
        ("P2W", "P2W", None),
        ("P3M", "P3M", None),
        ("P12M", "P1Y", "YEAR"),
        ("PT6H", "PT6H", None),
        ("PT90M", "PT1H30M", None),
        ("PT1H", "PT1H", None),
        ("P1DT12H", "P1DT12H", None),
        ("PT36H", "P1DT12H", None),
        ("P1Y2M3DT4H5M", "P1Y2M3DT4H5M", None),
        ("PT60S", "PT1M", None),
    ],
)
def test_parse_and_canonical_form(text: str, iso: str, name: str | None) -> None:
    interval = Interval.parse(text)
    assert (interval.iso, interval.name) == (iso, name)
    assert Interval.parse(interval.iso) == interval


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("PT30S", "whole number of minutes"),
        ("PT90S", "whole number of minutes"),
        ("P1DT1S", "whole number of minutes"),
        ("P0D", "not zero"),
        ("PT0M", "not zero"),
        ("-P1D", "not negative"),
        ("P1.5M", "whole numbers"),
        ("garbage", "not DAY, WEEK, MONTH, YEAR or an ISO 8601 duration"),
        ("", "not DAY"),
        ("FORTNIGHT", "not DAY"),
    ],
)
def test_parse_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Interval.parse(text)


def test_months_are_computed_from_the_anchor_without_drift() -> None:
    month = Interval.parse("MONTH")
    jan31 = utc(2024, 1, 31, 10, 30)
    assert [month.add(jan31, k) for k in range(-2, 4)] == [
        utc(2023, 11, 30, 10, 30),
        utc(2023, 12, 31, 10, 30),
        jan31,
        utc(2024, 2, 29, 10, 30),
        utc(2024, 3, 31, 10, 30),
        utc(2024, 4, 30, 10, 30),
    ]
    assert month.add(utc(2023, 1, 31), 1) == utc(2023, 2, 28)
    year = Interval.parse("YEAR")
    assert [year.add(utc(2024, 2, 29), k) for k in (1, 4)] == [utc(2025, 2, 28), utc(2028, 2, 29)]
    mixed = Interval.parse("P1M1D")  # the month first (clamped), then the day
    assert [mixed.add(utc(2024, 1, 31), k) for k in (1, 2)] == [utc(2024, 3, 1), utc(2024, 4, 2)]


def test_period_at_month_end_anchor() -> None:
    month, anchor = Interval.parse("MONTH"), utc(2024, 1, 31)
    assert period_at(month, anchor, [], utc(2024, 2, 15)) == (utc(2024, 1, 31), utc(2024, 2, 29))
    assert period_at(month, anchor, [], utc(2024, 2, 29)) == (utc(2024, 2, 29), utc(2024, 3, 31))
    assert period_at(month, anchor, [], utc(2024, 3, 31) - MINUTE) == (utc(2024, 2, 29), utc(2024, 3, 31))
    resets = resets_between(month, anchor, [], utc(2024, 1, 1), utc(2024, 4, 30), True)
    assert [r.at for r in resets] == [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30)]
    assert all(r.preserve_overage for r in resets)
    assert resets_between(month, anchor, [], utc(2024, 1, 31), utc(2024, 2, 29), False) == [
        Reset(utc(2024, 2, 29), False)  # (frm, to]: not the boundary at frm, the one at to
    ]


@pytest.mark.parametrize(
    ("text", "anchor", "t", "period"),
    [
        ("P2W", utc(2024, 3, 4), utc(2024, 3, 20, 9), (utc(2024, 3, 18), utc(2024, 4, 1))),
        ("PT6H", utc(2024, 3, 1, 3), utc(2024, 3, 5, 10), (utc(2024, 3, 5, 9), utc(2024, 3, 5, 15))),
        ("P1DT12H", utc(2024, 3, 1), utc(2024, 3, 2, 16), (utc(2024, 3, 2, 12), utc(2024, 3, 4))),
        ("DAY", utc(2024, 3, 10, 8), utc(2024, 3, 8, 5), (utc(2024, 3, 7, 8), utc(2024, 3, 8, 8))),  # before it
        ("WEEK", utc(2024, 3, 4), utc(2024, 3, 4), (utc(2024, 3, 4), utc(2024, 3, 11))),
    ],
)
def test_period_at_iso_intervals(text: str, anchor: datetime, t: datetime, period: tuple[datetime, datetime]) -> None:
    assert period_at(Interval.parse(text), anchor, [], t) == period


def test_a_manual_reset_that_retains_the_anchor() -> None:
    day, anchor = Interval.parse("DAY"), utc(2024, 3, 1)
    manual = [ManualReset(utc(2024, 3, 1, 5), retain_anchor=True, preserve_overage=True)]
    assert period_at(day, anchor, manual, utc(2024, 3, 1, 4)) == (utc(2024, 3, 1), utc(2024, 3, 1, 5))
    assert period_at(day, anchor, manual, utc(2024, 3, 1, 6)) == (utc(2024, 3, 1, 5), utc(2024, 3, 2))
    assert period_at(day, anchor, manual, utc(2024, 3, 2, 1)) == (utc(2024, 3, 2), utc(2024, 3, 3))
    assert resets_between(day, anchor, manual, utc(2024, 3, 1), utc(2024, 3, 3), False) == [
        Reset(utc(2024, 3, 1, 5), True),
        Reset(utc(2024, 3, 2), False),
        Reset(utc(2024, 3, 3), False),
    ]


def test_a_manual_reset_that_moves_the_anchor() -> None:
    day, anchor = Interval.parse("DAY"), utc(2024, 3, 1)
    manual = [
        ManualReset(utc(2024, 3, 1, 5), retain_anchor=False, preserve_overage=False),
        ManualReset(utc(2024, 3, 3, 5), retain_anchor=True, preserve_overage=False),  # on a boundary: its flag
    ]
    assert period_at(day, anchor, manual, utc(2024, 3, 1, 6)) == (utc(2024, 3, 1, 5), utc(2024, 3, 2, 5))
    assert period_at(day, anchor, manual, utc(2024, 3, 2, 1)) == (utc(2024, 3, 1, 5), utc(2024, 3, 2, 5))
    assert resets_between(day, anchor, manual, utc(2024, 3, 1), utc(2024, 3, 4), True) == [
        Reset(utc(2024, 3, 1, 5), False),
        Reset(utc(2024, 3, 2, 5), True),
        Reset(utc(2024, 3, 3, 5), False),
    ]


def test_manual_resets_at_the_same_time_the_last_one_counts() -> None:
    day, anchor = Interval.parse("DAY"), utc(2024, 3, 1)
    manual = [ManualReset(utc(2024, 3, 1, 5), False, True), ManualReset(utc(2024, 3, 1, 5), True, False)]
    assert period_at(day, anchor, manual, utc(2024, 3, 1, 6)) == (utc(2024, 3, 1, 5), utc(2024, 3, 2))
    assert resets_between(day, anchor, manual, utc(2024, 3, 1), utc(2024, 3, 1, 6), True) == [
        Reset(utc(2024, 3, 1, 5), False)
    ]


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_at(Interval.parse("DAY"), datetime(2024, 3, 1), [], utc(2024, 3, 2))


# --- properties ---------------------------------------------------------------------------------------------------

INTERVALS = ["PT1M", "PT45M", "PT7H", "P1D", "P1DT12H", "P2W", "P1M", "P3M", "P1Y", "P1M1D", "P1Y1MT1H"]
minutes = st.integers(-2_000_000, 2_000_000).map(lambda n: utc(2024, 1, 31) + n * MINUTE)


@EXAMPLES
@given(st.sampled_from(INTERVALS), minutes, st.integers(-300, 300))
def test_add_and_index_at_agree(text: str, anchor: datetime, k: int) -> None:
    interval = Interval.parse(text)
    t = interval.add(anchor, k)
    assert interval.add(anchor, k - 1) < t < interval.add(anchor, k + 1)
    assert interval.index_at(anchor, t) == k
    assert interval.index_at(anchor, t - MINUTE) == k - 1


@EXAMPLES
@given(
    st.sampled_from(["PT45M", "PT7H", "P1D", "P1DT12H", "P1W", "P1M"]),
    minutes,
    st.lists(
        st.builds(
            ManualReset, st.integers(0, 6000).map(lambda n: utc(2024, 3, 1) + n * MINUTE), st.booleans(), st.booleans()
        ),
        max_size=4,
    ),
    st.integers(1, 6000),
    st.booleans(),
    st.data(),
)
def test_resets_are_exactly_the_period_boundaries(
    text: str, anchor: datetime, manual: list[ManualReset], span: int, preserve: bool, data: st.DataObject
) -> None:
    interval, frm = Interval.parse(text), utc(2024, 3, 1)
    to = frm + span * MINUTE
    resets = resets_between(interval, anchor, manual, frm, to, preserve)
    edges = [frm, *(r.at for r in resets)]
    assert edges == sorted(set(edges))
    for r in resets:
        assert period_at(interval, anchor, manual, r.at)[0] == r.at  # a reset starts a period
        assert period_at(interval, anchor, manual, r.at - MINUTE)[1] == r.at  # and ends the one before
        last_manual = [m for m in manual if m.at == r.at][-1:]
        assert r.preserve_overage == (last_manual[0].preserve_overage if last_manual else preserve)
    for _ in range(5):  # between two resets the period does not change
        t = frm + data.draw(st.integers(0, span)) * MINUTE
        start, end = period_at(interval, anchor, manual, t)
        assert start <= t < end
        assert start == max(e for e in edges if e <= t) or start < frm
        assert end == min((r.at for r in resets if r.at > t), default=end) and (end > to or end in edges)
