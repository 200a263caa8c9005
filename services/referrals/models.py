"""Tables of the referrals service: members, merchant bindings and order evaluations.

Table names carry a ``referral_`` prefix: every service's models share SQLModel's one
metadata in a test process, so a generic name such as ``members`` would clash with
another service's replica table.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from shared.db import MoneyColumn


class Member(SQLModel, table=True):
    """A consumer, or a merchant as a member (member_id = merchant_id)."""

    __tablename__ = "referral_members"
    __table_args__ = (
        CheckConstraint("kind IN ('consumer', 'merchant')", name="ck_referral_members_kind"),
        CheckConstraint("inviter_id <> member_id", name="ck_referral_members_no_self_invite"),
    )

    member_id: UUID = Field(primary_key=True)
    kind: str = Field(max_length=20)
    invite_code: str = Field(max_length=16, unique=True)
    #: RULES 1.5: fixed at registration; the inviter always registered earlier.
    inviter_id: UUID | None = Field(
        default=None, foreign_key="referral_members.member_id", index=True
    )
    registered_at: datetime


class Binding(SQLModel, table=True):
    """RULES 1.4: a consumer's one, permanent merchant binding."""

    __tablename__ = "referral_bindings"
    __table_args__ = (
        CheckConstraint("source IN ('scan', 'first_order')", name="ck_referral_bindings_source"),
    )

    consumer_id: UUID = Field(primary_key=True, foreign_key="referral_members.member_id")
    #: Not a foreign key: a first-order binding may arrive before merchant.registered
    #: (different partitions), and the order itself proves the merchant exists.
    merchant_id: UUID = Field(index=True)
    source: str = Field(max_length=20)
    bound_at: datetime


class OrderEvaluation(SQLModel, table=True):
    """One row per evaluated order: a repeated order.completed finds it and changes nothing."""

    __tablename__ = "referral_order_evaluations"

    order_id: UUID = Field(primary_key=True)
    consumer_id: UUID = Field(index=True)
    merchant_id: UUID
    completed_at: datetime
    evaluated_at: datetime
    #: False when the consumer was unknown to referrals (no rewards then).
    consumer_known: bool


class RewardClaimRecord(SQLModel, table=True):
    """A reward claimed on an order (at most one per kind), as published to points."""

    __tablename__ = "referral_reward_claims"
    __table_args__ = (
        CheckConstraint("kind IN ('binding', 'invite')", name="ck_referral_reward_claims_kind"),
    )

    order_id: UUID = Field(primary_key=True, foreign_key="referral_order_evaluations.order_id")
    kind: str = Field(primary_key=True, max_length=20)
    beneficiary_id: UUID = Field(index=True)
    #: A 2-decimal rate, stored in hundredths like money.
    rate: Decimal = Field(sa_type=MoneyColumn)
    basis: str = Field(max_length=20)
