"""Two simulated months of the green points program over HTTP (RULES 1.2, 1.3, 1.6).

Time is moved by the admin (each service's development clock, and settlements run
`as_of` an instant), never by sleeping. The orders are sized so that the consumer pool
grows exactly 15% a period, which makes member X's vouchers the figures of example GP-3:
1.00, 1.15, 1.32, 1.52. X then spends them at checkout, another order is refunded, and
the audit proves the books across the services.

Consumer pool, base 1,000,000 points, all merchants give back 20%:
  period 1 (day 0):  X 1,000.00, Y 4,000.00, Z 745,000.00 -> 150,000 points = 15%
  period 2 (day 10): W 862,500.00   -> 172,500 points = 15% of 1,150,000
  period 3 (day 20): V 991,875.00   -> 198,375 points = 15% of 1,322,500
  period 4 (day 30): U 1,140,656.25 -> 228,131.25 points = 15% of 1,520,875
Each target is reached on the period's first day, so each settles on its day 11.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from scripts.stack import SERVICES, Stack, free_port, start_stack
from tests.e2e.conftest import ADMIN, System, bearer, eventually

SHANGHAI = ZoneInfo("Asia/Shanghai")
# The simulated program starts a year from now: the points scheduler runs on the
# service's clock from the moment it starts, and must find nothing due before the test
# moves the clocks (a program that started in the past catches up its idle periods).
D0 = datetime.combine(
    (datetime.now(SHANGHAI) + timedelta(days=365)).date(), datetime.min.time(), SHANGHAI
)


@pytest.fixture(scope="module")
def program_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("two-months")
    env = {f"{p}KAFKA_SESSION_TIMEOUT_MS": "2000" for p, _ in SERVICES.values()}
    env["POINTS_CONSUMER_FIRST_DAY"] = env["POINTS_MERCHANT_FIRST_DAY"] = D0.date().isoformat()
    running = start_stack(
        var_dir=var_dir, broker_port=free_port(), ports={n: free_port() for n in SERVICES},
        extra_env=env,
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def program(program_stack: Stack) -> AsyncIterator[System]:
    clients = {n: httpx.AsyncClient(base_url=program_stack.url(n), timeout=30.0)
               for n in SERVICES}
    try:
        yield System(program_stack, clients)
    finally:
        for client in clients.values():
            await client.aclose()


async def travel(system: System, at: datetime) -> None:
    """Move every service's clock to *at* (development clocks only)."""
    for client in (system.orders, system.points, system.vouchers, system.referrals):
        r = await client.put("/v1/admin/clock", json={"now": at.isoformat()}, headers=ADMIN)
        assert r.status_code == 200, r.text


async def settle(system: System, pool: str, as_of: datetime) -> list[dict[str, Any]]:
    """Move the clocks to *as_of* and run what is due by then (nothing settles early)."""
    await travel(system, as_of)
    r = await system.points.post(f"/v1/pools/{pool}/settlements",
                                 json={"as_of": as_of.isoformat()}, headers=ADMIN)
    assert r.status_code == 200, r.text
    settlements: list[dict[str, Any]] = r.json()["settlements"]
    return settlements


async def member(system: System) -> dict[str, Any]:
    r = await system.referrals.post("/v1/members", json={})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def buy(system: System, pos: dict[str, str], consumer: dict[str, Any], amount: str,
              voucher_amount: str = "0") -> dict[str, Any]:
    body = {"order_id": f"O-{uuid.uuid4().hex[:10]}", "consumer_id": consumer["member_id"],
            "amount": amount, "voucher_amount": voucher_amount}

    async def post() -> dict[str, Any] | None:
        r = await system.orders.post("/v1/orders", json=body, headers=pos)
        if r.status_code == 422 and "consumer" in r.text:
            return None  # orders has not heard of this new member yet
        assert r.status_code == 201, r.text
        order: dict[str, Any] = r.json()
        return order

    order: dict[str, Any] = await eventually(post, what="order accepted")

    # Its give-back reaches the pool funds once referrals has evaluated the order; a
    # settlement before that would see a smaller fund (and rightly pay less).
    async def allocated() -> bool:
        r = await system.points.get(f"/v1/orders/{order['id']}/allocation", headers=ADMIN)
        return r.status_code == 200 and r.json()["state"] == "allocated"

    await eventually(allocated, what="the order's give-back allocated")
    return order


async def wallet(system: System, who: dict[str, Any]) -> dict[str, Any]:
    r = await system.vouchers.get(f"/v1/members/{who['member_id']}/wallet?limit=200",
                                  headers=bearer(who["token"]))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def vouchers_of(system: System, who: dict[str, Any]) -> Decimal:
    return Decimal((await wallet(system, who))["balances"]["vouchers"])


async def minted(system: System, pool: str) -> Decimal:
    r = await system.points.get("/v1/pools", headers=ADMIN)
    period = next(p for p in r.json()["pools"] if p["pool"] == pool)["period"]
    return Decimal(period["minted"])


async def wait_minted(system: System, pool: str, expected: str) -> None:
    async def check() -> bool:
        return await minted(system, pool) == Decimal(expected)

    await eventually(check, what=f"{pool} pool minted {expected}")


async def test_two_months_of_settlements_checkout_refund_and_audit(program: System) -> None:
    await travel(program, D0 + timedelta(hours=1))
    r = await program.orders.post("/v1/merchants", json={"name": "M", "giveback_rate": "0.20"},
                                  headers=ADMIN)
    assert r.status_code == 201, r.text
    merchant = r.json()
    pos = {"X-API-Key": merchant["api_key"]}
    x, y, z, w, v, u = [await member(program) for _ in range(6)]

    # Period 1: 150,000 points = 15% of the 1,000,000 base, reached on day 1.
    for who, amount in ((x, "1000.00"), (y, "4000.00"), (z, "745000.00")):
        await buy(program, pos, who, amount)
    await wait_minted(program, "consumer", "150000.00")
    assert await settle(program, "consumer", D0 + timedelta(days=10, seconds=-1)) == []
    first = await settle(program, "consumer", D0 + timedelta(days=10))
    assert [s["number"] for s in first] == [1]

    # Periods 2, 3, 4: each grows the pool by exactly 15% on its first day.
    for number, (who, amount) in enumerate(
        ((w, "862500.00"), (v, "991875.00"), (u, "1140656.25")), start=2
    ):
        start = D0 + timedelta(days=10 * (number - 1))
        await travel(program, start + timedelta(hours=1))
        await buy(program, pos, who, amount)
        await wait_minted(program, "consumer", str(Decimal(amount) / 5))
        done = await settle(program, "consumer", start + timedelta(days=10))
        assert [s["number"] for s in done] == [number]

    # GP-3: X (200.00 points of cohort 1) receives 1.00, 1.15, 1.32, 1.52 vouchers.
    async def x_paid() -> list[str] | None:
        entries = (await wallet(program, x))["entries"]
        paid = sorted((e for e in entries if e["reason"] == "settlement"),
                      key=lambda e: e["created_at"])
        return [e["amount"] for e in paid] if len(paid) == 4 else None

    assert await eventually(x_paid, what="X's four settlement payouts") == [
        "1.00", "1.15", "1.32", "1.52"
    ]
    assert await vouchers_of(program, x) == Decimal("4.99")
    assert await vouchers_of(program, y) == Decimal("4.00") + Decimal("4.60") + Decimal(
        "5.29") + Decimal("6.08")  # 800 points: 4.00, 4.60, 5.29, 6.0835 -> 6.08

    # Day 40: X spends all 4.99 vouchers at checkout; points are earned on the cash part.
    await travel(program, D0 + timedelta(days=40, hours=1))
    order = await buy(program, pos, x, "100.00", voucher_amount="4.99")
    assert order["cash_amount"] == "95.01"

    async def x_spent() -> bool:
        return await vouchers_of(program, x) == Decimal("0.00")

    await eventually(x_spent, what="X's vouchers captured")
    r = await program.vouchers.get(f"/v1/merchants/{merchant['merchant_id']}/receivable",
                                   headers=ADMIN)
    assert r.status_code == 200, r.text
    assert Decimal(r.json()["amount"]) == Decimal("4.99")  # M is owed the vouchers in cash

    # Spending the same vouchers again is refused and creates nothing.
    r = await program.orders.post(
        "/v1/orders", headers=pos,
        json={"order_id": "again", "consumer_id": x["member_id"], "amount": "10.00",
              "voucher_amount": "1.00"})
    assert r.status_code == 409, r.text

    # Y buys 500.00 and the POS refunds it in full: Y's points and coins of it go back.
    y_coins_before = Decimal((await wallet(program, y))["balances"]["coins"])
    refunded = await buy(program, pos, y, "500.00")

    async def y_coins_up() -> bool:
        coins = Decimal((await wallet(program, y))["balances"]["coins"])
        return coins == y_coins_before + Decimal("5.00")

    await eventually(y_coins_up, what="Y's coins for the order to be refunded")
    r = await program.orders.post(f"/v1/orders/{refunded['order_id']}/refunds",
                                  json={"refund_id": "R-1", "amount": "500.00"}, headers=pos)
    assert r.status_code == 201, r.text

    async def y_coins_back() -> bool:
        coins = Decimal((await wallet(program, y))["balances"]["coins"])
        return coins == y_coins_before

    await eventually(y_coins_back, what="Y's coins reversed by the refund")
    # Period 5 holds only X's 95.01 * 20% = 19.00 points: Y's 100.00 were reversed.
    await wait_minted(program, "consumer", "19.00")

    # Day 61: two months in. The merchant pool (10,000,000 base) never reached 15%, so
    # its periods were forced at day 31 and day 61; the consumer pool's period 5 is due
    # (forced) only on day 70.
    await travel(program, D0 + timedelta(days=61))
    await settle(program, "merchant", D0 + timedelta(days=61))
    assert await settle(program, "consumer", D0 + timedelta(days=61)) == []
    r = await program.points.get("/v1/pools/merchant/settlements", headers=ADMIN)
    assert r.status_code == 200, r.text
    merchant_settlements = r.json()
    listed = merchant_settlements.get("settlements", merchant_settlements)
    assert [s["number"] for s in sorted(listed, key=lambda s: s["number"])] == [1, 2]
    assert all(s["forced"] for s in listed)

    # The books: every check of the audit passes once the last payouts are credited.
    async def audit_ok() -> dict[str, Any] | None:
        r = await program.points.get("/v1/audit", headers=ADMIN)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["ok"] else None

    audit = await eventually(audit_ok, what="a passing audit", timeout=60)
    assert len(audit["checks"]) >= 6
