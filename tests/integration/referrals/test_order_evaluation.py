"""Every completed order gets exactly one referral evaluation (RULES 1.4, 1.5)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from services.referrals import repository
from services.referrals.models import Binding, OrderEvaluation
from shared.events import MemberBound, ReferralOrderEvaluated
from tests.integration.referrals.support import (
    ADMIN,
    T0,
    Service,
    order_completed,
    running_service,
)


def rewards(evaluation: ReferralOrderEvaluated) -> list[tuple[str, UUID, Decimal, str]]:
    return [(r.kind, r.beneficiary_id, r.rate, r.basis) for r in evaluation.rewards]


async def evaluation_of(service: Service, order_id: UUID) -> ReferralOrderEvaluated:
    [evaluation] = [
        e for e in await service.events(ReferralOrderEvaluated) if e.order_id == order_id
    ]
    return evaluation


async def bound_merchant(service: Service, member: dict[str, Any]) -> str | None:
    response = await service.client.get(f"/v1/members/{member['member_id']}", headers=ADMIN)
    bound: str | None = response.json()["bound_merchant_id"]
    return bound


async def test_first_order_of_an_uninvited_consumer_earns_no_rewards(service: Service) -> None:
    consumer = await service.register()
    merchant_id = await service.merchant()
    order = order_completed(UUID(consumer["member_id"]), merchant_id, completed_at=T0)

    assert await service.deliver(order)

    evaluation = await evaluation_of(service, order.order_id)
    assert evaluation.rewards == ()
    assert (evaluation.consumer_id, evaluation.merchant_id) == (order.consumer_id, merchant_id)


async def test_no_rewards_and_no_binding_when_first_order_binding_is_off(
    database_url: str,
) -> None:
    async with running_service(database_url, bind_on_first_order=False) as service:
        consumer = await service.register()
        merchant_id = await service.merchant()
        order = order_completed(UUID(consumer["member_id"]), merchant_id, completed_at=T0)

        await service.deliver(order)

        assert (await evaluation_of(service, order.order_id)).rewards == ()
        assert await bound_merchant(service, consumer) is None
        assert await service.events(MemberBound) == []


async def test_binding_reward_only_at_another_merchant(service: Service) -> None:
    consumer = await service.register()
    bound, elsewhere = await service.merchant(), await service.merchant()
    await service.scan(consumer, bound)
    order = order_completed(
        UUID(consumer["member_id"]), elsewhere, completed_at=T0 + timedelta(hours=1)
    )

    await service.deliver(order)

    assert rewards(await evaluation_of(service, order.order_id)) == [
        ("binding", bound, Decimal("0.05"), "consumer_points"),
    ]


async def test_binding_reward_also_at_the_bound_merchant(service: Service) -> None:
    consumer = await service.register()
    bound = await service.merchant()
    await service.scan(consumer, bound)
    order = order_completed(UUID(consumer["member_id"]), bound, completed_at=T0)

    await service.deliver(order)

    assert rewards(await evaluation_of(service, order.order_id)) == [
        ("binding", bound, Decimal("0.05"), "consumer_points"),
    ]


async def test_invite_reward_only(database_url: str) -> None:
    async with running_service(database_url, bind_on_first_order=False) as service:
        inviter = await service.register()
        consumer = await service.register(invite_code=inviter["invite_code"])
        order = order_completed(
            UUID(consumer["member_id"]), await service.merchant(), completed_at=T0
        )

        await service.deliver(order)

        assert rewards(await evaluation_of(service, order.order_id)) == [
            ("invite", UUID(inviter["member_id"]), Decimal("0.05"), "cash_amount"),
        ]


async def test_example_gp1_bound_and_invited_consumer_earns_both(service: Service) -> None:
    """RULES GP-1: C bound to B and invited by I orders at M."""
    inviter = await service.register()
    consumer = await service.register(invite_code=inviter["invite_code"])
    b, m = await service.merchant(), await service.merchant()
    await service.scan(consumer, b)
    order = order_completed(UUID(consumer["member_id"]), m, completed_at=T0 + timedelta(days=1))

    await service.deliver(order)

    assert rewards(await evaluation_of(service, order.order_id)) == [
        ("binding", b, Decimal("0.05"), "consumer_points"),
        ("invite", UUID(inviter["member_id"]), Decimal("0.05"), "cash_amount"),
    ]


async def test_first_order_binds_and_only_the_next_order_earns_the_binding_reward(
    service: Service,
) -> None:
    consumer = await service.register()
    consumer_id = UUID(consumer["member_id"])
    first_shop, second_shop = await service.merchant(), await service.merchant()
    first = order_completed(consumer_id, first_shop, completed_at=T0 + timedelta(hours=1))
    second = order_completed(consumer_id, second_shop, completed_at=T0 + timedelta(hours=2))

    await service.deliver(first)
    await service.deliver(second)

    assert rewards(await evaluation_of(service, first.order_id)) == []
    assert rewards(await evaluation_of(service, second.order_id)) == [
        ("binding", first_shop, Decimal("0.05"), "consumer_points"),
    ]
    [bound] = await service.events(MemberBound)
    assert (bound.consumer_id, bound.merchant_id, bound.source, bound.bound_at) == (
        consumer_id, first_shop, "first_order", first.completed_at,
    )
    assert await bound_merchant(service, consumer) == str(first_shop)
    # A scan afterwards cannot move the binding.
    assert (await service.scan(consumer, second_shop)).status_code == 409


async def test_binding_made_after_the_order_completed_is_not_rewarded(service: Service) -> None:
    consumer = await service.register()
    merchant_id = await service.merchant()
    service.clock.set(T0 + timedelta(hours=2))
    await service.scan(consumer, merchant_id)  # bound at T0 + 2h
    late = order_completed(
        UUID(consumer["member_id"]), merchant_id, completed_at=T0 + timedelta(hours=1)
    )

    await service.deliver(late)  # delivered after the scan, but completed before it

    assert rewards(await evaluation_of(service, late.order_id)) == []
    assert len(await service.events(MemberBound)) == 1  # the scan's, nothing new


async def test_invite_reward_ends_after_invite_reward_days(database_url: str) -> None:
    async with running_service(
        database_url, invite_reward_days=30, bind_on_first_order=False
    ) as service:
        inviter = await service.register()  # registered at T0
        consumer = await service.register(invite_code=inviter["invite_code"])
        consumer_id, shop = UUID(consumer["member_id"]), await service.merchant()
        inside = order_completed(consumer_id, shop, completed_at=T0 + timedelta(days=29))
        at_end = order_completed(consumer_id, shop, completed_at=T0 + timedelta(days=30))

        await service.deliver(inside)
        await service.deliver(at_end)

        assert [r[0] for r in rewards(await evaluation_of(service, inside.order_id))] == [
            "invite",
        ]
        assert rewards(await evaluation_of(service, at_end.order_id)) == []


async def test_order_of_an_unknown_consumer_is_evaluated_with_no_rewards(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = uuid.uuid4()
    order = order_completed(stranger, await service.merchant(), completed_at=T0)

    assert await service.deliver(order)

    assert (await evaluation_of(service, order.order_id)).rewards == ()
    assert await service.count(Binding) == 0
    assert str(stranger) in caplog.text


async def test_order_delivered_twice_is_evaluated_once(service: Service) -> None:
    consumer = await service.register()
    order = order_completed(
        UUID(consumer["member_id"]), await service.merchant(), completed_at=T0
    )
    envelope = order.envelope(producer="orders")

    assert await service.deliver(envelope)
    assert not await service.deliver(envelope)  # the same delivery again
    assert await service.deliver(order)  # the same order, republished under a new event id

    assert len(await service.events(ReferralOrderEvaluated)) == 1
    assert len(await service.events(MemberBound)) == 1
    assert await service.count(OrderEvaluation) == 1


async def test_crash_before_commit_is_retried_and_counts_once(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = await service.register()
    merchant_id = await service.merchant()
    order = order_completed(UUID(consumer["member_id"]), merchant_id, completed_at=T0)
    envelope = order.envelope(producer="orders")
    record_evaluation = repository.record_evaluation
    crashes = {"left": 1}

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        await record_evaluation(*args, **kwargs)  # binding and evaluation are flushed...
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("crash before commit")  # ...but never committed

    monkeypatch.setattr(repository, "record_evaluation", crash_once)

    with pytest.raises(RuntimeError, match="crash before commit"):
        await service.deliver(envelope)
    assert await service.count(Binding) == 0
    assert await service.events(ReferralOrderEvaluated) == []

    assert await service.deliver(envelope)  # the consumer retries the same delivery
    assert not await service.deliver(envelope)

    assert await service.count(Binding) == 1
    assert len(await service.events(MemberBound)) == 1
    assert len(await service.events(ReferralOrderEvaluated)) == 1
    assert await bound_merchant(service, consumer) == str(merchant_id)


async def test_evaluation_is_stamped_with_the_service_clock(service: Service) -> None:
    consumer = await service.register()
    order = order_completed(
        UUID(consumer["member_id"]), await service.merchant(), completed_at=T0
    )
    service.clock.set(T0 + timedelta(minutes=5))

    await service.deliver(order)

    assert (await evaluation_of(service, order.order_id)).evaluated_at == T0 + timedelta(
        minutes=5
    )
