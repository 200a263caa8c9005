"""Request and response bodies of the orders API.

Wire names follow the POS's view: `order_id` / `refund_id` are the ids the POS chose,
`id` is the platform's id. Amounts are 2-decimal strings on the way out.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from services.orders.domain import OrderStatus
from shared.money import ZERO, Amount, NonNegativeAmount, PositiveAmount

#: The ids a POS chooses for its orders and refunds.
PosId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="1-64 characters of A-Z a-z 0-9 _ . : -",
        examples=["T1-20240315-000123"],
    ),
]

#: A give-back rate on the wire: a decimal with at most 2 places ("0.15" = 15%).
GivebackRate = Annotated[
    Decimal,
    Field(
        decimal_places=2,
        allow_inf_nan=False,
        description="RULES 1.1: 0.10 to 0.20, at most 2 decimals",
        examples=["0.15"],
    ),
]

MAX_BATCH_ORDERS = 500


# --- merchants -------------------------------------------------------------------------


class MerchantCreate(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    giveback_rate: GivebackRate


class ApiKeyCreate(BaseModel):
    terminal: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
        | None
    ) = Field(default=None, description="A label for the POS terminal that gets the key")


class ApiKeyPublic(BaseModel):
    key_id: UUID
    terminal: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    key_id: UUID
    merchant_id: UUID
    terminal: str | None
    api_key: str = Field(description="Shown only in this answer; store it in the terminal")
    created_at: datetime


class MerchantPublic(BaseModel):
    merchant_id: UUID = Field(description="Also the merchant's member id")
    name: str
    giveback_rate: Amount
    created_at: datetime
    api_keys: list[ApiKeyPublic]


class MerchantCreated(BaseModel):
    merchant_id: UUID = Field(description="Also the merchant's member id")
    name: str
    giveback_rate: Amount
    created_at: datetime
    api_key_id: UUID
    api_key: str = Field(description="The first POS key; shown only in this answer")
    member_token: str = Field(
        description="A member token for the merchant's own member id (its points and wallet)"
    )


# --- orders ----------------------------------------------------------------------------


class OrderCreate(BaseModel):
    order_id: PosId
    consumer_id: UUID
    amount: PositiveAmount
    voucher_amount: NonNegativeAmount = Field(
        default=ZERO, description="The part of `amount` paid with vouchers (RULES 1.6)"
    )

    @field_validator("voucher_amount")
    @classmethod
    def _vouchers_within_amount(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        amount = info.data.get("amount")
        if amount is not None and value > amount:
            raise ValueError(f"voucher_amount {value} is larger than the order amount {amount}")
        return value


class OrderPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(description="The platform's order id")
    order_id: str = Field(description="The POS's order id")
    merchant_id: UUID
    consumer_id: UUID
    amount: Amount
    voucher_amount: Amount
    cash_amount: Amount
    giveback_rate: Amount
    status: OrderStatus
    created_at: datetime
    refunded_amount: Amount
    refunded_voucher_amount: Amount
    refunded_cash_amount: Amount


class RefundCreate(BaseModel):
    refund_id: PosId
    amount: PositiveAmount


class RefundPublic(BaseModel):
    id: UUID = Field(description="The platform's refund id")
    refund_id: str = Field(description="The POS's refund id")
    order_id: str = Field(description="The POS's order id")
    amount: Amount
    voucher_amount: Amount = Field(description="Vouchers given back to the consumer")
    cash_amount: Amount = Field(description="Cash given back to the consumer")
    refunded_total: Amount = Field(description="All refunds of the order up to this one")
    created_at: datetime


class OrderDetail(OrderPublic):
    refunds: list[RefundPublic]


class RefundReceipt(RefundPublic):
    order: OrderPublic = Field(description="The order after this refund")


# --- batch upload ----------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    fields: list[FieldProblem] | None = None


class OrderBatch(BaseModel):
    # Items are validated one by one so that one bad order does not reject the batch.
    orders: Annotated[
        list[Any],
        Field(min_length=1, max_length=MAX_BATCH_ORDERS),
        WithJsonSchema(
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/OrderCreate"},
                "minItems": 1,
                "maxItems": MAX_BATCH_ORDERS,
            }
        ),
    ]


class BatchItemResult(BaseModel):
    index: int = Field(description="Position of the item in the batch")
    order_id: str | None = Field(description="The POS's order id, when the item had one")
    status: int = Field(description="What the single endpoint would have answered")
    order: OrderPublic | None = None
    error: ErrorBody | None = None


class BatchResult(BaseModel):
    results: list[BatchItemResult]
    created: int
    replayed: int
    failed: int


class OrderTotals(BaseModel):
    """Everything orders has recorded, summed (for the platform audit, RULES 1.7)."""

    orders: int
    amount: Amount
    voucher_amount: Amount
    cash_amount: Amount
    refunds: int
    refunded_amount: Amount
    refunded_voucher_amount: Amount
    refunded_cash_amount: Amount
