"""The replica of known members, filled from referrals' `member.registered` events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.orders import repository
from services.orders.handlers import CONSUMER, HANDLERS
from services.orders.models import KnownMember
from shared.events import MemberRegistered
from shared.inbox import ProcessedEvent, handle_envelope
from tests.integration.orders.conftest import Harness


def registered(member_id: uuid.UUID) -> MemberRegistered:
    return MemberRegistered(
        member_id=member_id,
        kind="consumer",
        inviter_id=None,
        registered_at=datetime(2024, 3, 15, 9, 0, tzinfo=UTC),
    )


async def test_a_registered_member_can_order_without_asking_referrals(harness: Harness) -> None:
    merchant = await harness.merchant()
    member_id = uuid.uuid4()  # unknown to the fake referrals: only the event tells orders

    assert await handle_envelope(
        harness.db, CONSUMER, HANDLERS, registered(member_id).envelope(producer="referrals")
    )
    response = await harness.order(merchant, member_id)

    assert response.status_code == 201, response.text
    assert harness.peers.member_lookups == []


async def test_an_event_delivered_twice_is_applied_once(harness: Harness) -> None:
    envelope = registered(uuid.uuid4()).envelope(producer="referrals")

    first = await handle_envelope(harness.db, CONSUMER, HANDLERS, envelope)
    second = await handle_envelope(harness.db, CONSUMER, HANDLERS, envelope)

    assert (first, second) == (True, False)
    assert await harness.count(KnownMember) == 1
    assert await harness.count(ProcessedEvent) == 1


async def test_a_member_learned_by_lookup_then_by_event_is_kept_once(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    await harness.order(merchant, consumer)

    applied = await handle_envelope(
        harness.db, CONSUMER, HANDLERS, registered(consumer).envelope(producer="referrals")
    )

    assert applied is True
    assert await harness.count(KnownMember) == 2  # the merchant and the consumer


async def test_a_handler_that_crashes_before_commit_is_retried_and_counts_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant = await harness.merchant()
    member_id = uuid.uuid4()
    envelope = registered(member_id).envelope(producer="referrals")
    original = repository.remember_member
    crashes = [RuntimeError("crash after the write, before the commit")]

    async def remember_then_crash(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        if crashes:
            raise crashes.pop()

    monkeypatch.setattr(repository, "remember_member", remember_then_crash)
    with pytest.raises(RuntimeError, match="before the commit"):
        await handle_envelope(harness.db, CONSUMER, HANDLERS, envelope)
    unknown_meanwhile = await harness.order(merchant, member_id, order_id="T1-EARLY")

    retried = await handle_envelope(harness.db, CONSUMER, HANDLERS, envelope)

    assert unknown_meanwhile.status_code == 422  # the crashed write was rolled back
    assert retried is True
    assert await handle_envelope(harness.db, CONSUMER, HANDLERS, envelope) is False
    assert await harness.count(KnownMember) == 2  # the merchant and this member, once
    assert await harness.count(ProcessedEvent) == 1
    response = await harness.order(merchant, member_id, order_id="T1-LATER")
    assert response.status_code == 201
