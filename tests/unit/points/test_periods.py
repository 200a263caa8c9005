"""RULES 1.2: pools, periods and the growth trigger (example GP-2 and its edges)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain.periods import (
    DEFAULT_PERIOD_RULES,
    PeriodRules,
    PoolKind,
    day_of_period,
    growth,
    next_reference_size,
    settlement_due_at,
    start_of_day,
    target_points,
    target_reached,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


# --- defaults -------------------------------------------------------------------------------


def test_default_rules_match_rules_1_2() -> None:
    rules = PeriodRules()
    assert rules.base_points(PoolKind.CONSUMER) == Decimal("1000000.00")
    assert rules.base_points(PoolKind.MERCHANT) == Decimal("10000000.00")
    assert rules.growth_target == Decimal("0.15")
    assert (rules.min_days, rules.max_days) == (10, 30)
    assert rules.first_period_start(PoolKind.CONSUMER) == shanghai(2024, 3, 15)
    assert rules.first_period_start(PoolKind.MERCHANT) == shanghai(2024, 1, 18)
    # 00:00 in Shanghai is 16:00 UTC the day before.
    assert rules.first_period_start(PoolKind.CONSUMER).astimezone(UTC) == datetime(
        2024, 3, 14, 16, 0, tzinfo=UTC
    )


def test_configured_start_and_time_zone_are_used() -> None:
    rules = PeriodRules(consumer_first_day=date(2025, 6, 1), timezone="Europe/Berlin")
    start = rules.first_period_start(PoolKind.CONSUMER)
    assert start == datetime(2025, 6, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert start.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "changes",
    [
        {"min_days": 31},
        {"min_days": 0},
        {"growth_target": Decimal("0")},
        {"consumer_base_points": Decimal("0.00")},
        {"merchant_base_points": Decimal("1.001")},
    ],
)
def test_inconsistent_rules_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        replace(DEFAULT_PERIOD_RULES, **changes)


def test_unknown_time_zone_is_refused_at_configuration() -> None:
    with pytest.raises(ZoneInfoNotFoundError, match="Mars"):
        PeriodRules(timezone="Mars/Olympus_Mons")


# --- day numbering --------------------------------------------------------------------------


def test_day_one_starts_at_the_period_start() -> None:
    start = shanghai(2024, 3, 15)
    assert day_of_period(start, start) == 1
    assert day_of_period(start, start + timedelta(hours=24) - timedelta(microseconds=1)) == 1
    assert day_of_period(start, start + timedelta(hours=24)) == 2
    assert day_of_period(start, shanghai(2024, 3, 21, 15, 30)) == 7
    assert start_of_day(start, 11) == shanghai(2024, 3, 25)


def test_day_numbering_compares_instants_not_wall_clocks() -> None:
    start = shanghai(2024, 3, 15)
    # 2024-03-21 23:30 UTC is 2024-03-22 07:30 in Shanghai: day 8 of the period.
    assert day_of_period(start, datetime(2024, 3, 21, 23, 30, tzinfo=UTC)) == 8


def test_instants_before_the_start_or_naive_are_refused() -> None:
    start = shanghai(2024, 3, 15)
    with pytest.raises(ValueError, match="before the period start"):
        day_of_period(start, start - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        day_of_period(start, datetime(2024, 3, 16))
    with pytest.raises(ValueError, match="numbered from 1"):
        start_of_day(start, 0)


def test_days_are_24_hours_across_a_daylight_saving_change() -> None:
    # RULES 1.2 counts 24-hour days. Berlin moves its clocks forward on 2024-03-31, so
    # ten 24-hour days after 2024-03-25 00:00 CET is 2024-04-04 01:00 CEST.
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 3, 25, tzinfo=berlin)
    due = settlement_due_at(start, start + timedelta(days=2))
    assert due.due_at == datetime(2024, 4, 4, 1, 0, tzinfo=berlin)
    # Python subtracts same-zone datetimes on the wall clock; compare the instants in UTC.
    assert due.due_at.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=240)
    assert day_of_period(start, datetime(2024, 4, 4, 0, 30, tzinfo=berlin)) == 10


# --- example GP-2 ---------------------------------------------------------------------------


def test_gp2_target_reached_by_day_7_settles_on_day_11() -> None:
    rules = DEFAULT_PERIOD_RULES
    start = rules.first_period_start(PoolKind.CONSUMER)
    s1 = rules.base_points(PoolKind.CONSUMER)
    assert target_reached(s1, Decimal("150000.00"), rules.growth_target)

    due = settlement_due_at(start, shanghai(2024, 3, 21, 18, 0), rules.min_days, rules.max_days)

    assert due.due_at == shanghai(2024, 3, 25)
    assert due.settle_on_day == 11
    assert due.reached_on_day == 7
    assert not due.forced
    assert due.reason == "target reached on day 7, settle on day 11"


def test_gp2_target_reached_on_day_18_settles_on_day_19() -> None:
    start = shanghai(2024, 3, 15)
    reached = shanghai(2024, 4, 1, 9, 45)  # day 18: 2024-04-01 00:00 .. 2024-04-02 00:00
    due = settlement_due_at(start, reached)
    assert due.due_at == shanghai(2024, 4, 2)
    assert due.reached_on_day == 18
    assert due.settle_on_day == 19
    assert not due.forced
    assert due.reason == "target reached on day 18, settle on day 19"


def test_gp2_growth_of_9_percent_at_day_30_forces_settlement_on_day_31() -> None:
    s1 = DEFAULT_PERIOD_RULES.base_points(PoolKind.CONSUMER)
    minted = Decimal("90000.00")
    assert not target_reached(s1, minted)

    due = settlement_due_at(shanghai(2024, 3, 15), None)

    assert due.due_at == shanghai(2024, 4, 14)
    assert due.forced
    assert due.settle_on_day == 31
    assert due.reached_on_day is None
    assert due.reason == "forced: target not reached by end of day 30"
    assert growth(minted, s1) == Decimal("0.09")


@pytest.mark.parametrize(
    ("reached_on_day", "settle_on_day", "forced"),
    [(1, 11, False), (10, 11, False), (11, 12, False), (30, 31, False), (31, 31, True)],
)
def test_settlement_day_at_the_boundaries(
    reached_on_day: int, settle_on_day: int, forced: bool
) -> None:
    start = shanghai(2024, 3, 15)
    # The very last microsecond of the day is still that day.
    reached = start_of_day(start, reached_on_day + 1) - timedelta(microseconds=1)
    due = settlement_due_at(start, reached)
    assert due.settle_on_day == settle_on_day
    assert due.forced is forced
    assert due.due_at == start + timedelta(days=settle_on_day - 1)


def test_settlement_days_follow_configured_limits() -> None:
    start = shanghai(2024, 3, 15)
    assert settlement_due_at(start, start, min_days=5, max_days=7).settle_on_day == 6
    assert settlement_due_at(start, None, min_days=5, max_days=7).due_at == shanghai(2024, 3, 22)
    with pytest.raises(ValueError, match="min_days"):
        settlement_due_at(start, None, min_days=8, max_days=7)


# --- growth and the reference size --------------------------------------------------------


def test_target_is_fifteen_percent_of_the_reference_size() -> None:
    s1 = Decimal("1000000.00")
    assert target_points(s1) == Decimal("150000")
    assert target_reached(s1, Decimal("150000.00"))
    assert not target_reached(s1, Decimal("149999.99"))
    merchant = DEFAULT_PERIOD_RULES.base_points(PoolKind.MERCHANT)
    assert not target_reached(merchant, Decimal("1499999.99"))
    assert target_reached(merchant, Decimal("1500000.00"))


def test_reference_size_grows_by_what_was_minted() -> None:
    s1 = Decimal("1000000.00")
    s2 = next_reference_size(s1, Decimal("163000.50"))
    assert s2 == Decimal("1163000.50")
    # In period 2 the target is 15% of S_2, no longer of S_1.
    assert not target_reached(s2, Decimal("174450.00"))
    assert target_reached(s2, Decimal("174450.08"))
    assert growth(Decimal("174450.075"), s2) == Decimal("0.15")
    assert next_reference_size(s2, Decimal("0.00")) == s2


def test_growth_is_uncapped_and_refuses_nonsense() -> None:
    assert growth(Decimal("300000.00"), Decimal("1000000.00")) == Decimal("0.3")
    assert growth(Decimal("0.00"), Decimal("1000000.00")) == 0
    # 1/3 keeps 28 significant digits.
    assert growth(Decimal("1.00"), Decimal("3.00")) == Decimal("0.3333333333333333333333333333")
    with pytest.raises(ValueError, match="negative"):
        growth(Decimal("-1.00"), Decimal("1000000.00"))
    with pytest.raises(ValueError, match="positive"):
        growth(Decimal("1.00"), Decimal("0.00"))


# --- properties ---------------------------------------------------------------------------

_starts = st.datetimes(
    min_value=datetime(2020, 1, 1),  # hypothesis takes naive bounds
    max_value=datetime(2035, 1, 1),
    timezones=st.sampled_from([SHANGHAI, UTC, ZoneInfo("Europe/Berlin")]),
)


@given(
    start=_starts,
    offset=st.one_of(st.none(), st.timedeltas(timedelta(0), timedelta(days=40))),
    min_days=st.integers(1, 20),
    extra_days=st.integers(0, 30),
)
def test_settlement_lies_in_the_window_and_after_the_target(
    start: datetime, offset: timedelta | None, min_days: int, extra_days: int
) -> None:
    max_days = min_days + extra_days
    reached = None if offset is None else start + offset
    due = settlement_due_at(start, reached, min_days, max_days)

    elapsed = due.due_at.astimezone(UTC) - start.astimezone(UTC)
    # Never before min_days full days, never after max_days full days.
    assert timedelta(days=min_days) <= elapsed <= timedelta(days=max_days)
    assert elapsed == timedelta(days=due.settle_on_day - 1)
    assert day_of_period(start, due.due_at) == due.settle_on_day
    assert due.due_at.tzinfo is start.tzinfo
    within_window = reached is not None and (
        reached.astimezone(UTC) - start.astimezone(UTC) < timedelta(days=max_days)
    )
    assert due.forced is not within_window
    if reached is not None and not due.forced:
        # A settlement that the target triggered comes after the target: at the start of
        # the day after it, or of day min_days + 1 if that is later.
        assert due.due_at > reached
        assert due.reached_on_day == day_of_period(start, reached)
        assert due.settle_on_day == max(due.reached_on_day, min_days) + 1


@given(
    reference=st.integers(1, 10**12).map(lambda c: Decimal(c).scaleb(-2)),
    minted=st.integers(0, 10**12).map(lambda c: Decimal(c).scaleb(-2)),
)
def test_target_reached_agrees_with_growth(reference: Decimal, minted: Decimal) -> None:
    assert target_reached(reference, minted) is (minted / reference >= Decimal("0.15"))
    g = growth(minted, reference)
    assert g >= 0
    # S_(k+1) = S_k (1 + g) up to the 28-digit rounding of g.
    assert abs(reference * (1 + g) - next_reference_size(reference, minted)) <= Decimal("1e-12")
