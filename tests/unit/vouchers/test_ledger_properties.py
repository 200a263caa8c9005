"""Property: any sequence of wallet operations keeps the books right.

Random credits, holds, captures (on time or late), releases, refunds, coin redemptions
and clawbacks, applied through the pure rules as the service applies them: no guarded
balance is ever negative, every transaction balances, and
Σ wallets + receivables + redeemed + unrecovered = Σ credited from points, per asset.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from services.vouchers import domain
from shared.events import Payout
from shared.money import ZERO

MEMBERS = [uuid.UUID(int=i + 1) for i in range(2)]
MERCHANTS = [uuid.UUID(int=100 + i) for i in range(2)]

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("80.00"), places=2)
members = st.sampled_from(MEMBERS)
indexes = st.integers(0, 20)
#: Mostly vouchers, so that holds, captures and refunds have something to work with.
credit_assets = st.sampled_from(["vouchers", "vouchers", "vouchers", "coins", "cash"])


@dataclass(frozen=True)
class Credit:
    member: UUID
    asset: domain.Asset
    amount: Decimal


@dataclass(frozen=True)
class Clawback:
    member: UUID
    asset: domain.Asset
    amount: Decimal


@dataclass(frozen=True)
class PlaceHold:
    member: UUID
    merchant: UUID
    amount: Decimal


@dataclass(frozen=True)
class Capture:
    """The order of hold number *index* completes, having paid *due* in vouchers."""

    index: int
    due: Decimal


@dataclass(frozen=True)
class Release:
    index: int


@dataclass(frozen=True)
class Refund:
    index: int
    amount: Decimal


@dataclass(frozen=True)
class Redeem:
    member: UUID
    amount: Decimal


Operation = Credit | Clawback | PlaceHold | Capture | Release | Refund | Redeem

operations: st.SearchStrategy[Operation] = st.one_of(
    st.builds(Credit, members, credit_assets, amounts),
    st.builds(Clawback, members, st.sampled_from(domain.ASSETS), amounts),
    st.builds(PlaceHold, members, st.sampled_from(MERCHANTS), amounts),
    st.builds(Capture, indexes, amounts),
    st.builds(Release, indexes),
    st.builds(Refund, indexes, amounts),
    st.builds(Redeem, members, amounts),
)


@dataclass
class Hold:
    hold_id: UUID
    member: UUID
    merchant: UUID
    amount: Decimal
    status: str = "held"
    captured: Decimal = ZERO
    unrecovered: Decimal = ZERO
    returned: Decimal = ZERO
    returned_to_member: Decimal = ZERO


@dataclass
class Books:
    balances: dict[str, Decimal] = field(default_factory=dict)
    holds: list[Hold] = field(default_factory=list)
    credited: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))

    def book(self, txn: domain.LedgerTransaction) -> bool:
        sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for posting in txn.postings:
            sums[posting.asset] += posting.amount
        assert all(total == ZERO for total in sums.values()), txn
        try:
            domain.apply(self.balances, txn)
        except domain.InsufficientBalance:
            return False
        return True

    def balance(self, account: str) -> Decimal:
        return self.balances.get(account, ZERO)


def run(books: Books, op: Operation) -> None:
    match op:
        case Credit() | Clawback():
            signed = op.amount if isinstance(op, Credit) else -op.amount
            p = Payout(payout_id=uuid.uuid4(), member_id=op.member, asset=op.asset,
                       amount=signed, reason="settlement" if signed > 0 else "reversal",
                       fund="pool")
            account = domain.wallet_account(op.member, op.asset)
            booking = domain.book_payouts([p], {account: books.balance(account)})[0]
            assert books.book(booking.transaction)
            books.credited[op.asset] += signed
        case PlaceHold():
            hold = Hold(uuid.uuid4(), op.member, op.merchant, op.amount)
            if books.book(domain.hold_vouchers(hold.hold_id, op.member, op.amount)):
                books.holds.append(hold)
        case Capture() if books.holds:
            hold = books.holds[op.index % len(books.holds)]
            if hold.status == "captured":
                return
            held = hold.amount if hold.status == "held" else ZERO
            wallet = domain.wallet_account(hold.member, "vouchers")
            capture = domain.plan_capture(op.due, held, books.balance(wallet))
            assert books.book(domain.capture_hold(
                capture, hold_id=hold.hold_id, member_id=hold.member, merchant_id=hold.merchant,
                order_id=None))
            hold.status, hold.captured, hold.unrecovered = "captured", op.due, capture.unrecovered
        case Release() if books.holds:
            hold = books.holds[op.index % len(books.holds)]
            if hold.status == "held":
                assert books.book(domain.release_hold(hold.hold_id, hold.member, hold.amount))
                hold.status = "released"
        case Refund() if books.holds:
            hold = books.holds[op.index % len(books.holds)]
            if hold.status != "captured":
                return
            plan = domain.plan_voucher_return(
                op.amount, captured=hold.captured, captured_unrecovered=hold.unrecovered,
                returned=hold.returned, returned_to_member=hold.returned_to_member)
            assert books.book(domain.return_vouchers(
                plan, refund_id=uuid.uuid4(), hold_id=hold.hold_id, member_id=hold.member,
                merchant_id=hold.merchant, order_id=uuid.uuid4()))
            hold.returned += plan.amount
            hold.returned_to_member += plan.to_member
        case Redeem():
            books.book(domain.redeem_coins(op.member, uuid.uuid4().hex, op.amount))


@settings(max_examples=200, deadline=None)
@given(st.lists(operations, min_size=20, max_size=80))
def test_any_sequence_of_operations_keeps_the_books_right(ops: list[Operation]) -> None:
    books = Books()
    for op in ops:
        run(books, op)
        for account, balance in books.balances.items():
            if domain.must_stay_non_negative(account):
                assert balance >= ZERO, (account, balance)
    for asset in domain.ASSETS:
        # wallets (held vouchers included) + receivables + redeemed + unrecovered
        everywhere_but_the_source = sum(
            (b for a, b in books.balances.items()
             if not a.startswith("source:") and _asset_of(a) == asset),
            ZERO,
        )
        assert everywhere_but_the_source == books.credited[asset]
    # A refund never gives back more than was captured, nor to the member more than it paid;
    # each merchant is owed exactly what it captured and did not refund.
    for hold in books.holds:
        assert ZERO <= hold.returned <= hold.captured
        assert hold.returned_to_member <= hold.captured - hold.unrecovered
    for merchant in MERCHANTS:
        owed = sum((h.captured - h.returned for h in books.holds if h.merchant == merchant), ZERO)
        assert books.balance(domain.receivable_account(merchant)) == owed
    held = sum((h.amount for h in books.holds if h.status == "held"), ZERO)
    assert sum(
        (b for a, b in books.balances.items() if a.endswith(":vouchers:held")), ZERO
    ) == held


def _asset_of(account: str) -> str:
    if account.endswith(":vouchers:held") or account.startswith("merchant:"):
        return "vouchers"
    if account == domain.COINS_REDEEMED_ACCOUNT:
        return "coins"
    return account.split(":")[-1]
