"""Event handlers of the orders service: the replica of known member ids."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.orders import repository
from shared.events import REFERRALS_TOPIC, Envelope, MemberRegistered
from shared.inbox import Handler

#: The consumer name (inbox rows, consumer group, dead-letter topic `orders.dlq`).
CONSUMER = "orders"
SUBSCRIPTIONS = (REFERRALS_TOPIC,)


async def on_member_registered(
    session: AsyncSession, event: MemberRegistered, envelope: Envelope
) -> None:
    """Remember a new member so that orders can name them as consumers."""
    await repository.remember_member(
        session, event.member_id, kind=event.kind, source="event", at=envelope.occurred_at
    )


HANDLERS: dict[str, Handler] = {MemberRegistered.TYPE: on_member_registered}
