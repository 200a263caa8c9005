"""Reading wallets, receivables and the audit totals: who may see what, and paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from fastapi import FastAPI

from services.vouchers.settings import VouchersSettings
from shared.auth import TOKEN_AUDIENCE, issue_member_token
from tests.integration.vouchers.conftest import (
    D,
    admin,
    assert_books_right,
    credit,
    deliver,
    member,
    paid_out,
    payout,
    totals,
)


async def test_a_member_reads_its_own_wallet_and_no_one_elses(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await credit(app, alice, "5.00")
    url = f"/v1/members/{alice}/wallet"

    own = await client.get(url, headers=member(settings, alice))
    other = await client.get(url, headers=member(settings, bob))
    missing = await client.get(url)
    forged_token = jwt.encode(
        {"sub": str(alice), "aud": TOKEN_AUDIENCE, "exp": datetime.now(UTC) + timedelta(days=1)},
        "not-the-platform-secret-but-long-enough-0123456789",
        algorithm="HS256",
    )
    forged = await client.get(url, headers={"Authorization": f"Bearer {forged_token}"})
    expired = await client.get(url, headers={"Authorization": "Bearer " + issue_member_token(
        settings, alice, now=datetime.now(UTC) - timedelta(days=365))})

    assert own.status_code == 200
    assert own.json()["balances"]["vouchers"] == "5.00"
    assert other.status_code == 403
    assert "vouchers" not in other.text
    assert (missing.status_code, forged.status_code, expired.status_code) == (401, 401, 401)
    assert missing.json()["error"] == "unauthorized"


async def test_a_member_who_never_earned_has_an_empty_wallet(
    client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()

    response = await client.get(f"/v1/members/{m}/wallet", headers=member(settings, m))

    assert response.status_code == 200
    assert response.json() == {
        "member_id": str(m),
        "balances": {"vouchers": "0.00", "vouchers_held": "0.00", "coins": "0.00",
                     "cash": "0.00"},
        "entries": [],
        "next_cursor": None,
    }


async def test_the_history_pages_newest_first_without_gaps_or_repeats(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    for i in range(1, 8):
        await deliver(app, paid_out(payout(m, f"{i}.00", order_id=uuid.uuid4())))
    url = f"/v1/members/{m}/wallet"

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        body = (await client.get(url, params=params, headers=member(settings, m))).json()
        seen += [e["amount"] for e in body["entries"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == [f"{i}.00" for i in range(7, 0, -1)]
    assert body["balances"]["vouchers"] == "28.00"


async def test_bad_paging_parameters_are_refused(
    client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    url = f"/v1/members/{m}/wallet"
    too_many = await client.get(url, params={"limit": "201"}, headers=member(settings, m))
    bad_cursor = await client.get(url, params={"cursor": "abc"}, headers=member(settings, m))
    assert too_many.status_code == 422
    assert "limit" in too_many.json()["detail"]
    assert bad_cursor.status_code == 422
    assert "cursor" in bad_cursor.json()["detail"]


async def test_a_merchant_reads_only_its_own_receivable(
    client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    merchant, other = uuid.uuid4(), uuid.uuid4()
    url = f"/v1/merchants/{merchant}/receivable"

    own = await client.get(url, headers=member(settings, merchant))
    by_admin = await client.get(url, headers=admin(settings))
    by_other = await client.get(url, headers=member(settings, other))

    assert own.json() == {"merchant_id": str(merchant), "amount": "0.00", "entries": [],
                          "next_cursor": None}
    assert by_admin.status_code == 200
    assert by_other.status_code == 403


async def test_admin_totals_add_up_for_the_audit(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    merchant = uuid.uuid4()
    await deliver(app, paid_out(
        payout(a, "50.00", reason="invite_reward", order_id=uuid.uuid4()),
        payout(b, "10.00", reason="binding_reward", order_id=uuid.uuid4()),
        payout(a, "10.00", asset="coins", reason="gold_coins", order_id=uuid.uuid4()),
    ))
    hold = {"hold_id": str(uuid.uuid4()), "member_id": str(a), "amount": "20.00",
            "merchant_id": str(merchant)}
    assert (await client.post("/v1/holds", json=hold, headers=admin(settings))).status_code == 201
    await client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=admin(settings))
    open_hold = hold | {"hold_id": str(uuid.uuid4()), "amount": "5.00"}
    await client.post("/v1/holds", json=open_hold, headers=admin(settings))
    await client.post(f"/v1/members/{a}/coins/redemptions", headers=member(settings, a),
                      json={"redemption_id": "r", "amount": "4.00"})

    figures = await totals(client, settings)

    assert figures["payouts"] == {"count": 3, "total": "70.00"}
    assert figures["credited_by_asset"] == {"vouchers": "60.00", "coins": "10.00",
                                            "cash": "0.00"}
    assert {(c["asset"], c["reason"], c["amount"]) for c in figures["credited"]} == {
        ("vouchers", "invite_reward", "50.00"), ("vouchers", "binding_reward", "10.00"),
        ("coins", "gold_coins", "10.00"),
    }
    assert figures["wallets"] == {"vouchers": "35.00", "vouchers_held": "5.00",
                                  "coins": "6.00", "cash": "0.00"}
    assert figures["merchant_receivables"] == "20.00"
    assert figures["coins_redeemed"] == "4.00"
    assert figures["vouchers"]["held"] == "5.00"
    assert figures["vouchers"]["captured"] == "20.00"
    assert figures["vouchers"]["holds_by_status"] == {"captured": 1, "held": 1}
    assert figures["unrecovered"] == {"vouchers": "0.00", "coins": "0.00", "cash": "0.00"}
    # Σ wallets + receivables + redeemed + unrecovered = Σ credited
    assert D("35.00") + D("5.00") + D("20.00") == D(figures["credited_by_asset"]["vouchers"])
    assert_books_right(figures)


async def test_only_the_admin_reads_the_totals(
    client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    response = await client.get("/v1/admin/totals", headers=member(settings, uuid.uuid4()))
    assert response.status_code == 403


async def test_every_route_is_documented_in_the_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {
        "/v1/members/{member_id}/wallet", "/v1/holds", "/v1/holds/{hold_id}",
        "/v1/holds/{hold_id}/capture", "/v1/holds/{hold_id}/release",
        "/v1/members/{member_id}/coins/redemptions", "/v1/merchants/{merchant_id}/receivable",
        "/v1/admin/totals",
    } <= set(paths)
    for path in paths.values():
        for operation in path.values():
            assert operation.get("description") or operation.get("summary")
