"""The audit (RULES 1.7): it passes on consistent books and names the check that fails
when one thing is corrupted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from services.points import settlement
from services.points.models import FundEntry, Pool, Position
from shared.events import OrderCompleted, OrderRefunded

from .conftest import (
    NOW,
    Points,
    binding,
    deliver,
    evaluated,
    invite,
    member_headers,
    order_completed,
)
from .fakes import (
    FakeBooks,
    order_refunded,
    orders_books,
    points_with_books,
    simulate_settlement,
    vouchers_credit_everything,
)

D = Decimal

CHECKS = [
    "fund_ledger_balanced", "pool_funds", "positions", "giveback", "vouchers_released",
    "payouts_credited", "orders_tie_out", "refunds_unrecovered",
]


@pytest.fixture
def books() -> FakeBooks:
    return FakeBooks()


@pytest.fixture
async def points(database_url: str, books: FakeBooks) -> AsyncIterator[Points]:
    async with points_with_books(database_url, books) as service:
        yield service


class Program:
    """A few orders (one still waiting for its evaluation) and two refunds."""

    def __init__(self) -> None:
        self.c, self.m, self.b, self.i = (uuid.uuid4() for _ in range(4))
        self.gp1 = order_completed(self.c, self.m, amount="1000.00")
        self.small = order_completed(self.c, self.m, amount="333.33", vouchers="33.33",
                                     rate="0.15")
        self.waiting = order_completed(self.c, self.m, amount="120.00")
        self.orders: list[OrderCompleted] = [self.gp1, self.small, self.waiting]
        self.refunds: list[OrderRefunded] = [
            order_refunded(self.gp1, "400.00", refunded_total="400.00"),
            order_refunded(self.waiting, "20.00", refunded_total="20.00"),
        ]

    async def run(self, points: Points, books: FakeBooks) -> None:
        for order in self.orders:
            await deliver(points, order)
        await deliver(points, evaluated(self.gp1, binding(self.b), invite(self.i)))
        await deliver(points, evaluated(self.small, invite(self.i)))
        for refund in self.refunds:
            await deliver(points, refund)
        await vouchers_credit_everything(points, books)
        books.orders = orders_books(self.orders, self.refunds)


async def audit(points: Points) -> dict[str, Any]:
    response = await points.client.get("/v1/audit", headers=points.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in report["checks"] if c["name"] == name)
    return found


def failing(report: dict[str, Any]) -> list[str]:
    return [c["name"] for c in report["checks"] if not c["ok"]]


async def test_the_audit_passes_on_consistent_books(points: Points, books: FakeBooks) -> None:
    program = Program()
    await program.run(points, books)

    report = await audit(points)

    assert [c["name"] for c in report["checks"]] == CHECKS
    assert failing(report) == [], report
    assert report["ok"] is True
    giveback = check(report, "giveback")["figures"]
    # G: 200.00 + 45.00 + 24.00; 400/1000 of GP-1's allocation and 20/120 of the waiting
    # order's pending G (4.00) went back to the merchant.
    assert giveback["giveback"] == "269.00"
    assert giveback["pending"] == "20.00"
    assert giveback["reversed_before_allocation"] == "4.00"
    assert D(giveback["allocated"]) + D(giveback["pending"]) + D(
        giveback["reversed_before_allocation"]
    ) == D(giveback["giveback"])
    assert giveback["reversed_after_allocation"] == "56.00"  # 40% of GP-1's pools 140.00
    tie = check(report, "orders_tie_out")["figures"]
    assert (tie["points_orders"], tie["orders_orders"], tie["points_refunded_amount"]) == (
        3, 3, "420.00"
    )
    payouts = check(report, "payouts_credited")["figures"]
    assert payouts["in_flight_batches"] == 0
    assert payouts["credited_total"] == payouts["vouchers_booked_total"] == payouts[
        "emitted_total"
    ]
    assert sorted(books.requests) == ["orders /v1/admin/totals", "vouchers /v1/admin/totals"]


async def test_unrecovered_points_and_money_show_in_the_audit(
    points: Points, books: FakeBooks
) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m, amount="1000.00")
    await deliver(points, order)
    await deliver(points, evaluated(order))  # no rewards: R = 200.00, 100.00 per pool
    await simulate_settlement(points, c, released="600.00", paid="90.00")
    refund = order_refunded(order, "1000.00", refunded_total="1000.00")
    await deliver(points, refund)
    await vouchers_credit_everything(points, books)
    books.orders = orders_books([order], [refund])

    report = await audit(points)

    assert failing(report) == [], report
    unrecovered = check(report, "refunds_unrecovered")["figures"]
    assert unrecovered["points_unrecovered"] == "120.00"
    assert unrecovered["money_unrecovered"] == "90.00"
    assert unrecovered["ledger_unrecovered"] == "90.00"
    positions = check(report, "positions")["figures"]
    assert positions["over_cap"] == 0
    assert positions["points"] == "120.00"


# --- one corrupted thing, one failing check ----------------------------------------------


async def test_an_unbalanced_fund_entry_fails_the_ledger_check(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    txn = uuid.uuid4()
    async with points.app.state.db.transaction() as session:
        session.add(FundEntry(txn_id=txn, account="platform:fees", amount=D("0.01"),
                              memo="corrupt", order_id=program.gp1.order_id, created_at=NOW))

    report = await audit(points)

    assert report["ok"] is False
    assert "fund_ledger_balanced" in failing(report)
    ledger = check(report, "fund_ledger_balanced")
    assert ledger["figures"]["unbalanced"] == 1
    assert str(txn) in ledger["detail"]


async def test_a_negative_pool_fund_fails_the_pool_check(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    async with points.app.state.db.transaction() as session:
        await session.exec(
            update(Pool).where(col(Pool.kind) == "merchant").values(fund_balance=D("-1.00"))
        )

    report = await audit(points)

    assert failing(report) == ["pool_funds"]
    detail = check(report, "pool_funds")["detail"]
    assert "merchant pool fund is negative" in detail
    assert check(report, "pool_funds")["figures"]["merchant_fund"] == "-1.00"


async def test_a_position_over_its_cap_fails_the_positions_check(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    async with points.app.state.db.transaction() as session:
        await session.exec(
            update(Position).where(col(Position.member_id) == program.c)
            .values(released=D("100000.00"))
        )

    report = await audit(points)

    assert failing(report) == ["positions"]
    assert check(report, "positions")["figures"]["over_cap"] == 1


async def test_vouchers_totals_that_disagree_fail_the_payout_check(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    assert books.vouchers is not None
    books.vouchers["payouts"]["total"] = str(D(books.vouchers["payouts"]["total"]) + D("1.00"))

    report = await audit(points)

    assert failing(report) == ["payouts_credited"]
    assert "vouchers booked" in check(report, "payouts_credited")["detail"]


async def test_an_unreachable_service_fails_its_check_and_the_audit_still_answers(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    books.down.add("vouchers")
    books.orders = None  # the orders service has no totals route (404)

    report = await audit(points)

    assert failing(report) == ["payouts_credited", "orders_tie_out"]
    assert "unreachable" in check(report, "payouts_credited")["detail"]
    assert "answered 404" in check(report, "orders_tie_out")["detail"]


async def test_orders_the_points_service_has_not_seen_fail_the_tie_out(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    extra = order_completed(program.c, program.m, amount="10.00")
    books.orders = orders_books([*program.orders, extra], program.refunds)

    report = await audit(points)

    assert failing(report) == ["orders_tie_out"]
    detail = check(report, "orders_tie_out")["detail"]
    assert "orders (points 3, orders 4)" in detail
    assert "amount (points 1453.33, orders 1463.33)" in detail


async def test_a_batch_in_flight_is_reported_and_fails_only_once_it_is_old(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    late = order_completed(program.c, program.m, amount="100.00")  # pays 1.00 coins
    await deliver(points, late)
    books.orders = orders_books([*program.orders, late], program.refunds)

    young = await audit(points)

    assert failing(young) == [], young
    figures = check(young, "payouts_credited")["figures"]
    assert (figures["in_flight_batches"], figures["in_flight_total"]) == (1, "1.00")
    assert "still in flight" in check(young, "payouts_credited")["detail"]

    points.app.state.clock.set(NOW + timedelta(seconds=points.settings.audit_max_in_flight_seconds
                                               + 1))
    old = await audit(points)

    assert failing(old) == ["payouts_credited"]
    assert "not credited yet" in check(old, "payouts_credited")["detail"]


async def test_a_credit_vouchers_booked_ahead_of_its_acknowledgement_is_in_flight(
    points: Points, books: FakeBooks
) -> None:
    program = Program()
    await program.run(points, books)
    late = order_completed(program.c, program.m, amount="100.00")
    await deliver(points, late)
    books.orders = orders_books([*program.orders, late], program.refunds)
    assert books.vouchers is not None
    # Vouchers has booked the coins batch; its payouts.credited is still on its way.
    books.vouchers["payouts"]["count"] += 1
    books.vouchers["payouts"]["total"] = str(D(books.vouchers["payouts"]["total"]) + D("1.00"))

    report = await audit(points)

    assert failing(report) == [], report
    assert "acknowledgement is still in flight" in check(report, "payouts_credited")["detail"]


async def test_the_audit_is_for_the_admin_only(points: Points, books: FakeBooks) -> None:
    assert (await points.client.get("/v1/audit")).status_code == 401
    response = await points.client.get("/v1/audit", headers=member_headers(points, uuid.uuid4()))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert books.requests == []  # nothing was asked of the other services


async def test_a_refund_after_a_real_settlement_is_audited_consistent(
    points: Points, books: FakeBooks
) -> None:
    c, m, b, i = (uuid.uuid4() for _ in range(4))
    order = order_completed(c, m, amount="1000.00")
    await deliver(points, order)
    await deliver(points, evaluated(order, binding(b), invite(i)))  # consumer fund 70.00
    # The consumer pool's period 1 is forced at day 31 (2024-04-14 00:00 Shanghai):
    # budget 1% × 70.00 = 0.70 < C's entitlement 1.00, so C is paid 0.70.
    due = datetime(2024, 4, 14, tzinfo=points.settings.zone)
    async with points.app.state.db.transaction() as session:
        settled = await settlement.run_due_settlements(session, "consumer", due, points.settings)
    assert [s.total_paid for s in settled] == [D("0.70")]
    refund = order_refunded(order, "1000.00", refunded_total="1000.00",
                            refunded_at=due + timedelta(hours=1))
    points.app.state.clock.set(due + timedelta(hours=2))

    await deliver(points, refund)
    await vouchers_credit_everything(points, books)
    books.orders = orders_books([order], [refund])

    report = await audit(points)

    assert failing(report) == [], report
    unrecovered = check(report, "refunds_unrecovered")["figures"]
    # 0.70 released needs 0.14 points at 5x; the fund paid 0.70 of the 70.00 it got.
    assert (unrecovered["points_unrecovered"], unrecovered["money_unrecovered"]) == (
        "0.14", "0.70"
    )
    positions = check(report, "positions")["figures"]
    assert (positions["points"], positions["released"], positions["over_cap"]) == (
        "0.14", "0.70", 0
    )
    released = check(report, "vouchers_released")["figures"]
    assert released["vouchers_released"] == "60.70"
