"""Money and money-like quantities (vouchers, coins, cash, points).

RULES (general): amounts are CNY with 2 decimals, computed exactly, and every member's
share is rounded *down* to 0.01. This module is the one place that rounds; everything
else does exact Decimal arithmetic and calls :func:`round_down` when a share is final.
It imports neither FastAPI nor SQLAlchemy so that the pure rule modules can use it.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

#: The largest single amount the platform accepts on any API (orders, refunds,
#: redemptions). Larger figures are treated as a POS or client bug, not a sale.
MAX_AMOUNT = Decimal("10000000.00")


class MoneyError(ValueError):
    """A value cannot be represented exactly as a 2-decimal amount."""


def round_down(value: Decimal) -> Decimal:
    """Round a computed share down to the cent; remainders stay with the source."""
    return value.quantize(CENT, rounding=ROUND_DOWN)


def exact(value: Decimal | int | str) -> Decimal:
    """Return *value* as a 2-decimal Decimal, refusing anything that would lose a fen."""
    try:
        d = Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"{value!r} is not a number") from exc
    if not d.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount")
    q = d.quantize(CENT)
    if q != d:
        raise MoneyError(f"{value!r} has more than 2 decimals")
    return q


def to_fen(value: Decimal) -> int:
    """Exact conversion to integer fen (1/100 CNY), the storage unit.

    Runs for every stored amount (millions per settlement), hence no quantize: a value
    is exact in fen when a hundred times it is a whole number.
    """
    if not isinstance(value, Decimal):
        value = exact(value)
    if not value.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount")
    fen = value * 100
    if fen != fen.to_integral_value():
        raise MoneyError(f"{value!r} is not an exact amount in fen")
    return int(fen)


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(CENT)


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def _as_str(value: Decimal) -> str:
    return str(value.quantize(CENT))


#: An amount on the wire: accepted as a JSON string or number with at most 2 decimals,
#: always answered as a string ("1000.00") so that no client parses it into a float.
Amount = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2, allow_inf_nan=False),
    AfterValidator(_two_places),
    PlainSerializer(_as_str, return_type=str, when_used="json"),
]

#: A strictly positive amount no larger than :data:`MAX_AMOUNT` (order amounts, refunds).
PositiveAmount = Annotated[Amount, Field(gt=0, le=MAX_AMOUNT)]

#: An amount that may be zero (e.g. the voucher part of an order).
NonNegativeAmount = Annotated[Amount, Field(ge=0, le=MAX_AMOUNT)]
