"""RULES 1.4: a consumer scans a merchant's code and is bound to it, first binding wins."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from services.referrals.models import Binding
from shared.events import MemberBound
from tests.integration.referrals.support import ADMIN, T0, Service, bearer


async def test_first_scan_binds_the_consumer(service: Service) -> None:
    consumer = await service.register()
    merchant_id = await service.merchant()

    response = await service.scan(consumer, merchant_id)

    assert response.status_code == 201
    binding = response.json()
    assert binding["consumer_id"] == consumer["member_id"]
    assert binding["merchant_id"] == str(merchant_id)
    assert binding["source"] == "scan"
    assert datetime.fromisoformat(binding["bound_at"]) == T0
    read = await service.client.get(
        f"/v1/members/{consumer['member_id']}/binding", headers=bearer(consumer["token"])
    )
    assert read.json() == binding
    me = await service.client.get(
        f"/v1/members/{consumer['member_id']}", headers=bearer(consumer["token"])
    )
    assert me.json()["bound_merchant_id"] == str(merchant_id)
    [event] = await service.events(MemberBound)
    assert (str(event.consumer_id), event.merchant_id, event.source) == (
        consumer["member_id"], merchant_id, "scan",
    )


async def test_scanning_the_same_merchant_again_returns_the_binding(service: Service) -> None:
    consumer = await service.register()
    merchant_id = await service.merchant()
    first = await service.scan(consumer, merchant_id)
    service.clock.set(T0 + timedelta(days=3))

    again = await service.scan(consumer, merchant_id)

    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(await service.events(MemberBound)) == 1


async def test_scanning_another_merchant_is_refused_binding_is_permanent(
    service: Service,
) -> None:
    consumer = await service.register()
    first_merchant, second_merchant = await service.merchant(), await service.merchant()
    await service.scan(consumer, first_merchant)

    response = await service.scan(consumer, second_merchant)

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "already_bound"
    assert str(first_merchant) in body["detail"]
    assert "permanent" in body["detail"]
    assert body["bound_merchant_id"] == str(first_merchant)
    read = await service.client.get(
        f"/v1/members/{consumer['member_id']}/binding", headers=ADMIN
    )
    assert read.json()["merchant_id"] == str(first_merchant)
    assert len(await service.events(MemberBound)) == 1


async def test_unknown_merchant_is_refused_naming_merchant_id(service: Service) -> None:
    consumer = await service.register()
    other_consumer = await service.register()

    for not_a_merchant in (uuid.uuid4(), other_consumer["member_id"]):
        response = await service.scan(consumer, not_a_merchant)
        assert response.status_code == 422
        assert response.json()["fields"][0]["field"] == "merchant_id"
        assert str(not_a_merchant) in response.json()["detail"]
    assert await service.count(Binding) == 0
    unbound = await service.client.get(
        f"/v1/members/{consumer['member_id']}/binding", headers=ADMIN
    )
    assert unbound.status_code == 404


async def test_malformed_merchant_id_is_refused_naming_it(service: Service) -> None:
    consumer = await service.register()

    response = await service.client.post(
        "/v1/bindings", json={"merchant_id": "shop-42"}, headers=bearer(consumer["token"])
    )

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "merchant_id"
    assert await service.count(Binding) == 0


async def test_a_merchant_member_cannot_bind(service: Service) -> None:
    merchant_id, other_merchant = await service.merchant(), await service.merchant()
    token = (await service.client.post(f"/v1/members/{merchant_id}/tokens", headers=ADMIN)).json()[
        "token"
    ]

    for target in (merchant_id, other_merchant):
        response = await service.client.post(
            "/v1/bindings", json={"merchant_id": str(target)}, headers=bearer(token)
        )
        assert response.status_code == 403
        assert "merchant member" in response.json()["detail"]
    assert await service.count(Binding) == 0


async def test_binding_needs_a_member_token(service: Service) -> None:
    merchant_id = await service.merchant()

    anonymous = await service.client.post("/v1/bindings", json={"merchant_id": str(merchant_id)})
    admin = await service.client.post(
        "/v1/bindings", json={"merchant_id": str(merchant_id)}, headers=ADMIN
    )

    assert anonymous.status_code == 401
    assert admin.status_code == 403
    assert await service.count(Binding) == 0


async def test_merchant_sees_the_consumers_bound_to_it(service: Service) -> None:
    merchant_id, other_merchant = await service.merchant(), await service.merchant()
    alice, bob, carol = [await service.register() for _ in range(3)]
    await service.scan(alice, merchant_id)
    service.clock.set(T0 + timedelta(hours=1))
    await service.scan(bob, merchant_id)
    await service.scan(carol, other_merchant)
    token = (await service.client.post(f"/v1/members/{merchant_id}/tokens", headers=ADMIN)).json()[
        "token"
    ]

    mine = await service.client.get(
        f"/v1/members/{merchant_id}/bound-consumers", headers=bearer(token)
    )
    theirs = await service.client.get(
        f"/v1/members/{other_merchant}/bound-consumers", headers=bearer(token)
    )

    assert mine.status_code == 200
    assert mine.json()["total"] == 2
    assert [b["consumer_id"] for b in mine.json()["bindings"]] == [
        alice["member_id"], bob["member_id"],
    ]
    assert theirs.status_code == 403


async def test_two_simultaneous_first_scans_bind_once(service: Service) -> None:
    consumer = await service.register()
    first_merchant, second_merchant = await service.merchant(), await service.merchant()

    responses = await asyncio.gather(
        service.scan(consumer, first_merchant), service.scan(consumer, second_merchant)
    )

    assert sorted(r.status_code for r in responses) == [201, 409]
    [winner] = [r.json()["merchant_id"] for r in responses if r.status_code == 201]
    assert len(await service.events(MemberBound)) == 1
    read = await service.client.get(f"/v1/members/{consumer['member_id']}/binding", headers=ADMIN)
    assert read.json()["merchant_id"] == winner
