"""RULES 1.1/1.2 through the event handlers: points, coins, rewards and the pool funds."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from services.points import repository
from services.points.models import FundEntry, OrderGiveback
from shared.events import FundsPaidOut, OrderCompleted
from shared.inbox import PermanentFailure, handle_envelope
from shared.outbox import OutboxMessage

from .conftest import (
    Points,
    binding,
    deliver,
    evaluated,
    invite,
    order_completed,
    paid_out,
)

D = Decimal


async def member_points(points: Points, member_id: uuid.UUID) -> dict[str, Any]:
    response = await points.client.get(f"/v1/members/{member_id}/points", headers=points.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pools(points: Points) -> dict[str, dict[str, Any]]:
    response = await points.client.get("/v1/pools", headers=points.admin)
    assert response.status_code == 200, response.text
    return {p["pool"]: p for p in response.json()["pools"]}


async def allocation(points: Points, order_id: uuid.UUID) -> dict[str, Any]:
    response = await points.client.get(f"/v1/orders/{order_id}/allocation", headers=points.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def payouts_of(events: list[FundsPaidOut]) -> list[tuple[uuid.UUID, str, Decimal, str, str]]:
    return sorted(
        (p.member_id, p.asset, p.amount, p.reason, p.fund)
        for e in events
        for p in e.payouts
    )


async def outbox_count(points: Points) -> int:
    async with points.app.state.db.read() as session:
        return int((await session.exec(select(func.count()).select_from(OutboxMessage))).one())


class Gp1:
    """Example GP-1: C pays M 1000.00 cash at r = 20%; C is bound to B, invited by I."""

    def __init__(self) -> None:
        self.c, self.m, self.b, self.i = (uuid.uuid4() for _ in range(4))
        self.order = order_completed(self.c, self.m, amount="1000.00", rate="0.20")
        self.evaluation = evaluated(self.order, binding(self.b), invite(self.i))


@pytest.mark.parametrize("arrival", ["order_first", "evaluation_first"])
async def test_gp1_through_the_handlers(points: Points, arrival: str) -> None:
    gp = Gp1()
    first, second = (
        (gp.order, gp.evaluation) if arrival == "order_first" else (gp.evaluation, gp.order)
    )

    assert await deliver(points, first)
    assert await deliver(points, second)

    consumer = await member_points(points, gp.c)
    assert (consumer["consumer_points"], consumer["merchant_points"]) == ("200.00", "0.00")
    assert consumer["positions"] == [
        {"pool": "consumer", "cohort": 1, "points": "200.00", "released": "0.00",
         "settlements": 0, "settlements_left": 40, "closed": False, "cap": "1000.00",
         "still_possible": "1000.00", "coverage": "0.0700"}
    ]
    assert [(e["order_id"], e["pool"], e["points"]) for e in consumer["entries"]] == [
        (str(gp.order.order_id), "consumer", "200.00")
    ]
    merchant = await member_points(points, gp.m)
    assert (merchant["consumer_points"], merchant["merchant_points"]) == ("0.00", "200.00")

    state = await pools(points)
    assert state["consumer"]["fund_balance"] == "70.00"
    assert state["merchant"]["fund_balance"] == "70.00"
    assert state["consumer"]["period"]["minted"] == "200.00"
    assert state["merchant"]["period"]["minted"] == "200.00"

    events = await paid_out(points)
    assert all(e.source == "order" and e.order_id == gp.order.order_id for e in events)
    assert all(p.order_id == gp.order.order_id for e in events for p in e.payouts)
    assert payouts_of(events) == sorted([
        (gp.c, "coins", D("10.00"), "gold_coins", "platform:coins"),
        (gp.b, "vouchers", D("10.00"), "binding_reward", "giveback"),
        (gp.i, "vouchers", D("50.00"), "invite_reward", "giveback"),
    ])

    traced = await allocation(points, gp.order.order_id)
    assert traced["state"] == "allocated"
    assert traced["giveback"] == "200.00"
    assert traced["coins"] == "10.00"
    assert traced["allocation"]["platform_fee"] == "0.00"
    assert traced["allocation"]["rewards_total"] == "60.00"
    assert traced["allocation"]["consumer_pool"] == "70.00"
    assert traced["allocation"]["merchant_pool"] == "70.00"
    assert [(r["kind"], r["beneficiary_id"], r["amount"]) for r in traced["rewards"]] == [
        ("binding", str(gp.b), "10.00"),
        ("invite", str(gp.i), "50.00"),
    ]
    assert {p["payout_id"] for p in traced["payouts"]} == {
        str(p.payout_id) for e in events for p in e.payouts
    }


async def test_an_order_waits_for_its_evaluation_before_its_giveback_moves(
    points: Points,
) -> None:
    gp = Gp1()

    await deliver(points, gp.order)

    traced = await allocation(points, gp.order.order_id)
    assert traced["state"] == "pending"
    assert traced["allocation"] is None
    # points and coins are there at once; the give-back is held, not yet in the funds
    assert (await member_points(points, gp.c))["consumer_points"] == "200.00"
    assert payouts_of(await paid_out(points)) == [
        (gp.c, "coins", D("10.00"), "gold_coins", "platform:coins")
    ]
    state = await pools(points)
    assert (state["consumer"]["fund_balance"], state["merchant"]["fund_balance"]) == (
        "0.00", "0.00"
    )
    held = {(e["account"], e["amount"]) for e in traced["fund_entries"]}
    assert ("giveback:pending", "200.00") in held
    assert (f"merchant:{gp.m}:giveback", "-200.00") in held


async def test_an_evaluation_before_its_order_changes_nothing_yet(points: Points) -> None:
    gp = Gp1()

    await deliver(points, gp.evaluation)

    response = await points.client.get(
        f"/v1/orders/{gp.order.order_id}/allocation", headers=points.admin
    )
    assert response.status_code == 404
    assert "has not reached" in response.json()["detail"]
    assert await paid_out(points) == []
    state = await pools(points)
    assert state["consumer"]["fund_balance"] == "0.00"


async def test_an_event_delivered_twice_changes_nothing(points: Points) -> None:
    gp = Gp1()
    order_envelope = gp.order.envelope(producer="orders")
    evaluation_envelope = gp.evaluation.envelope(producer="referrals")
    db, handlers = points.app.state.db, points.app.state.handlers

    assert await handle_envelope(db, "points", handlers, order_envelope)
    assert await handle_envelope(db, "points", handlers, evaluation_envelope)
    before = (await member_points(points, gp.c), await pools(points), await outbox_count(points))

    assert not await handle_envelope(db, "points", handlers, order_envelope)
    assert not await handle_envelope(db, "points", handlers, evaluation_envelope)

    after = (await member_points(points, gp.c), await pools(points), await outbox_count(points))
    assert after == before


async def test_the_same_order_and_evaluation_under_new_event_ids_count_once(
    points: Points,
) -> None:
    gp = Gp1()
    await deliver(points, gp.evaluation)
    await deliver(points, gp.evaluation)  # a second evaluation waiting for the order
    await deliver(points, gp.order)
    await deliver(points, gp.order)  # re-emitted by orders
    await deliver(points, gp.evaluation)  # and once more after the allocation

    assert (await member_points(points, gp.c))["consumer_points"] == "200.00"
    state = await pools(points)
    assert state["consumer"]["fund_balance"] == "70.00"
    assert state["consumer"]["period"]["minted"] == "200.00"
    assert len(payouts_of(await paid_out(points))) == 3


async def test_a_mint_that_crashes_before_commit_is_retried_and_counts_once(
    points: Points, monkeypatch: pytest.MonkeyPatch
) -> None:
    gp = Gp1()
    envelope = gp.order.envelope(producer="orders")
    db, handlers = points.app.state.db, points.app.state.handlers
    real = repository.add_point_entry
    calls = 0

    def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the pool and the position have been written by now
            raise RuntimeError("crash before commit")
        real(*args, **kwargs)

    monkeypatch.setattr(repository, "add_point_entry", crash_once)

    with pytest.raises(RuntimeError, match="crash before commit"):
        await handle_envelope(db, "points", handlers, envelope)
    assert (await member_points(points, gp.c))["consumer_points"] == "0.00"
    assert await outbox_count(points) == 0

    assert await handle_envelope(db, "points", handlers, envelope)

    assert (await member_points(points, gp.c))["consumer_points"] == "200.00"
    assert (await pools(points))["consumer"]["period"]["minted"] == "200.00"
    assert len(await paid_out(points)) == 1


async def test_an_allocation_that_crashes_before_commit_is_retried_and_counts_once(
    points: Points, monkeypatch: pytest.MonkeyPatch
) -> None:
    gp = Gp1()
    await deliver(points, gp.order)
    envelope = gp.evaluation.envelope(producer="referrals")
    db, handlers = points.app.state.db, points.app.state.handlers
    real = repository.credit_pool_fund
    calls = 0

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)
        if calls == 1:  # the consumer pool fund has just been credited
            raise RuntimeError("crash before commit")

    monkeypatch.setattr(repository, "credit_pool_fund", crash_once)

    with pytest.raises(RuntimeError, match="crash before commit"):
        await handle_envelope(db, "points", handlers, envelope)
    assert (await pools(points))["consumer"]["fund_balance"] == "0.00"
    assert (await allocation(points, gp.order.order_id))["state"] == "pending"

    assert await handle_envelope(db, "points", handlers, envelope)

    state = await pools(points)
    assert (state["consumer"]["fund_balance"], state["merchant"]["fund_balance"]) == (
        "70.00", "70.00"
    )
    rewards = [e for e in await paid_out(points) if e.payouts[0].asset == "vouchers"]
    assert len(rewards) == 1


async def test_points_of_one_period_add_up_in_one_position_per_member(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    first = order_completed(c, m, amount="1000.00")
    second = order_completed(c, m, amount="250.00", vouchers="50.00", rate="0.10")

    for event in (first, second):
        await deliver(points, event)

    consumer = await member_points(points, c)
    assert consumer["consumer_points"] == "220.00"
    assert [(p["cohort"], p["points"]) for p in consumer["positions"]] == [(1, "220.00")]
    assert sorted(e["points"] for e in consumer["entries"]) == ["20.00", "200.00"]
    assert (await member_points(points, m))["merchant_points"] == "220.00"


async def test_rewards_larger_than_the_giveback_are_scaled_to_fit(points: Points) -> None:
    c, m, b, i = (uuid.uuid4() for _ in range(4))
    order = order_completed(c, m, amount="1000.00", rate="0.10")  # G = 100.00
    await deliver(points, order)
    await deliver(points, evaluated(order, binding(b), invite(i, rate="0.20")))

    traced = await allocation(points, order.order_id)
    assert traced["allocation"]["rewards_scaled"] is True
    assert [(r["due"], r["amount"]) for r in traced["rewards"]] == [
        ("5.00", "2.43"), ("200.00", "97.56")
    ]
    vouchers = [p for p in payouts_of(await paid_out(points)) if p[1] == "vouchers"]
    assert vouchers == sorted([
        (b, "vouchers", D("2.43"), "binding_reward", "giveback"),
        (i, "vouchers", D("97.56"), "invite_reward", "giveback"),
    ])
    state = await pools(points)
    assert (state["consumer"]["fund_balance"], state["merchant"]["fund_balance"]) == (
        "0.00", "0.01"
    )


async def test_an_order_paid_entirely_with_vouchers_earns_nothing(points: Points) -> None:
    c, m, i = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m, amount="80.00", vouchers="80.00")
    await deliver(points, order)
    await deliver(points, evaluated(order, invite(i)))

    assert (await member_points(points, c))["positions"] == []
    assert await paid_out(points) == []
    traced = await allocation(points, order.order_id)
    assert (traced["state"], traced["giveback"]) == ("allocated", "0.00")


async def test_an_inconsistent_order_is_refused_and_changes_nothing(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    good = order_completed(c, m)
    bad = OrderCompleted.model_validate(
        {**good.model_dump(), "cash_amount": Decimal("900.00")}  # amount 1000, vouchers 0
    )

    with pytest.raises(PermanentFailure, match="cash_amount"):
        await deliver(points, bad)

    assert (await member_points(points, c))["positions"] == []
    assert await outbox_count(points) == 0
    response = await points.client.get(f"/v1/orders/{bad.order_id}/allocation",
                                       headers=points.admin)
    assert response.status_code == 404


async def test_an_evaluation_naming_another_consumer_is_refused(points: Points) -> None:
    gp = Gp1()
    await deliver(points, gp.order)
    wrong = gp.evaluation.model_copy(update={"consumer_id": uuid.uuid4()})

    with pytest.raises(PermanentFailure, match="names consumer"):
        await deliver(points, wrong)

    assert (await allocation(points, gp.order.order_id))["state"] == "pending"
    assert (await pools(points))["consumer"]["fund_balance"] == "0.00"


async def test_the_fund_ledger_balances_and_ties_out_to_the_orders(points: Points) -> None:
    gp = Gp1()
    c, m, b, i = (uuid.uuid4() for _ in range(4))
    scaled = order_completed(c, m, amount="1000.00", rate="0.10")
    waiting = order_completed(c, m, amount="333.33", vouchers="33.33", rate="0.15")
    await deliver(points, gp.evaluation)
    await deliver(points, gp.order)
    await deliver(points, scaled)
    await deliver(points, evaluated(scaled, binding(b), invite(i, rate="0.20")))
    await deliver(points, waiting)

    async with points.app.state.db.read() as session:
        assert await repository.unbalanced_fund_transactions(session) == []
        balances = dict(
            (
                await session.exec(
                    select(FundEntry.account, func.sum(col(FundEntry.amount)))
                    .group_by(col(FundEntry.account))
                )
            ).all()
        )
        orders = (await session.exec(select(OrderGiveback))).all()
        anonymous = (
            await session.exec(
                select(func.count()).select_from(FundEntry)
                .where(col(FundEntry.order_id).is_(None))
            )
        ).one()

    assert anonymous == 0  # every ledger entry names its order
    allocated = [o for o in orders if o.state == "allocated"]
    pending = [o for o in orders if o.state == "pending"]
    allocated_total = sum(
        (o.platform_fee or 0) + (o.rewards_total or 0) + (o.consumer_pool or 0)
        + (o.merchant_pool or 0)
        for o in allocated
    )
    assert allocated_total == sum(o.giveback for o in allocated)
    assert balances["giveback:pending"] == sum(o.giveback for o in pending) == D("45.00")
    state = await pools(points)
    assert balances["fund:consumer_pool"] == D(state["consumer"]["fund_balance"]) == D("70.00")
    assert balances["fund:merchant_pool"] == D(state["merchant"]["fund_balance"]) == D("70.01")
    assert balances["payouts:rewards"] == D("60.00") + D("99.99")
    assert balances["payouts:coins"] == D("10.00") + D("10.00") + D("3.00")


async def test_an_order_and_its_evaluation_arriving_together_allocate_once(
    points: Points,
) -> None:
    orders = [Gp1() for _ in range(8)]

    # On PostgreSQL the handlers run in concurrent transactions (SQLite queues its writers);
    # whichever of an order's two events commits second must still see the first.
    await asyncio.gather(
        *(
            deliver(points, event)
            for n, gp in enumerate(orders)
            for event in ((gp.evaluation, gp.order) if n % 2 else (gp.order, gp.evaluation))
        )
    )

    for gp in orders:
        assert (await allocation(points, gp.order.order_id))["state"] == "allocated"
    state = await pools(points)
    assert state["consumer"]["fund_balance"] == str(D("70.00") * len(orders))
    assert state["consumer"]["period"]["minted"] == str(D("200.00") * len(orders))
    assert len(await paid_out(points)) == 2 * len(orders)
