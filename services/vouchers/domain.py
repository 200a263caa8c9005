"""Pure rules of the wallets: accounts, balanced postings and the plan of every operation.

The wallets are a double-entry ledger. Every operation is one :class:`LedgerTransaction`
whose postings sum to zero per asset; a set that does not balance cannot be built.
Accounts (one asset each):

- ``wallet:<member>:vouchers`` / ``:coins`` / ``:cash``: what a member can spend;
- ``wallet:<member>:vouchers:held``: vouchers held at a checkout (RULES 1.6);
- ``source:points:<asset>``: the payouts received from the points service (it goes
  negative by what points paid in, so Σ of every other account = Σ credited);
- ``merchant:<merchant>:receivable``: vouchers a merchant accepted and is owed in cash;
- ``mall:coins_redeemed``: gold coins spent in the platform mall (RULES 1.1);
- ``unrecovered:<asset>``: what a refund or a late capture could not take back from a
  wallet that had already spent it (negative: a loss of the platform, shown in the audit).

Wallets, held vouchers, receivables and the mall never go below zero; the source and
unrecovered accounts are the two sides that absorb the difference. This module imports
neither FastAPI nor SQLAlchemy: Decimal in, Decimal out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args
from uuid import UUID, uuid5

from shared.events import Payout
from shared.money import ZERO, MoneyError, exact

Asset = Literal["vouchers", "coins", "cash"]
ASSETS: tuple[Asset, ...] = get_args(Asset)

#: A wallet balance as members see it: the three assets plus the held vouchers.
WalletBucket = Literal["vouchers", "vouchers_held", "coins", "cash"]
WALLET_BUCKETS: tuple[WalletBucket, ...] = get_args(WalletBucket)
_BUCKETS: dict[str, WalletBucket] = {bucket: bucket for bucket in WALLET_BUCKETS}

#: Why an entry was booked: the payout reasons of points, then the wallet's own operations.
EntryReason = Literal[
    "binding_reward",
    "invite_reward",
    "gold_coins",
    "settlement",
    "reversal",
    "voucher_hold",
    "voucher_hold_released",
    "voucher_hold_expired",
    "voucher_payment",
    "voucher_refund",
    "coin_redemption",
]

COINS_REDEEMED_ACCOUNT = "mall:coins_redeemed"


class LedgerError(Exception):
    """A ledger rule was broken; nothing may be booked."""


class UnbalancedTransaction(LedgerError):
    """The postings of one transaction do not sum to zero for some asset."""


class InvalidPayout(LedgerError):
    """A payout that breaks the points -> vouchers contract (e.g. a negative credit)."""


class InsufficientBalance(LedgerError):
    """A debit would take an account that must stay non-negative below zero."""

    def __init__(self, account: str, available: Decimal, requested: Decimal) -> None:
        super().__init__(f"{account} holds {available}, cannot debit {requested}")
        self.account = account
        self.available = available
        self.requested = requested


# --- accounts --------------------------------------------------------------------------


def wallet_account(member_id: UUID, asset: Asset) -> str:
    return f"wallet:{member_id}:{asset}"


def held_vouchers_account(member_id: UUID) -> str:
    return f"wallet:{member_id}:vouchers:held"


def wallet_accounts(member_id: UUID) -> dict[WalletBucket, str]:
    """The account behind each wallet bucket of *member_id*."""
    return {
        "vouchers": wallet_account(member_id, "vouchers"),
        "vouchers_held": held_vouchers_account(member_id),
        "coins": wallet_account(member_id, "coins"),
        "cash": wallet_account(member_id, "cash"),
    }


def wallet_bucket(account: str) -> WalletBucket | None:
    """``wallet:<m>:vouchers:held`` -> ``vouchers_held``; None for a non-wallet account."""
    parts = account.split(":")
    if parts[0] != "wallet" or len(parts) < 3:
        return None
    return _BUCKETS.get("_".join(parts[2:]))


def source_account(asset: Asset) -> str:
    return f"source:points:{asset}"


def unrecovered_account(asset: Asset) -> str:
    return f"unrecovered:{asset}"


def receivable_account(merchant_id: UUID) -> str:
    return f"merchant:{merchant_id}:receivable"


def must_stay_non_negative(account: str) -> bool:
    """Only the two balancing sides (points' payouts and the platform's losses) go negative."""
    return not account.startswith(("source:", "unrecovered:"))


# --- transactions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Posting:
    account: str
    asset: Asset
    amount: Decimal
    #: The member whose wallet this is (None for platform and merchant accounts).
    member_id: UUID | None = None


@dataclass(frozen=True)
class LedgerTransaction:
    """Postings that move value between accounts, and what they are traceable to."""

    transaction_id: UUID
    reason: EntryReason
    postings: tuple[Posting, ...]
    order_id: UUID | None = None
    settlement_id: UUID | None = None
    payout_id: UUID | None = None
    hold_id: UUID | None = None
    redemption_id: str | None = None
    fund: str | None = None

    def __post_init__(self) -> None:
        sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for posting in self.postings:
            try:
                exact(posting.amount)
            except MoneyError as exc:
                raise UnbalancedTransaction(f"{posting.amount} is not a 2-decimal amount") from exc
            sums[posting.asset] += posting.amount
        off = {asset: total for asset, total in sums.items() if total != ZERO}
        if off:
            raise UnbalancedTransaction(
                f"transaction {self.transaction_id} ({self.reason}) does not balance: {off}"
            )


def transaction(
    transaction_id: UUID,
    reason: EntryReason,
    postings: Iterable[Posting],
    *,
    order_id: UUID | None = None,
    settlement_id: UUID | None = None,
    payout_id: UUID | None = None,
    hold_id: UUID | None = None,
    redemption_id: str | None = None,
    fund: str | None = None,
) -> LedgerTransaction:
    """A balanced transaction of the non-zero *postings* (raises if they do not balance)."""
    return LedgerTransaction(
        transaction_id,
        reason,
        tuple(p for p in postings if p.amount != ZERO),
        order_id=order_id,
        settlement_id=settlement_id,
        payout_id=payout_id,
        hold_id=hold_id,
        redemption_id=redemption_id,
        fund=fund,
    )


def apply(balances: MutableMapping[str, Decimal], txn: LedgerTransaction) -> None:
    """Book *txn* into *balances*; refuses (changing nothing) to overdraw a guarded account."""
    deltas: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for posting in txn.postings:
        deltas[posting.account] += posting.amount
    for account, delta in deltas.items():
        available = balances.get(account, ZERO)
        if must_stay_non_negative(account) and available + delta < ZERO:
            raise InsufficientBalance(account, available, -delta)
    for account, delta in deltas.items():
        balances[account] = balances.get(account, ZERO) + delta


def _wallet(member_id: UUID, asset: Asset, amount: Decimal) -> Posting:
    return Posting(wallet_account(member_id, asset), asset, amount, member_id)


def _held(member_id: UUID, amount: Decimal) -> Posting:
    return Posting(held_vouchers_account(member_id), "vouchers", amount, member_id)


# --- payouts from points ---------------------------------------------------------------


@dataclass(frozen=True)
class PayoutBooking:
    payout: Payout
    transaction: LedgerTransaction
    #: The signed amount that actually moved in the wallet.
    applied: Decimal
    #: What a reversal could not take back (>= 0).
    unrecovered: Decimal


def book_payout(payout: Payout, wallet_balance: Decimal) -> PayoutBooking:
    """One payout into the member's wallet of its asset.

    A credit adds its amount. A reversal (negative amount, a refund clawing back e.g.
    coins) takes what the wallet still holds, never more, and books the rest as
    unrecovered (RULES general: "what could not be recovered is recorded").
    """
    amount, asset, member = exact(payout.amount), payout.asset, payout.member_id
    if amount < ZERO and payout.reason != "reversal":
        raise InvalidPayout(
            f"payout {payout.payout_id} is negative ({amount}) but its reason is "
            f"{payout.reason!r}; only a 'reversal' may take money back"
        )
    if amount >= ZERO:
        applied, shortfall = amount, ZERO
        postings = [_wallet(member, asset, amount), Posting(source_account(asset), asset, -amount)]
    else:
        wanted = -amount
        taken = min(max(wallet_balance, ZERO), wanted)
        applied, shortfall = -taken, wanted - taken
        postings = [
            _wallet(member, asset, -taken),
            Posting(source_account(asset), asset, wanted),
            Posting(unrecovered_account(asset), asset, -shortfall),
        ]
    txn = transaction(
        payout.payout_id,
        payout.reason,
        postings,
        order_id=payout.order_id,
        settlement_id=payout.settlement_id,
        payout_id=payout.payout_id,
        fund=payout.fund,
    )
    return PayoutBooking(payout, txn, applied, shortfall)


def book_payouts(
    payouts: Sequence[Payout], balances: Mapping[str, Decimal]
) -> list[PayoutBooking]:
    """Book a batch in order; *balances* must hold every wallet a reversal debits."""
    running = dict(balances)
    bookings = []
    for payout in payouts:
        account = wallet_account(payout.member_id, payout.asset)
        booking = book_payout(payout, running.get(account, ZERO))
        running[account] = running.get(account, ZERO) + booking.applied
        bookings.append(booking)
    return bookings


# --- checkout holds (RULES 1.6) --------------------------------------------------------


def hold_vouchers(hold_id: UUID, member_id: UUID, amount: Decimal) -> LedgerTransaction:
    """Checkout holds the amount: it leaves the spendable vouchers, still the member's."""
    return transaction(
        uuid5(hold_id, "hold"),
        "voucher_hold",
        [_wallet(member_id, "vouchers", -amount), _held(member_id, amount)],
        hold_id=hold_id,
    )


def release_hold(
    hold_id: UUID, member_id: UUID, amount: Decimal, *, expired: bool = False
) -> LedgerTransaction:
    """A failed order (or an expired hold) gives the held vouchers back."""
    return transaction(
        uuid5(hold_id, "release"),
        "voucher_hold_expired" if expired else "voucher_hold_released",
        [_held(member_id, -amount), _wallet(member_id, "vouchers", amount)],
        hold_id=hold_id,
    )


@dataclass(frozen=True)
class CapturePlan:
    """Where the vouchers a completed order paid with come from."""

    #: What the order paid in vouchers: the merchant is owed this in cash.
    due: Decimal
    from_held: Decimal
    #: Held beyond what the order used: back to the spendable vouchers.
    released: Decimal
    #: Taken from the spendable vouchers when the hold no longer covered the order.
    from_wallet: Decimal
    #: What nobody could be charged for (the platform's loss, shown in the audit).
    unrecovered: Decimal


def plan_capture(due: Decimal, held: Decimal, available: Decimal) -> CapturePlan:
    """RULES 1.6: capture *due* from the hold, then from the free vouchers, never below zero."""
    if due < ZERO or held < ZERO:
        raise LedgerError("a capture needs non-negative amounts")
    from_held = min(due, held)
    from_wallet = min(due - from_held, max(available, ZERO))
    return CapturePlan(
        due=due,
        from_held=from_held,
        released=held - from_held,
        from_wallet=from_wallet,
        unrecovered=due - from_held - from_wallet,
    )


def capture_hold(
    plan: CapturePlan, *, hold_id: UUID, member_id: UUID, merchant_id: UUID, order_id: UUID | None
) -> LedgerTransaction:
    """The held vouchers leave the wallet; the accepting merchant is owed them in cash."""
    return transaction(
        uuid5(hold_id, "capture"),
        "voucher_payment",
        [
            _held(member_id, -(plan.from_held + plan.released)),
            _wallet(member_id, "vouchers", plan.released - plan.from_wallet),
            Posting(unrecovered_account("vouchers"), "vouchers", -plan.unrecovered),
            Posting(receivable_account(merchant_id), "vouchers", plan.due),
        ],
        hold_id=hold_id,
        order_id=order_id,
    )


@dataclass(frozen=True)
class ReturnPlan:
    """How a refund's voucher part goes back (RULES 1.6)."""

    #: Taken off the merchant's receivable.
    amount: Decimal
    #: Back into the consumer's spendable vouchers.
    to_member: Decimal
    #: What the consumer never paid (a capture shortfall): it reduces the platform's loss.
    to_unrecovered: Decimal


def plan_voucher_return(
    requested: Decimal,
    *,
    captured: Decimal,
    captured_unrecovered: Decimal,
    returned: Decimal,
    returned_to_member: Decimal,
) -> ReturnPlan:
    """A refunded order gives the captured vouchers back, never more than were captured."""
    amount = max(min(requested, captured - returned), ZERO)
    paid_by_member_left = captured - captured_unrecovered - returned_to_member
    to_member = max(min(amount, paid_by_member_left), ZERO)
    return ReturnPlan(amount=amount, to_member=to_member, to_unrecovered=amount - to_member)


def return_vouchers(
    plan: ReturnPlan,
    *,
    refund_id: UUID,
    hold_id: UUID,
    member_id: UUID,
    merchant_id: UUID,
    order_id: UUID,
) -> LedgerTransaction:
    return transaction(
        uuid5(refund_id, "voucher_refund"),
        "voucher_refund",
        [
            Posting(receivable_account(merchant_id), "vouchers", -plan.amount),
            _wallet(member_id, "vouchers", plan.to_member),
            Posting(unrecovered_account("vouchers"), "vouchers", plan.to_unrecovered),
        ],
        hold_id=hold_id,
        order_id=order_id,
    )


# --- gold coins (RULES 1.1) ------------------------------------------------------------


def redemption_transaction_id(member_id: UUID, redemption_id: str) -> UUID:
    return uuid5(member_id, f"coin_redemption:{redemption_id}")


def redeem_coins(member_id: UUID, redemption_id: str, amount: Decimal) -> LedgerTransaction:
    """Coins are spent 1 coin = 1 CNY in the platform mall."""
    if amount <= ZERO:
        raise LedgerError("a redemption spends a positive number of coins")
    return transaction(
        redemption_transaction_id(member_id, redemption_id),
        "coin_redemption",
        [_wallet(member_id, "coins", -amount), Posting(COINS_REDEEMED_ACCOUNT, "coins", amount)],
        redemption_id=redemption_id,
    )
