"""Tables of the orders service: merchants and their POS keys, orders, refunds and the
replica of known member ids. Every money column is a :class:`MoneyColumn` (integer fen).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db import MoneyColumn
from shared.money import ZERO


class Merchant(SQLModel, table=True):
    __tablename__ = "merchants"

    #: Also the merchant's member id everywhere (points, wallets).
    id: UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    #: RULES 1.1 r_M; a 2-decimal rate, stored in hundredths like money.
    giveback_rate: Decimal = Field(sa_type=MoneyColumn)
    created_at: datetime


class MerchantApiKey(SQLModel, table=True):
    """One POS terminal's key; only its SHA-256 is stored."""

    __tablename__ = "merchant_api_keys"

    id: UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    merchant_id: UUID = Field(foreign_key="merchants.id", index=True)
    key_hash: str = Field(max_length=64, unique=True)
    terminal: str | None = Field(default=None, max_length=100)
    created_at: datetime
    revoked_at: datetime | None = None


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "pos_order_id", name="uq_orders_merchant_pos_order"),
        Index("ix_orders_consumer_created", "consumer_id", "created_at"),
    )

    id: UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    merchant_id: UUID = Field(foreign_key="merchants.id")
    pos_order_id: str = Field(max_length=64)
    consumer_id: UUID
    amount: Decimal = Field(sa_type=MoneyColumn)
    voucher_amount: Decimal = Field(sa_type=MoneyColumn)
    cash_amount: Decimal = Field(sa_type=MoneyColumn)
    giveback_rate: Decimal = Field(sa_type=MoneyColumn)
    voucher_hold_id: UUID | None = None
    #: SHA-256 of the normalised body (domain.order_terms): replays must match it.
    fingerprint: str = Field(max_length=64)
    status: str = Field(max_length=20)
    refunded_amount: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    refunded_voucher_amount: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    refunded_cash_amount: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    created_at: datetime


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("order_id", "pos_refund_id", name="uq_refunds_order_pos_refund"),
        # Two refunds computed from the same state can never both commit.
        UniqueConstraint("order_id", "refunded_total", name="uq_refunds_order_total"),
    )

    id: UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    order_id: UUID = Field(foreign_key="orders.id")
    pos_refund_id: str = Field(max_length=64)
    amount: Decimal = Field(sa_type=MoneyColumn)
    voucher_amount: Decimal = Field(sa_type=MoneyColumn)
    cash_amount: Decimal = Field(sa_type=MoneyColumn)
    #: All refunds of the order up to and including this one (strictly increasing).
    refunded_total: Decimal = Field(sa_type=MoneyColumn)
    fingerprint: str = Field(max_length=64)
    created_at: datetime


class KnownMember(SQLModel, table=True):
    """A member id the platform knows (from referrals' events or a synchronous lookup)."""

    __tablename__ = "known_members"

    member_id: UUID = Field(primary_key=True)
    kind: str = Field(max_length=20)
    #: How we learned it: "event", "lookup" or "merchant" (registered here).
    source: str = Field(max_length=20)
    recorded_at: datetime
