"""Merchants: registration with a give-back rate (RULES 1.1), POS keys per terminal."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from services.orders.models import Merchant
from shared.auth import member_id_from_token
from shared.outbox import OutboxMessage
from tests.integration.orders.conftest import T0, Harness


async def test_admin_registers_a_merchant_and_its_first_key_works(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/merchants",
        json={"name": "  Green Grocer ", "giveback_rate": "0.15"},
        headers=harness.admin,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    merchant_id = uuid.UUID(body["merchant_id"])
    assert body["name"] == "Green Grocer"
    assert body["giveback_rate"] == "0.15"
    assert member_id_from_token(harness.settings, body["member_token"]) == merchant_id
    read = await harness.client.get(
        f"/v1/merchants/{merchant_id}", headers={"X-API-Key": body["api_key"]}
    )
    assert read.status_code == 200
    assert read.json()["giveback_rate"] == "0.15"
    assert body["api_key"] not in read.text  # the key itself is shown only once
    [event] = await harness.events("merchant.registered")
    assert event.data == {
        "merchant_id": str(merchant_id),
        "name": "Green Grocer",
        "giveback_rate": "0.15",
        "registered_at": T0.isoformat().replace("+00:00", "Z"),
    }


BAD_RATES: dict[str, Any] = {
    "below 0.10": "0.09",
    "above 0.20": "0.21",
    "JSON number above": 0.25,
    "three decimals": "0.125",
    "not a number": "abc",
    "missing": None,
}


async def test_a_rate_outside_the_rules_is_refused_and_nothing_is_created(
    harness: Harness,
) -> None:
    for case, rate in BAD_RATES.items():
        body: dict[str, Any] = {"name": "Bad Rate Shop"}
        if rate is not None:
            body["giveback_rate"] = rate

        response = await harness.client.post("/v1/merchants", json=body, headers=harness.admin)

        assert response.status_code == 422, (case, response.text)
        assert "giveback_rate" in response.json()["detail"], case
        assert [f["field"] for f in response.json()["fields"]] == ["giveback_rate"], case
    assert await harness.count(Merchant) == 0
    assert await harness.count(OutboxMessage) == 0


async def test_only_the_admin_registers_merchants(harness: Harness) -> None:
    body = {"name": "Sneaky", "giveback_rate": "0.20"}
    anonymous = await harness.client.post("/v1/merchants", json=body)
    member = await harness.client.post(
        "/v1/merchants", json=body, headers=harness.member_auth(uuid.uuid4())
    )

    assert anonymous.status_code == 401
    assert member.status_code == 403
    assert await harness.count(Merchant) == 0


async def test_each_terminal_gets_its_own_key_and_a_revoked_key_stops_working(
    harness: Harness,
) -> None:
    merchant = await harness.merchant()
    harness.clock.set(T0 + timedelta(minutes=1))
    issued = await harness.client.post(
        f"/v1/merchants/{merchant.merchant_id}/api-keys",
        json={"terminal": "till 2"},
        headers=harness.admin,
    )
    assert issued.status_code == 201, issued.text
    second = issued.json()
    assert second["api_key"] != merchant.api_key
    consumer = harness.consumer()

    via_second = await harness.client.post(
        "/v1/orders",
        json={"order_id": "T2-1", "consumer_id": str(consumer), "amount": "10.00"},
        headers={"X-API-Key": second["api_key"]},
    )
    assert via_second.status_code == 201
    assert via_second.json()["merchant_id"] == str(merchant.merchant_id)

    revoked = await harness.client.delete(
        f"/v1/merchants/{merchant.merchant_id}/api-keys/{second['key_id']}",
        headers=harness.admin,
    )
    assert revoked.status_code == 204
    after = await harness.client.get("/v1/orders/T2-1", headers={"X-API-Key": second["api_key"]})
    assert after.status_code == 401
    still = await harness.client.get("/v1/orders/T2-1", headers=merchant.pos)
    assert still.status_code == 200
    keys = (
        await harness.client.get(f"/v1/merchants/{merchant.merchant_id}", headers=harness.admin)
    ).json()["api_keys"]
    assert [(k["terminal"], k["revoked_at"] is not None) for k in keys] == [
        ("default", False),
        ("till 2", True),
    ]


async def test_a_key_for_an_unknown_merchant_is_404(harness: Harness) -> None:
    response = await harness.client.post(
        f"/v1/merchants/{uuid.uuid4()}/api-keys", headers=harness.admin
    )
    assert response.status_code == 404


async def test_a_merchant_is_readable_only_by_the_admin_itself_or_its_keys(
    harness: Harness,
) -> None:
    mine = await harness.merchant("Mine")
    other = await harness.merchant("Other")
    url = f"/v1/merchants/{mine.merchant_id}"

    assert (await harness.client.get(url)).status_code == 401
    assert (await harness.client.get(url, headers=other.pos)).status_code == 403
    assert (await harness.client.get(url, headers={"X-API-Key": "pos_forged"})).status_code == 401
    other_member = {"Authorization": f"Bearer {other.member_token}"}
    assert (await harness.client.get(url, headers=other_member)).status_code == 403
    own_member = {"Authorization": f"Bearer {mine.member_token}"}
    assert (await harness.client.get(url, headers=own_member)).status_code == 200
    assert (await harness.client.get(url, headers=harness.admin)).status_code == 200
