"""Refunds (RULES, general rules): proportional reversal, recovery, final-refund exactness."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain.refunds import (
    Allocated,
    OrderEffects,
    RefundDue,
    Share,
    basis_left,
    earning_base,
    recover,
    refund_due,
    reversal_due,
    reverse_position,
    reversible_points,
    within_cap,
)
from shared.money import from_fen

D = Decimal

#: GP-1 after its allocation: G 200.00, rewards 60.00, pools 70.00 + 70.00, coins 10.00.
GP1 = OrderEffects(
    consumer_points=D("200.00"),
    merchant_points=D("200.00"),
    coins=D("10.00"),
    giveback=D("200.00"),
    allocated=Allocated(
        platform_fee=D("0.00"), rewards=D("60.00"),
        consumer_pool=D("70.00"), merchant_pool=D("70.00"),
    ),
)


# --- the share of a refund ------------------------------------------------------------------


def test_the_earning_base_is_the_cash_part_or_the_gross_amount() -> None:
    assert earning_base(D("1000.00"), D("800.00"), "cash") == D("800.00")
    assert earning_base(D("1000.00"), D("800.00"), "gross") == D("1000.00")
    with pytest.raises(ValueError, match="earn_on"):
        earning_base(D("1000.00"), D("800.00"), "net")  # type: ignore[arg-type]


def test_a_half_refund_reverses_half() -> None:
    assert reversal_due(D("200.00"), D("0"), Share(D("500.00"), D("1000.00"))) == D("100.00")


def test_a_partial_reversal_is_rounded_down_and_the_final_refund_takes_the_rest() -> None:
    third = Share(D("333.33"), D("1000.00"))
    first = reversal_due(D("200.00"), D("0.00"), third)  # 66.666 -> 66.66
    second = reversal_due(D("200.00"), first, third)
    last = reversal_due(D("200.00"), first + second, Share(D("333.34"), D("1000.00"), final=True))

    assert (first, second, last) == (D("66.66"), D("66.66"), D("66.68"))
    assert first + second + last == D("200.00")


def test_a_refund_never_reverses_more_than_earlier_refunds_left() -> None:
    # The final refund came first (events reordered): a later part finds nothing left.
    assert reversal_due(D("200.00"), D("200.00"), Share(D("100.00"), D("1000.00"))) == 0


def test_a_refund_of_nothing_from_the_base_reverses_nothing_unless_it_is_final() -> None:
    vouchers_only = Share(D("0.00"), D("1000.00"))
    assert reversal_due(D("200.00"), D("0.00"), vouchers_only) == 0
    nothing_earned = Share(D("80.00"), D("0.00"))
    assert reversal_due(D("0.00"), D("0.00"), nothing_earned) == 0
    assert reversal_due(D("200.00"), D("150.00"), Share(D("0.00"), D("1000.00"), final=True)) == (
        D("50.00")
    )


def test_more_reversed_than_the_original_is_refused() -> None:
    with pytest.raises(ValueError, match="more than"):
        reversal_due(D("10.00"), D("10.01"), Share(D("1.00"), D("2.00")))
    with pytest.raises(ValueError, match="negative"):
        Share(D("-1.00"), D("2.00"))


# --- recovering what is due ------------------------------------------------------------------


def test_what_a_fund_no_longer_holds_is_unrecovered() -> None:
    taken = recover(D("70.00"), D("30.00"))
    assert (taken.due, taken.recovered, taken.unrecovered) == (D("70.00"), D("30.00"), D("40.00"))
    assert recover(D("70.00"), D("1000.00")).unrecovered == 0
    assert recover(D("70.00"), D("-5.00")).recovered == 0  # a broken fund gives nothing


def test_points_released_against_cannot_be_reversed() -> None:
    # 200 points at 5x have released 600.00: they must keep 120.00 points.
    assert reversible_points(D("200.00"), D("600.00"), D("5")) == D("80.00")
    assert reversible_points(D("200.00"), D("1000.00"), D("5")) == D("0.00")
    assert reversible_points(D("200.00"), D("0.00"), D("5")) == D("200.00")
    # 600.01 / 5 = 120.002: keeping 120.00 would exceed the cap, so 120.01 stay.
    assert reversible_points(D("200.00"), D("600.01"), D("5")) == D("79.99")
    assert reversible_points(D("200.00"), D("450.00"), D("4.5")) == D("100.00")


def test_a_position_reversal_stops_at_its_cap() -> None:
    reversal = reverse_position(D("200.00"), D("200.00"), D("600.00"), D("5"))
    assert (reversal.recovered, reversal.unrecovered) == (D("80.00"), D("120.00"))
    assert within_cap(D("120.00"), D("600.00"), D("5"))
    assert not within_cap(D("119.99"), D("600.00"), D("5"))


# --- one refund of one order ----------------------------------------------------------------


def test_a_full_refund_of_gp1_after_its_allocation() -> None:
    due = refund_due(
        GP1, RefundDue(), Share(D("1000.00"), D("1000.00"), final=True),
        Share(D("1000.00"), D("1000.00"), final=True),
    )
    assert due == RefundDue(
        consumer_points=D("200.00"), merchant_points=D("200.00"), coins=D("10.00"),
        pending_giveback=D("0.00"), platform_fee=D("0.00"), rewards=D("60.00"),
        consumer_pool=D("70.00"), merchant_pool=D("70.00"),
    )
    assert due.allocated_taken_back == D("140.00")  # the rewards stay paid


def test_a_refund_before_the_evaluation_reduces_the_pending_giveback() -> None:
    pending = OrderEffects(D("200.00"), D("200.00"), D("10.00"), D("200.00"))
    due = refund_due(pending, RefundDue(), Share(D("250.00"), D("1000.00")))

    assert due == RefundDue(
        consumer_points=D("50.00"), merchant_points=D("50.00"), coins=D("2.50"),
        pending_giveback=D("50.00"),
    )
    left = basis_left(D("200.00"), D("200.00"), D("1000.00"), due, D("250.00"))
    assert (left.giveback, left.consumer_points, left.cash_amount) == (
        D("150.00"), D("150.00"), D("750.00")
    )


def test_an_allocated_giveback_needs_the_share_of_the_allocated_base() -> None:
    with pytest.raises(ValueError, match="allocated"):
        refund_due(GP1, RefundDue(), Share(D("1.00"), D("1000.00")))


def test_the_allocated_portions_are_shares_of_the_base_left_at_allocation() -> None:
    # 250.00 of 1000.00 was refunded before the evaluation: the allocation split G of the
    # remaining 750.00, so a further 375.00 is half of what was allocated.
    allocated = OrderEffects(
        D("200.00"), D("200.00"), D("10.00"), D("200.00"),
        Allocated(rewards=D("45.00"), consumer_pool=D("52.50"), merchant_pool=D("52.50")),
    )
    so_far = RefundDue(consumer_points=D("50.00"), merchant_points=D("50.00"), coins=D("2.50"),
                       pending_giveback=D("50.00"))
    due = refund_due(allocated, so_far, Share(D("375.00"), D("1000.00")),
                     Share(D("375.00"), D("750.00")))
    assert (due.consumer_points, due.rewards, due.consumer_pool, due.merchant_pool) == (
        D("75.00"), D("22.50"), D("26.25"), D("26.25")
    )
    assert due.pending_giveback == 0


# --- properties -------------------------------------------------------------------------------

fens = st.integers(min_value=0, max_value=10**10)


@st.composite
def refunds_of_an_order(draw: st.DrawFn) -> tuple[Decimal, list[Decimal]]:
    """An earning base and the base parts of refunds that together refund all of it."""
    base = draw(st.integers(min_value=1, max_value=10**9))
    cuts = sorted(draw(st.lists(st.integers(0, base), max_size=6)))
    edges = [0, *cuts, base]
    return from_fen(base), [from_fen(b - a) for a, b in zip(edges, edges[1:], strict=False)]


@given(original=fens, order=refunds_of_an_order())
def test_partial_refunds_reverse_exactly_the_whole(
    original: int, order: tuple[Decimal, list[Decimal]]
) -> None:
    amount, base = from_fen(original), order[0]
    reversed_so_far = D("0.00")
    for n, part in enumerate(order[1]):
        final = n == len(order[1]) - 1
        due = reversal_due(amount, reversed_so_far, Share(part, base, final))
        assert due >= 0
        if not final:
            assert due <= amount * part / base  # never more than its proportion
        reversed_so_far += due
        assert reversed_so_far <= amount
    assert reversed_so_far == amount


@given(original=fens, order=refunds_of_an_order(), data=st.data())
def test_refunds_in_any_order_never_reverse_more_than_the_whole(
    original: int, order: tuple[Decimal, list[Decimal]], data: st.DataObject
) -> None:
    amount, base = from_fen(original), order[0]
    parts = list(enumerate(order[1]))
    shuffled = data.draw(st.permutations(parts))
    last = len(parts) - 1
    reversed_so_far = D("0.00")
    for n, part in shuffled:
        reversed_so_far += reversal_due(amount, reversed_so_far, Share(part, base, n == last))
    assert reversed_so_far == amount


@given(due=fens, available=st.integers(min_value=-(10**6), max_value=10**10))
def test_recovered_and_unrecovered_make_the_due_reversal(due: int, available: int) -> None:
    taken = recover(from_fen(due), from_fen(available))
    assert taken.recovered + taken.unrecovered == taken.due == from_fen(due)
    assert taken.recovered >= 0
    assert taken.unrecovered >= 0
    assert taken.recovered <= max(from_fen(available), D("0"))


multipliers = st.sampled_from([D("5"), D("1"), D("4.5"), D("2.25"), D("10")])


@given(points=fens, released_share=st.fractions(0, 1), due=fens, multiplier=multipliers)
def test_a_reversed_position_stays_within_its_cap_and_loses_as_much_as_it_can(
    points: int, released_share: Fraction, due: int, multiplier: Decimal
) -> None:
    held = from_fen(points)
    # Any released total within the cap (RULES 1.7) before the refund.
    cap_fen = int(Fraction(points) * Fraction(multiplier))
    released = from_fen(int(cap_fen * released_share))
    wanted = min(from_fen(due), held)
    reversal = reverse_position(wanted, held, released, multiplier)

    left = held - reversal.recovered
    assert reversal.recovered + reversal.unrecovered == wanted
    assert reversal.recovered >= 0
    assert reversal.unrecovered >= 0
    assert left >= 0
    assert within_cap(left, released, multiplier)
    if reversal.unrecovered > 0:  # one more cent would break the cap
        assert not within_cap(left - D("0.01"), released, multiplier)
