"""Tables of the points service (green points: pools, periods, positions, funds).

Every money and points column is a :class:`shared.db.MoneyColumn` (integer fen), so SQL
sums and set-based settlements work on exact integers. Instants are aware datetimes
(SQLModel's ``UTCDateTime``: stored in UTC, read back aware on SQLite and PostgreSQL).
Positions are kept narrow and keyed by ``(pool, cohort, member_id)``: a settlement updates
one cohort of a pool with a single statement over up to a million rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Dialect, Index, String, Text, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from shared.db import MoneyColumn


class RateColumn(TypeDecorator[Decimal]):
    """A rate or share (0.20, 0.05), stored as its exact decimal text."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:  # noqa: ARG002
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:  # noqa: ARG002
        return None if value is None else Decimal(value)


# --- RULES 1.2: pools and their periods -----------------------------------------------


class Pool(SQLModel, table=True):
    """One pool (consumer or merchant): its fund and its current period."""

    __tablename__ = "pools"

    kind: str = Field(primary_key=True, max_length=16)
    fund_balance: Decimal = Field(sa_type=MoneyColumn)
    period_number: int
    period_started_at: datetime
    #: S_k of the current period.
    reference_size: Decimal = Field(sa_type=MoneyColumn)
    #: Points minted into the pool in the current period.
    minted: Decimal = Field(sa_type=MoneyColumn)
    created_at: datetime
    #: RULES 1.2: when the current period's minted total first reached growth_target × S_k
    #: (the completion instant of the order whose mint crossed it); None until then.
    target_reached_at: datetime | None = None


class Period(SQLModel, table=True):
    """Period k of a pool; ``settled_at`` is set by its settlement (which ends it)."""

    __tablename__ = "periods"

    pool: str = Field(primary_key=True, max_length=16)
    number: int = Field(primary_key=True)
    started_at: datetime
    reference_size: Decimal = Field(sa_type=MoneyColumn)
    minted: Decimal = Field(sa_type=MoneyColumn)
    settled_at: datetime | None = None
    #: Copied from the pool when the period is settled (RULES 1.2).
    target_reached_at: datetime | None = None


# --- RULES 1.3: positions (one member's points of one cohort of one pool) ------------


class Position(SQLModel, table=True):
    """The points a member received in period ``cohort`` of a pool, and what they released."""

    __tablename__ = "positions"
    __table_args__ = (
        Index("ix_positions_member", "member_id"),
        # A settlement updates every open position of a cohort at once. Half-empty pages
        # let PostgreSQL write each new row version beside the old one (a HOT update: no
        # index entries to add), which makes a million-row settlement several times faster.
        {"postgresql_with": {"fillfactor": 50}},
    )

    pool: str = Field(primary_key=True, max_length=16)
    cohort: int = Field(primary_key=True)
    member_id: UUID = Field(primary_key=True)
    points: Decimal = Field(sa_type=MoneyColumn)
    released: Decimal = Field(default=Decimal("0.00"), sa_type=MoneyColumn)
    settlements: int = 0
    closed: bool = False


class PointEntry(SQLModel, table=True):
    """The points ledger: every mint, naming the order it came from (RULES, general)."""

    __tablename__ = "point_entries"
    __table_args__ = (
        Index("ix_point_entries_member", "member_id", "created_at"),
        Index("ix_point_entries_pool_cohort", "pool", "cohort"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: UUID = Field(index=True)
    pool: str = Field(max_length=16)
    cohort: int
    member_id: UUID
    points: Decimal = Field(sa_type=MoneyColumn)
    #: The business instant of the order (its completion), in UTC.
    created_at: datetime
    #: Set on the negative entries of a refund (RULES, general: refunds).
    refund_id: UUID | None = Field(default=None, index=True)


# --- RULES 1.1: the give-back of each order and where it went -----------------------


class OrderGiveback(SQLModel, table=True):
    """One completed order's earning, and how its give-back G was allocated."""

    __tablename__ = "order_givebacks"

    order_id: UUID = Field(primary_key=True)
    pos_order_id: str = Field(max_length=200)
    consumer_id: UUID = Field(index=True)
    merchant_id: UUID = Field(index=True)
    amount: Decimal = Field(sa_type=MoneyColumn)
    voucher_amount: Decimal = Field(sa_type=MoneyColumn)
    cash_amount: Decimal = Field(sa_type=MoneyColumn)
    giveback_rate: Decimal = Field(sa_type=RateColumn)
    earn_on: str = Field(max_length=8)
    giveback: Decimal = Field(sa_type=MoneyColumn)
    consumer_points: Decimal = Field(sa_type=MoneyColumn)
    merchant_points: Decimal = Field(sa_type=MoneyColumn)
    coins: Decimal = Field(sa_type=MoneyColumn)
    #: Which period (cohort) of each pool the points were minted into (None: no points).
    consumer_cohort: int | None = None
    merchant_cohort: int | None = None
    completed_at: datetime
    #: pending: G is held until the order's referral evaluation arrives; allocated: split.
    state: str = Field(max_length=16)
    platform_fee: Decimal | None = Field(default=None, sa_type=MoneyColumn)
    rewards_total: Decimal | None = Field(default=None, sa_type=MoneyColumn)
    rewards_scaled: bool | None = None
    consumer_pool: Decimal | None = Field(default=None, sa_type=MoneyColumn)
    merchant_pool: Decimal | None = Field(default=None, sa_type=MoneyColumn)
    allocated_at: datetime | None = None


class OrderReward(SQLModel, table=True):
    """A binding or invite reward of an order: due, and paid (RULES 1.1 step 2)."""

    __tablename__ = "order_rewards"

    order_id: UUID = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    kind: str = Field(max_length=16)
    beneficiary_id: UUID = Field(index=True)
    rate: Decimal = Field(sa_type=RateColumn)
    basis: str = Field(max_length=32)
    due: Decimal = Field(sa_type=MoneyColumn)
    amount: Decimal = Field(sa_type=MoneyColumn)
    #: None when nothing was paid (amount 0).
    payout_id: UUID | None = None


class PendingEvaluation(SQLModel, table=True):
    """A referral evaluation that arrived before its order; applied when the order does."""

    __tablename__ = "pending_evaluations"

    order_id: UUID = Field(primary_key=True)
    event_id: UUID
    consumer_id: UUID
    merchant_id: UUID
    #: The reward claims as JSON (a list of ``shared.events.RewardClaim``).
    rewards: str = Field(sa_type=Text)
    evaluated_at: datetime


# --- money: the fund ledger and the payouts --------------------------------------------


class FundEntry(SQLModel, table=True):
    """One leg of a double-entry movement of money; the legs of a transaction sum to zero.

    Accounts: ``merchant:<id>:giveback``, ``giveback:pending``, ``platform:fees``,
    ``fund:consumer_pool``, ``fund:merchant_pool``, ``payouts:rewards``, ``platform:coins``,
    ``payouts:coins``.
    """

    __tablename__ = "fund_entries"
    __table_args__ = (Index("ix_fund_entries_account", "account", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    txn_id: UUID = Field(index=True)
    account: str = Field(max_length=100)
    #: Signed: positive into the account, negative out of it.
    amount: Decimal = Field(sa_type=MoneyColumn)
    memo: str = Field(max_length=40)
    order_id: UUID | None = Field(default=None, index=True)
    created_at: datetime
    #: Set on the legs of a refund's reversal (RULES, general: refunds).
    refund_id: UUID | None = Field(default=None, index=True)


class PayoutRecord(SQLModel, table=True):
    """A payout into a member's wallet (sent to vouchers in a ``funds.paid_out`` event):
    rewards, gold coins and their reversals. A settlement's payouts have no row here: they
    travel in their events and ``settlement_batches`` counts them.
    """

    __tablename__ = "payouts"
    # Read by order (a refund reverses the order's payouts) and, whole, by the audit.
    __table_args__ = (
        Index(
            "ix_payouts_order_id", "order_id",
            postgresql_where=text("order_id IS NOT NULL"),
            sqlite_where=text("order_id IS NOT NULL"),
        ),
    )

    payout_id: UUID = Field(primary_key=True)
    batch_id: UUID
    member_id: UUID
    asset: str = Field(max_length=16)
    amount: Decimal = Field(sa_type=MoneyColumn)
    reason: str = Field(max_length=32)
    fund: str = Field(max_length=100)
    order_id: UUID | None = None
    settlement_id: UUID | None = None
    created_at: datetime


# --- refunds (RULES, general rules) and the audit's reconciliation (RULES 1.7) -------


class OrderRefund(SQLModel, table=True):
    """One refund of an order and what it reversed; exactly one row per refund_id.

    ``*_due`` is what the refund's share reverses; ``*_reversed`` / ``*_recovered`` is what
    could be taken back. The difference is unrecovered: points already released against,
    money a fund had already paid out (booked to ``platform:unrecovered``).
    """

    __tablename__ = "order_refunds"

    refund_id: UUID = Field(primary_key=True)
    pos_refund_id: str = Field(max_length=200)
    order_id: UUID = Field(index=True)
    amount: Decimal = Field(sa_type=MoneyColumn)
    cash_amount: Decimal = Field(sa_type=MoneyColumn)
    voucher_amount: Decimal = Field(sa_type=MoneyColumn)
    refunded_total: Decimal = Field(sa_type=MoneyColumn)
    #: This refund completes the order: it reversed exactly what was left.
    final: bool
    #: This refund's part of the order's earning base (cash or gross, RULES 1.1).
    base: Decimal = Field(sa_type=MoneyColumn)
    #: The order's give-back when the refund arrived: pending or allocated.
    giveback_state: str = Field(max_length=16)
    consumer_points_due: Decimal = Field(sa_type=MoneyColumn)
    consumer_points_reversed: Decimal = Field(sa_type=MoneyColumn)
    merchant_points_due: Decimal = Field(sa_type=MoneyColumn)
    merchant_points_reversed: Decimal = Field(sa_type=MoneyColumn)
    coins: Decimal = Field(sa_type=MoneyColumn)
    #: Pending G given back to the merchant (the evaluation had not arrived).
    pending_giveback: Decimal = Field(sa_type=MoneyColumn)
    platform_fee_due: Decimal = Field(sa_type=MoneyColumn)
    platform_fee_recovered: Decimal = Field(sa_type=MoneyColumn)
    consumer_pool_due: Decimal = Field(sa_type=MoneyColumn)
    consumer_pool_recovered: Decimal = Field(sa_type=MoneyColumn)
    merchant_pool_due: Decimal = Field(sa_type=MoneyColumn)
    merchant_pool_recovered: Decimal = Field(sa_type=MoneyColumn)
    #: The rewards' part of the refund: paid out already, it stays paid.
    rewards_kept: Decimal = Field(sa_type=MoneyColumn)
    #: Money the funds no longer held, booked to ``platform:unrecovered``.
    unrecovered: Decimal = Field(sa_type=MoneyColumn)
    refunded_at: datetime


class PayoutCredit(SQLModel, table=True):
    """A payout batch that vouchers booked into wallets (its ``payouts.credited`` event)."""

    __tablename__ = "payout_credits"

    batch_id: UUID = Field(primary_key=True)
    count: int
    total: Decimal = Field(sa_type=MoneyColumn)
    credited_at: datetime
