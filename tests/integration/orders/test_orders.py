"""Order intake: idempotent on the POS's order id, validated, with the event recorded in
the same transaction (RULES 1.1), and vouchers held at checkout (RULES 1.6)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.orders import repository
from services.orders.domain import voucher_hold_id
from services.orders.models import KnownMember, Order
from tests.integration.orders.conftest import T0, Harness


async def test_an_order_is_recorded_with_its_completed_event(harness: Harness) -> None:
    merchant = await harness.merchant(rate="0.15")
    consumer = harness.consumer()

    response = await harness.order(merchant, consumer, "1000.00", order_id="T1-0001")

    assert response.status_code == 201, response.text
    order = response.json()
    assert order == {
        "id": order["id"],
        "order_id": "T1-0001",
        "merchant_id": str(merchant.merchant_id),
        "consumer_id": str(consumer),
        "amount": "1000.00",
        "voucher_amount": "0.00",
        "cash_amount": "1000.00",
        "giveback_rate": "0.15",
        "status": "completed",
        "created_at": "2024-03-15T10:00:00Z",
        "refunded_amount": "0.00",
        "refunded_voucher_amount": "0.00",
        "refunded_cash_amount": "0.00",
    }
    [event] = await harness.events("order.completed")
    assert event.key == str(consumer)
    assert event.data == {
        "order_id": order["id"],
        "pos_order_id": "T1-0001",
        "merchant_id": str(merchant.merchant_id),
        "consumer_id": str(consumer),
        "amount": "1000.00",
        "voucher_amount": "0.00",
        "cash_amount": "1000.00",
        "giveback_rate": "0.15",
        "completed_at": "2024-03-15T10:00:00Z",
        "voucher_hold_id": None,
    }
    detail = await harness.client.get("/v1/orders/T1-0001", headers=merchant.pos)
    assert detail.status_code == 200
    assert detail.json()["id"] == order["id"]
    assert detail.json()["refunds"] == []


async def test_the_same_order_sent_again_is_answered_200_with_the_same_order(
    harness: Harness,
) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    first = await harness.order(merchant, consumer, "99.50")
    harness.clock.set(T0 + timedelta(minutes=5))

    again = await harness.client.post(
        "/v1/orders",
        json={"order_id": "T1-0001", "consumer_id": str(consumer).upper(), "amount": 99.5},
        headers=merchant.pos,
    )

    assert first.status_code == 201
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert await harness.count(Order) == 1
    assert len(await harness.events("order.completed")) == 1


async def test_the_same_order_id_with_another_body_is_409_and_changes_nothing(
    harness: Harness,
) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    first = await harness.order(merchant, consumer, "100.00")

    changed = await harness.order(merchant, consumer, "120.00")

    assert changed.status_code == 409, changed.text
    assert changed.json()["error"] == "idempotency_conflict"
    assert changed.json()["differing_fields"] == ["amount"]
    assert "recorded 100.00, sent 120.00" in changed.json()["detail"]
    stored = await harness.client.get("/v1/orders/T1-0001", headers=merchant.pos)
    assert stored.json()["amount"] == first.json()["amount"] == "100.00"
    assert len(await harness.events("order.completed")) == 1


async def test_concurrent_copies_of_one_order_create_exactly_one(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()

    responses = await asyncio.gather(
        *(harness.order(merchant, consumer, "250.00", order_id="T1-RACE") for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await harness.count(Order) == 1
    assert len(await harness.events("order.completed")) == 1


def _body(consumer: uuid.UUID, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"order_id": "T1-BAD", "consumer_id": str(consumer), "amount": "10.00"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


BAD_ORDER_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("negative", {"amount": "-5.00"}, "amount"),
    ("zero", {"amount": "0.00"}, "amount"),
    ("three decimals", {"amount": "10.005"}, "amount"),
    ("absurdly large", {"amount": "10000000.01"}, "amount"),
    ("not a number", {"amount": "NaN"}, "amount"),
    ("vouchers over amount", {"voucher_amount": "10.01"}, "voucher_amount"),
    ("negative vouchers", {"voucher_amount": "-1.00"}, "voucher_amount"),
    ("order id with a space", {"order_id": "T1 0001"}, "order_id"),
    ("order id too long", {"order_id": "x" * 65}, "order_id"),
    ("empty order id", {"order_id": ""}, "order_id"),
    ("consumer not a uuid", {"consumer_id": "not-a-uuid"}, "consumer_id"),
    ("consumer missing", {"consumer_id": None}, "consumer_id"),
]


async def test_bad_order_input_is_422_naming_the_field_and_records_nothing(
    harness: Harness,
) -> None:
    # One database for all cases (each case is still checked on its own).
    merchant = await harness.merchant()
    consumer = harness.consumer()
    before = await harness.snapshot()

    for case, changes, field in BAD_ORDER_INPUTS:
        response = await harness.client.post(
            "/v1/orders", json=_body(consumer, **changes), headers=merchant.pos
        )

        assert response.status_code == 422, (case, response.text)
        assert field in [f["field"] for f in response.json()["fields"]], case
        assert await harness.snapshot() == before, case


async def test_unknown_consumer_is_422_and_records_nothing(harness: Harness) -> None:
    merchant = await harness.merchant()
    stranger = uuid.uuid4()
    before = await harness.snapshot()

    response = await harness.order(merchant, stranger)

    assert response.status_code == 422
    assert response.json()["error"] == "unknown_consumer"
    assert "consumer_id" in response.json()["detail"]
    assert str(stranger) in response.json()["detail"]
    assert await harness.snapshot() == before


async def test_a_merchant_cannot_buy_at_its_own_shop(harness: Harness) -> None:
    merchant = await harness.merchant()
    before = await harness.snapshot()

    response = await harness.order(merchant, merchant.merchant_id)

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "consumer_id"
    assert await harness.snapshot() == before


async def test_a_merchant_may_buy_at_another_shop(harness: Harness) -> None:
    shop = await harness.merchant("Shop")
    buyer = await harness.merchant("Buying Merchant")

    response = await harness.order(shop, buyer.merchant_id)

    assert response.status_code == 201, response.text
    assert harness.peers.member_lookups == []  # orders registered that member itself


async def test_a_member_unknown_locally_is_asked_of_referrals_once_and_remembered(
    harness: Harness,
) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()

    first = await harness.order(merchant, consumer, order_id="T1-1")
    second = await harness.order(merchant, consumer, order_id="T1-2")

    assert (first.status_code, second.status_code) == (201, 201)
    assert harness.peers.member_lookups == [consumer]


async def test_referrals_unreachable_is_503_and_records_nothing(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    harness.peers.referrals_down = True
    before = await harness.snapshot()

    response = await harness.order(merchant, consumer)

    assert response.status_code == 503
    assert "referrals" in response.json()["detail"]
    assert await harness.snapshot() == before


async def test_an_order_without_a_valid_pos_key_is_401(harness: Harness) -> None:
    await harness.merchant()
    before = await harness.snapshot()
    cases = {
        "missing": {},
        "forged": {"X-API-Key": "pos_forged-key"},
        "admin token is no POS key": {"Authorization": "Bearer dev-admin-token"},
    }

    for case, headers in cases.items():
        response = await harness.client.post(
            "/v1/orders", json=_body(harness.consumer()), headers=headers
        )

        assert response.status_code == 401, case
        assert "X-API-Key" in response.json()["detail"], case
    assert await harness.snapshot() == before


async def test_malformed_json_is_400(harness: Harness) -> None:
    merchant = await harness.merchant()
    before = await harness.snapshot()

    response = await harness.client.post(
        "/v1/orders",
        content=b'{"order_id": "T1", "amount": ',
        headers={**merchant.pos, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert await harness.snapshot() == before


async def test_another_merchants_key_cannot_see_or_refund_an_order(harness: Harness) -> None:
    owner = await harness.merchant("Owner")
    other = await harness.merchant("Other")
    await harness.order(owner, harness.consumer(), "50.00", order_id="T1-SECRET")
    before = await harness.snapshot()

    looked_up = await harness.client.get("/v1/orders/T1-SECRET", headers=other.pos)
    refunded = await harness.refund(other, "T1-SECRET", "R1", "50.00")

    assert looked_up.status_code == 404
    assert refunded.status_code == 404
    assert await harness.snapshot() == before
    order = (await harness.client.get("/v1/orders/T1-SECRET", headers=owner.pos)).json()
    assert order["refunded_amount"] == "0.00"


async def test_a_member_reads_their_own_orders_newest_first(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    for minute, order_id in enumerate(["T1-A", "T1-B", "T1-C"]):
        harness.clock.set(T0 + timedelta(minutes=minute))
        await harness.order(merchant, consumer, "10.00", order_id=order_id)
    await harness.order(merchant, harness.consumer(), "10.00", order_id="T1-SOMEONE-ELSE")
    url = f"/v1/members/{consumer}/orders"

    mine = await harness.client.get(url, headers=harness.member_auth(consumer))
    by_admin = await harness.client.get(url, params={"limit": 2}, headers=harness.admin)
    by_other = await harness.client.get(url, headers=harness.member_auth(uuid.uuid4()))

    assert mine.status_code == 200
    assert [o["order_id"] for o in mine.json()] == ["T1-C", "T1-B", "T1-A"]
    assert [o["order_id"] for o in by_admin.json()] == ["T1-C", "T1-B"]
    assert by_other.status_code == 403
    assert (await harness.client.get(url)).status_code == 401


# --- vouchers at checkout (RULES 1.6) ---------------------------------------------------


async def test_vouchers_are_held_once_with_the_deterministic_hold_id(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer(vouchers="80.00")

    first = await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")
    again = await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["cash_amount"] == "250.00"
    hold_id = voucher_hold_id(merchant.merchant_id, "T1-0001")
    assert harness.peers.hold_calls == [
        {
            "hold_id": str(hold_id),
            "member_id": str(consumer),
            "amount": "50.00",
            "merchant_id": str(merchant.merchant_id),
            "pos_order_id": "T1-0001",
        }
    ]
    [event] = await harness.events("order.completed")
    assert event.data["voucher_amount"] == "50.00"
    assert event.data["cash_amount"] == "250.00"
    assert event.data["voucher_hold_id"] == str(hold_id)


async def test_insufficient_vouchers_is_409_and_records_no_order(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer(vouchers="20.00")
    before = await harness.snapshot()

    response = await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")

    assert response.status_code == 409, response.text
    assert response.json()["error"] == "insufficient_vouchers"
    assert "balance 20.00" in response.json()["detail"]
    # The member learned from referrals is remembered; no order, no event.
    assert await harness.snapshot() == (before[0], 0, 0, before[3] + 1, before[4])


async def test_vouchers_unreachable_is_503_and_records_no_order(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer(vouchers="80.00")
    harness.peers.vouchers_down = True

    response = await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")

    assert response.status_code == 503
    assert await harness.count(Order) == 0
    assert await harness.events("order.completed") == []


async def test_a_hold_is_released_when_the_order_cannot_be_recorded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer(vouchers="80.00")

    def broken_outbox(*_: Any, **__: Any) -> None:
        raise RuntimeError("database went away")

    with monkeypatch.context() as patch:
        patch.setattr(repository, "record", broken_outbox)
        with pytest.raises(RuntimeError, match="database went away"):
            await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")

    assert harness.peers.release_calls == [voucher_hold_id(merchant.merchant_id, "T1-0001")]
    assert harness.peers.balances[consumer] == Decimal("80.00")
    assert await harness.count(Order) == 0
    # The released hold cannot pay for a retry under the same order id: a clear 409.
    retry = await harness.order(merchant, consumer, "300.00", voucher_amount="50.00")
    assert retry.status_code == 409
    assert retry.json()["error"] == "voucher_hold_closed"
    assert "new order_id" in retry.json()["detail"]
    assert await harness.count(Order) == 0
    fresh = await harness.order(
        merchant, consumer, "300.00", order_id="T1-0001-B", voucher_amount="50.00"
    )
    assert fresh.status_code == 201


# --- batch upload for terminals that were offline ---------------------------------------


async def test_a_batch_records_each_order_as_if_posted_alone(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    await harness.order(merchant, consumer, "10.00", order_id="T1-OLD")
    items: list[Any] = [
        {"order_id": "T1-OLD", "consumer_id": str(consumer), "amount": "10.00"},
        {"order_id": "T1-N1", "consumer_id": str(consumer), "amount": "20.00"},
        {"order_id": "T1-N2", "consumer_id": str(consumer), "amount": "-1"},
        {"order_id": "T1-N3", "consumer_id": str(uuid.uuid4()), "amount": "5.00"},
        {"order_id": "T1-N1", "consumer_id": str(consumer), "amount": "21.00"},
        "not an order",
        {"order_id": "T1-N4", "consumer_id": str(consumer), "amount": "40.00"},
    ]

    response = await harness.client.post(
        "/v1/orders/batch", json={"orders": items}, headers=merchant.pos
    )

    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [(r["order_id"], r["status"]) for r in results] == [
        ("T1-OLD", 200),
        ("T1-N1", 201),
        ("T1-N2", 422),
        ("T1-N3", 422),
        ("T1-N1", 409),
        (None, 422),
        ("T1-N4", 201),
    ]
    assert results[2]["error"]["fields"][0]["field"] == "amount"
    assert results[3]["error"]["error"] == "unknown_consumer"
    assert results[4]["error"]["error"] == "idempotency_conflict"
    assert (body["created"], body["replayed"], body["failed"]) == (2, 1, 4)
    assert await harness.count(Order) == 3
    completed = await harness.events("order.completed")
    assert [e.data["pos_order_id"] for e in completed] == ["T1-OLD", "T1-N1", "T1-N4"]


async def test_a_batch_over_500_orders_is_refused_whole(harness: Harness) -> None:
    merchant = await harness.merchant()
    consumer = harness.consumer()
    items = [
        {"order_id": f"T1-{i}", "consumer_id": str(consumer), "amount": "1.00"} for i in range(501)
    ]

    response = await harness.client.post(
        "/v1/orders/batch", json={"orders": items}, headers=merchant.pos
    )

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "orders"
    assert await harness.count(Order) == 0
    assert await harness.count(KnownMember) == 1  # only the merchant itself
