"""Response models of the points service (amounts and points are JSON strings)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, PlainSerializer

from services.points.settings import PoolName
from services.points.settlement_schemas import PoolSettlementPublic
from shared.money import Amount

#: A ratio (growth, a rate, a share): exact decimal, answered as a string.
Ratio = Annotated[Decimal, PlainSerializer(str, return_type=str, when_used="json")]


# --- GET /v1/members/{member_id}/points ----------------------------------------------


class PositionPublic(BaseModel):
    """The member's points of one cohort of one pool, and what they have released."""

    pool: PoolName
    cohort: int
    points: Amount
    #: Vouchers paid to this position so far.
    released: Amount
    #: Settlements the position has taken part in, and how many it may still take part in.
    settlements: int
    settlements_left: int
    closed: bool
    #: RULES 1.3: the lifetime cap multiplier × points (rounded down), and what may still
    #: come "up to" it: cap − released, 0 once closed. A promise, not a debt.
    cap: Amount
    still_possible: Amount
    #: How well the pool's fund covers what all its open positions may still receive
    #: (fund ÷ Σ still possible, rounded down, 4 decimals); null when nothing is owed.
    coverage: Ratio | None


class PointEntryPublic(BaseModel):
    """One mint of points, naming the order it came from."""

    order_id: UUID
    pool: PoolName
    cohort: int
    points: Amount
    created_at: datetime


class MemberPointsPublic(BaseModel):
    member_id: UUID
    consumer_points: Amount
    merchant_points: Amount
    positions: list[PositionPublic]
    #: The newest entries first (at most `limit`).
    entries: list[PointEntryPublic]


# --- GET /v1/pools -------------------------------------------------------------------


class PeriodPublic(BaseModel):
    number: int
    started_at: datetime
    #: S_k (RULES 1.2).
    reference_size: Amount
    minted: Amount
    #: minted / S_k, rounded down to 6 decimals (RULES 1.2).
    growth: Ratio
    growth_target: Ratio
    #: growth_target × S_k: the points that reach the target.
    target_points: Amount
    target_reached: bool
    #: When the period's minted total first reached the target (RULES 1.2).
    target_reached_at: datetime | None = None


class PoolPublic(BaseModel):
    pool: PoolName
    fund_balance: Amount
    base_points: Amount
    period: PeriodPublic
    #: The release index, the next settlement (when and why) and the last one.
    settlement: PoolSettlementPublic


class PoolsPublic(BaseModel):
    program: str
    timezone: str
    pools: list[PoolPublic]


# --- GET /v1/orders/{order_id}/allocation --------------------------------------------


class RewardPublic(BaseModel):
    kind: Literal["binding", "invite"]
    beneficiary_id: UUID
    rate: Ratio
    basis: Literal["consumer_points", "cash_amount"]
    #: rate × basis, rounded down: what was due before any scaling.
    due: Amount
    #: What was paid (less than `due` when the rewards did not fit in G).
    amount: Amount
    payout_id: UUID | None


class PayoutPublic(BaseModel):
    payout_id: UUID
    batch_id: UUID
    member_id: UUID
    asset: str
    amount: Amount
    reason: str
    fund: str
    created_at: datetime


class FundEntryPublic(BaseModel):
    txn_id: UUID
    account: str
    amount: Amount
    memo: str
    created_at: datetime


class AllocationFigures(BaseModel):
    """How G was split (RULES 1.1); the four parts add up to G."""

    platform_fee: Amount
    rewards_total: Amount
    rewards_scaled: bool
    consumer_pool: Amount
    merchant_pool: Amount
    allocated_at: datetime


class OrderAllocationPublic(BaseModel):
    order_id: UUID
    pos_order_id: str
    consumer_id: UUID
    merchant_id: UUID
    amount: Amount
    voucher_amount: Amount
    cash_amount: Amount
    giveback_rate: Ratio
    earn_on: Literal["cash", "gross"]
    giveback: Amount
    consumer_points: Amount
    merchant_points: Amount
    coins: Amount
    consumer_cohort: int | None
    merchant_cohort: int | None
    completed_at: datetime
    #: pending: waiting for the order's referral evaluation; allocated: G has been split.
    state: Literal["pending", "allocated"]
    allocation: AllocationFigures | None
    rewards: list[RewardPublic]
    payouts: list[PayoutPublic]
    fund_entries: list[FundEntryPublic]


# --- GET /v1/orders/{order_id}/refunds -------------------------------------------------


class RefundPublic(BaseModel):
    """One refund of an order and what it reversed (RULES, general rules).

    ``*_due`` is this refund's share of each effect; what could not be taken back
    (points already released against, money a fund had paid out) is unrecovered.
    """

    refund_id: UUID
    pos_refund_id: str
    amount: Amount
    cash_amount: Amount
    voucher_amount: Amount
    refunded_total: Amount
    final: bool
    giveback_state: Literal["pending", "allocated"]
    consumer_points_due: Amount
    consumer_points_reversed: Amount
    merchant_points_due: Amount
    merchant_points_reversed: Amount
    points_unrecovered: Amount
    coins_reversed: Amount
    pending_giveback_returned: Amount
    platform_fee_due: Amount
    platform_fee_recovered: Amount
    consumer_pool_due: Amount
    consumer_pool_recovered: Amount
    merchant_pool_due: Amount
    merchant_pool_recovered: Amount
    rewards_kept: Amount
    unrecovered: Amount
    refunded_at: datetime


class OrderRefundsPublic(BaseModel):
    order_id: UUID
    refunds: list[RefundPublic]


# --- GET /v1/audit (RULES 1.7) -----------------------------------------------------------

#: A figure of an audit check: amounts and points as strings, counts as integers.
Figure = str | int | bool | None


class AuditCheck(BaseModel):
    name: str
    ok: bool
    figures: dict[str, Figure]
    detail: str


class AuditReport(BaseModel):
    """ok only when every check holds; each check states the figures it compared."""

    ok: bool
    as_of: datetime
    checks: list[AuditCheck]
