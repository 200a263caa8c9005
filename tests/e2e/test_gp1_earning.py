"""RULES 1.1 example GP-1, played over HTTP against the running system.

Merchant M sells 1000.00 to consumer C, who is bound to merchant B and was invited by
member I. Everyone then reads their points and wallet from the services.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx

from tests.e2e.conftest import ADMIN, System, bearer, eventually


async def create_merchant(system: System, name: str, rate: str) -> dict[str, Any]:
    r = await system.orders.post("/v1/merchants", json={"name": name, "giveback_rate": rate},
                                 headers=ADMIN)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def register(system: System, invite_code: str | None = None) -> dict[str, Any]:
    payload = {"invite_code": invite_code} if invite_code else {}
    r = await system.referrals.post("/v1/members", json=payload)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def points_of(system: System, member_id: str, token: str) -> dict[str, Any]:
    r = await system.points.get(f"/v1/members/{member_id}/points", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wallet_of(system: System, member_id: str, token: str) -> dict[str, Any]:
    r = await system.vouchers.get(f"/v1/members/{member_id}/wallet", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def money(value: str) -> Decimal:
    return Decimal(value)


async def test_gp1_order_earns_what_rules_say_and_a_replay_changes_nothing(
    system: System,
) -> None:
    bound_merchant = await create_merchant(system, "B 绿色便利店", "0.20")
    merchant = await create_merchant(system, "M 超市", "0.20")
    inviter = await register(system)
    consumer = await register(system, invite_code=inviter["invite_code"])
    assert consumer["inviter_id"] == inviter["member_id"]

    # C scans B's QR code. Referrals learns about B from orders' events, so retry.
    async def bind() -> httpx.Response | None:
        r = await system.referrals.post(
            "/v1/bindings", json={"merchant_id": bound_merchant["merchant_id"]},
            headers=bearer(consumer["token"]),
        )
        return r if r.status_code == 201 else None

    await eventually(bind, what="binding C to B")

    pos = {"X-API-Key": merchant["api_key"]}
    order_body = {"order_id": f"GP1-{uuid.uuid4().hex[:8]}", "consumer_id": consumer["member_id"],
                  "amount": "1000.00"}
    r = await system.orders.post("/v1/orders", json=order_body, headers=pos)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["cash_amount"] == "1000.00"

    # C +200.00 consumer points, M +200.00 merchant points.
    async def c_points() -> dict[str, Any] | None:
        p = await points_of(system, consumer["member_id"], consumer["token"])
        return p if money(p["consumer_points"]) > 0 else None

    c = await eventually(c_points, what="C's consumer points")
    assert money(c["consumer_points"]) == Decimal("200.00")
    m = await eventually(
        lambda: _nonzero(points_of(system, merchant["merchant_id"], merchant["member_token"]),
                         "merchant_points"),
        what="M's merchant points",
    )
    assert money(m["merchant_points"]) == Decimal("200.00")

    # Wallets: C +10.00 coins, B +10.00 vouchers (binding), I +50.00 vouchers (invite).
    c_wallet = await eventually(
        lambda: _nonzero(wallet_of(system, consumer["member_id"], consumer["token"]), "coins"),
        what="C's coins",
    )
    assert money(c_wallet["balances"]["coins"]) == Decimal("10.00")
    b_wallet = await eventually(
        lambda: _nonzero(wallet_of(system, bound_merchant["merchant_id"],
                                   bound_merchant["member_token"]), "vouchers"),
        what="B's binding reward",
    )
    assert money(b_wallet["balances"]["vouchers"]) == Decimal("10.00")
    i_wallet = await eventually(
        lambda: _nonzero(wallet_of(system, inviter["member_id"], inviter["token"]), "vouchers"),
        what="I's invite reward",
    )
    assert money(i_wallet["balances"]["vouchers"]) == Decimal("50.00")
    # Every wallet entry names the order it came from.
    assert {e["order_id"] for e in i_wallet["entries"]} == {order["id"]}
    assert {e["order_id"] for e in b_wallet["entries"]} == {order["id"]}

    # R = 140.00 -> consumer pool fund +70.00, merchant pool fund +70.00.
    r = await system.points.get("/v1/pools", headers=ADMIN)
    assert r.status_code == 200, r.text
    funds = {p["pool"]: money(p["fund_balance"]) for p in r.json()["pools"]}
    before = dict(funds)

    # The POS posts the same order again: the same order, nothing new.
    r = await system.orders.post("/v1/orders", json=order_body, headers=pos)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == order["id"]
    # ... and with another amount: refused.
    r = await system.orders.post("/v1/orders", json={**order_body, "amount": "999.00"},
                                 headers=pos)
    assert r.status_code == 409, r.text

    # A later order of C (same partition, so processed after anything the replay could
    # have caused) proves the replay added nothing: everything grows by this order only.
    r = await system.orders.post(
        "/v1/orders",
        json={"order_id": f"GP1-{uuid.uuid4().hex[:8]}", "consumer_id": consumer["member_id"],
              "amount": "100.00"},
        headers=pos,
    )
    assert r.status_code == 201, r.text

    async def second_order_rewarded() -> dict[str, Any] | None:
        w = await wallet_of(system, inviter["member_id"], inviter["token"])
        return w if money(w["balances"]["vouchers"]) == Decimal("55.00") else None

    await eventually(second_order_rewarded, what="the second order's invite reward")
    c = await points_of(system, consumer["member_id"], consumer["token"])
    assert money(c["consumer_points"]) == Decimal("220.00")

    async def c_coins_after() -> dict[str, Any] | None:
        w = await wallet_of(system, consumer["member_id"], consumer["token"])
        return w if money(w["balances"]["coins"]) == Decimal("11.00") else None

    await eventually(c_coins_after, what="C's coins after the second order")

    async def b_after() -> dict[str, Any] | None:
        w = await wallet_of(system, bound_merchant["merchant_id"], bound_merchant["member_token"])
        return w if money(w["balances"]["vouchers"]) == Decimal("11.00") else None

    await eventually(b_after, what="B's binding reward for the second order")

    async def pools_after() -> dict[str, Decimal] | None:
        r = await system.points.get("/v1/pools", headers=ADMIN)
        now = {p["pool"]: money(p["fund_balance"]) for p in r.json()["pools"]}
        # Second order: G 20.00, binding 1.00, invite 5.00, R 14.00 -> 7.00 / 7.00.
        expected = {k: v + Decimal("7.00") for k, v in before.items()}
        return now if now == expected else None

    await eventually(pools_after, what="pool funds after the second order")
    assert before == {"consumer": Decimal("70.00"), "merchant": Decimal("70.00")}


async def _nonzero(read: Any, field: str) -> dict[str, Any] | None:
    body: dict[str, Any] = await read
    value = body["balances"][field] if "balances" in body else body[field]
    return body if Decimal(value) > 0 else None


async def test_bad_requests_over_http_change_nothing(system: System) -> None:
    merchant = await create_merchant(system, "M2", "0.15")
    other = await create_merchant(system, "Other", "0.10")
    consumer = await register(system)
    pos = {"X-API-Key": merchant["api_key"]}

    r = await system.orders.post("/v1/merchants", json={"name": "x", "giveback_rate": "0.25"},
                                 headers=ADMIN)
    assert r.status_code == 422
    assert "giveback_rate" in r.text

    for amount in ("-1.00", "0", "10.001", "99999999999.00"):
        r = await system.orders.post(
            "/v1/orders", json={"order_id": "BAD-1", "consumer_id": consumer["member_id"],
                                "amount": amount}, headers=pos)
        assert r.status_code == 422, (amount, r.text)
        assert "amount" in r.json()["detail"]

    json_headers = {**pos, "Content-Type": "application/json"}
    r = await system.orders.post(
        "/v1/orders", content=b'{"order_id": "BAD-2", "amount": ', headers=json_headers
    )
    assert r.status_code == 400
    assert r.json()["error"] == "malformed_json"

    r = await system.orders.post(
        "/v1/orders", json={"order_id": "BAD-3", "consumer_id": str(uuid.uuid4()),
                            "amount": "10.00"}, headers=pos)
    assert r.status_code == 422
    assert "consumer" in r.text

    r = await system.orders.post(
        "/v1/orders", json={"order_id": "OK-1", "consumer_id": consumer["member_id"],
                            "amount": "10.00"}, headers={"X-API-Key": "pos_forged"})
    assert r.status_code == 401

    # Another merchant's key cannot see this merchant's order.
    r = await system.orders.post(
        "/v1/orders", json={"order_id": "OK-1", "consumer_id": consumer["member_id"],
                            "amount": "10.00"}, headers=pos)
    assert r.status_code == 201
    r = await system.orders.get("/v1/orders/OK-1", headers={"X-API-Key": other["api_key"]})
    assert r.status_code == 404
    for bad in ("BAD-1", "BAD-2", "BAD-3"):
        r = await system.orders.get(f"/v1/orders/{bad}", headers=pos)
        assert r.status_code == 404, bad

    # A member token reads only its own data; a forged one reads nothing.
    stranger = await register(system)
    r = await system.points.get(f"/v1/members/{consumer['member_id']}/points",
                                headers=bearer(stranger["token"]))
    assert r.status_code == 403
    r = await system.vouchers.get(f"/v1/members/{consumer['member_id']}/wallet",
                                  headers=bearer("not-a-token"))
    assert r.status_code == 401
