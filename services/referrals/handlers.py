"""Event handlers of the referrals service (consumer group ``referrals``).

Each handler runs inside the inbox transaction (``shared.inbox``): it writes with the
session it is given and never commits. Handlers depend on the program configuration and
the clock, so they are built by :func:`handlers_for`; :data:`HANDLERS` is the set with
the RULES defaults and the system clock.
"""

from __future__ import annotations

import dataclasses
import logging

from sqlmodel.ext.asyncio.session import AsyncSession

from services.referrals import repository
from services.referrals.domain import Buyer, ReferralProgram, as_utc, evaluate_order
from shared.clock import Clock, SystemClock
from shared.events import ORDERS_TOPIC, Envelope, MerchantRegistered, OrderCompleted
from shared.inbox import Handler, PermanentFailure

log = logging.getLogger(__name__)

CONSUMER_NAME = "referrals"
SUBSCRIPTIONS: tuple[str, ...] = (ORDERS_TOPIC,)


def handlers_for(program: ReferralProgram, clock: Clock) -> dict[str, Handler]:
    """The handlers of this service for *program*, keyed by event type."""

    async def on_merchant_registered(
        session: AsyncSession, event: MerchantRegistered, _envelope: Envelope
    ) -> None:
        """A merchant is also a member (member_id = merchant_id), with its own invite code."""
        existing = await repository.get_member(session, event.merchant_id)
        if existing is not None:
            if existing.kind != "merchant":
                raise PermanentFailure(
                    f"merchant {event.merchant_id} has the id of an existing consumer member"
                )
            log.info("merchant %s is already a member; nothing to do", event.merchant_id)
            return
        await repository.add_member(
            session,
            member_id=event.merchant_id,
            kind="merchant",
            inviter_id=None,
            registered_at=as_utc(event.registered_at),
        )

    async def on_order_completed(
        session: AsyncSession, event: OrderCompleted, _envelope: Envelope
    ) -> None:
        """Evaluate an order's referral rewards (RULES 1.4, 1.5): one evaluation per order."""
        if await repository.get_evaluation(session, event.order_id) is not None:
            log.info("order %s was already evaluated; ignoring it", event.order_id)
            return
        completed_at = as_utc(event.completed_at)
        member = await repository.get_member(session, event.consumer_id)
        buyer: Buyer | None = None
        if member is None:
            log.warning(
                "order %s: consumer %s is not a member known to referrals; no referral rewards",
                event.order_id, event.consumer_id,
            )
        else:
            buyer = Buyer(
                member_id=member.member_id,
                kind="merchant" if member.kind == "merchant" else "consumer",
                inviter_id=member.inviter_id,
                registered_at=member.registered_at,
                binding=await repository.binding_of(session, member.member_id),
            )
        outcome = evaluate_order(
            program, buyer, merchant_id=event.merchant_id, completed_at=completed_at
        )
        if outcome.new_binding is not None and buyer is not None:
            binding, created = await repository.bind_if_unbound(
                session,
                consumer_id=buyer.member_id,
                merchant_id=outcome.new_binding.merchant_id,
                source=outcome.new_binding.source,
                bound_at=outcome.new_binding.bound_at,
            )
            if not created:
                # A scan won the race since we looked: evaluate against that binding.
                buyer = dataclasses.replace(
                    buyer, binding=await repository.binding_of(session, buyer.member_id)
                )
                outcome = evaluate_order(
                    program, buyer, merchant_id=event.merchant_id, completed_at=completed_at
                )
                log.info("order %s: consumer %s was bound meanwhile to %s",
                         event.order_id, buyer.member_id, binding.merchant_id)
        await repository.record_evaluation(
            session,
            order_id=event.order_id,
            consumer_id=event.consumer_id,
            merchant_id=event.merchant_id,
            completed_at=completed_at,
            consumer_known=buyer is not None,
            claims=outcome.claims,
            evaluated_at=clock.now(),
        )

    return {
        MerchantRegistered.TYPE: on_merchant_registered,
        OrderCompleted.TYPE: on_order_completed,
    }


#: The handlers with the RULES defaults and the system clock. The app builds its own
#: from its settings and clock (``app.state.handlers``).
HANDLERS: dict[str, Handler] = handlers_for(ReferralProgram(), SystemClock())
