"""Pools, periods and the growth trigger of the green points program (RULES 1.2).

A pure functional core: plain values in, plain values out, no I/O, no clock. The caller
passes every instant (taken from the injected clock) as a timezone-aware ``datetime``.

Points are 2-decimal quantities. Growth ``g = minted / S_k`` is a ratio, not money: it is
computed in a pinned copy of Python's default decimal context (28 significant digits,
half-even), so a caller that changes its thread's decimal context cannot change a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.money import exact

#: RULES (general): calendar days are in the program's time zone.
PROGRAM_TIMEZONE = "Asia/Shanghai"

#: RULES 1.2: "day n of a period is the n-th 24-hour day from its start".
DAY = timedelta(hours=24)

#: RULES 1.2 defaults, shared by :class:`PeriodRules` and the functions' keyword defaults.
GROWTH_TARGET = Decimal("0.15")
MIN_DAYS = 10
MAX_DAYS = 30

# Growth is a ratio, not money: 28 significant digits like the default context, pinned.
_RATIO = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


class PoolKind(StrEnum):
    """RULES 1.2: two pools, each with its own fund, clock and settlements."""

    CONSUMER = "consumer"
    MERCHANT = "merchant"


def _check_growth_target(value: Decimal) -> None:
    if not value.is_finite() or value <= 0:
        raise ValueError(f"growth_target must be a positive number, got {value}")


@dataclass(frozen=True)
class PeriodRules:
    """The RULES 1.2 defaults; an operator may change each in the program configuration."""

    consumer_base_points: Decimal = Decimal("1000000.00")
    merchant_base_points: Decimal = Decimal("10000000.00")
    growth_target: Decimal = GROWTH_TARGET
    min_days: int = MIN_DAYS
    max_days: int = MAX_DAYS
    # The first periods start at 00:00 of these calendar days in `timezone`.
    consumer_first_day: date = date(2024, 3, 15)
    merchant_first_day: date = date(2024, 1, 18)
    timezone: str = PROGRAM_TIMEZONE

    def __post_init__(self) -> None:
        for name in ("consumer_base_points", "merchant_base_points"):
            value = exact(getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
        _check_growth_target(self.growth_target)
        if not 1 <= self.min_days <= self.max_days:
            raise ValueError(
                f"need 1 <= min_days <= max_days, got min_days={self.min_days}, "
                f"max_days={self.max_days}"
            )
        # Fail at configuration time, not at the first settlement, on an unknown zone name.
        ZoneInfo(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches one instance per key

    def base_points(self, pool: PoolKind) -> Decimal:
        """``S_1`` of the pool (RULES 1.2)."""
        if PoolKind(pool) is PoolKind.CONSUMER:
            return self.consumer_base_points
        return self.merchant_base_points

    def first_period_start(self, pool: PoolKind) -> datetime:
        """00:00 of the pool's first day in the program time zone (RULES 1.2)."""
        consumer = PoolKind(pool) is PoolKind.CONSUMER
        day = self.consumer_first_day if consumer else self.merchant_first_day
        return datetime.combine(day, time(0), tzinfo=self.zone)


DEFAULT_PERIOD_RULES = PeriodRules()


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def day_of_period(period_start: datetime, at: datetime) -> int:
    """The number n of the period day that contains *at*; day 1 starts at *period_start*.

    RULES 1.2: days are 24-hour days counted from the start. Both instants are compared
    in UTC so that a zone with daylight saving time still gets 24-hour days.
    """
    _require_aware("period_start", period_start)
    _require_aware("at", at)
    elapsed = at.astimezone(UTC) - period_start.astimezone(UTC)
    if elapsed < timedelta(0):
        raise ValueError(f"{at.isoformat()} is before the period start {period_start.isoformat()}")
    return elapsed // DAY + 1


def start_of_day(period_start: datetime, n: int) -> datetime:
    """The instant day *n* of the period begins, in *period_start*'s time zone.

    RULES 1.2: "settle on day n" means at the start of day n.
    """
    _require_aware("period_start", period_start)
    if n < 1:
        raise ValueError(f"period days are numbered from 1, got {n}")
    start = period_start.astimezone(UTC) + (n - 1) * DAY
    return start.astimezone(period_start.tzinfo)


@dataclass(frozen=True)
class SettlementDue:
    """When a period is settled and why (RULES 1.2)."""

    due_at: datetime
    settle_on_day: int
    #: True when the growth target was not reached by the end of day ``max_days``.
    forced: bool
    #: The period day on which the target was reached, None for a forced settlement.
    reached_on_day: int | None
    reason: str


def settlement_due_at(
    period_start: datetime,
    reached_at: datetime | None,
    min_days: int = MIN_DAYS,
    max_days: int = MAX_DAYS,
) -> SettlementDue:
    """When the period that began at *period_start* is settled.

    *reached_at* is the instant the points minted in the period first reached
    ``growth_target × S_k`` (see :func:`target_reached`), or None if they have not.

    RULES 1.2:
    - reached on day d <= min_days: settle on day min_days + 1;
    - reached on day d with min_days < d <= max_days: settle on day d + 1;
    - not reached by the end of day max_days: a forced settlement on day max_days + 1.
    """
    if not 1 <= min_days <= max_days:
        raise ValueError(f"need 1 <= min_days <= max_days, got {min_days}, {max_days}")
    reached_on_day = None if reached_at is None else day_of_period(period_start, reached_at)
    if reached_on_day is None or reached_on_day > max_days:
        # The period ends at its settlement, so growth that arrives after day max_days
        # cannot count for it: the settlement at day max_days + 1 is forced.
        day = max_days + 1
        return SettlementDue(
            due_at=start_of_day(period_start, day),
            settle_on_day=day,
            forced=True,
            reached_on_day=None,
            reason=f"forced: target not reached by end of day {max_days}",
        )
    day = max(reached_on_day, min_days) + 1
    return SettlementDue(
        due_at=start_of_day(period_start, day),
        settle_on_day=day,
        forced=False,
        reached_on_day=reached_on_day,
        reason=f"target reached on day {reached_on_day}, settle on day {day}",
    )


def _check_reference_size(reference_size: Decimal) -> None:
    if not reference_size.is_finite() or reference_size <= 0:
        raise ValueError(f"the reference size S_k must be positive, got {reference_size}")


def _check_minted(minted: Decimal) -> None:
    if not minted.is_finite() or minted < 0:
        raise ValueError(f"minted points cannot be negative, got {minted}")


def target_points(reference_size: Decimal, growth_target: Decimal = GROWTH_TARGET) -> Decimal:
    """Points that must be minted in period k to reach the target: ``growth_target × S_k``.

    Exact (a 2-decimal size times a short target), so a SQL query can compare a running
    sum of minted points against it to find the instant the target was reached.
    """
    _check_reference_size(reference_size)
    _check_growth_target(growth_target)
    return reference_size * growth_target


def target_reached(
    reference_size: Decimal, minted: Decimal, growth_target: Decimal = GROWTH_TARGET
) -> bool:
    """RULES 1.2: whether ``minted / S_k >= growth_target``.

    Compared as ``minted >= growth_target × S_k`` so no inexact division is involved.
    """
    _check_minted(minted)
    return minted >= target_points(reference_size, growth_target)


def growth(minted: Decimal, reference_size: Decimal) -> Decimal:
    """RULES 1.2: the period's growth ``g = points minted in period k / S_k``.

    A ratio in the pinned 28-digit context; it is uncapped here (RULES 1.3 caps it at
    the growth target when it moves the release index).
    """
    _check_minted(minted)
    _check_reference_size(reference_size)
    return _RATIO.divide(minted, reference_size)


def next_reference_size(reference_size: Decimal, minted: Decimal) -> Decimal:
    """RULES 1.2: ``S_(k+1) = S_k + points minted into the pool in period k``."""
    _check_reference_size(reference_size)
    _check_minted(minted)
    return exact(exact(reference_size) + exact(minted))
