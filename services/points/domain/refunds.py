"""Refunds in the green points program (RULES, general rules).

"A refund reverses every effect of the order that has not yet been paid out (points,
coins, pending entitlements, fund allocations), proportionally for a partial refund.
What was already paid out stays paid; what could not be recovered is recorded as an
unrecovered amount on the platform's account, visible in the audit."

A pure functional core: plain Decimals in, plain Decimals out, no I/O.

- A refund's **share** is its part of the order's earning base (the cash part with
  ``earn_on = cash``, the gross amount with ``earn_on = gross``, RULES 1.1).
- Each effect is reversed by ``round_down(share × original)``; the refund that completes
  the order (``refunded_total == order_amount``) reverses exactly what is left, so a full
  refund in several parts reverses exactly the whole, never a cent more or less.
- What is due is then **recovered** as far as the source still holds it (a pool fund that
  paid out in settlements, a position that has released vouchers against its points);
  the rest is **unrecovered**: ``recovered + unrecovered == due``, neither negative.

The shares are computed in integer fen (``floor(original × part / whole)``), so no inexact
decimal division can round a reversal up.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Literal

from shared.money import ZERO, exact, from_fen, to_fen

EarnOn = Literal["cash", "gross"]


def _non_negative(name: str, value: Decimal) -> Decimal:
    value = exact(value)
    if value < 0:
        raise ValueError(f"{name} cannot be negative, got {value}")
    return value


def earning_base(amount: Decimal, cash_amount: Decimal, earn_on: EarnOn) -> Decimal:
    """RULES 1.1: what G was computed on: the cash part, or the gross amount."""
    if earn_on not in ("cash", "gross"):
        raise ValueError(f"earn_on must be 'cash' or 'gross', got {earn_on!r}")
    return _non_negative("cash_amount" if earn_on == "cash" else "amount",
                         cash_amount if earn_on == "cash" else amount)


@dataclass(frozen=True)
class Share:
    """A refund's part of a base (``part / whole``); ``final``: it completes the order."""

    part: Decimal
    whole: Decimal
    final: bool = False

    def __post_init__(self) -> None:
        part = _non_negative("the refund's part of the base", self.part)
        whole = _non_negative("the base", self.whole)
        object.__setattr__(self, "part", part)
        object.__setattr__(self, "whole", whole)


def reversal_due(original: Decimal, reversed_so_far: Decimal, share: Share) -> Decimal:
    """How much of *original* this refund reverses.

    ``round_down(part / whole × original)``, never more than what earlier refunds left;
    the final refund reverses exactly what is left.
    """
    original = _non_negative("the original amount", original)
    reversed_so_far = _non_negative("the amount reversed so far", reversed_so_far)
    left = original - reversed_so_far
    if left < 0:
        raise ValueError(f"earlier refunds reversed {reversed_so_far}, more than {original}")
    if share.final:
        return left
    if share.part == 0 or share.whole == 0:
        return ZERO
    proportional = from_fen(to_fen(original) * to_fen(share.part) // to_fen(share.whole))
    return min(proportional, left)


@dataclass(frozen=True)
class Recovery:
    """What a reversal due could take back from its source, and what it could not."""

    due: Decimal
    recovered: Decimal
    unrecovered: Decimal


def recover(due: Decimal, available: Decimal) -> Recovery:
    """Take *due* back from a source holding *available*, never driving it below zero."""
    due = _non_negative("the amount due", due)
    recovered = min(due, max(exact(available), ZERO))
    return Recovery(due=due, recovered=recovered, unrecovered=due - recovered)


def _ratio(multiplier: Decimal) -> tuple[int, int]:
    if not multiplier.is_finite() or multiplier <= 0:
        raise ValueError(f"the multiplier must be positive, got {multiplier}")
    numerator, denominator = multiplier.as_integer_ratio()
    return numerator, denominator


def reversible_points(points: Decimal, released: Decimal, multiplier: Decimal) -> Decimal:
    """RULES 1.7: the most points a position can lose and keep ``released ≤ multiplier ×
    points`` (its lifetime cap, RULES 1.3)."""
    points = _non_negative("points", points)
    released = _non_negative("released", released)
    numerator, denominator = _ratio(multiplier)
    # The fewest points that still cover what was released, rounded up to the cent.
    floor_fen = -(-to_fen(released) * denominator // numerator)
    return from_fen(max(to_fen(points) - floor_fen, 0))


def reverse_position(
    due: Decimal, points: Decimal, released: Decimal, multiplier: Decimal
) -> Recovery:
    """Reverse *due* points of a position; points already released against stay."""
    return recover(due, reversible_points(points, released, multiplier))


def within_cap(points: Decimal, released: Decimal, multiplier: Decimal) -> bool:
    """RULES 1.7: a position's released total never exceeds ``multiplier × points``."""
    numerator, denominator = _ratio(multiplier)
    return to_fen(released) * denominator <= to_fen(points) * numerator


# --- one refund of one order -------------------------------------------------------------


@dataclass(frozen=True)
class Allocated:
    """How the order's give-back was split when its evaluation arrived (RULES 1.1)."""

    platform_fee: Decimal = ZERO
    rewards: Decimal = ZERO
    consumer_pool: Decimal = ZERO
    merchant_pool: Decimal = ZERO


@dataclass(frozen=True)
class OrderEffects:
    """What the order did: points and coins at completion, G held or allocated."""

    consumer_points: Decimal
    merchant_points: Decimal
    coins: Decimal
    giveback: Decimal
    #: None while G is pending (the referral evaluation has not arrived).
    allocated: Allocated | None = None


@dataclass(frozen=True)
class RefundDue:
    """What one refund reverses of each effect (or, summed, what earlier refunds did)."""

    consumer_points: Decimal = ZERO
    merchant_points: Decimal = ZERO
    coins: Decimal = ZERO
    #: Pending G given back to the merchant before it was allocated.
    pending_giveback: Decimal = ZERO
    platform_fee: Decimal = ZERO
    #: The rewards' part: already paid out, it stays paid (never taken back).
    rewards: Decimal = ZERO
    consumer_pool: Decimal = ZERO
    merchant_pool: Decimal = ZERO

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _non_negative(f.name, getattr(self, f.name)))

    def plus(self, other: RefundDue) -> RefundDue:
        return RefundDue(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(self)})

    @property
    def allocated_taken_back(self) -> Decimal:
        """The allocated portions a refund takes back from the funds (not the rewards)."""
        return self.platform_fee + self.consumer_pool + self.merchant_pool


def refund_due(
    effects: OrderEffects,
    so_far: RefundDue,
    order_share: Share,
    allocation_share: Share | None = None,
) -> RefundDue:
    """What this refund reverses of each effect of the order.

    *order_share* is the refund's part of the order's earning base; it applies to the
    points, the coins and a still pending G. The allocated portions were computed on the
    base left when the evaluation arrived (refunds before it had already reduced G), so
    they take *allocation_share*: the refund's part of that base.
    """
    consumer_points = reversal_due(effects.consumer_points, so_far.consumer_points, order_share)
    merchant_points = reversal_due(effects.merchant_points, so_far.merchant_points, order_share)
    coins = reversal_due(effects.coins, so_far.coins, order_share)
    if effects.allocated is None:
        return RefundDue(
            consumer_points=consumer_points,
            merchant_points=merchant_points,
            coins=coins,
            pending_giveback=reversal_due(
                effects.giveback, so_far.pending_giveback, order_share
            ),
        )
    if allocation_share is None:
        raise ValueError("an allocated give-back needs the refund's share of its base")
    allocated = effects.allocated
    return RefundDue(
        consumer_points=consumer_points,
        merchant_points=merchant_points,
        coins=coins,
        platform_fee=reversal_due(allocated.platform_fee, so_far.platform_fee, allocation_share),
        rewards=reversal_due(allocated.rewards, so_far.rewards, allocation_share),
        consumer_pool=reversal_due(
            allocated.consumer_pool, so_far.consumer_pool, allocation_share
        ),
        merchant_pool=reversal_due(
            allocated.merchant_pool, so_far.merchant_pool, allocation_share
        ),
    )


@dataclass(frozen=True)
class AllocationBasis:
    """What is left of an order to allocate once its evaluation arrives (RULES 1.1)."""

    giveback: Decimal
    consumer_points: Decimal
    cash_amount: Decimal


def basis_left(
    giveback: Decimal,
    consumer_points: Decimal,
    cash_amount: Decimal,
    refunded: RefundDue,
    refunded_cash: Decimal,
) -> AllocationBasis:
    """Refunds before the evaluation reduced the pending G: allocate only what remains,
    with the rewards computed on the points and cash the order still has."""
    return AllocationBasis(
        giveback=_non_negative("the give-back left", giveback - refunded.pending_giveback),
        consumer_points=_non_negative(
            "the consumer points left", consumer_points - refunded.consumer_points
        ),
        cash_amount=max(exact(cash_amount) - exact(refunded_cash), ZERO),
    )
