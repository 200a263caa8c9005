"""Checkout holds (RULES 1.6): hold, capture on order completion, release, expiry, refund."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from services.vouchers import repository, service
from services.vouchers.app import expire_holds_job
from services.vouchers.settings import VouchersSettings
from shared.clock import FixedClock
from tests.integration.vouchers.conftest import (
    START,
    D,
    account_balance,
    admin,
    assert_books_right,
    balances,
    completed,
    credit,
    db_of,
    deliver,
    entry_count,
    member,
    refunded,
    totals,
    wallet,
)


def hold_body(
    member_id: UUID, amount: str, merchant_id: UUID, hold_id: UUID | None = None
) -> dict[str, Any]:
    return {
        "hold_id": str(hold_id or uuid.uuid4()),
        "member_id": str(member_id),
        "amount": amount,
        "merchant_id": str(merchant_id),
        "pos_order_id": "pos-1",
    }


async def place(
    client: httpx.AsyncClient, settings: VouchersSettings, body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/v1/holds", json=body, headers=admin(settings))


@pytest.fixture
def consumer() -> UUID:
    return uuid.uuid4()


@pytest.fixture
def merchant() -> UUID:
    return uuid.uuid4()


async def test_a_hold_moves_vouchers_aside_until_the_order_completes(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)

    response = await place(client, settings, body)

    assert response.status_code == 201, response.text
    hold = response.json()
    assert hold["status"] == "held"
    assert hold["amount"] == "30.00"
    expires = datetime.fromisoformat(hold["expires_at"])
    assert expires == START + timedelta(seconds=settings.hold_ttl_seconds)
    assert await balances(client, settings, consumer) == {
        "vouchers": D("20.00"), "vouchers_held": D("30.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }

    order = completed(consumer, merchant, voucher_amount="30.00", hold_id=UUID(body["hold_id"]))
    await deliver(app, order)

    assert await balances(client, settings, consumer) == {
        "vouchers": D("20.00"), "vouchers_held": D("0.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }
    receivable = await client.get(f"/v1/merchants/{merchant}/receivable",
                                  headers=member(settings, merchant))
    assert receivable.status_code == 200, receivable.text
    assert receivable.json()["amount"] == "30.00"
    assert receivable.json()["entries"][0]["order_id"] == str(order.order_id)
    read = await client.get(f"/v1/holds/{body['hold_id']}", headers=member(settings, consumer))
    assert read.json()["status"] == "captured"
    assert read.json()["order_id"] == str(order.order_id)
    assert_books_right(await totals(client, settings))


async def test_a_hold_larger_than_the_available_vouchers_is_refused_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "20.00")
    entries = await entry_count(app)
    body = hold_body(consumer, "20.01", merchant)

    response = await place(client, settings, body)

    assert response.status_code == 409
    assert response.json()["error"] == "insufficient_vouchers"
    assert "20.00" in response.json()["detail"]
    assert response.json()["available"] == "20.00"
    assert (await balances(client, settings, consumer))["vouchers"] == D("20.00")
    assert await entry_count(app) == entries
    missing = await client.get(f"/v1/holds/{body['hold_id']}", headers=admin(settings))
    assert missing.status_code == 404


async def test_a_member_who_never_earned_cannot_hold(
    client: httpx.AsyncClient, settings: VouchersSettings, merchant: UUID
) -> None:
    response = await place(client, settings, hold_body(uuid.uuid4(), "0.01", merchant))
    assert response.status_code == 409
    assert response.json()["available"] == "0.00"


async def test_the_same_hold_replayed_answers_the_same_hold_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    first = await place(client, settings, body)

    again = await place(client, settings, body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (await balances(client, settings, consumer))["vouchers"] == D("20.00")


async def test_the_same_hold_id_with_another_body_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)

    response = await place(client, settings, body | {"amount": "10.00"})

    assert response.status_code == 409
    assert response.json()["error"] == "hold_id_reused"
    assert (await balances(client, settings, consumer))["vouchers_held"] == D("30.00")


async def test_bad_hold_requests_name_the_field_and_change_nothing(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    entries = await entry_count(app)
    for field, value in (("amount", "-1.00"), ("amount", "1.001"), ("member_id", "bob")):
        response = await place(client, settings, hold_body(consumer, "1.00", merchant)
                               | {field: value})
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]
    member_token = await client.post(
        "/v1/holds", json=hold_body(consumer, "1.00", merchant), headers=member(settings, consumer)
    )
    assert member_token.status_code == 403
    assert await entry_count(app) == entries


async def test_two_holds_racing_for_the_same_vouchers_exactly_one_wins(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, merchant: UUID
) -> None:
    for _ in range(3):  # a few rounds, each with a fresh wallet, to give the race a chance
        consumer = uuid.uuid4()
        await credit(app, consumer, "50.00")

        responses = await asyncio.gather(
            place(client, settings, hold_body(consumer, "30.00", merchant)),
            place(client, settings, hold_body(consumer, "40.00", merchant)),
        )

        assert sorted(r.status_code for r in responses) == [201, 409]
        won = next(r for r in responses if r.status_code == 201).json()
        lost = next(r for r in responses if r.status_code == 409).json()
        assert lost["error"] == "insufficient_vouchers"
        assert await balances(client, settings, consumer) == {
            "vouchers": D("50.00") - D(won["amount"]), "vouchers_held": D(won["amount"]),
            "coins": D("0.00"), "cash": D("0.00"),
        }
    assert_books_right(await totals(client, settings))


async def test_a_released_hold_gives_the_vouchers_back_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)

    first = await client.post(f"/v1/holds/{body['hold_id']}/release", headers=admin(settings))
    again = await client.post(f"/v1/holds/{body['hold_id']}/release", headers=admin(settings))

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["status"] == "released"
    assert (await balances(client, settings, consumer))["vouchers"] == D("50.00")
    assert (await balances(client, settings, consumer))["vouchers_held"] == D("0.00")
    capture = await client.post(f"/v1/holds/{body['hold_id']}/capture", headers=admin(settings))
    assert capture.status_code == 409
    assert capture.json()["error"] == "hold_not_capturable"


async def test_a_captured_hold_cannot_be_released_and_capture_is_idempotent(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)
    order_id = uuid.uuid4()
    url = f"/v1/holds/{body['hold_id']}"

    first = await client.post(f"{url}/capture", json={"order_id": str(order_id)},
                              headers=admin(settings))
    again = await client.post(f"{url}/capture", headers=admin(settings))
    release = await client.post(f"{url}/release", headers=admin(settings))

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["status"] == "captured"
    assert again.json()["order_id"] == str(order_id)
    assert release.status_code == 409
    assert release.json()["error"] == "hold_not_releasable"
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("30.00")
    assert (await balances(client, settings, consumer))["vouchers"] == D("20.00")
    # The order's completion event later captures nothing more.
    await deliver(app, completed(consumer, merchant, voucher_amount="30.00",
                                 hold_id=UUID(body["hold_id"]), order_id=order_id))
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("30.00")


async def test_unknown_holds_are_not_found(
    client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    for verb in ("capture", "release"):
        response = await client.post(f"/v1/holds/{uuid.uuid4()}/{verb}", headers=admin(settings))
        assert response.status_code == 404


async def test_a_member_reads_only_its_own_holds(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "5.00")
    body = hold_body(consumer, "5.00", merchant)
    await place(client, settings, body)

    other = await client.get(f"/v1/holds/{body['hold_id']}", headers=member(settings, merchant))
    assert other.status_code == 403


async def test_the_expiry_sweep_releases_only_holds_past_their_time(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, clock: FixedClock,
    consumer: UUID, merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    old = hold_body(consumer, "10.00", merchant)
    await place(client, settings, old)
    clock.set(START + timedelta(minutes=10))
    young = hold_body(consumer, "15.00", merchant)
    await place(client, settings, young)

    clock.set(START + timedelta(seconds=900))
    assert await service.expire_due_holds(db_of(app), clock.now()) == 1
    assert await service.expire_due_holds(db_of(app), clock.now()) == 0

    assert await balances(client, settings, consumer) == {
        "vouchers": D("35.00"), "vouchers_held": D("15.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }
    expired = (await client.get(f"/v1/holds/{old['hold_id']}", headers=admin(settings))).json()
    assert expired["status"] == "expired"
    assert (await wallet(client, settings, consumer))["entries"][0]["reason"] == (
        "voucher_hold_expired"
    )
    release = await client.post(f"/v1/holds/{old['hold_id']}/release", headers=admin(settings))
    assert release.status_code == 200
    assert (await balances(client, settings, consumer))["vouchers"] == D("35.00")


async def test_the_sweep_works_through_many_expired_holds_in_batches(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, clock: FixedClock,
    consumer: UUID, merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    for _ in range(7):
        assert (await place(client, settings, hold_body(consumer, "1.00", merchant))).status_code \
            == 201

    clock.set(START + timedelta(hours=1))
    assert await service.expire_due_holds(db_of(app), clock.now(), batch=3) == 7

    assert (await balances(client, settings, consumer))["vouchers"] == D("50.00")
    figures = await totals(client, settings)
    assert figures["vouchers"]["holds_by_status"] == {"expired": 7}
    assert_books_right(figures)


async def test_an_order_completing_after_its_hold_expired_pays_from_the_free_vouchers(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, clock: FixedClock,
    consumer: UUID, merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)
    clock.set(START + timedelta(hours=1))
    await service.expire_due_holds(db_of(app), clock.now())

    await deliver(app, completed(consumer, merchant, voucher_amount="30.00",
                                 hold_id=UUID(body["hold_id"])))

    assert (await balances(client, settings, consumer))["vouchers"] == D("20.00")
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("30.00")
    assert (await totals(client, settings))["unrecovered"]["vouchers"] == "0.00"


async def test_a_late_capture_the_wallet_cannot_cover_is_recorded_unrecovered(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)
    await client.post(f"/v1/holds/{body['hold_id']}/release", headers=admin(settings))
    # Meanwhile the freed vouchers paid for another order.
    other = hold_body(consumer, "45.00", merchant)
    await place(client, settings, other)

    await deliver(app, completed(consumer, merchant, voucher_amount="30.00",
                                 hold_id=UUID(body["hold_id"])))

    assert (await balances(client, settings, consumer))["vouchers"] == D("0.00")
    assert (await balances(client, settings, consumer))["vouchers_held"] == D("45.00")
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("30.00")
    figures = await totals(client, settings)
    assert figures["unrecovered"]["vouchers"] == "25.00"
    assert figures["vouchers"]["captured_unrecovered"] == "25.00"
    assert_books_right(figures)


async def test_an_order_that_used_fewer_vouchers_than_held_releases_the_rest(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)

    await deliver(app, completed(consumer, merchant, voucher_amount="12.00",
                                 hold_id=UUID(body["hold_id"])))

    assert await balances(client, settings, consumer) == {
        "vouchers": D("38.00"), "vouchers_held": D("0.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("12.00")


async def test_order_completed_twice_and_after_a_crash_captures_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)
    envelope = completed(consumer, merchant, voucher_amount="30.00",
                         hold_id=UUID(body["hold_id"])).envelope(producer="orders")
    real = repository.insert_entries
    calls = 0

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)
        if calls == 1:
            raise ConnectionResetError("lost the database before commit")

    monkeypatch.setattr(repository, "insert_entries", crash_once)

    with pytest.raises(ConnectionResetError):
        await deliver(app, envelope)
    assert (await balances(client, settings, consumer))["vouchers_held"] == D("30.00")
    assert await deliver(app, envelope) is True
    assert await deliver(app, envelope) is False

    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("30.00")
    assert await balances(client, settings, consumer) == {
        "vouchers": D("20.00"), "vouchers_held": D("0.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }


async def test_a_refund_gives_the_captured_vouchers_back_once(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    body = hold_body(consumer, "30.00", merchant)
    await place(client, settings, body)
    order = completed(consumer, merchant, voucher_amount="30.00", hold_id=UUID(body["hold_id"]))
    await deliver(app, order)

    partial = refunded(order, voucher_amount="10.00", amount="40.00").envelope(producer="orders")
    assert await deliver(app, partial) is True
    assert await deliver(app, partial) is False

    assert (await balances(client, settings, consumer))["vouchers"] == D("30.00")
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("20.00")
    entry = (await wallet(client, settings, consumer))["entries"][0]
    assert (entry["reason"], entry["amount"], entry["order_id"]) == (
        "voucher_refund", "10.00", str(order.order_id)
    )

    # The rest of the order, then a refund claiming more than was ever captured.
    await deliver(app, refunded(order, voucher_amount="20.00", amount="60.00"))
    await deliver(app, refunded(order, voucher_amount="5.00", amount="5.00"))

    assert (await balances(client, settings, consumer))["vouchers"] == D("50.00")
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("0.00")
    figures = await totals(client, settings)
    assert figures["vouchers"]["captured"] == "30.00"
    assert figures["vouchers"]["returned"] == "30.00"
    assert_books_right(figures)


async def test_a_refund_without_vouchers_changes_no_wallet(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    order = completed(consumer, merchant, voucher_amount="0.00", hold_id=None)
    await deliver(app, order)
    entries = await entry_count(app)

    await deliver(app, refunded(order, voucher_amount="0.00", amount="100.00"))

    assert await entry_count(app) == entries


async def test_an_order_naming_a_hold_never_placed_pays_from_the_free_vouchers(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "8.00")
    order = completed(consumer, merchant, voucher_amount="10.00", hold_id=uuid.uuid4())

    await deliver(app, order)

    assert (await balances(client, settings, consumer))["vouchers"] == D("0.00")
    assert await account_balance(app, f"merchant:{merchant}:receivable") == D("10.00")
    assert (await totals(client, settings))["unrecovered"]["vouchers"] == "2.00"
    # Refunding it gives back what the consumer paid; the rest cancels the loss.
    await deliver(app, refunded(order, voucher_amount="10.00", amount="100.00"))
    assert (await balances(client, settings, consumer))["vouchers"] == D("8.00")
    figures = await totals(client, settings)
    assert figures["unrecovered"]["vouchers"] == "0.00"
    assert figures["merchant_receivables"] == "0.00"
    assert_books_right(figures)


async def test_the_background_job_releases_expired_holds(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, clock: FixedClock,
    consumer: UUID, merchant: UUID,
) -> None:
    await credit(app, consumer, "50.00")
    await place(client, settings, hold_body(consumer, "10.00", merchant))
    clock.set(START + timedelta(seconds=settings.hold_ttl_seconds))

    job = asyncio.create_task(expire_holds_job(app))
    try:
        for _ in range(500):  # its first sweep runs at once; wait for it, not for a timer
            if (await balances(client, settings, consumer))["vouchers_held"] == D("0.00"):
                break
            await asyncio.sleep(0.01)
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job

    assert (await balances(client, settings, consumer))["vouchers"] == D("50.00")


async def test_a_release_and_a_new_hold_racing_on_one_wallet_both_succeed(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings, consumer: UUID,
    merchant: UUID,
) -> None:
    await credit(app, consumer, "100.00")
    for _ in range(5):
        first = hold_body(consumer, "10.00", merchant)
        await place(client, settings, first)

        release, second = await asyncio.gather(
            client.post(f"/v1/holds/{first['hold_id']}/release", headers=admin(settings)),
            place(client, settings, hold_body(consumer, "5.00", merchant)),
        )

        assert (release.status_code, second.status_code) == (200, 201)
    assert await balances(client, settings, consumer) == {
        "vouchers": D("75.00"), "vouchers_held": D("25.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }
