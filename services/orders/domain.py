"""Pure rules of the orders service: give-back rate bounds, the cash part of an order,
order/refund fingerprints for idempotency, refund splits and order status.

Decimal in, Decimal out; no FastAPI, no database. The service layer turns the
exceptions raised here into HTTP answers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal
from uuid import UUID

from shared.money import CENT, ZERO, round_down

#: Namespace of the deterministic voucher hold ids (see :func:`voucher_hold_id`).
VOUCHER_HOLD_NAMESPACE = UUID("6f1c3a52-5d0e-4c55-9a47-3b0e9f2d7a11")

#: Give-back rates are whole percentages or hundredths: 0.10, 0.125 is refused. They
#: travel in events as 2-decimal quantities (`MerchantRegistered.giveback_rate`).
RATE_QUANTUM = CENT

OrderStatus = Literal["completed", "partially_refunded", "refunded"]


# --- RULES 1.1: the merchant's give-back rate -----------------------------------------


class InvalidGivebackRate(ValueError):
    """The rate is not a 2-decimal number inside the program's bounds."""


def check_giveback_rate(rate: Decimal, minimum: Decimal, maximum: Decimal) -> Decimal:
    """RULES 1.1: 0.10 <= r_M <= 0.20 (bounds configurable), at most 2 decimals."""
    try:
        if not rate.is_finite():
            raise InvalidOperation
        exact_rate = rate.quantize(RATE_QUANTUM)
    except InvalidOperation as exc:
        raise InvalidGivebackRate(f"{rate} is not a valid rate") from exc
    if exact_rate != rate:
        raise InvalidGivebackRate(
            f"{rate} has more than 2 decimals; give a rate such as 0.15 for 15%"
        )
    if not minimum <= exact_rate <= maximum:
        raise InvalidGivebackRate(
            f"{rate} is outside the allowed range {minimum} to {maximum} (RULES 1.1)"
        )
    return exact_rate


def cash_part(amount: Decimal, voucher_amount: Decimal) -> Decimal:
    """RULES 1.1: A_cash = A - V (V <= A is checked when the order is read)."""
    if voucher_amount > amount:
        raise ValueError("voucher_amount exceeds amount")
    return amount - voucher_amount


# --- idempotency: canonical terms and their fingerprint -------------------------------


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def order_terms(consumer_id: UUID, amount: Decimal, voucher_amount: Decimal) -> dict[str, str]:
    """The normalised body of an order (what a replay must repeat exactly)."""
    return {
        "consumer_id": str(consumer_id),
        "amount": _money(amount),
        "voucher_amount": _money(voucher_amount),
    }


def refund_terms(amount: Decimal) -> dict[str, str]:
    """The normalised body of a refund."""
    return {"amount": _money(amount)}


def fingerprint(terms: Mapping[str, str]) -> str:
    """SHA-256 of the canonical JSON of *terms* (sorted keys, no whitespace)."""
    canonical = json.dumps(dict(terms), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def differing_fields(stored: Mapping[str, str], incoming: Mapping[str, str]) -> list[str]:
    """The fields whose normalised values differ, in a stable order."""
    return sorted(k for k in stored.keys() | incoming.keys() if stored.get(k) != incoming.get(k))


def voucher_hold_id(merchant_id: UUID, pos_order_id: str) -> UUID:
    """RULES 1.6: one hold per POS order, so a replayed or concurrent duplicate reuses it."""
    return uuid.uuid5(VOUCHER_HOLD_NAMESPACE, f"{merchant_id}:{pos_order_id}")


# --- refunds (general rules, RULES 1.6) ------------------------------------------------


class RefundExceedsOrder(ValueError):
    """The refund is larger than what is still refundable."""

    def __init__(self, requested: Decimal, refundable: Decimal) -> None:
        super().__init__(f"refund of {requested} exceeds the refundable {refundable}")
        self.requested = requested
        self.refundable = refundable


@dataclass(frozen=True)
class RefundState:
    """An order's amounts and what has been refunded of it so far."""

    order_amount: Decimal
    order_voucher_amount: Decimal
    refunded_amount: Decimal = ZERO
    refunded_voucher_amount: Decimal = ZERO

    @property
    def order_cash_amount(self) -> Decimal:
        return self.order_amount - self.order_voucher_amount

    @property
    def refunded_cash_amount(self) -> Decimal:
        return self.refunded_amount - self.refunded_voucher_amount

    @property
    def refundable(self) -> Decimal:
        return self.order_amount - self.refunded_amount

    def after(self, split: RefundSplit) -> RefundState:
        return RefundState(
            order_amount=self.order_amount,
            order_voucher_amount=self.order_voucher_amount,
            refunded_amount=self.refunded_amount + split.amount,
            refunded_voucher_amount=self.refunded_voucher_amount + split.voucher_amount,
        )


@dataclass(frozen=True)
class RefundSplit:
    voucher_amount: Decimal
    cash_amount: Decimal

    @property
    def amount(self) -> Decimal:
        return self.voucher_amount + self.cash_amount


def split_refund(state: RefundState, amount: Decimal) -> RefundSplit:
    """Split a refund into the vouchers and the cash it gives back.

    Proportional to the order, the voucher part rounded down (RULES general rules):
    ``voucher = round_down(amount x V / A)``, ``cash = amount - voucher``. Each part is
    kept within what is left of it, so no sequence of partial refunds gives back more
    vouchers or more cash than the order took, and the refund that completes the order
    takes exactly what is left of each part: the totals tie out to the fen.
    """
    if amount <= ZERO:
        raise ValueError("a refund amount is positive")
    if amount > state.refundable:
        raise RefundExceedsOrder(amount, state.refundable)
    vouchers_left = state.order_voucher_amount - state.refunded_voucher_amount
    cash_left = state.order_cash_amount - state.refunded_cash_amount
    # Exact: A, V and amount have 2 decimals and at most 12 digits, so the quotient's
    # distance to a cent boundary is far above Decimal's 28-digit precision.
    proportional = round_down(amount * state.order_voucher_amount / state.order_amount)
    voucher = min(max(proportional, amount - cash_left), vouchers_left)
    return RefundSplit(voucher_amount=voucher, cash_amount=amount - voucher)


def order_status(amount: Decimal, refunded_amount: Decimal) -> OrderStatus:
    if refunded_amount <= ZERO:
        return "completed"
    if refunded_amount < amount:
        return "partially_refunded"
    return "refunded"
