"""Event handlers of the vouchers service (each runs inside the inbox transaction)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.vouchers import service
from shared.events import (
    ORDERS_TOPIC,
    POINTS_TOPIC,
    Envelope,
    FundsPaidOut,
    OrderCompleted,
    OrderRefunded,
)
from shared.inbox import Handler

CONSUMER = "vouchers"
TOPICS: tuple[str, ...] = (POINTS_TOPIC, ORDERS_TOPIC)


async def on_funds_paid_out(session: AsyncSession, event: FundsPaidOut, envelope: Envelope) -> None:
    """Credit every payout of the batch to its member's wallet; acknowledge the batch."""
    await service.book_payout_batch(session, event, now=envelope.occurred_at)


async def on_order_completed(
    session: AsyncSession, event: OrderCompleted, envelope: Envelope  # noqa: ARG001
) -> None:
    """RULES 1.6: capture the order's voucher hold; the merchant is owed the amount."""
    await service.on_order_completed(session, event)


async def on_order_refunded(
    session: AsyncSession, event: OrderRefunded, envelope: Envelope  # noqa: ARG001
) -> None:
    """RULES 1.6: give a refunded order's vouchers back to the consumer."""
    await service.on_order_refunded(session, event)


HANDLERS: dict[str, Handler] = {
    FundsPaidOut.TYPE: on_funds_paid_out,
    OrderCompleted.TYPE: on_order_completed,
    OrderRefunded.TYPE: on_order_refunded,
}
