"""Settings of the points service (environment prefix `POINTS_`).

The program parameters are the RULES defaults; an operator changes them in the
environment (e.g. ``POINTS_CONSUMER_POOL_SHARE=0.6``). They live here, in one place, and
the pure rule modules receive them as their ``*Rules`` dataclasses.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.points.domain.earning import EarningRules
from shared.settings import ServiceSettings

if TYPE_CHECKING:
    from services.points.domain.periods import PeriodRules
    from services.points.domain.release import ReleaseRules

PoolName = Literal["consumer", "merchant"]

class PointsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="POINTS_", extra="ignore")

    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///var/points.db"

    # --- the program (RULES, general) -------------------------------------------------
    #: One deployment runs one program; green points is the only one built so far.
    program: Literal["green_points"] = "green_points"
    #: Calendar days (period starts) are in this time zone.
    timezone: str = "Asia/Shanghai"

    # --- RULES 1.1 earning ------------------------------------------------------------
    earn_on: Literal["cash", "gross"] = "cash"
    coin_rate: Decimal = Field(default=Decimal("0.01"), ge=0, le=1, allow_inf_nan=False)
    platform_fee_rate: Decimal = Field(default=Decimal("0"), ge=0, le=1, allow_inf_nan=False)
    consumer_pool_share: Decimal = Field(default=Decimal("0.5"), ge=0, le=1, allow_inf_nan=False)

    # --- RULES 1.2 pools and periods --------------------------------------------------
    consumer_base_points: Decimal = Field(
        default=Decimal("1000000.00"), gt=0, decimal_places=2, allow_inf_nan=False
    )
    merchant_base_points: Decimal = Field(
        default=Decimal("10000000.00"), gt=0, decimal_places=2, allow_inf_nan=False
    )
    growth_target: Decimal = Field(default=Decimal("0.15"), gt=0, allow_inf_nan=False)
    #: The first period of each pool starts at 00:00 of this day in `timezone`.
    consumer_first_day: date = date(2024, 3, 15)
    merchant_first_day: date = date(2024, 1, 18)
    min_days: int = Field(default=10, ge=1)
    max_days: int = Field(default=30, ge=1)

    # --- RULES 1.3 release (used by settlements) --------------------------------------
    base_rate: Decimal = Field(default=Decimal("0.005"), gt=0, allow_inf_nan=False)
    multiplier: Decimal = Field(default=Decimal("5"), gt=0, allow_inf_nan=False)
    cohort_share: Decimal = Field(default=Decimal("0.01"), gt=0, le=1, allow_inf_nan=False)
    max_settlements: int = Field(default=40, ge=1)
    #: The scheduler checks every this many seconds whether a settlement is due.
    settlement_check_seconds: float = Field(default=30, gt=0)
    #: A settlement's payouts travel in funds.paid_out events of at most this many each.
    payouts_per_event: int = Field(default=2000, ge=1, le=10000)

    # --- RULES 1.7 the audit ----------------------------------------------------------
    #: The audit reconciles with the vouchers and orders services' own totals.
    vouchers_url: str = "http://127.0.0.1:8003"
    orders_url: str = "http://127.0.0.1:8001"
    #: A payout batch not yet credited by vouchers is "in flight"; older than this, the
    #: audit reports it as a failure (events stuck or lost).
    audit_max_in_flight_seconds: int = Field(default=300, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @model_validator(mode="after")
    def _days_in_order(self) -> Self:
        if self.min_days > self.max_days:
            raise ValueError(
                f"min_days ({self.min_days}) must not exceed max_days ({self.max_days})"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def earning_rules(self) -> EarningRules:
        """RULES 1.1 parameters for :mod:`services.points.domain.earning`."""
        return EarningRules(
            earn_on=self.earn_on,
            coin_rate=self.coin_rate,
            platform_fee_rate=self.platform_fee_rate,
            consumer_pool_share=self.consumer_pool_share,
        )

    def base_points(self, pool: PoolName) -> Decimal:
        """``S_1`` of the pool (RULES 1.2)."""
        return self.consumer_base_points if pool == "consumer" else self.merchant_base_points

    def first_period_start(self, pool: PoolName) -> datetime:
        """00:00 of the pool's first day in the program time zone (RULES 1.2)."""
        day = self.consumer_first_day if pool == "consumer" else self.merchant_first_day
        return datetime.combine(day, time(0), tzinfo=self.zone)

    def period_rules(self) -> PeriodRules:
        """RULES 1.2 parameters for :mod:`services.points.domain.periods`."""
        from services.points.domain.periods import PeriodRules

        return PeriodRules(
            consumer_base_points=self.consumer_base_points,
            merchant_base_points=self.merchant_base_points,
            growth_target=self.growth_target,
            min_days=self.min_days,
            max_days=self.max_days,
            consumer_first_day=self.consumer_first_day,
            merchant_first_day=self.merchant_first_day,
            timezone=self.timezone,
        )

    def release_rules(self) -> ReleaseRules:
        """RULES 1.3 parameters for :mod:`services.points.domain.release`."""
        from services.points.domain.release import ReleaseRules

        return ReleaseRules(
            base_rate=self.base_rate,
            multiplier=self.multiplier,
            cohort_share=self.cohort_share,
            max_settlements=self.max_settlements,
            growth_target=self.growth_target,
        )
