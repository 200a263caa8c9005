"""RULES 1.1: earning per order and the allocation of the give-back G (pure rules)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain.earning import (
    EarningRules,
    allocate_giveback,
    earn,
)
from shared.events import RewardClaim
from shared.money import CENT

B = uuid.uuid4()  # the merchant C is bound to
I = uuid.uuid4()  # the member who invited C  # noqa: E741


def binding(rate: str = "0.05", beneficiary: uuid.UUID = B) -> RewardClaim:
    return RewardClaim(
        kind="binding", beneficiary_id=beneficiary, rate=Decimal(rate), basis="consumer_points"
    )


def invite(rate: str = "0.05", beneficiary: uuid.UUID = I) -> RewardClaim:
    return RewardClaim(
        kind="invite", beneficiary_id=beneficiary, rate=Decimal(rate), basis="cash_amount"
    )


def d(value: str) -> Decimal:
    return Decimal(value)


def test_gp1_earning_of_a_1000_cash_order_at_20_percent() -> None:
    earning = earn(d("1000.00"), d("0.00"), d("0.20"))

    assert earning.giveback == d("200.00")
    assert earning.consumer_points == d("200.00")
    assert earning.merchant_points == d("200.00")
    assert earning.coins == d("10.00")
    assert earning.cash_amount == d("1000.00")


def test_gp1_allocation_pays_binding_and_invite_and_splits_the_rest() -> None:
    allocation = allocate_giveback(
        d("200.00"), d("200.00"), d("1000.00"), [binding(), invite()]
    )

    assert allocation.platform_fee == d("0.00")
    assert [(r.beneficiary_id, r.amount) for r in allocation.rewards] == [
        (B, d("10.00")),
        (I, d("50.00")),
    ]
    assert allocation.rewards_total == d("60.00")
    assert allocation.rewards_scaled is False
    assert allocation.remainder == d("140.00")
    assert allocation.consumer_pool == d("70.00")
    assert allocation.merchant_pool == d("70.00")


def test_an_order_without_rewards_puts_all_of_g_into_the_pools() -> None:
    allocation = allocate_giveback(d("200.00"), d("200.00"), d("1000.00"), [])

    assert allocation.rewards == ()
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("100.00"), d("100.00"))


def test_earn_on_cash_excludes_the_voucher_part() -> None:
    earning = earn(d("1000.00"), d("300.00"), d("0.20"))

    assert earning.giveback == d("140.00")
    assert earning.coins == d("7.00")


def test_earn_on_gross_counts_the_voucher_part_for_g_but_not_for_coins_or_invites() -> None:
    rules = EarningRules(earn_on="gross")
    earning = earn(d("1000.00"), d("300.00"), d("0.20"), rules)

    assert earning.giveback == d("200.00")
    assert (earning.consumer_points, earning.merchant_points) == (d("200.00"), d("200.00"))
    assert earning.coins == d("7.00")  # coin_rate × A_cash

    allocation = allocate_giveback(
        earning.giveback, earning.consumer_points, earning.cash_amount,
        [binding(), invite()], rules,
    )
    # binding: 5% of the order's 200.00 consumer points; invite: 5% of A_cash 700.00
    assert [r.amount for r in allocation.rewards] == [d("10.00"), d("35.00")]
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("77.50"), d("77.50"))


def test_the_platform_fee_comes_first() -> None:
    rules = EarningRules(platform_fee_rate=d("0.10"))
    allocation = allocate_giveback(
        d("200.00"), d("200.00"), d("1000.00"), [binding(), invite()], rules,
    )

    assert allocation.platform_fee == d("20.00")
    assert allocation.rewards_total == d("60.00")
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("60.00"), d("60.00"))


def test_rewards_that_fit_are_paid_in_full_at_a_10_percent_rate() -> None:
    earning = earn(d("1000.00"), d("0.00"), d("0.10"))
    allocation = allocate_giveback(
        earning.giveback, earning.consumer_points, earning.cash_amount,
        [binding(), invite()],
    )

    assert earning.giveback == d("100.00")
    assert [r.amount for r in allocation.rewards] == [d("5.00"), d("50.00")]
    assert allocation.rewards_scaled is False
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("22.50"), d("22.50"))


def test_rewards_that_exceed_g_are_scaled_down_pro_rata() -> None:
    # r = 10%: G = 100.00; an operator's invite rate of 20% asks 200.00, binding 5.00.
    allocation = allocate_giveback(
        d("100.00"), d("100.00"), d("1000.00"), [binding(), invite("0.20")],
    )

    assert allocation.rewards_scaled is True
    assert [r.due for r in allocation.rewards] == [d("5.00"), d("200.00")]
    # 5 × 100 / 205 = 2.439… and 200 × 100 / 205 = 97.560…, each rounded down
    assert [r.amount for r in allocation.rewards] == [d("2.43"), d("97.56")]
    assert allocation.rewards_total == d("99.99")
    # The rounding remainder 0.01 stays in G; its split rounds the consumer half down.
    assert allocation.remainder == d("0.01")
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("0.00"), d("0.01"))


def test_scaled_rewards_fit_in_what_the_fee_leaves() -> None:
    rules = EarningRules(platform_fee_rate=d("0.10"))
    allocation = allocate_giveback(
        d("100.00"), d("100.00"), d("1000.00"), [invite("0.20")], rules,
    )

    assert allocation.platform_fee == d("10.00")
    assert [r.amount for r in allocation.rewards] == [d("90.00")]
    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("0.00"), d("0.00"))


def test_odd_remainder_rounding_goes_to_the_merchant_pool() -> None:
    allocation = allocate_giveback(d("0.03"), d("0.03"), d("0.15"), [])

    assert (allocation.consumer_pool, allocation.merchant_pool) == (d("0.01"), d("0.02"))


def test_shares_are_rounded_down_to_the_cent() -> None:
    earning = earn(d("33.33"), d("0.00"), d("0.15"))  # 4.9995 give-back, 0.3333 coins

    assert earning.giveback == d("4.99")
    assert earning.coins == d("0.33")


@pytest.mark.parametrize(
    ("amount", "vouchers", "rate"),
    [
        ("0.00", "0.00", "0.20"),
        ("-5.00", "0.00", "0.20"),
        ("100.00", "100.01", "0.20"),
        ("100.00", "-1.00", "0.20"),
        ("100.00", "0.00", "1.50"),
        ("100.00", "0.00", "-0.10"),
        ("100.001", "0.00", "0.20"),
    ],
)
def test_an_impossible_order_is_refused(amount: str, vouchers: str, rate: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case names a different field
        earn(d(amount), d(vouchers), d(rate))


def test_a_negative_reward_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate_giveback(d("100.00"), d("100.00"), d("500.00"), [invite("-0.05")])


@pytest.mark.parametrize(
    "rules",
    [
        {"earn_on": "net"},
        {"coin_rate": Decimal("-0.01")},
        {"platform_fee_rate": Decimal("1.01")},
        {"consumer_pool_share": Decimal("NaN")},
    ],
)
def test_impossible_rules_are_refused(rules: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        EarningRules(**rules)


# --- properties ------------------------------------------------------------------------

cents = st.integers(min_value=1, max_value=10**9).map(lambda fen: Decimal(fen) / 100)
rates = st.integers(min_value=0, max_value=100).map(lambda pct: Decimal(pct) / 100)
claims = st.lists(
    st.builds(
        RewardClaim,
        kind=st.sampled_from(["binding", "invite"]),
        beneficiary_id=st.uuids(),
        rate=rates,
        basis=st.sampled_from(["consumer_points", "cash_amount"]),
    ),
    max_size=4,
)
rules_st = st.builds(
    EarningRules,
    earn_on=st.sampled_from(["cash", "gross"]),
    coin_rate=rates,
    platform_fee_rate=rates,
    consumer_pool_share=rates,
)


@st.composite
def orders(draw: st.DrawFn) -> tuple[Decimal, Decimal, Decimal]:
    amount = draw(cents)
    vouchers = draw(st.integers(min_value=0, max_value=int(amount * 100))) / Decimal(100)
    return amount, vouchers, draw(rates)


def _two_places(value: Decimal) -> bool:
    return value == value.quantize(CENT)


@given(order=orders(), order_claims=claims, rules=rules_st)
def test_allocation_conserves_g_and_never_overpays(
    order: tuple[Decimal, Decimal, Decimal], order_claims: list[RewardClaim], rules: EarningRules
) -> None:
    amount, vouchers, rate = order
    earning = earn(amount, vouchers, rate, rules)
    allocation = allocate_giveback(
        earning.giveback, earning.consumer_points, earning.cash_amount,
        order_claims, rules,
    )
    parts = [
        allocation.platform_fee,
        *(r.amount for r in allocation.rewards),
        allocation.consumer_pool,
        allocation.merchant_pool,
    ]

    # money is conserved exactly
    assert sum(parts) == earning.giveback
    # the rewards never take more than what the fee leaves of G, nor more than is due
    assert allocation.rewards_total <= earning.giveback - allocation.platform_fee
    assert all(r.amount <= r.due for r in allocation.rewards)
    if not allocation.rewards_scaled:
        assert all(r.amount == r.due for r in allocation.rewards)
    # nothing negative, every share in whole cents
    figures = [
        *parts, earning.giveback, earning.coins, earning.consumer_points,
        earning.merchant_points, *(r.due for r in allocation.rewards),
    ]
    assert all(f >= 0 for f in figures)
    assert all(_two_places(f) for f in figures)
    assert earning.giveback <= amount


@given(order=orders(), order_claims=claims)
def test_scaled_rewards_use_nearly_all_of_what_is_left(
    order: tuple[Decimal, Decimal, Decimal], order_claims: list[RewardClaim]
) -> None:
    amount, vouchers, rate = order
    earning = earn(amount, vouchers, rate)
    allocation = allocate_giveback(
        earning.giveback, earning.consumer_points, earning.cash_amount,
        order_claims,
    )

    if allocation.rewards_scaled:
        # each share loses less than a cent to rounding down
        left_over = earning.giveback - allocation.platform_fee - allocation.rewards_total
        assert left_over < CENT * len(order_claims)
