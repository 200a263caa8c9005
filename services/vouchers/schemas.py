"""Request and response bodies of the vouchers API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.vouchers.domain import WalletBucket
from shared.money import Amount, PositiveAmount

HoldStatus = Literal["held", "captured", "released", "expired"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- wallet ----------------------------------------------------------------------------


class WalletBalances(BaseModel):
    vouchers: Amount = Field(description="Spendable vouchers (1 voucher = 1 CNY)")
    vouchers_held: Amount = Field(description="Vouchers held by checkouts not yet completed")
    coins: Amount = Field(description="Gold coins, spendable in the platform mall")
    cash: Amount = Field(description="Cash balance")


class WalletEntryPublic(BaseModel):
    entry_id: int
    transaction_id: UUID
    asset: WalletBucket
    amount: Amount = Field(description="Signed: positive in, negative out")
    balance_after: Amount | None
    reason: str
    order_id: UUID | None
    settlement_id: UUID | None
    payout_id: UUID | None
    hold_id: UUID | None
    redemption_id: str | None
    fund: str | None
    created_at: datetime


class WalletPublic(BaseModel):
    member_id: UUID
    balances: WalletBalances
    entries: list[WalletEntryPublic] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")


# --- holds -----------------------------------------------------------------------------


class HoldBase(BaseModel):
    member_id: UUID = Field(description="The consumer whose vouchers are held")
    merchant_id: UUID = Field(description="The merchant accepting the vouchers")
    pos_order_id: str | None = Field(default=None, min_length=1, max_length=200)


class HoldCreate(HoldBase, _Request):
    hold_id: UUID = Field(description="Chosen by the caller; repeating it is idempotent")
    amount: PositiveAmount = Field(description="Vouchers to hold (1 voucher = 1 CNY)")


class HoldCapture(_Request):
    order_id: UUID | None = Field(default=None, description="The order the vouchers paid for")


class HoldPublic(HoldBase):
    hold_id: UUID
    amount: Amount
    status: HoldStatus
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    order_id: UUID | None
    captured_amount: Amount = Field(description="What the merchant is owed for this hold")


# --- coins -----------------------------------------------------------------------------


class RedemptionCreate(_Request):
    redemption_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="The client's reference; repeating it with the same body is idempotent",
    )
    amount: PositiveAmount = Field(description="Coins to spend (1 coin = 1 CNY)")
    item: str | None = Field(default=None, min_length=1, max_length=200)


class RedemptionPublic(BaseModel):
    redemption_id: str
    amount: Amount
    item: str | None
    coins_left: Amount = Field(description="The coin balance right after this redemption")
    created_at: datetime


# --- merchants -------------------------------------------------------------------------


class ReceivableEntryPublic(BaseModel):
    entry_id: int
    amount: Amount = Field(description="Positive: vouchers accepted; negative: refunded")
    balance_after: Amount | None
    reason: str
    order_id: UUID | None
    hold_id: UUID | None
    created_at: datetime


class ReceivablePublic(BaseModel):
    merchant_id: UUID
    amount: Amount = Field(description="Owed to the merchant in cash for vouchers accepted")
    entries: list[ReceivableEntryPublic] = Field(description="Newest first")
    next_cursor: str | None


# --- audit -----------------------------------------------------------------------------


class CreditedLine(BaseModel):
    asset: str
    reason: str
    count: int
    amount: Amount = Field(description="Σ as points paid it (reversals negative)")
    applied: Amount = Field(description="Σ that actually moved in the wallets")
    unrecovered: Amount = Field(description="Σ reversals could not take back")


class PayoutFigures(BaseModel):
    count: int
    total: Amount


class AssetFigures(BaseModel):
    vouchers: Amount
    coins: Amount
    cash: Amount


class VoucherFigures(BaseModel):
    held: Amount = Field(description="Held now by open checkouts")
    captured: Amount = Field(description="Σ paid with vouchers at merchants")
    captured_unrecovered: Amount = Field(
        description="Of that, taken from no wallet (hold gone, vouchers spent)"
    )
    returned: Amount = Field(description="Σ given back by refunds")
    holds_by_status: dict[str, int]


class LedgerChecks(BaseModel):
    balanced: bool = Field(description="Every transaction's postings sum to zero per asset")
    unbalanced_transactions: int
    balances_match_entries: bool = Field(description="Every balance = Σ of its entries")
    no_negative_balances: bool = Field(description="No wallet or receivable below zero")
    negative_balances: int
    books_tie_out: bool = Field(
        description="Σ wallets + receivables + redeemed + unrecovered = Σ credited, per asset"
    )


class TotalsPublic(BaseModel):
    credited: list[CreditedLine] = Field(description="Booked payouts by asset and reason")
    payouts: PayoutFigures
    credited_by_asset: AssetFigures = Field(description="Σ net credited from points")
    wallets: WalletBalances = Field(description="Σ of every member's wallet")
    unrecovered: AssetFigures = Field(description="Lost by the platform (positive)")
    vouchers: VoucherFigures
    merchant_receivables: Amount
    coins_redeemed: Amount
    checks: LedgerChecks
