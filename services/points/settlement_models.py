"""Tables of the settlements (RULES 1.2, 1.3): what each settlement did, and each cohort.

A settlement closes one period of one pool; ``(pool, number)`` is unique, so a period is
settled at most once. Ratios (growth, release index, factor, budget) are stored as their
exact decimal text; money and points are integer fen (:class:`shared.db.MoneyColumn`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from services.points.models import RateColumn
from shared.db import MoneyColumn


class Settlement(SQLModel, table=True):
    """Settlement ``number`` of a pool: it closed period ``number`` at its due instant."""

    __tablename__ = "settlements"
    __table_args__ = (UniqueConstraint("pool", "number", name="uq_settlements_pool_number"),)

    id: UUID = Field(primary_key=True)
    pool: str = Field(max_length=16)
    number: int
    period_started_at: datetime
    #: The due instant (RULES 1.2): the period ends here and the next one starts.
    period_ended_at: datetime
    due_reason: str = Field(max_length=200)
    forced: bool
    target_reached_at: datetime | None = None
    reached_on_day: int | None = None
    #: S_n and the points minted in period n.
    reference_size: Decimal = Field(sa_type=MoneyColumn)
    minted: Decimal = Field(sa_type=MoneyColumn)
    #: g_n = minted / S_n (uncapped) and I_n (RULES 1.3).
    growth: Decimal = Field(sa_type=RateColumn)
    release_index: Decimal = Field(sa_type=RateColumn)
    #: B, the fund balance at the start of the settlement, and what is left after it.
    fund_before: Decimal = Field(sa_type=MoneyColumn)
    fund_after: Decimal = Field(sa_type=MoneyColumn)
    total_paid: Decimal = Field(sa_type=MoneyColumn)
    positions_paid: int
    #: How many cohorts took part.
    cohorts: int
    #: How many ``funds.paid_out`` events carried the payouts.
    payout_events: int
    created_at: datetime


class SettlementBatch(SQLModel, table=True):
    """One ``funds.paid_out`` event of a settlement: how many payouts it carried, and how much.

    Points keeps no row per payout of a settlement (see
    :mod:`services.points.settlement_repository`); the audit reconciles these batches with
    the ``payouts.credited`` vouchers sends back for each (RULES 1.7).
    """

    __tablename__ = "settlement_batches"

    batch_id: UUID = Field(primary_key=True)
    settlement_id: UUID = Field(index=True)
    payouts: int
    total: Decimal = Field(sa_type=MoneyColumn)
    #: A settlement's payout ids are consecutive: the batch holds those from first to last.
    first_payout_id: UUID
    last_payout_id: UUID
    created_at: datetime


class SettlementCohort(SQLModel, table=True):
    """One cohort's part of one settlement (RULES 1.3)."""

    __tablename__ = "settlement_cohorts"

    settlement_id: UUID = Field(primary_key=True)
    cohort: int = Field(primary_key=True)
    #: 1 at the cohort's first settlement, up to max_settlements.
    settlement_of_cohort: int
    start_index: Decimal = Field(sa_type=RateColumn)
    #: base_rate × I_n / I_c (FACTOR_PLACES decimals): a position's entitlement per point.
    factor: Decimal = Field(sa_type=RateColumn)
    #: cohort_share × B, exact (not rounded to the cent).
    budget: Decimal = Field(sa_type=RateColumn)
    total_entitlement: Decimal = Field(sa_type=MoneyColumn)
    #: True when the budget did not cover the entitlements and was split pro rata.
    pro_rata: bool
    paid: Decimal = Field(sa_type=MoneyColumn)
    #: Open positions that took part, and how many of them received a payout (> 0).
    positions: int
    positions_paid: int
    #: True when this was the cohort's last settlement (max_settlements reached).
    closed: bool


class Cohort(SQLModel, table=True):
    """Cohort ``number`` of a pool once it has been settled: it remembers I_c (RULES 1.3)."""

    __tablename__ = "cohorts"

    pool: str = Field(primary_key=True, max_length=16)
    number: int = Field(primary_key=True)
    start_index: Decimal = Field(sa_type=RateColumn)
    settlements: int = 0
    #: Takes part in no further settlement (max_settlements reached, or nothing left open).
    closed: bool = False
    #: Σ of what its open positions may still receive, max(0, multiplier × points −
    #: released), as of its last settlement: the members' view reads these few rows
    #: instead of summing a million positions (RULES, general: honest by construction).
    still_possible: Decimal = Field(default=Decimal("0.00"), sa_type=MoneyColumn)
