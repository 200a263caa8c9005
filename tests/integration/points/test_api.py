"""The points service's HTTP API: who may read what, and the answers' shapes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import jwt
import pytest
from sqlalchemy import text

from shared.auth import TOKEN_AUDIENCE

from .conftest import Points, binding, deliver, evaluated, member_headers, order_completed


async def test_a_member_reads_their_own_points(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m)
    await deliver(points, order)

    response = await points.client.get(f"/v1/members/{c}/points", headers=member_headers(points, c))

    assert response.status_code == 200
    body = response.json()
    assert body["member_id"] == str(c)
    assert (body["consumer_points"], body["merchant_points"]) == ("200.00", "0.00")
    assert body["entries"] == [
        {"order_id": str(order.order_id), "pool": "consumer", "cohort": 1, "points": "200.00",
         "created_at": "2024-03-20T12:00:00+08:00"}
    ]


async def test_a_member_with_nothing_has_zero_points(points: Points) -> None:
    nobody = uuid.uuid4()

    response = await points.client.get(
        f"/v1/members/{nobody}/points", headers=member_headers(points, nobody)
    )

    assert response.status_code == 200
    assert response.json() == {
        "member_id": str(nobody), "consumer_points": "0.00", "merchant_points": "0.00",
        "positions": [], "entries": [],
    }


async def test_a_member_cannot_read_another_members_points(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    await deliver(points, order_completed(c, m))

    response = await points.client.get(f"/v1/members/{c}/points", headers=member_headers(points, m))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def forged_token(member_id: uuid.UUID) -> str:
    claims = {"sub": str(member_id), "aud": TOKEN_AUDIENCE,
              "exp": int(datetime.now(UTC).timestamp()) + 3600}
    return jwt.encode(claims, "not-the-platform-secret-0123456789abcdef", algorithm="HS256")


@pytest.mark.parametrize("credential", ["missing", "forged", "garbage"])
async def test_points_need_a_valid_token(points: Points, credential: str) -> None:
    member = uuid.uuid4()
    headers = {
        "missing": {},
        "forged": {"Authorization": f"Bearer {forged_token(member)}"},
        "garbage": {"Authorization": "Bearer not-a-token"},
    }[credential]

    response = await points.client.get(f"/v1/members/{member}/points", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_the_admin_reads_any_members_points(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    await deliver(points, order_completed(c, m))

    response = await points.client.get(f"/v1/members/{m}/points", headers=points.admin)

    assert response.status_code == 200
    assert response.json()["merchant_points"] == "200.00"


async def test_a_malformed_member_id_is_named(points: Points) -> None:
    response = await points.client.get("/v1/members/not-a-uuid/points", headers=points.admin)

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "member_id"


async def test_pools_before_any_order_show_the_configured_first_periods(points: Points) -> None:
    response = await points.client.get("/v1/pools", headers=points.admin)

    assert response.status_code == 200
    body = response.json()
    assert (body["program"], body["timezone"]) == ("green_points", "Asia/Shanghai")
    consumer, merchant = body["pools"]
    assert consumer == {
        "pool": "consumer",
        "fund_balance": "0.00",
        "base_points": "1000000.00",
        "period": {
            "number": 1, "started_at": "2024-03-15T00:00:00+08:00",
            "reference_size": "1000000.00", "minted": "0.00", "growth": "0.000000",
            "growth_target": "0.15", "target_points": "150000.00", "target_reached": False,
            "target_reached_at": None,
        },
        "settlement": {
            "release_index": None,
            "next_settlement": {
                "number": 1, "period_started_at": "2024-03-15T00:00:00+08:00",
                "due_at": "2024-04-14T00:00:00+08:00", "settle_on_day": 31, "forced": True,
                "target_reached": False, "target_reached_at": None, "reached_on_day": None,
                "target_points": "150000.00", "points_to_target": "150000.00",
                "reason": "target not reached yet: needs 150000.00 more points; forced on "
                          "2024-04-14 00:00 (Asia/Shanghai) otherwise",
            },
            "last_settlement": None,
        },
    }
    assert merchant["pool"] == "merchant"
    assert merchant["period"]["started_at"] == "2024-01-18T00:00:00+08:00"
    assert merchant["period"]["reference_size"] == "10000000.00"


async def test_pools_after_an_order_keep_their_start_at_midnight_in_shanghai(
    points: Points,
) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m)
    await deliver(points, order)
    await deliver(points, evaluated(order, binding(uuid.uuid4())))

    body = (await points.client.get("/v1/pools", headers=points.admin)).json()

    consumer, merchant = body["pools"]
    assert consumer["period"]["started_at"] == "2024-03-15T00:00:00+08:00"
    # RULES 1.2: the merchant pool's periods 1 and 2 (from 2024-01-18) were settled, forced
    # at day 31, before the order of 2024-03-20 was minted: period 3 began 2024-03-18.
    assert merchant["period"]["number"] == 3
    assert merchant["period"]["started_at"] == "2024-03-18T00:00:00+08:00"
    assert consumer["period"]["growth"] == "0.000200"  # 200 / 1,000,000
    assert consumer["fund_balance"] == "95.00"  # (200 - 10) / 2
    # stored as the UTC instant, on SQLite and PostgreSQL alike
    async with points.app.state.db.read() as session:
        stored = (
            await session.exec(text("SELECT period_started_at FROM pools WHERE kind = 'consumer'"))
        ).one()[0]
    assert str(stored).startswith("2024-03-14 16:00:00")


@pytest.mark.parametrize("credential", ["member", "missing"])
async def test_pools_are_for_the_admin_only(points: Points, credential: str) -> None:
    headers = member_headers(points, uuid.uuid4()) if credential == "member" else {}

    response = await points.client.get("/v1/pools", headers=headers)

    assert response.status_code == (403 if credential == "member" else 401)


async def test_an_orders_allocation_is_for_the_admin_only(points: Points) -> None:
    c, m = uuid.uuid4(), uuid.uuid4()
    order = order_completed(c, m)
    await deliver(points, order)

    response = await points.client.get(
        f"/v1/orders/{order.order_id}/allocation", headers=member_headers(points, c)
    )

    assert response.status_code == 403


async def test_an_unknown_orders_allocation_is_not_found(points: Points) -> None:
    response = await points.client.get(
        f"/v1/orders/{uuid.uuid4()}/allocation", headers=points.admin
    )

    assert response.status_code == 404
    assert "no completed order" in response.json()["detail"]
