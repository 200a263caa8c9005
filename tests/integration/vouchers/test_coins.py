"""Gold coin redemptions (RULES 1.1): spent once, never overspent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from uuid import UUID

import httpx
from fastapi import FastAPI

from services.vouchers.settings import VouchersSettings
from tests.integration.vouchers.conftest import (
    D,
    admin,
    assert_books_right,
    balances,
    credit,
    entry_count,
    member,
    totals,
    wallet,
)


async def redeem(
    client: httpx.AsyncClient, settings: VouchersSettings, member_id: UUID, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/v1/members/{member_id}/coins/redemptions", json=body, headers=member(settings, member_id)
    )


async def test_a_member_spends_coins_in_the_mall(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")

    response = await redeem(client, settings, m,
                            {"redemption_id": "order-77", "amount": "7.50", "item": "tea"})

    assert response.status_code == 201, response.text
    assert response.json()["coins_left"] == "2.50"
    assert response.json()["redemption_id"] == "order-77"
    entry = (await wallet(client, settings, m))["entries"][0]
    assert (entry["asset"], entry["amount"], entry["reason"], entry["redemption_id"]) == (
        "coins", "-7.50", "coin_redemption", "order-77"
    )
    figures = await totals(client, settings)
    assert figures["coins_redeemed"] == "7.50"
    assert_books_right(figures)


async def test_a_replayed_redemption_answers_the_same_and_debits_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    body = {"redemption_id": "r-1", "amount": "4.00"}

    first = await redeem(client, settings, m, body)
    again = await redeem(client, settings, m, body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (await balances(client, settings, m))["coins"] == D("6.00")


async def test_a_redemption_id_reused_with_another_body_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    await redeem(client, settings, m, {"redemption_id": "r-1", "amount": "4.00"})

    response = await redeem(client, settings, m, {"redemption_id": "r-1", "amount": "5.00"})

    assert response.status_code == 409
    assert response.json()["error"] == "redemption_id_reused"
    assert (await balances(client, settings, m))["coins"] == D("6.00")


async def test_redeeming_more_than_the_balance_is_refused_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    entries = await entry_count(app)

    response = await redeem(client, settings, m, {"redemption_id": "big", "amount": "10.01"})

    assert response.status_code == 409
    assert response.json()["error"] == "insufficient_coins"
    assert "10.00" in response.json()["detail"]
    assert (await balances(client, settings, m))["coins"] == D("10.00")
    assert await entry_count(app) == entries
    # The refused reference is free: the same id with an amount that fits goes through.
    retry = await redeem(client, settings, m, {"redemption_id": "big", "amount": "10.00"})
    assert retry.status_code == 201
    assert retry.json()["coins_left"] == "0.00"


async def test_concurrent_redemptions_never_overspend(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")

    responses = await asyncio.gather(
        *(redeem(client, settings, m, {"redemption_id": f"r-{i}", "amount": "3.00"})
          for i in range(5))
    )

    assert sorted(r.status_code for r in responses) == [201, 201, 201, 409, 409]
    assert (await balances(client, settings, m))["coins"] == D("1.00")
    assert sorted(r.json()["coins_left"] for r in responses if r.status_code == 201) == [
        "1.00", "4.00", "7.00"
    ]
    assert_books_right(await totals(client, settings))


async def test_concurrent_replays_of_one_redemption_debit_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    body = {"redemption_id": "same", "amount": "3.00"}

    responses = await asyncio.gather(*(redeem(client, settings, m, body) for _ in range(3)))

    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert (await balances(client, settings, m))["coins"] == D("7.00")


async def test_only_the_member_spends_its_coins(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m, thief = uuid.uuid4(), uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    url = f"/v1/members/{m}/coins/redemptions"
    body = {"redemption_id": "x", "amount": "1.00"}

    assert (await client.post(url, json=body, headers=member(settings, thief))).status_code == 403
    assert (await client.post(url, json=body, headers=admin(settings))).status_code == 403
    assert (await client.post(url, json=body)).status_code == 401
    assert (await balances(client, settings, m))["coins"] == D("10.00")


async def test_bad_redemptions_name_the_field(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "10.00", asset="coins")
    for body, field in (
        ({"redemption_id": "a", "amount": "0"}, "amount"),
        ({"redemption_id": "a", "amount": "1.005"}, "amount"),
        ({"redemption_id": "", "amount": "1.00"}, "redemption_id"),
        ({"amount": "1.00"}, "redemption_id"),
        ({"redemption_id": "a", "amount": "1.00", "coins": 3}, "coins"),
    ):
        response = await redeem(client, settings, m, body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["detail"]
    malformed = await client.post(
        f"/v1/members/{m}/coins/redemptions", content=b"{nope", headers=member(settings, m)
        | {"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert (await balances(client, settings, m))["coins"] == D("10.00")
