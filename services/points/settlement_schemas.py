"""Request and response models of the settlements (amounts, points and ratios are strings)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer

from services.points.settings import PoolName
from shared.money import Amount

#: A ratio (growth, index, factor, coverage): exact decimal, answered as a string.
Ratio = Annotated[Decimal, PlainSerializer(str, return_type=str, when_used="json")]


class SettlementRunRequest(BaseModel):
    """Settle every period of the pool that is due at or before ``as_of``."""

    as_of: AwareDatetime = Field(
        description="Settle what is due at or before this instant (timezone-aware); "
        "it may not be later than the service's clock unless dry_run is true"
    )
    dry_run: bool = Field(
        default=False, description="Compute what would be paid and write nothing"
    )


class CohortSettlementPublic(BaseModel):
    """One cohort's part of a settlement (RULES 1.3)."""

    cohort: int
    settlement_of_cohort: int
    #: I_c, the index at the cohort's first settlement.
    start_index: Ratio
    #: base_rate × I_n / I_c: what one point is entitled to before the cap.
    factor: Ratio
    #: cohort_share × B, exact.
    budget: Ratio
    total_entitlement: Amount
    #: The budget did not cover the entitlements and was split pro rata.
    pro_rata: bool
    paid: Amount
    positions: int
    positions_paid: int
    closed: bool


class SettlementPublic(BaseModel):
    """One settlement of a pool: it closed period ``number`` (RULES 1.2, 1.3)."""

    settlement_id: UUID
    pool: PoolName
    number: int
    #: True for a preview: nothing was written, the id is not stored.
    dry_run: bool
    period_started_at: datetime
    #: The due instant: the period ends and the next one starts here.
    period_ended_at: datetime
    due_reason: str
    forced: bool
    target_reached_at: datetime | None
    reached_on_day: int | None
    reference_size: Amount
    minted: Amount
    #: g_n = minted / S_n (uncapped); the index grows by min(g_n, growth_target).
    growth: Ratio
    release_index: Ratio
    fund_before: Amount
    fund_after: Amount
    total_paid: Amount
    positions_paid: int
    payout_events: int
    cohorts: list[CohortSettlementPublic]
    created_at: datetime


class NextSettlementPublic(BaseModel):
    """When the pool's current period is settled, and why then (RULES 1.2)."""

    number: int
    period_started_at: datetime
    due_at: datetime
    settle_on_day: int
    forced: bool
    target_reached: bool
    target_reached_at: datetime | None
    reached_on_day: int | None
    target_points: Amount
    points_to_target: Amount
    reason: str


class SettlementRunPublic(BaseModel):
    pool: PoolName
    as_of: datetime
    dry_run: bool
    #: The settlements made (or, for a dry run, that would be made), oldest first.
    settlements: list[SettlementPublic]
    next_due: NextSettlementPublic
    detail: str


class SettlementListPublic(BaseModel):
    pool: PoolName
    settlements: list[SettlementPublic]


class LastSettlementPublic(BaseModel):
    settlement_id: UUID
    number: int
    period_ended_at: datetime
    forced: bool
    growth: Ratio
    release_index: Ratio
    total_paid: Amount
    positions_paid: int
    fund_after: Amount


class PoolSettlementPublic(BaseModel):
    """A pool's settlement status (admin): the index, the next and the last settlement."""

    #: I of the last settlement; None before the first (which sets I_1 = 1).
    release_index: Ratio | None
    next_settlement: NextSettlementPublic
    last_settlement: LastSettlementPublic | None
