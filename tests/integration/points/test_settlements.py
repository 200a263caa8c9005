"""RULES 1.2/1.3 through the service: periods, settlements, payouts and the members' view.

Instants are driven with the app's FixedClock and the settlements' ``as_of``; nothing
sleeps. Every figure expected here is RULES' own (GP-2, GP-3) or worked out by hand in
the comments, except the property test, which compares the SQL settlement with the pure
rules of :mod:`services.points.domain.release`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import ROUND_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlmodel import col, select

from services.points import repository, settlement, settlement_repository
from services.points.app import TABLES, create_app
from services.points.bench_support import seed_settlement_bench
from services.points.domain.periods import growth
from services.points.domain.release import (
    CohortState,
    PositionState,
    next_release_index,
    settle_pool,
)
from services.points.models import FundEntry, PayoutRecord, Pool, Position
from services.points.settings import PoolName
from services.points.settlement_models import Settlement, SettlementBatch
from shared.auth import issue_member_token
from shared.clock import FixedClock
from shared.events import Envelope, FundsPaidOut
from shared.money import CENT, from_fen
from shared.outbox import OutboxMessage

from .conftest import NOW, Points, deliver, make_settings, member_headers, order_completed
from .fakes import deliver_from, order_refunded

D = Decimal
SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Period 1 of the consumer pool (RULES 1.2).
START = datetime(2024, 3, 15, tzinfo=SHANGHAI)


def day(n: int, hour: int = 12) -> datetime:
    """Hour *hour* of day *n* of consumer period 1 (day 1 starts at START)."""
    return START + timedelta(days=n - 1, hours=hour)


def local(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=SHANGHAI)


# --- helpers ------------------------------------------------------------------------------


async def mint(
    points: Points, member: uuid.UUID, consumer_points: str | Decimal, at: datetime
) -> None:
    """An order whose consumer earns *consumer_points* (give-back 20%: amount = 5 × points)."""
    amount = (D(consumer_points) * 5).quantize(CENT)
    assert await deliver(points, order_completed(member, uuid.uuid4(), amount=str(amount),
                                                 completed_at=at))


async def fund(points: Points, amount: str, pool: PoolName = "consumer") -> None:
    async with points.app.state.db.transaction() as session:
        await repository.credit_pool_fund(session, pool, D(amount), points.settings, NOW)


async def settle(
    points: Points, as_of: datetime, *, dry_run: bool = False, pool: str = "consumer"
) -> dict[str, Any]:
    """POST a settlement run as the admin, with the clock moved on to as_of if needed."""
    clock: FixedClock = points.app.state.clock
    if clock.now() < as_of:
        clock.set(as_of)
    response = await points.client.post(
        f"/v1/pools/{pool}/settlements", headers=points.admin,
        json={"as_of": as_of.isoformat(), "dry_run": dry_run},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def position(points: Points, member: uuid.UUID, cohort: int = 1) -> dict[str, Any]:
    response = await points.client.get(f"/v1/members/{member}/points", headers=points.admin)
    assert response.status_code == 200, response.text
    found = [p for p in response.json()["positions"]
             if p["pool"] == "consumer" and p["cohort"] == cohort]
    assert len(found) == 1, found
    return found[0]


async def pool_status(points: Points, pool: str = "consumer") -> dict[str, Any]:
    response = await points.client.get("/v1/pools", headers=points.admin)
    assert response.status_code == 200, response.text
    return next(p for p in response.json()["pools"] if p["pool"] == pool)


async def count(points: Points, model: Any, *where: Any) -> int:
    async with points.app.state.db.read() as session:
        query = select(func.count()).select_from(model)
        if where:
            query = query.where(*where)
        return int((await session.exec(query)).one())


async def settlement_events(points: Points) -> list[FundsPaidOut]:
    async with points.app.state.db.read() as session:
        rows = (await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))).all()
    events = []
    for row in rows:
        envelope = Envelope.model_validate_json(row.payload)
        assert envelope.event_id == row.event_id
        if envelope.type == FundsPaidOut.TYPE and envelope.data["source"] == "settlement":
            events.append(FundsPaidOut.model_validate(envelope.data))
    return events


async def settled_payouts(points: Points) -> int:
    """How many settlement payouts points emitted (its batches count them)."""
    async with points.app.state.db.read() as session:
        total = (await session.exec(select(func.sum(col(SettlementBatch.payouts))))).one()
    return int(total or 0)


async def consumer_state(points: Points) -> tuple[Any, ...]:
    """Everything a settlement of the consumer pool would change."""
    async with points.app.state.db.read() as session:
        pool = (await session.exec(
            select(Pool.period_number, Pool.fund_balance, Pool.minted)
            .where(col(Pool.kind) == "consumer")
        )).one()
        positions = (await session.exec(
            select(Position.cohort, Position.member_id, Position.released,
                   Position.settlements, Position.closed)
            .where(col(Position.pool) == "consumer")
            .order_by(col(Position.cohort), col(Position.member_id))
        )).all()
    return (
        tuple(pool), tuple(tuple(p) for p in positions),
        await count(points, Settlement, col(Settlement.pool) == "consumer"),
        await settled_payouts(points),
        len(await settlement_events(points)),
    )


# --- RULES 1.2, example GP-2 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("minted", "reached_on", "due", "forced", "growth"),
    [
        # 150,000 points by day 7 -> settles 2024-03-25 00:00 (day 11)
        ("150000.00", 7, "2024-03-25T00:00:00+08:00", False, "0.15"),
        # reached on day 18 -> settles 2024-04-02 00:00 (day 19)
        ("150000.00", 18, "2024-04-02T00:00:00+08:00", False, "0.15"),
        # 9% at the end of day 30 -> forced on 2024-04-14 00:00 (day 31) with g = 0.09
        ("90000.00", 5, "2024-04-14T00:00:00+08:00", True, "0.09"),
    ],
)
async def test_gp2_a_period_settles_at_its_due_instant(
    points: Points, minted: str, reached_on: int, due: str, forced: bool, growth: str
) -> None:
    await mint(points, uuid.uuid4(), minted, day(reached_on))
    due_at = datetime.fromisoformat(due)

    status = await pool_status(points)
    assert status["settlement"]["next_settlement"]["due_at"] == due
    assert status["settlement"]["next_settlement"]["forced"] is forced
    if not forced:
        assert status["period"]["target_reached_at"] == day(reached_on).isoformat()
        assert status["settlement"]["next_settlement"]["reason"] == (
            f"target reached on day {reached_on}, settle on day {max(reached_on, 10) + 1}"
        )

    early = await settle(points, due_at - timedelta(seconds=1))
    assert early["settlements"] == []
    assert early["next_due"]["due_at"] == due
    assert "nothing is due" in early["detail"]

    done = await settle(points, due_at)
    [record] = done["settlements"]
    assert (record["number"], record["period_ended_at"], record["forced"]) == (1, due, forced)
    assert D(record["growth"]) == D(growth)
    assert (record["minted"], record["reference_size"]) == (minted, "1000000.00")
    assert record["release_index"] == "1"
    # RULES 1.2: period 2 starts at the settlement, S_2 = S_1 + minted
    period = (await pool_status(points))["period"]
    assert (period["number"], period["started_at"]) == (2, due)
    assert D(period["reference_size"]) == D("1000000.00") + D(minted)
    assert done["next_due"]["number"] == 2


async def test_an_idle_pool_catches_up_with_one_forced_settlement_per_period(
    points: Points,
) -> None:
    await fund(points, "1000.00")

    body = await settle(points, local("2024-07-01T00:00:00"))

    ends = [(s["number"], s["period_ended_at"], s["forced"]) for s in body["settlements"]]
    assert ends == [
        (1, "2024-04-14T00:00:00+08:00", True),
        (2, "2024-05-14T00:00:00+08:00", True),
        (3, "2024-06-13T00:00:00+08:00", True),
    ]
    assert {s["release_index"] for s in body["settlements"]} == {"1"}  # no growth, no rise
    assert body["next_due"]["due_at"] == "2024-07-13T00:00:00+08:00"
    assert (await pool_status(points))["fund_balance"] == "1000.00"


# --- RULES 1.3, example GP-3 -------------------------------------------------------------------


async def run_gp3(points: Points, growths: list[str]) -> list[tuple[str, str]]:
    """Cohort 1 = X 200.00 and Y 800.00; later periods grow by *growths* (filler orders).

    Period 1 (X and Y only) is forced at day 31; I_1 = 1 whatever its growth. Returns
    what X and Y received at each settlement.
    """
    x, y = uuid.uuid4(), uuid.uuid4()
    await mint(points, x, "200.00", day(1))
    await mint(points, y, "800.00", day(1))
    paid: list[tuple[str, str]] = []
    released = (D(0), D(0))
    as_of = START + timedelta(days=30)
    reference = D("1000000.00")
    minted = D("1000.00")
    for g in [None, *growths]:
        if g is not None:
            # the period that began at the last settlement grows by g on its first day
            reference += minted
            minted = (D(g) * reference).quantize(CENT, rounding=ROUND_UP)
            await mint(points, uuid.uuid4(), minted, as_of + timedelta(hours=1))
            as_of += timedelta(days=10 if D(g) >= D("0.15") else 30)
        [record] = (await settle(points, as_of))["settlements"]
        assert record["period_ended_at"] == as_of.astimezone(SHANGHAI).isoformat()
        now = (D((await position(points, x))["released"]),
               D((await position(points, y))["released"]))
        paid.append((str(now[0] - released[0]), str(now[1] - released[1])))
        released = now
    return paid


async def test_gp3_x_and_y_receive_their_release_at_15_percent_growth(points: Points) -> None:
    await fund(points, "100000.00")

    paid = await run_gp3(points, ["0.15", "0.15", "0.15"])

    assert paid == [("1.00", "4.00"), ("1.15", "4.60"), ("1.32", "5.29"), ("1.52", "6.08")]
    x = (await pool_status(points))["settlement"]
    assert x["release_index"] == "1.520875"
    assert x["last_settlement"]["number"] == 4


async def test_gp3_a_forced_settlement_moves_the_index_by_the_real_growth(
    points: Points,
) -> None:
    await fund(points, "100000.00")

    paid = await run_gp3(points, ["0.15", "0.09", "0.15"])

    assert [x for x, _ in paid] == ["1.00", "1.15", "1.25", "1.44"]


async def test_gp3_a_small_fund_is_split_pro_rata(points: Points) -> None:
    await fund(points, "300.00")
    x, y = uuid.uuid4(), uuid.uuid4()
    await mint(points, x, "200.00", day(1))
    await mint(points, y, "800.00", day(1))

    body = await settle(points, START + timedelta(days=30))

    [record] = body["settlements"]
    [cohort] = record["cohorts"]
    # budget 1% × 300.00 = 3.00 < entitlements 5.00: X 0.60, Y 2.40
    assert (cohort["budget"], cohort["total_entitlement"], cohort["pro_rata"]) == (
        "3.0000", "5.00", True
    )
    assert ((await position(points, x))["released"],
            (await position(points, y))["released"]) == ("0.60", "2.40")
    assert (record["fund_before"], record["total_paid"], record["fund_after"]) == (
        "300.00", "3.00", "297.00"
    )
    assert (await pool_status(points))["fund_balance"] == "297.00"


# --- a settlement happens once, whole, and a dry run not at all ------------------------------


async def gp3_cohort(points: Points) -> tuple[uuid.UUID, uuid.UUID]:
    await fund(points, "100000.00")
    x, y = uuid.uuid4(), uuid.uuid4()
    await mint(points, x, "200.00", day(1))
    await mint(points, y, "800.00", day(2))
    return x, y


async def test_settling_the_same_period_twice_pays_once(points: Points) -> None:
    await gp3_cohort(points)
    as_of = START + timedelta(days=30)

    first = await settle(points, as_of)
    again = await settle(points, as_of)

    assert len(first["settlements"]) == 1
    assert again["settlements"] == []
    assert await count(points, Settlement, col(Settlement.pool) == "consumer") == 1
    assert await settled_payouts(points) == 2
    [event] = await settlement_events(points)
    assert sorted(p.amount for p in event.payouts) == [D("1.00"), D("4.00")]
    # the scheduler and the handlers share the same function: nothing more is due
    async with points.app.state.db.transaction() as session:
        assert await settlement.run_due_settlements(
            session, "consumer", as_of, points.settings
        ) == []
    assert await count(points, Settlement, col(Settlement.pool) == "consumer") == 1


async def test_a_settlement_that_fails_half_way_leaves_no_trace_and_can_be_rerun(
    points: Points, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gp3_cohort(points)
    before = await consumer_state(points)
    as_of = START + timedelta(days=30)

    async def crash(*_: object, **__: object) -> int:
        raise RuntimeError("the database went away")

    # payouts are inserted and positions updated by then; the events crash
    monkeypatch.setattr(settlement_repository, "insert_payout_events", crash)
    with pytest.raises(RuntimeError, match="went away"):
        async with points.app.state.db.transaction() as session:
            await settlement.run_due_settlements(session, "consumer", as_of, points.settings)

    assert await consumer_state(points) == before
    monkeypatch.undo()
    body = await settle(points, as_of)
    assert len(body["settlements"]) == 1
    assert body["settlements"][0]["total_paid"] == "5.00"
    assert await count(points, Settlement, col(Settlement.pool) == "consumer") == 1
    assert len(await settlement_events(points)) == 1


async def test_a_dry_run_shows_the_settlement_and_writes_nothing(points: Points) -> None:
    x, _ = await gp3_cohort(points)
    before = await consumer_state(points)
    as_of = START + timedelta(days=30)

    preview = await settle(points, as_of, dry_run=True)

    assert await consumer_state(points) == before
    [would] = preview["settlements"]
    assert would["dry_run"] is True
    assert (would["total_paid"], would["positions_paid"], would["payout_events"]) == (
        "5.00", 2, 1
    )
    assert "would settle" in preview["detail"]
    assert preview["next_due"]["number"] == 2  # as it would be after the settlement
    done = await settle(points, as_of)
    [record] = done["settlements"]
    assert record["dry_run"] is False
    keys = ("number", "period_ended_at", "growth", "release_index", "fund_before",
            "fund_after", "total_paid", "positions_paid", "payout_events", "cohorts")
    assert {k: record[k] for k in keys} == {k: would[k] for k in keys}
    assert (await position(points, x))["released"] == "1.00"


async def test_a_dry_run_may_look_into_the_future_but_a_settlement_may_not(
    points: Points,
) -> None:
    await gp3_cohort(points)
    later = NOW + timedelta(days=60)
    before = await consumer_state(points)

    refused = await points.client.post(
        "/v1/pools/consumer/settlements", headers=points.admin,
        json={"as_of": later.isoformat()},
    )
    preview = await points.client.post(
        "/v1/pools/consumer/settlements", headers=points.admin,
        json={"as_of": later.isoformat(), "dry_run": True},
    )

    assert refused.status_code == 422
    assert "later than the service's clock" in refused.json()["detail"]
    assert preview.status_code == 200
    # 2024-05-19: periods 1 and 2 (forced 2024-04-14 and 2024-05-14) would be settled
    assert [s["number"] for s in preview.json()["settlements"]] == [1, 2]
    assert await consumer_state(points) == before


# --- settle-before-mint ----------------------------------------------------------------------


async def test_an_order_completed_after_the_due_instant_lands_in_the_next_period(
    points: Points,
) -> None:
    await fund(points, "100000.00")
    early, late = uuid.uuid4(), uuid.uuid4()
    await mint(points, early, "150000.00", day(2))  # target reached: due on day 11
    due = local("2024-03-25T00:00:00")

    # no scheduler ran: the order's own handler settles period 1 first
    await mint(points, late, "100.00", due + timedelta(minutes=1))

    async with points.app.state.db.read() as session:
        [stored] = (await session.exec(
            select(Settlement).where(col(Settlement.pool) == "consumer")
        )).all()
        late_positions = (await session.exec(
            select(Position.cohort).where(col(Position.member_id) == late)
        )).all()
    assert (stored.number, stored.minted) == (1, D("150000.00"))
    assert stored.period_ended_at == due
    assert list(late_positions) == [2]
    period = (await pool_status(points))["period"]
    assert (period["number"], period["minted"]) == (2, "100.00")
    # and an order completed just before it stays in period 1 of an unsettled pool
    assert (await position(points, early))["released"] == "750.00"


# --- batched events ----------------------------------------------------------------------------


async def test_payouts_travel_in_batches_of_2000_per_event(points: Points) -> None:
    seed = await seed_settlement_bench(
        points.app.state.db, points.settings, positions=5001, tidy=False
    )
    points.app.state.clock.set(seed.as_of)

    body = await settle(points, seed.as_of)

    [record] = body["settlements"]
    events = await settlement_events(points)
    assert [len(e.payouts) for e in events] == [2000, 2000, 1001]
    assert (record["positions_paid"], record["payout_events"]) == (5001, 3)
    settlement_id = uuid.UUID(record["settlement_id"])
    assert {e.settlement_id for e in events} == {settlement_id}
    assert len({e.batch_id for e in events}) == 3
    assert all(
        (p.asset, p.reason, p.fund, p.settlement_id, p.order_id)
        == ("vouchers", "settlement", "fund:consumer_pool", settlement_id, None)
        for e in events for p in e.payouts
    )
    total = sum((p.amount for e in events for p in e.payouts), D(0))
    assert str(total) == record["total_paid"]
    async with points.app.state.db.read() as session:
        batches = {
            (b.batch_id, b.payouts, b.total, b.first_payout_id, b.last_payout_id)
            for b in (await session.exec(
                select(SettlementBatch).where(col(SettlementBatch.settlement_id) == settlement_id)
            )).all()
        }
        kept = (await session.exec(select(func.count()).select_from(PayoutRecord))).one()
        ledger = (await session.exec(
            select(FundEntry.account, func.sum(col(FundEntry.amount)), FundEntry.txn_id)
            .group_by(col(FundEntry.account), col(FundEntry.txn_id))
            .order_by(col(FundEntry.account))
        )).all()
    # points keeps each batch's count, total and payout id range, not every payout
    assert batches == {
        (e.batch_id, len(e.payouts), sum((p.amount for p in e.payouts), D(0)),
         e.payouts[0].payout_id, e.payouts[-1].payout_id)
        for e in events
    }
    assert kept == 0
    assert len({p.payout_id for e in events for p in e.payouts}) == 5001
    assert [tuple(r) for r in ledger] == [
        ("fund:consumer_pool", -total, settlement_id),
        ("payouts:settlements", total, settlement_id),
    ]


# --- the members' view and the pool status ----------------------------------------------------


async def test_a_member_sees_paid_still_possible_and_coverage(points: Points) -> None:
    x, y = await gp3_cohort(points)
    await settle(points, START + timedelta(days=30))

    response = await points.client.get(f"/v1/members/{x}/points",
                                       headers=member_headers(points, x))

    assert response.status_code == 200
    [mine] = response.json()["positions"]
    # X 200.00 points, paid 1.00: up to 999.00 more, 39 settlements left. The fund holds
    # 100,000.00 - 5.00; X and Y may still receive 999.00 + 3,996.00 = 4,995.00:
    # coverage 99,995.00 / 4,995.00 = 20.0190..., shown rounded down.
    assert mine == {
        "pool": "consumer", "cohort": 1, "points": "200.00", "released": "1.00",
        "settlements": 1, "settlements_left": 39, "closed": False, "cap": "1000.00",
        "still_possible": "999.00", "coverage": "20.0190",
    }
    status = await pool_status(points)
    assert status["settlement"]["release_index"] == "1"
    assert status["settlement"]["last_settlement"]["total_paid"] == "5.00"
    assert status["settlement"]["next_settlement"]["reason"].startswith(
        "target not reached yet: needs 150150.00 more points; forced on 2024-05-14 00:00"
    )
    assert y != x


async def test_points_taken_back_from_a_settled_cohort_are_promised_no_more(
    points: Points,
) -> None:
    await gp3_cohort(points)
    await settle(points, START + timedelta(days=30))

    # what the refunds call for an open position of a settled cohort (X loses 100 points)
    async with points.app.state.db.transaction() as session:
        await settlement_repository.points_reversed(
            session, "consumer", 1, D("100.00"), points.settings.multiplier
        )

    async with points.app.state.db.read() as session:
        coverage = await settlement.pool_coverage(session, ["consumer"], points.settings)
    # 4,995.00 before, less 5 × 100.00
    assert coverage["consumer"].still_possible == D("4495.00")


async def test_a_refund_after_a_settlement_shrinks_what_the_cohort_still_promises(
    points: Points,
) -> None:
    await fund(points, "100000.00")
    x, y = uuid.uuid4(), uuid.uuid4()
    order = order_completed(x, uuid.uuid4(), amount="1000.00", completed_at=day(1))
    assert await deliver(points, order)  # X: 200.00 points
    await mint(points, y, "800.00", day(2))
    await settle(points, START + timedelta(days=30))
    before = (await pool_status(points))["settlement"]

    # Half of X's order is refunded after the settlement: X keeps 100.00 points.
    refund = order_refunded(order, "500.00", refunded_total="500.00",
                            refunded_at=START + timedelta(days=31))
    assert await deliver_from(points, refund, "orders")

    mine = await position(points, x)
    # 100.00 points, 1.00 already paid: up to 5 × 100.00 - 1.00 = 499.00 more.
    assert (mine["points"], mine["released"], mine["still_possible"]) == (
        "100.00", "1.00", "499.00"
    )
    async with points.app.state.db.read() as session:
        coverage = await settlement.pool_coverage(session, ["consumer"], points.settings)
    # 999.00 + 3,996.00 promised before; X's promise dropped by 5 × 100.00.
    assert coverage["consumer"].still_possible == D("4495.00")
    assert before["last_settlement"]["total_paid"] == "5.00"


async def test_a_closed_position_promises_nothing_more(database_url: str) -> None:
    # base_rate 3: 200 × 0.03 ... X reaches its cap (5 × 200.00) at the 2nd settlement
    async with app_with(database_url, base_rate=D("3")) as points:
        x = uuid.uuid4()
        await fund(points, "1000000.00")
        await mint(points, x, "200.00", day(1))
        await settle(points, START + timedelta(days=30))
        first = await position(points, x)
        await settle(points, START + timedelta(days=60))
        second = await position(points, x)

    assert (first["released"], first["still_possible"], first["closed"]) == (
        "600.00", "400.00", False
    )
    assert second == {
        "pool": "consumer", "cohort": 1, "points": "200.00", "released": "1000.00",
        "settlements": 2, "settlements_left": 0, "closed": True, "cap": "1000.00",
        "still_possible": "0.00", "coverage": None,
    }


# --- the admin endpoints -----------------------------------------------------------------------


async def test_settlements_are_listed_and_read_one_by_one(points: Points) -> None:
    await gp3_cohort(points)
    body = await settle(points, local("2024-06-01T00:00:00"))
    numbers = [s["number"] for s in body["settlements"]]

    listed = await points.client.get("/v1/pools/consumer/settlements", headers=points.admin)
    one = await points.client.get(
        f"/v1/settlements/{body['settlements'][0]['settlement_id']}", headers=points.admin
    )
    missing = await points.client.get(f"/v1/settlements/{uuid.uuid4()}", headers=points.admin)

    assert numbers == [1, 2]
    assert [s["number"] for s in listed.json()["settlements"]] == [2, 1]
    assert one.json() == body["settlements"][0]
    assert missing.status_code == 404
    assert "no settlement" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/pools/consumer/settlements"),
        ("GET", "/v1/pools/consumer/settlements"),
        ("GET", f"/v1/settlements/{uuid.uuid4()}"),
    ],
)
async def test_the_settlement_endpoints_are_for_admins_only(
    points: Points, method: str, path: str
) -> None:
    body = {"as_of": NOW.isoformat()}
    member = {"Authorization": f"Bearer {issue_member_token(points.settings, uuid.uuid4())}"}

    anonymous = await points.client.request(method, path, json=body)
    as_member = await points.client.request(method, path, json=body, headers=member)

    assert anonymous.status_code == 401
    assert as_member.status_code == 403
    assert await count(points, Settlement) == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/pools/platform/settlements", {"as_of": "2024-04-20T00:00:00+08:00"}, "pool"),
        ("/v1/pools/consumer/settlements", {"as_of": "2024-04-20T00:00:00"}, "as_of"),
        ("/v1/pools/consumer/settlements", {}, "as_of"),
    ],
)
async def test_a_bad_settlement_request_names_the_field_and_changes_nothing(
    points: Points, path: str, body: dict[str, str], field: str
) -> None:
    await gp3_cohort(points)
    points.app.state.clock.set(local("2024-05-01T00:00:00"))
    before = await consumer_state(points)

    response = await points.client.post(path, headers=points.admin, json=body)

    assert response.status_code == 422
    assert field in {f["field"] for f in response.json()["fields"]}
    assert await consumer_state(points) == before


async def test_the_scheduler_settles_both_pools_when_they_are_due(points: Points) -> None:
    await gp3_cohort(points)

    settled = await settlement.settle_all_due(
        points.app.state.db, local("2024-04-20T00:00:00"), points.settings
    )

    # consumer: period 1 (forced 2024-04-14); merchant (from 2024-01-18): periods 2 and 3
    # (period 1 was settled before the orders of 2024-03-15 were minted)
    async with points.app.state.db.read() as session:
        rows = (await session.exec(
            select(Settlement.pool, Settlement.number).order_by(col(Settlement.pool),
                                                                col(Settlement.number))
        )).all()
    assert settled == 3
    assert [tuple(r) for r in rows] == [
        ("consumer", 1), ("merchant", 1), ("merchant", 2), ("merchant", 3)
    ]
    assert settlement.settlement_scheduler in settlement_background(points)


def settlement_background(points: Points) -> list[Any]:
    from services.points.app import definition

    return list(definition(points.settings).background)


# --- SQL == the pure rules (RULES 1.3), on random small programs -------------------------------


@asynccontextmanager
async def app_with(database_url: str, **overrides: object) -> AsyncIterator[Points]:
    settings = make_settings(database_url, **overrides)
    app = create_app(settings, schema="create", clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Points(app, client, settings,
                         {"Authorization": f"Bearer {settings.admin_token}"})


async def empty_tables(points: Points) -> None:
    async with points.app.state.db.transaction() as session:
        for table in reversed(TABLES):
            await session.exec(table.delete())


#: Small numbers that reach every branch: growth capped or not, budgets split or not,
#: caps reached (base_rate 1.5: about the 3rd settlement) and cohorts closed at 4.
PROPERTY_RULES: dict[str, object] = {
    "consumer_base_points": D("1000.00"), "base_rate": D("1.5"), "cohort_share": D("0.25"),
    "max_settlements": 4,
}

points_fen = st.one_of(st.integers(1, 10**5), st.integers(10**5, 10**9))
a_period = st.tuples(
    st.lists(st.tuples(st.integers(0, 2), points_fen), max_size=4),  # (member, points)
    st.integers(0, 10**9),  # fund top-up before the settlement, fen
)


@hypothesis_settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(periods=st.lists(a_period, min_size=1, max_size=6))
async def test_the_sql_settlement_pays_what_the_pure_rules_pay(
    database_url: str, periods: list[tuple[list[tuple[int, int]], int]]
) -> None:
    async with app_with(database_url, **PROPERTY_RULES) as points:
        await empty_tables(points)
        await compare_with_the_rules(points, periods)


async def compare_with_the_rules(
    points: Points, periods: list[tuple[list[tuple[int, int]], int]]
) -> None:
    settings, db = points.settings, points.app.state.db
    rules = settings.release_rules()
    members = [uuid.uuid4() for _ in range(3)]
    start = settings.first_period_start("consumer")
    reference, fund_balance = settings.base_points("consumer"), D("0.00")
    previous_index: Decimal | None = None
    cohorts: dict[int, CohortState] = {}
    closed: dict[tuple[int, uuid.UUID], bool] = {}
    for number, (mints, top_up) in enumerate(periods, start=1):
        held: dict[int, Decimal] = {}
        async with db.transaction() as session:
            for member, fen in mints:
                amount = from_fen(fen)
                at = start + timedelta(hours=1)
                cohort = await repository.count_mint(session, "consumer", amount, settings, at)
                assert cohort == number
                await repository.add_to_position(
                    session, "consumer", number, members[member], amount
                )
                held[member] = held.get(member, D("0.00")) + amount
            if top_up:
                await repository.credit_pool_fund(
                    session, "consumer", from_fen(top_up), settings, start
                )
        fund_balance += from_fen(top_up)
        minted = sum(held.values(), D("0.00"))
        cohorts[number] = CohortState(
            number, tuple(PositionState(m, p) for m, p in sorted(held.items()))
        )
        index = next_release_index(previous_index, growth(minted, reference), rules)
        expected = settle_pool(fund_balance, index, [cohorts[c] for c in sorted(cohorts)], rules)

        async with db.transaction() as session:
            [record] = await settlement.run_due_settlements(
                session, "consumer", start + timedelta(days=31), settings
            )

        assert (record.number, record.release_index) == (number, index)
        assert (record.fund_before, record.total_paid, record.fund_after) == (
            expected.fund_before, expected.total_paid, expected.fund_after
        )
        paid = [
            (p.member_id, p.amount)
            for e in await settlement_events(points) if e.settlement_id == record.id
            for p in e.payouts
        ]
        async with db.read() as session:
            stored = (await session.exec(
                select(Position.cohort, Position.member_id, Position.released, Position.closed)
                .where(col(Position.pool) == "consumer")
            )).all()
        assert sorted(tuple(p) for p in paid) == sorted(
            (members[int(str(p.position_id))], p.paid) for p in expected.payouts if p.paid > 0
        )
        for payout in expected.payouts:
            closed[(payout.cohort, members[int(str(payout.position_id))])] = payout.closed
        model = {
            (state.cohort, members[int(str(p.position_id))]): p.released
            for state in expected.states for p in state.positions
        }
        assert {(c, m): r for c, m, r, _ in stored} == model
        assert {(c, m): x for c, m, _, x in stored} == {k: closed.get(k, False) for k in model}

        # the members' view: what the open positions may still receive, kept per cohort
        still = sum(
            (max(D(0), rules.multiplier * p.points - p.released)
             for state in expected.states for p in state.positions
             if not closed.get((state.cohort, members[int(str(p.position_id))]), False)),
            D(0),
        )
        async with db.read() as session:
            coverage = await settlement.pool_coverage(session, ["consumer"], settings)
        assert coverage["consumer"].still_possible == still

        cohorts = {state.cohort: state for state in expected.states}
        fund_balance, previous_index = expected.fund_after, index
        reference += minted
        start = record.period_ended_at
