"""Injected time. RULES and ARCHITECTURE ("Time"): every rule takes `now` from a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock for tests and admin backfills: it only moves when told to."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at


class AdjustableClock:
    """The system clock shifted by an offset an operator can set (development and tests).

    The end-to-end tests play months of a program in minutes by moving every service's
    clock forward; production services never expose the setter (see shared.app).
    """

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        self._offset = at - datetime.now(UTC)
