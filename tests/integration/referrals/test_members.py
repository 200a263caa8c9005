"""Sign-up with and without an invite code, reading members, and merchants as members."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt

from services.referrals.domain import is_invite_code
from services.referrals.models import Member
from shared.auth import TOKEN_AUDIENCE
from shared.events import MemberRegistered
from shared.outbox import OutboxMessage
from tests.integration.referrals.support import (
    ADMIN,
    T0,
    Service,
    bearer,
    merchant_registered,
)


async def test_sign_up_without_invite_code(service: Service) -> None:
    response = await service.client.post("/v1/members", json={})

    assert response.status_code == 201
    member = response.json()
    assert member["kind"] == "consumer"
    assert member["inviter_id"] is None
    assert member["bound_merchant_id"] is None
    assert is_invite_code(member["invite_code"])
    assert datetime.fromisoformat(member["registered_at"]) == T0
    # The token that came back is the member's key to their own data.
    me = await service.client.get(
        f"/v1/members/{member['member_id']}", headers=bearer(member["token"])
    )
    assert me.status_code == 200
    assert me.json()["invite_code"] == member["invite_code"]
    [event] = await service.events(MemberRegistered)
    assert (event.member_id, event.kind, event.inviter_id) == (
        UUID(member["member_id"]), "consumer", None,
    )


async def test_sign_up_with_no_body_at_all(service: Service) -> None:
    response = await service.client.post("/v1/members")

    assert response.status_code == 201
    assert response.json()["inviter_id"] is None


async def test_sign_up_with_invite_code_links_the_inviter(service: Service) -> None:
    inviter = await service.register()
    typed = f"{inviter['invite_code'][:4].lower()}-{inviter['invite_code'][4:]}"

    invitee = await service.register(invite_code=typed)

    assert invitee["inviter_id"] == inviter["member_id"]
    assert invitee["invite_code"] != inviter["invite_code"]
    listed = await service.client.get(
        f"/v1/members/{inviter['member_id']}/invitees", headers=bearer(inviter["token"])
    )
    assert listed.status_code == 200
    assert listed.json()["total"] == 1
    assert [i["member_id"] for i in listed.json()["invitees"]] == [invitee["member_id"]]
    events = await service.events(MemberRegistered)
    assert events[-1].inviter_id == UUID(inviter["member_id"])


async def test_unknown_invite_code_is_refused_and_creates_nothing(service: Service) -> None:
    await service.register()
    members_before = await service.count(Member)
    events_before = await service.count(OutboxMessage)

    response = await service.client.post("/v1/members", json={"invite_code": "ZZZZ9999"})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unknown_invite_code"
    assert "invite_code" in body["detail"]
    assert body["fields"][0]["field"] == "invite_code"
    assert await service.count(Member) == members_before
    assert await service.count(OutboxMessage) == events_before


async def test_malformed_invite_code_is_refused_naming_the_field(service: Service) -> None:
    members_before = await service.count(Member)

    response = await service.client.post("/v1/members", json={"invite_code": "AB0O1I"})

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "invite_code"
    assert "8 characters" in response.json()["detail"]
    assert await service.count(Member) == members_before


async def test_unexpected_field_is_refused_naming_it(service: Service) -> None:
    response = await service.client.post("/v1/members", json={"inviteCode": "ABCD2345"})

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "inviteCode"
    assert await service.count(Member) == 0


async def test_inviter_is_fixed_at_sign_up_and_always_registered_earlier(
    service: Service,
) -> None:
    """RULES 1.5: no self-invites, no cycles: a code exists only once its holder does."""
    first = await service.register()
    service.clock.set(T0 + timedelta(minutes=1))
    second = await service.register(invite_code=first["invite_code"])
    service.clock.set(T0 + timedelta(minutes=2))
    third = await service.register(invite_code=second["invite_code"])

    chain = []
    current: str | None = third["member_id"]
    while current is not None:
        member = (await service.client.get(f"/v1/members/{current}", headers=ADMIN)).json()
        chain.append((member["member_id"], member["registered_at"]))
        current = member["inviter_id"]
    assert [member_id for member_id, _ in chain] == [
        third["member_id"], second["member_id"], first["member_id"],
    ]
    assert [at for _, at in chain] == sorted((at for _, at in chain), reverse=True)
    # Nothing can change an inviter afterwards.
    patched = await service.client.patch(
        f"/v1/members/{first['member_id']}",
        json={"inviter_id": third["member_id"]}, headers=ADMIN,
    )
    assert patched.status_code == 405
    first_now = await service.client.get(f"/v1/members/{first['member_id']}", headers=ADMIN)
    assert first_now.json()["inviter_id"] is None


async def test_member_reads_only_its_own_data(service: Service) -> None:
    alice, bob = await service.register(), await service.register()

    for path in ("", "/invitees", "/binding"):
        url = f"/v1/members/{bob['member_id']}{path}"
        response = await service.client.get(url, headers=bearer(alice["token"]))
        assert response.status_code == 403, path
        assert "own" in response.json()["detail"]
    own = await service.client.get(
        f"/v1/members/{alice['member_id']}", headers=bearer(alice["token"])
    )
    assert own.status_code == 200


async def test_missing_or_forged_token_is_unauthorized(service: Service) -> None:
    member = await service.register()
    url = f"/v1/members/{member['member_id']}"
    forged = jwt.encode(
        {"sub": member["member_id"], "aud": TOKEN_AUDIENCE,
         "exp": int((datetime.now(UTC) + timedelta(days=1)).timestamp())},
        "not-the-platform-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )

    missing = await service.client.get(url)
    forged_response = await service.client.get(url, headers=bearer(forged))

    assert missing.status_code == 401
    assert forged_response.status_code == 401
    assert "not a valid" in forged_response.json()["detail"]


async def test_admin_reads_every_member_and_unknown_is_404(service: Service) -> None:
    member = await service.register()

    found = await service.client.get(f"/v1/members/{member['member_id']}", headers=ADMIN)
    missing = await service.client.get(f"/v1/members/{uuid.uuid4()}", headers=ADMIN)

    assert found.status_code == 200
    assert found.json()["member_id"] == member["member_id"]
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


async def test_merchant_registered_creates_the_merchant_member(service: Service) -> None:
    event = merchant_registered()

    assert await service.deliver(event)

    response = await service.client.get(f"/v1/members/{event.merchant_id}", headers=ADMIN)
    assert response.status_code == 200
    merchant = response.json()
    assert merchant["member_id"] == str(event.merchant_id)
    assert merchant["kind"] == "merchant"
    assert is_invite_code(merchant["invite_code"])
    assert datetime.fromisoformat(merchant["registered_at"]) == event.registered_at
    [announced] = await service.events(MemberRegistered)
    assert (announced.member_id, announced.kind) == (event.merchant_id, "merchant")


async def test_merchant_registered_twice_creates_one_member(service: Service) -> None:
    event = merchant_registered()
    envelope = event.envelope(producer="orders")

    assert await service.deliver(envelope)
    assert not await service.deliver(envelope)  # the same delivery again
    assert await service.deliver(event)  # the same fact, republished under a new event id

    assert await service.count(Member) == 1
    assert len(await service.events(MemberRegistered)) == 1


async def test_merchant_invite_code_invites_consumers(service: Service) -> None:
    merchant_id = await service.merchant()
    code = (await service.client.get(f"/v1/members/{merchant_id}", headers=ADMIN)).json()[
        "invite_code"
    ]

    invitee = await service.register(invite_code=code)

    assert invitee["inviter_id"] == str(merchant_id)


async def test_admin_issues_a_token_for_a_merchant_member(service: Service) -> None:
    merchant_id = await service.merchant()
    consumer = await service.register()

    issued = await service.client.post(f"/v1/members/{merchant_id}/tokens", headers=ADMIN)
    by_member = await service.client.post(
        f"/v1/members/{merchant_id}/tokens", headers=bearer(consumer["token"])
    )
    unknown = await service.client.post(f"/v1/members/{uuid.uuid4()}/tokens", headers=ADMIN)

    assert issued.status_code == 201
    token = issued.json()["token"]
    own = await service.client.get(f"/v1/members/{merchant_id}", headers=bearer(token))
    assert own.status_code == 200
    assert own.json()["kind"] == "merchant"
    assert by_member.status_code == 403
    assert unknown.status_code == 404
