"""Refunds through the handlers (RULES, general rules): every effect not yet paid out is
reversed, proportionally; what was paid out stays paid, and what cannot be recovered is
recorded as unrecovered."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from services.points import refund_repository, repository
from services.points.models import FundEntry, OrderGiveback, Period, PointEntry
from shared.events import OrderRefunded
from shared.inbox import PermanentFailure, handle_envelope
from shared.outbox import OutboxMessage

from .conftest import Points, binding, deliver, evaluated, invite, order_completed, paid_out
from .fakes import order_refunded, simulate_settlement

D = Decimal


class Gp1:
    """Example GP-1: C pays M 1000.00 cash at r = 20%; C is bound to B, invited by I."""

    def __init__(self, amount: str = "1000.00", vouchers: str = "0.00") -> None:
        self.c, self.m, self.b, self.i = (uuid.uuid4() for _ in range(4))
        self.order = order_completed(self.c, self.m, amount=amount, vouchers=vouchers)
        self.evaluation = evaluated(self.order, binding(self.b), invite(self.i))


async def get(points: Points, path: str) -> dict[str, Any]:
    response = await points.client.get(path, headers=points.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def holdings(points: Points, gp: Gp1) -> dict[str, str]:
    """What a user of the books looks at: points, pool funds and minted totals."""
    consumer = await get(points, f"/v1/members/{gp.c}/points")
    merchant = await get(points, f"/v1/members/{gp.m}/points")
    pools = {p["pool"]: p for p in (await get(points, "/v1/pools"))["pools"]}
    return {
        "consumer_points": consumer["consumer_points"],
        "merchant_points": merchant["merchant_points"],
        "consumer_fund": pools["consumer"]["fund_balance"],
        "merchant_fund": pools["merchant"]["fund_balance"],
        "consumer_minted": pools["consumer"]["period"]["minted"],
        "merchant_minted": pools["merchant"]["period"]["minted"],
    }


async def balances(points: Points) -> dict[str, Decimal]:
    async with points.app.state.db.read() as session:
        rows = await session.exec(
            select(FundEntry.account, func.sum(col(FundEntry.amount)))
            .group_by(col(FundEntry.account))
        )
        return dict(rows.all())


async def refund_legs(points: Points, refund_id: uuid.UUID) -> list[FundEntry]:
    async with points.app.state.db.read() as session:
        rows = await session.exec(
            select(FundEntry).where(col(FundEntry.refund_id) == refund_id)
        )
        return list(rows.all())


def reversals(events: list[Any]) -> list[tuple[uuid.UUID | None, str, Decimal, str, str]]:
    return [
        (p.member_id, p.asset, p.amount, p.reason, p.fund)
        for e in events if e.source == "refund" for p in e.payouts
    ]


async def outbox_count(points: Points) -> int:
    async with points.app.state.db.read() as session:
        return int((await session.exec(select(func.count()).select_from(OutboxMessage))).one())


async def unbalanced(points: Points) -> list[uuid.UUID]:
    async with points.app.state.db.read() as session:
        return await repository.unbalanced_fund_transactions(session)


async def allocated_gp1(points: Points, **kwargs: str) -> Gp1:
    gp = Gp1(**kwargs)
    await deliver(points, gp.order)
    await deliver(points, gp.evaluation)
    return gp


# --- a full refund after the allocation ------------------------------------------------------


async def test_a_full_refund_after_the_allocation_reverses_all_but_the_paid_rewards(
    points: Points,
) -> None:
    gp = await allocated_gp1(points)
    refund = order_refunded(gp.order, "1000.00", refunded_total="1000.00")

    assert await deliver(points, refund)

    assert await holdings(points, gp) == {
        "consumer_points": "0.00", "merchant_points": "0.00",
        "consumer_fund": "0.00", "merchant_fund": "0.00",
        "consumer_minted": "0.00", "merchant_minted": "0.00",
    }
    events = await paid_out(points)
    # The coins come back through vouchers as a negative payout; the rewards stay paid.
    assert reversals(events) == [
        (gp.c, "coins", D("-10.00"), "reversal", "platform:coins")
    ]
    coins_back = next(e for e in events if e.source == "refund")
    assert coins_back.order_id == gp.order.order_id
    assert coins_back.payouts[0].order_id == gp.order.order_id
    rewards = [p for e in events for p in e.payouts if p.asset == "vouchers"]
    assert sorted(p.amount for p in rewards) == [D("10.00"), D("50.00")]

    books = await balances(points)
    assert books["fund:consumer_pool"] == books["fund:merchant_pool"] == 0
    assert books["payouts:coins"] == 0
    assert books["platform:coins"] == 0
    # The merchant got back all of G but the rewards its give-back had already paid.
    assert books[f"merchant:{gp.m}:giveback"] == D("-60.00")
    assert books.get("platform:unrecovered", D("0")) == 0
    assert await unbalanced(points) == []
    legs = await refund_legs(points, refund.refund_id)
    assert legs
    assert all(leg.order_id == gp.order.order_id for leg in legs)

    traced = (await get(points, f"/v1/orders/{gp.order.order_id}/refunds"))["refunds"]
    assert [(r["refund_id"], r["final"], r["giveback_state"]) for r in traced] == [
        (str(refund.refund_id), True, "allocated")
    ]
    figures = traced[0]
    assert (figures["consumer_points_reversed"], figures["merchant_points_reversed"]) == (
        "200.00", "200.00"
    )
    assert (figures["consumer_pool_recovered"], figures["merchant_pool_recovered"]) == (
        "70.00", "70.00"
    )
    assert (figures["rewards_kept"], figures["coins_reversed"], figures["unrecovered"]) == (
        "60.00", "10.00", "0.00"
    )
    entries = (await get(points, f"/v1/members/{gp.c}/points"))["entries"]
    assert sorted(e["points"] for e in entries) == ["-200.00", "200.00"]


async def test_point_entries_of_a_refund_name_the_order_and_the_refund(points: Points) -> None:
    gp = await allocated_gp1(points)
    refund = order_refunded(gp.order, "400.00", refunded_total="400.00")
    await deliver(points, refund)

    async with points.app.state.db.read() as session:
        entries = (
            await session.exec(select(PointEntry).where(col(PointEntry.points) < 0))
        ).all()
    assert sorted((e.member_id, e.pool, e.points) for e in entries) == sorted([
        (gp.c, "consumer", D("-80.00")), (gp.m, "merchant", D("-80.00"))
    ])
    assert {(e.order_id, e.refund_id) for e in entries} == {
        (gp.order.order_id, refund.refund_id)
    }


# --- partial refunds -------------------------------------------------------------------------


async def test_partial_refunds_summing_to_the_order_reverse_exactly_the_whole(
    points: Points,
) -> None:
    gp = await allocated_gp1(points)
    parts = [("333.33", "333.33"), ("333.33", "666.66"), ("333.34", "1000.00")]

    after_first: dict[str, str] = {}
    for n, (amount, total) in enumerate(parts):
        assert await deliver(points, order_refunded(gp.order, amount, refunded_total=total))
        if n == 0:
            after_first = await holdings(points, gp)

    # 333.33 / 1000 of 200.00 points = 66.666 -> 66.66 reversed; of 70.00 -> 23.33.
    assert after_first["consumer_points"] == "133.34"
    assert after_first["consumer_fund"] == "46.67"
    assert await holdings(points, gp) == {
        "consumer_points": "0.00", "merchant_points": "0.00",
        "consumer_fund": "0.00", "merchant_fund": "0.00",
        "consumer_minted": "0.00", "merchant_minted": "0.00",
    }
    coins = [amount for _, _, amount, _, _ in reversals(await paid_out(points))]
    assert coins == [D("-3.33"), D("-3.33"), D("-3.34")]
    books = await balances(points)
    assert books[f"merchant:{gp.m}:giveback"] == D("-60.00")
    assert await unbalanced(points) == []


async def test_a_refund_shares_only_the_cash_part_of_an_order(points: Points) -> None:
    # 1000.00, 200.00 of it in vouchers: G = 20% of 800.00 cash = 160.00.
    gp = await allocated_gp1(points, amount="1000.00", vouchers="200.00")
    # Half the order back, 100.00 of it in vouchers: 400.00 of 800.00 cash = a half.
    await deliver(points, order_refunded(gp.order, "500.00", refunded_total="500.00",
                                         vouchers="100.00"))

    state = await holdings(points, gp)
    assert (state["consumer_points"], state["merchant_points"]) == ("80.00", "80.00")
    # R = 160.00 - 8.00 binding - 40.00 invite = 112.00 -> 56.00 per pool, half back.
    assert (state["consumer_fund"], state["merchant_fund"]) == ("28.00", "28.00")
    assert [a for _, _, a, _, _ in reversals(await paid_out(points))] == [D("-4.00")]


# --- a refund before the evaluation arrives ---------------------------------------------------


async def test_a_refund_before_the_evaluation_reduces_the_pending_giveback(
    points: Points,
) -> None:
    gp = Gp1()
    await deliver(points, gp.order)
    await deliver(points, order_refunded(gp.order, "250.00", refunded_total="250.00"))

    books = await balances(points)
    assert books["giveback:pending"] == D("150.00")
    assert books[f"merchant:{gp.m}:giveback"] == D("-150.00")
    assert (await holdings(points, gp))["consumer_points"] == "150.00"

    await deliver(points, gp.evaluation)

    # The allocation splits what is left: G 150.00 of 750.00 cash, 150.00 points.
    traced = await get(points, f"/v1/orders/{gp.order.order_id}/allocation")
    assert [(r["kind"], r["amount"]) for r in traced["rewards"]] == [
        ("binding", "7.50"), ("invite", "37.50")
    ]
    assert (traced["allocation"]["consumer_pool"], traced["allocation"]["merchant_pool"]) == (
        "52.50", "52.50"
    )
    assert (await balances(points))["giveback:pending"] == 0

    # The rest of the order refunded after the allocation: the pools are emptied exactly.
    await deliver(points, order_refunded(gp.order, "750.00", refunded_total="1000.00"))
    state = await holdings(points, gp)
    assert (state["consumer_points"], state["consumer_fund"], state["merchant_fund"]) == (
        "0.00", "0.00", "0.00"
    )
    assert (await balances(points))[f"merchant:{gp.m}:giveback"] == D("-45.00")
    assert await unbalanced(points) == []


async def test_a_full_refund_before_the_evaluation_leaves_nothing_to_allocate(
    points: Points,
) -> None:
    gp = Gp1()
    await deliver(points, gp.order)
    await deliver(points, order_refunded(gp.order, "1000.00", refunded_total="1000.00"))
    await deliver(points, gp.evaluation)

    traced = await get(points, f"/v1/orders/{gp.order.order_id}/allocation")
    assert traced["state"] == "allocated"
    assert [r["amount"] for r in traced["rewards"]] == ["0.00", "0.00"]
    assert not [p for e in await paid_out(points) for p in e.payouts if p.asset == "vouchers"]
    books = await balances(points)
    assert books[f"merchant:{gp.m}:giveback"] == 0
    assert books["giveback:pending"] == 0


# --- exactly once ------------------------------------------------------------------------------


async def test_a_refund_delivered_twice_changes_nothing(points: Points) -> None:
    gp = await allocated_gp1(points)
    refund = order_refunded(gp.order, "500.00", refunded_total="500.00")
    envelope = refund.envelope(producer="orders")
    db, handlers = points.app.state.db, points.app.state.handlers

    assert await handle_envelope(db, "points", handlers, envelope)
    before = (await holdings(points, gp), await balances(points), await outbox_count(points))

    assert not await handle_envelope(db, "points", handlers, envelope)
    # Re-emitted by orders under a new event id: the same refund_id, still once.
    assert await handle_envelope(db, "points", handlers, refund.envelope(producer="orders"))

    assert (await holdings(points, gp), await balances(points), await outbox_count(points)) == (
        before
    )
    assert before[0]["consumer_points"] == "100.00"


async def test_a_refund_that_crashes_before_commit_is_retried_and_counts_once(
    points: Points, monkeypatch: pytest.MonkeyPatch
) -> None:
    gp = await allocated_gp1(points)
    envelope = order_refunded(gp.order, "500.00", refunded_total="500.00").envelope(
        producer="orders"
    )
    db, handlers = points.app.state.db, points.app.state.handlers
    real = refund_repository.debit_pool_fund
    calls = 0

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)
        if calls == 1:  # points, coins and the ledger are written by now
            raise RuntimeError("crash before commit")

    monkeypatch.setattr(refund_repository, "debit_pool_fund", crash_once)
    before = (await holdings(points, gp), await outbox_count(points))

    with pytest.raises(RuntimeError, match="crash before commit"):
        await handle_envelope(db, "points", handlers, envelope)
    assert (await holdings(points, gp), await outbox_count(points)) == before

    assert await handle_envelope(db, "points", handlers, envelope)

    state = await holdings(points, gp)
    assert (state["consumer_points"], state["consumer_fund"], state["merchant_fund"]) == (
        "100.00", "35.00", "35.00"
    )
    assert len(reversals(await paid_out(points))) == 1


# --- a refund after a settlement -----------------------------------------------------------


async def test_a_refund_after_a_settlement_records_what_it_cannot_recover(
    points: Points,
) -> None:
    gp = await allocated_gp1(points)
    # The consumer's 200 points released 600.00 (cap 5 x 200 = 1000.00); the consumer
    # pool fund paid out 50.00 of its 70.00.
    await simulate_settlement(points, gp.c, released="600.00", paid="50.00")
    refund = order_refunded(gp.order, "1000.00", refunded_total="1000.00")

    await deliver(points, refund)

    consumer = await get(points, f"/v1/members/{gp.c}/points")
    # 120.00 points must stay to cover the 600.00 released (RULES 1.7): only 80.00 go.
    assert consumer["positions"][0]["points"] == "120.00"
    assert consumer["positions"][0]["released"] == "600.00"
    state = await holdings(points, gp)
    assert (state["consumer_fund"], state["merchant_fund"]) == ("0.00", "0.00")
    # Period 1 is settled: its minted total stays; the merchant's open period drops.
    async with points.app.state.db.read() as session:
        period = await session.get(Period, ("consumer", 1))
        assert period is not None
        assert period.minted == D("200.00")
    assert state["merchant_minted"] == "0.00"

    traced = (await get(points, f"/v1/orders/{gp.order.order_id}/refunds"))["refunds"][0]
    assert (traced["consumer_points_due"], traced["consumer_points_reversed"]) == (
        "200.00", "80.00"
    )
    assert traced["points_unrecovered"] == "120.00"
    assert (traced["consumer_pool_due"], traced["consumer_pool_recovered"]) == (
        "70.00", "20.00"
    )
    assert traced["unrecovered"] == "50.00"
    books = await balances(points)
    assert books["platform:unrecovered"] == D("-50.00")
    assert books["fund:consumer_pool"] == 0
    # The merchant gets back the pool and fee portions in full; the platform bears 50.00.
    assert books[f"merchant:{gp.m}:giveback"] == D("-60.00")
    assert await unbalanced(points) == []
    legs = await refund_legs(points, refund.refund_id)
    assert {leg.order_id for leg in legs} == {gp.order.order_id}


# --- refused refunds ---------------------------------------------------------------------


async def test_a_refund_of_an_order_points_never_saw_is_refused(points: Points) -> None:
    gp = Gp1()
    refund = order_refunded(gp.order, "100.00", refunded_total="100.00")

    with pytest.raises(PermanentFailure, match="never\\s+recorded"):
        await deliver(points, refund)

    assert await outbox_count(points) == 0
    response = await points.client.get(f"/v1/orders/{gp.order.order_id}/refunds",
                                       headers=points.admin)
    assert response.status_code == 404


async def test_a_refund_naming_another_consumer_is_refused_and_changes_nothing(
    points: Points,
) -> None:
    gp = await allocated_gp1(points)
    wrong = order_refunded(gp.order, "100.00", refunded_total="100.00").model_copy(
        update={"consumer_id": uuid.uuid4()}
    )
    before = (await holdings(points, gp), await balances(points), await outbox_count(points))

    with pytest.raises(PermanentFailure, match="names consumer"):
        await deliver(points, wrong)

    assert (await holdings(points, gp), await balances(points), await outbox_count(points)) == (
        before
    )
    assert (await get(points, f"/v1/orders/{gp.order.order_id}/refunds"))["refunds"] == []


async def test_refunds_are_listed_for_the_admin_only(points: Points) -> None:
    gp = await allocated_gp1(points)
    path = f"/v1/orders/{gp.order.order_id}/refunds"

    assert (await points.client.get(path)).status_code == 401
    from .conftest import member_headers

    response = await points.client.get(path, headers=member_headers(points, gp.c))
    assert response.status_code == 403


async def test_an_order_that_earned_nothing_is_refunded_without_effects(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m, amount="80.00", vouchers="80.00")
    await deliver(points, order)
    refund: OrderRefunded = order_refunded(order, "80.00", refunded_total="80.00",
                                           vouchers="80.00")

    assert await deliver(points, refund)

    assert await paid_out(points) == []
    traced = (await get(points, f"/v1/orders/{order.order_id}/refunds"))["refunds"]
    assert [(r["amount"], r["final"], r["unrecovered"]) for r in traced] == [
        ("80.00", True, "0.00")
    ]
    async with points.app.state.db.read() as session:
        giveback = await session.get(OrderGiveback, order.order_id)
    assert giveback is not None
    assert giveback.giveback == 0


async def test_refunds_of_many_orders_at_once_empty_the_funds_exactly(points: Points) -> None:
    orders = [await allocated_gp1(points) for _ in range(6)]
    newcomers = [Gp1() for _ in range(3)]

    # On PostgreSQL the refunds run in concurrent transactions beside new orders; each
    # takes its share from the same two pool funds and the same positions' pools.
    await asyncio.gather(
        *(deliver(points, order_refunded(gp.order, "1000.00", refunded_total="1000.00"))
          for gp in orders),
        *(deliver(points, gp.order) for gp in newcomers),
    )

    pools = {p["pool"]: p for p in (await get(points, "/v1/pools"))["pools"]}
    assert (pools["consumer"]["fund_balance"], pools["merchant"]["fund_balance"]) == (
        "0.00", "0.00"
    )
    # Only the newcomers' points are left in the period.
    assert pools["consumer"]["period"]["minted"] == "600.00"
    assert len(reversals(await paid_out(points))) == len(orders)
    books = await balances(points)
    assert books["giveback:pending"] == D("600.00")
    assert books.get("platform:unrecovered", D("0")) == 0
    assert await unbalanced(points) == []
