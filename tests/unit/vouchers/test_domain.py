"""The pure rules of the wallets ledger (RULES 1.1 coins, 1.6 vouchers, refunds)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from uuid import UUID

import pytest

from services.vouchers import domain
from services.vouchers.domain import (
    InsufficientBalance,
    InvalidPayout,
    Posting,
    UnbalancedTransaction,
)
from shared.events import Payout, PayoutAsset, PayoutReason
from shared.money import ZERO

D = Decimal


def payout(
    member: UUID,
    amount: str,
    *,
    asset: PayoutAsset = "vouchers",
    reason: PayoutReason = "settlement",
) -> Payout:
    return Payout(
        payout_id=uuid.uuid4(), member_id=member, asset=asset, amount=D(amount), reason=reason,
        fund="consumer_pool", order_id=uuid.uuid4(),
    )


def sums_by_asset(txn: domain.LedgerTransaction) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for p in txn.postings:
        sums[p.asset] += p.amount
    return dict(sums)


def test_a_posting_set_that_does_not_balance_cannot_be_built() -> None:
    with pytest.raises(UnbalancedTransaction, match="does not balance"):
        domain.transaction(
            uuid.uuid4(),
            "settlement",
            [Posting("wallet:x:vouchers", "vouchers", D("5.00")),
             Posting("source:points:vouchers", "vouchers", D("-4.99"))],
        )


def test_postings_balance_per_asset_not_across_assets() -> None:
    with pytest.raises(UnbalancedTransaction):
        domain.transaction(
            uuid.uuid4(),
            "settlement",
            [Posting("wallet:x:vouchers", "vouchers", D("5.00")),
             Posting("source:points:coins", "coins", D("-5.00"))],
        )


def test_a_posting_finer_than_a_fen_is_refused() -> None:
    with pytest.raises(UnbalancedTransaction, match="2-decimal"):
        domain.transaction(
            uuid.uuid4(),
            "settlement",
            [Posting("a", "vouchers", D("0.005")), Posting("b", "vouchers", D("-0.005"))],
        )


def test_a_credit_moves_the_payout_from_the_points_source_into_the_wallet() -> None:
    member = uuid.uuid4()
    p = payout(member, "10.00", asset="coins", reason="gold_coins")
    booking = domain.book_payout(p, ZERO)
    balances: dict[str, Decimal] = {}
    domain.apply(balances, booking.transaction)
    assert balances == {
        f"wallet:{member}:coins": D("10.00"),
        "source:points:coins": D("-10.00"),
    }
    assert booking.transaction.order_id == p.order_id
    assert booking.transaction.payout_id == p.payout_id
    assert (booking.applied, booking.unrecovered) == (D("10.00"), ZERO)


def test_a_reversal_takes_what_the_wallet_holds_and_books_the_rest_unrecovered() -> None:
    member = uuid.uuid4()
    booking = domain.book_payout(payout(member, "-10.00", reason="reversal"), D("4.00"))
    assert booking.applied == D("-4.00")
    assert booking.unrecovered == D("6.00")
    balances = {f"wallet:{member}:vouchers": D("4.00")}
    domain.apply(balances, booking.transaction)
    assert balances[f"wallet:{member}:vouchers"] == ZERO
    assert balances["source:points:vouchers"] == D("10.00")
    assert balances["unrecovered:vouchers"] == D("-6.00")
    assert sums_by_asset(booking.transaction) == {"vouchers": ZERO}


def test_a_reversal_of_a_wallet_that_holds_enough_recovers_everything() -> None:
    booking = domain.book_payout(payout(uuid.uuid4(), "-3.00", reason="reversal"), D("9.00"))
    assert (booking.applied, booking.unrecovered) == (D("-3.00"), ZERO)
    assert all(not p.account.startswith("unrecovered") for p in booking.transaction.postings)


def test_only_a_reversal_may_be_negative() -> None:
    with pytest.raises(InvalidPayout, match="reversal"):
        domain.book_payout(payout(uuid.uuid4(), "-1.00", reason="settlement"), D("5.00"))


def test_a_batch_sees_its_own_earlier_credits() -> None:
    member = uuid.uuid4()
    bookings = domain.book_payouts(
        [payout(member, "3.00"), payout(member, "-5.00", reason="reversal")], {}
    )
    assert [b.applied for b in bookings] == [D("3.00"), D("-3.00")]
    assert bookings[1].unrecovered == D("2.00")


def test_apply_refuses_to_overdraw_a_wallet_and_changes_nothing() -> None:
    member = uuid.uuid4()
    balances = {f"wallet:{member}:vouchers": D("4.99")}
    with pytest.raises(InsufficientBalance) as info:
        domain.apply(balances, domain.hold_vouchers(uuid.uuid4(), member, D("5.00")))
    assert info.value.available == D("4.99")
    assert balances == {f"wallet:{member}:vouchers": D("4.99")}


def test_a_hold_moves_vouchers_to_held_and_a_release_moves_them_back() -> None:
    member, hold = uuid.uuid4(), uuid.uuid4()
    balances = {f"wallet:{member}:vouchers": D("50.00")}
    domain.apply(balances, domain.hold_vouchers(hold, member, D("30.00")))
    assert balances[f"wallet:{member}:vouchers"] == D("20.00")
    assert balances[f"wallet:{member}:vouchers:held"] == D("30.00")
    domain.apply(balances, domain.release_hold(hold, member, D("30.00"), expired=True))
    assert balances[f"wallet:{member}:vouchers"] == D("50.00")
    assert balances[f"wallet:{member}:vouchers:held"] == ZERO


def test_capturing_a_hold_makes_the_merchant_owed_the_amount() -> None:
    member, merchant, hold, order = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    balances = {f"wallet:{member}:vouchers": D("50.00")}
    domain.apply(balances, domain.hold_vouchers(hold, member, D("30.00")))
    plan = domain.plan_capture(D("30.00"), D("30.00"), D("20.00"))
    assert (plan.from_held, plan.released, plan.from_wallet, plan.unrecovered) == (
        D("30.00"), ZERO, ZERO, ZERO
    )
    txn = domain.capture_hold(plan, hold_id=hold, member_id=member, merchant_id=merchant,
                              order_id=order)
    domain.apply(balances, txn)
    assert balances[f"wallet:{member}:vouchers:held"] == ZERO
    assert balances[f"wallet:{member}:vouchers"] == D("20.00")
    assert balances[f"merchant:{merchant}:receivable"] == D("30.00")
    assert txn.order_id == order


def test_capturing_less_than_was_held_releases_the_rest() -> None:
    plan = domain.plan_capture(due=D("20.00"), held=D("30.00"), available=ZERO)
    assert (plan.from_held, plan.released, plan.from_wallet, plan.unrecovered) == (
        D("20.00"), D("10.00"), ZERO, ZERO
    )


def test_a_late_capture_takes_free_vouchers_then_books_the_shortfall_unrecovered() -> None:
    plan = domain.plan_capture(due=D("30.00"), held=ZERO, available=D("12.50"))
    assert (plan.from_wallet, plan.unrecovered) == (D("12.50"), D("17.50"))
    member, merchant = uuid.uuid4(), uuid.uuid4()
    balances = {f"wallet:{member}:vouchers": D("12.50")}
    domain.apply(balances, domain.capture_hold(
        plan, hold_id=uuid.uuid4(), member_id=member, merchant_id=merchant, order_id=None))
    assert balances[f"wallet:{member}:vouchers"] == ZERO
    assert balances[f"merchant:{merchant}:receivable"] == D("30.00")
    assert balances["unrecovered:vouchers"] == D("-17.50")


def test_a_refund_gives_back_at_most_what_was_captured() -> None:
    plan = domain.plan_voucher_return(
        D("40.00"), captured=D("30.00"), captured_unrecovered=ZERO, returned=D("10.00"),
        returned_to_member=D("10.00"),
    )
    assert (plan.amount, plan.to_member, plan.to_unrecovered) == (D("20.00"), D("20.00"), ZERO)


def test_a_refund_of_vouchers_the_member_never_paid_reduces_the_loss_instead() -> None:
    plan = domain.plan_voucher_return(
        D("30.00"), captured=D("30.00"), captured_unrecovered=D("17.50"), returned=ZERO,
        returned_to_member=ZERO,
    )
    assert (plan.amount, plan.to_member, plan.to_unrecovered) == (
        D("30.00"), D("12.50"), D("17.50")
    )


def test_a_refund_moves_vouchers_from_the_receivable_back_to_the_wallet() -> None:
    member, merchant, order = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    balances = {f"merchant:{merchant}:receivable": D("30.00")}
    plan = domain.plan_voucher_return(
        D("10.00"), captured=D("30.00"), captured_unrecovered=ZERO, returned=ZERO,
        returned_to_member=ZERO,
    )
    domain.apply(balances, domain.return_vouchers(
        plan, refund_id=uuid.uuid4(), hold_id=uuid.uuid4(), member_id=member,
        merchant_id=merchant, order_id=order))
    assert balances[f"merchant:{merchant}:receivable"] == D("20.00")
    assert balances[f"wallet:{member}:vouchers"] == D("10.00")


def test_coins_are_redeemed_one_coin_per_yuan_and_never_overdrawn() -> None:
    member = uuid.uuid4()
    balances = {f"wallet:{member}:coins": D("10.00")}
    domain.apply(balances, domain.redeem_coins(member, "r-1", D("7.50")))
    assert balances[f"wallet:{member}:coins"] == D("2.50")
    assert balances[domain.COINS_REDEEMED_ACCOUNT] == D("7.50")
    with pytest.raises(InsufficientBalance):
        domain.apply(balances, domain.redeem_coins(member, "r-2", D("2.51")))
    with pytest.raises(domain.LedgerError):
        domain.redeem_coins(member, "r-3", ZERO)


def test_transaction_ids_are_derived_so_a_repeat_books_the_same_transaction() -> None:
    member, hold = uuid.uuid4(), uuid.uuid4()
    assert (domain.hold_vouchers(hold, member, D("1.00")).transaction_id
            == domain.hold_vouchers(hold, member, D("1.00")).transaction_id)
    assert (domain.redeem_coins(member, "a", D("1.00")).transaction_id
            != domain.redeem_coins(member, "b", D("1.00")).transaction_id)


def test_wallet_buckets_are_named_after_the_account() -> None:
    member = uuid.uuid4()
    assert {domain.wallet_bucket(a) for a in domain.wallet_accounts(member).values()} == set(
        domain.WALLET_BUCKETS
    )
    assert domain.wallet_bucket("source:points:coins") is None
    assert not domain.must_stay_non_negative("unrecovered:coins")
    assert domain.must_stay_non_negative(f"merchant:{member}:receivable")
