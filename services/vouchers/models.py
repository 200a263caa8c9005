"""Tables of the vouchers service: the ledger, its balances, payouts, holds, redemptions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, text
from sqlmodel import Field, SQLModel

from shared.db import MoneyColumn
from shared.money import ZERO

#: BIGINT on PostgreSQL; INTEGER on SQLite, where only that autoincrements a primary key.
EntryId = BigInteger().with_variant(Integer(), "sqlite")


class LedgerEntry(SQLModel, table=True):
    """One posting of one ledger transaction (the postings of a transaction sum to zero)."""

    __tablename__ = "ledger_entries"
    # Every index costs each of a settlement's million entries a write, so only what is
    # read by key: a member's wallet history, and the history of the accounts that are
    # not wallets (receivables, sources). Transactions are only ever summed, not looked up.
    __table_args__ = (
        Index("ix_ledger_entries_member_id_id", "member_id", "id"),
        Index(
            "ix_ledger_entries_account_id",
            "account",
            "id",
            postgresql_where=text("member_id IS NULL"),
            sqlite_where=text("member_id IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=EntryId)
    transaction_id: UUID
    account: str = Field(max_length=200)
    asset: str = Field(max_length=20)
    #: Set on wallet accounts: whose wallet history this entry belongs to.
    member_id: UUID | None = None
    amount: Decimal = Field(sa_type=MoneyColumn)
    balance_after: Decimal = Field(sa_type=MoneyColumn)
    reason: str = Field(max_length=40)
    order_id: UUID | None = None
    settlement_id: UUID | None = None
    payout_id: UUID | None = None
    hold_id: UUID | None = None
    redemption_id: str | None = Field(default=None, max_length=100)
    fund: str | None = Field(default=None, max_length=100)
    created_at: datetime


class AccountBalance(SQLModel, table=True):
    """The balance of one account, updated in the same transaction as its entries."""

    __tablename__ = "account_balances"
    __table_args__ = (
        # The last line of defence: a guarded account can never be stored negative.
        CheckConstraint("balance >= 0 OR NOT non_negative", name="ck_account_balances_guarded"),
    )

    account: str = Field(primary_key=True, max_length=200)
    asset: str = Field(max_length=20)
    member_id: UUID | None = None
    balance: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    non_negative: bool = True


class BookedPayout(SQLModel, table=True):
    """A payout from points, booked once (its payout_id is the primary key)."""

    __tablename__ = "booked_payouts"

    payout_id: UUID = Field(primary_key=True)
    #: Indexed: a batch's credits are derived from its rows (repository.book_credits).
    batch_id: UUID = Field(index=True)
    member_id: UUID
    asset: str = Field(max_length=20)
    #: The wallet account it was booked into (so a batch is booked in set-based SQL).
    account: str = Field(max_length=200)
    reason: str = Field(max_length=40)
    fund: str = Field(max_length=100)
    #: As points sent it (negative for a reversal).
    amount: Decimal = Field(sa_type=MoneyColumn)
    #: What actually moved in the wallet.
    applied: Decimal = Field(sa_type=MoneyColumn)
    #: What a reversal could not take back.
    unrecovered: Decimal = Field(sa_type=MoneyColumn)
    order_id: UUID | None = None
    settlement_id: UUID | None = None
    booked_at: datetime


class PayoutBatch(SQLModel, table=True):
    """A funds.paid_out batch, booked once; what was acknowledged with payouts.credited."""

    __tablename__ = "payout_batches"

    batch_id: UUID = Field(primary_key=True)
    source: str = Field(max_length=20)
    order_id: UUID | None = None
    settlement_id: UUID | None = None
    count: int
    total: Decimal = Field(sa_type=MoneyColumn)
    booked_at: datetime


class VoucherHold(SQLModel, table=True):
    """A checkout hold (RULES 1.6) and, once captured, what the order paid with it."""

    __tablename__ = "voucher_holds"
    __table_args__ = (Index("ix_voucher_holds_status_expires_at", "status", "expires_at"),)

    hold_id: UUID = Field(primary_key=True)
    member_id: UUID = Field(index=True)
    merchant_id: UUID
    pos_order_id: str | None = Field(default=None, max_length=200)
    amount: Decimal = Field(sa_type=MoneyColumn)
    #: held -> captured | released | expired (a released or expired hold may still be
    #: captured by its order's completion, then from the free vouchers).
    status: str = Field(max_length=20)
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None = None
    order_id: UUID | None = Field(default=None, index=True)
    #: What the merchant is owed for the order (the order's voucher amount).
    captured_amount: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    #: Of that, what nobody could be charged for.
    captured_unrecovered: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    #: Refunded so far: off the receivable, and of that back to the member.
    returned_amount: Decimal = Field(default=ZERO, sa_type=MoneyColumn)
    returned_to_member: Decimal = Field(default=ZERO, sa_type=MoneyColumn)


class VoucherReturn(SQLModel, table=True):
    """The voucher part of one refund, given back once per refund_id."""

    __tablename__ = "voucher_returns"

    refund_id: UUID = Field(primary_key=True)
    order_id: UUID = Field(index=True)
    hold_id: UUID
    requested: Decimal = Field(sa_type=MoneyColumn)
    amount: Decimal = Field(sa_type=MoneyColumn)
    to_member: Decimal = Field(sa_type=MoneyColumn)
    to_unrecovered: Decimal = Field(sa_type=MoneyColumn)
    created_at: datetime


class CoinRedemption(SQLModel, table=True):
    """Gold coins spent in the mall (RULES 1.1), once per (member, client reference)."""

    __tablename__ = "coin_redemptions"

    member_id: UUID = Field(primary_key=True)
    redemption_id: str = Field(primary_key=True, max_length=100)
    amount: Decimal = Field(sa_type=MoneyColumn)
    item: str | None = Field(default=None, max_length=200)
    coins_left: Decimal = Field(sa_type=MoneyColumn)
    created_at: datetime
