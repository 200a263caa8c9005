"""Earning per order in the green points program (RULES 1.1).

A pure functional core: plain values in, plain values out, no I/O.

Two steps, because the order and its referral evaluation arrive separately:

- :func:`earn` runs when the order completes: the give-back ``G``, the consumer and
  merchant points (each ``G``) and the consumer's gold coins;
- :func:`allocate_giveback` runs once the order's reward claims are known: it splits ``G``
  into the platform fee, the binding and invite rewards and the two pool funds.

Every share is rounded down to the cent with :func:`shared.money.round_down`; the rounding
remainder stays in the source, and the last step's remainder lands in the merchant pool
("the rest"), so ``fee + rewards + consumer pool + merchant pool == G`` exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from shared.money import ZERO, exact, from_fen, round_down, to_fen

EarnOn = Literal["cash", "gross"]
RewardKind = Literal["binding", "invite"]
RewardBasis = Literal["consumer_points", "cash_amount"]


def _check_rate(name: str, value: Decimal) -> None:
    if not value.is_finite() or not ZERO <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class EarningRules:
    """The RULES 1.1 defaults; an operator may change each in the program configuration."""

    earn_on: EarnOn = "cash"
    coin_rate: Decimal = Decimal("0.01")
    platform_fee_rate: Decimal = Decimal("0")
    consumer_pool_share: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        if self.earn_on not in ("cash", "gross"):
            raise ValueError(f"earn_on must be 'cash' or 'gross', got {self.earn_on!r}")
        for name in ("coin_rate", "platform_fee_rate", "consumer_pool_share"):
            _check_rate(name, getattr(self, name))


DEFAULT_EARNING_RULES = EarningRules()


# --- step 1: when the order completes -------------------------------------------------


@dataclass(frozen=True)
class OrderEarning:
    """What one completed order earns (RULES 1.1)."""

    cash_amount: Decimal
    #: ``G = r_M × A_cash`` (or ``r_M × A`` with earn_on = gross), rounded down.
    giveback: Decimal
    consumer_points: Decimal
    merchant_points: Decimal
    #: ``coin_rate × A_cash``, rounded down; paid by the platform, not out of G.
    coins: Decimal


def earn(
    amount: Decimal,
    voucher_amount: Decimal,
    giveback_rate: Decimal,
    rules: EarningRules = DEFAULT_EARNING_RULES,
) -> OrderEarning:
    """RULES 1.1: give-back, points and coins of an order of *amount*, *voucher_amount* of it
    paid with vouchers, at the merchant's give-back rate r_M."""
    amount, voucher_amount = exact(amount), exact(voucher_amount)
    if amount <= 0:
        raise ValueError(f"the order amount must be positive, got {amount}")
    if not ZERO <= voucher_amount <= amount:
        raise ValueError(
            f"the voucher part must be between 0 and the amount {amount}, got {voucher_amount}"
        )
    _check_rate("giveback_rate", giveback_rate)
    cash_amount = amount - voucher_amount
    base = cash_amount if rules.earn_on == "cash" else amount
    giveback = round_down(giveback_rate * base)
    return OrderEarning(
        cash_amount=cash_amount,
        giveback=giveback,
        # "消费者和商家各获得200积分": both get G points.
        consumer_points=giveback,
        merchant_points=giveback,
        coins=round_down(rules.coin_rate * cash_amount),
    )


# --- step 2: when the order's reward claims are known ---------------------------------


class RewardClaimLike(Protocol):
    """A reward due on the order (``shared.events.RewardClaim`` has this shape)."""

    @property
    def kind(self) -> RewardKind: ...

    @property
    def beneficiary_id(self) -> Hashable: ...

    @property
    def rate(self) -> Decimal: ...

    @property
    def basis(self) -> RewardBasis: ...


@dataclass(frozen=True)
class RewardShare:
    """One reward of the order: what it was due and what G could pay of it."""

    kind: RewardKind
    beneficiary_id: Hashable
    rate: Decimal
    basis: RewardBasis
    #: ``rate × basis`` rounded down: the reward before any scaling.
    due: Decimal
    #: What is paid: ``due``, or its pro-rata part when the rewards do not fit.
    amount: Decimal


@dataclass(frozen=True)
class GivebackAllocation:
    """How G is split (RULES 1.1 steps 1-3); the parts add up to G exactly."""

    giveback: Decimal
    platform_fee: Decimal
    rewards: tuple[RewardShare, ...]
    rewards_total: Decimal
    #: True when the rewards did not fit in ``G − fee`` and were scaled down pro rata.
    rewards_scaled: bool
    remainder: Decimal
    consumer_pool: Decimal
    merchant_pool: Decimal


def reward_due(
    claim: RewardClaimLike, consumer_points: Decimal, cash_amount: Decimal
) -> Decimal:
    """RULES 1.4 (binding: rate × consumer points of the order) and RULES 1.5 (invite:
    rate × A_cash), rounded down."""
    if not claim.rate.is_finite() or claim.rate < 0:
        raise ValueError(f"a reward rate cannot be negative, got {claim.rate}")
    if claim.basis == "consumer_points":
        return round_down(claim.rate * consumer_points)
    if claim.basis == "cash_amount":
        return round_down(claim.rate * cash_amount)
    raise ValueError(f"unknown reward basis {claim.basis!r}")


def _scale_to_fit(dues: Sequence[Decimal], available: Decimal) -> list[Decimal]:
    """RULES 1.1 step 2: scale *dues* down pro rata so that together they fit *available*.

    Each share is ``due × available / Σ dues`` rounded down, computed in integer fen so no
    inexact division can round a share up; the shares never add up to more than *available*.
    """
    total = sum(to_fen(d) for d in dues)
    budget = to_fen(available)
    return [from_fen(to_fen(d) * budget // total) for d in dues]


def allocate_giveback(
    giveback: Decimal,
    consumer_points: Decimal,
    cash_amount: Decimal,
    claims: Sequence[RewardClaimLike],
    rules: EarningRules = DEFAULT_EARNING_RULES,
) -> GivebackAllocation:
    """RULES 1.1: allocate the order's give-back G, in this order: the platform fee, the
    rewards (scaled down pro rata if they exceed what is left), the two pool funds."""
    giveback, consumer_points, cash_amount = (
        exact(giveback), exact(consumer_points), exact(cash_amount)
    )
    if giveback < 0 or consumer_points < 0 or cash_amount < 0:
        raise ValueError("give-back, points and cash amount cannot be negative")
    # 1. platform fee
    platform_fee = round_down(rules.platform_fee_rate * giveback)
    available = giveback - platform_fee
    # 2. binding and invite rewards
    dues = [reward_due(c, consumer_points, cash_amount) for c in claims]
    scaled = sum(dues, ZERO) > available
    amounts = _scale_to_fit(dues, available) if scaled else dues
    rewards = tuple(
        RewardShare(
            kind=c.kind,
            beneficiary_id=c.beneficiary_id,
            rate=c.rate,
            basis=c.basis,
            due=due,
            amount=paid,
        )
        for c, due, paid in zip(claims, dues, amounts, strict=True)
    )
    rewards_total = sum((r.amount for r in rewards), ZERO)
    # 3. the remainder R: consumer_pool_share of it to the consumer pool, the rest
    # (including the rounding remainder) to the merchant pool.
    remainder = available - rewards_total
    consumer_pool = round_down(rules.consumer_pool_share * remainder)
    return GivebackAllocation(
        giveback=giveback,
        platform_fee=platform_fee,
        rewards=rewards,
        rewards_total=rewards_total,
        rewards_scaled=scaled,
        remainder=remainder,
        consumer_pool=consumer_pool,
        merchant_pool=remainder - consumer_pool,
    )
