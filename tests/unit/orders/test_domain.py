"""Orders rules as pure functions: rate bounds (RULES 1.1), the cash part, idempotency
fingerprints and the proportional split of refunds (general rules, RULES 1.6)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain import (
    InvalidGivebackRate,
    RefundExceedsOrder,
    RefundState,
    cash_part,
    check_giveback_rate,
    differing_fields,
    fingerprint,
    order_status,
    order_terms,
    split_refund,
    voucher_hold_id,
)

D = Decimal
LOW, HIGH = D("0.10"), D("0.20")


# --- RULES 1.1: give-back rate ---------------------------------------------------------


@pytest.mark.parametrize("rate", ["0.10", "0.15", "0.2", "0.20"])
def test_rates_within_bounds_are_accepted_as_two_decimals(rate: str) -> None:
    assert check_giveback_rate(D(rate), LOW, HIGH) == D(rate).quantize(D("0.01"))


@pytest.mark.parametrize(
    ("rate", "problem"),
    [
        ("0.09", "outside the allowed range"),
        ("0.21", "outside the allowed range"),
        ("-0.15", "outside the allowed range"),
        ("0.125", "more than 2 decimals"),
        ("NaN", "not a valid rate"),
        ("Infinity", "not a valid rate"),
    ],
)
def test_rates_outside_bounds_or_too_precise_are_refused(rate: str, problem: str) -> None:
    with pytest.raises(InvalidGivebackRate, match=problem):
        check_giveback_rate(D(rate), LOW, HIGH)


def test_operator_configured_bounds_apply() -> None:
    assert check_giveback_rate(D("0.30"), D("0.05"), D("0.30")) == D("0.30")


def test_cash_part_is_amount_minus_vouchers() -> None:
    # RULES 1.1: A_cash = A - V
    assert cash_part(D("1000.00"), D("150.00")) == D("850.00")
    assert cash_part(D("1000.00"), D("0.00")) == D("1000.00")
    with pytest.raises(ValueError, match="exceeds"):
        cash_part(D("10.00"), D("10.01"))


# --- idempotency -----------------------------------------------------------------------


def test_fingerprint_ignores_how_the_amount_was_written() -> None:
    consumer = uuid.uuid4()
    a = order_terms(consumer, D("100"), D("0"))
    b = order_terms(consumer, D("100.00"), D("0.0"))
    assert fingerprint(a) == fingerprint(b)


def test_fingerprint_changes_with_any_field_and_the_differences_are_named() -> None:
    consumer = uuid.uuid4()
    base = order_terms(consumer, D("100.00"), D("10.00"))
    other = order_terms(uuid.uuid4(), D("100.00"), D("20.00"))
    assert fingerprint(base) != fingerprint(other)
    assert differing_fields(base, other) == ["consumer_id", "voucher_amount"]
    assert differing_fields(base, dict(base)) == []


def test_voucher_hold_id_is_deterministic_per_merchant_order() -> None:
    merchant = uuid.uuid4()
    assert voucher_hold_id(merchant, "T1-1") == voucher_hold_id(merchant, "T1-1")
    assert voucher_hold_id(merchant, "T1-1") != voucher_hold_id(merchant, "T1-2")
    assert voucher_hold_id(merchant, "T1-1") != voucher_hold_id(uuid.uuid4(), "T1-1")


# --- refunds ---------------------------------------------------------------------------


def test_partial_refund_is_split_in_proportion_with_vouchers_rounded_down() -> None:
    state = RefundState(order_amount=D("300.00"), order_voucher_amount=D("100.00"))
    split = split_refund(state, D("100.00"))
    # 100 x 100/300 = 33.333.. -> 33.33 vouchers, the rest in cash
    assert (split.voucher_amount, split.cash_amount) == (D("33.33"), D("66.67"))


def test_the_refund_that_completes_the_order_takes_exactly_what_is_left() -> None:
    state = RefundState(order_amount=D("300.00"), order_voucher_amount=D("100.00"))
    for _ in range(2):
        state = state.after(split_refund(state, D("100.00")))
    last = split_refund(state, D("100.00"))
    assert (last.voucher_amount, last.cash_amount) == (D("33.34"), D("66.66"))
    final = state.after(last)
    assert final.refunded_voucher_amount == D("100.00")
    assert final.refunded_cash_amount == D("200.00")


def test_cash_never_exceeds_the_cash_paid_even_when_rounding_favours_it() -> None:
    # A = 1.00 of which 0.99 vouchers: rounding each voucher part down would hand back
    # more than the 0.01 cash paid unless the cash part is capped.
    state = RefundState(order_amount=D("1.00"), order_voucher_amount=D("0.99"))
    first = split_refund(state, D("0.50"))
    state = state.after(first)
    second = split_refund(state, D("0.49"))
    state = state.after(second)
    assert state.refunded_cash_amount <= D("0.01")
    last = split_refund(state, D("0.01"))
    final = state.after(last)
    assert (final.refunded_voucher_amount, final.refunded_cash_amount) == (D("0.99"), D("0.01"))
    assert min(first.cash_amount, second.cash_amount, last.cash_amount) >= 0


def test_refund_larger_than_what_is_left_says_how_much_is_refundable() -> None:
    state = RefundState(
        order_amount=D("100.00"), order_voucher_amount=D("0.00"), refunded_amount=D("60.00")
    )
    with pytest.raises(RefundExceedsOrder) as info:
        split_refund(state, D("40.01"))
    assert info.value.refundable == D("40.00")


def test_order_status_follows_the_refunded_total() -> None:
    assert order_status(D("100.00"), D("0.00")) == "completed"
    assert order_status(D("100.00"), D("0.01")) == "partially_refunded"
    assert order_status(D("100.00"), D("100.00")) == "refunded"


@st.composite
def order_and_refunds(draw: st.DrawFn) -> tuple[RefundState, list[Decimal]]:
    """An order, and refunds that may or may not add up to all of it."""
    amount_fen = draw(st.integers(min_value=1, max_value=1_000_000_000))
    voucher_fen = draw(st.integers(min_value=0, max_value=amount_fen))
    left = amount_fen
    refunds: list[Decimal] = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        if left == 0:
            break
        fen = draw(st.one_of(st.integers(min_value=1, max_value=left), st.just(left)))
        refunds.append(D(fen) / 100)
        left -= fen
    state = RefundState(order_amount=D(amount_fen) / 100, order_voucher_amount=D(voucher_fen) / 100)
    return state, refunds


@given(order_and_refunds())
def test_refund_parts_always_sum_to_the_refund_and_never_exceed_the_order(
    case: tuple[RefundState, list[Decimal]],
) -> None:
    state, refunds = case
    for amount in refunds:
        split = split_refund(state, amount)
        assert split.voucher_amount + split.cash_amount == amount
        assert split.voucher_amount >= 0
        assert split.cash_amount >= 0
        assert split.voucher_amount == split.voucher_amount.quantize(D("0.01"))
        state = state.after(split)
        assert state.refunded_voucher_amount <= state.order_voucher_amount
        assert state.refunded_cash_amount <= state.order_cash_amount
    if state.refunded_amount == state.order_amount:
        # The final refund ties out to the fen.
        assert state.refunded_voucher_amount == state.order_voucher_amount
        assert state.refunded_cash_amount == state.order_cash_amount


@given(order_and_refunds())
def test_a_partial_refund_gives_vouchers_back_at_most_in_proportion(
    case: tuple[RefundState, list[Decimal]],
) -> None:
    state, refunds = case
    amount = refunds[0]
    if amount == state.order_amount:
        return
    split = split_refund(state, amount)
    exact_share = amount * state.order_voucher_amount / state.order_amount
    assert split.voucher_amount <= exact_share
    assert exact_share - split.voucher_amount < D("0.01")
