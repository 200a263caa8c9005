"""Refunds: several partial refunds up to the order amount, split proportionally into
vouchers and cash, idempotent on the POS's refund id (general rules, RULES 1.6)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.orders.models import Refund
from tests.integration.orders.conftest import T0, Harness, MerchantHandle


async def _voucher_order(harness: Harness) -> tuple[MerchantHandle, str]:
    """An order of 300.00, 100.00 of it paid with vouchers."""
    merchant = await harness.merchant()
    consumer = harness.consumer(vouchers="100.00")
    response = await harness.order(
        merchant, consumer, "300.00", order_id="T1-V", voucher_amount="100.00"
    )
    assert response.status_code == 201, response.text
    return merchant, response.json()["id"]


async def test_partial_refunds_then_the_rest_tie_out_to_the_fen(harness: Harness) -> None:
    merchant, order_uuid = await _voucher_order(harness)
    harness.clock.set(T0 + timedelta(hours=1))

    first = await harness.refund(merchant, "T1-V", "R1", "100.00")
    second = await harness.refund(merchant, "T1-V", "R2", "100.00")
    last = await harness.refund(merchant, "T1-V", "R3", "100.00")

    assert [r.status_code for r in (first, second, last)] == [201, 201, 201]
    parts = [(r.json()["voucher_amount"], r.json()["cash_amount"]) for r in (first, second, last)]
    assert parts == [("33.33", "66.67"), ("33.33", "66.67"), ("33.34", "66.66")]
    assert first.json()["order"]["status"] == "partially_refunded"
    order = last.json()["order"]
    assert order["status"] == "refunded"
    assert (order["refunded_amount"], order["refunded_voucher_amount"]) == ("300.00", "100.00")
    assert order["refunded_cash_amount"] == "200.00"
    events = await harness.events("order.refunded")
    assert [(e.data["pos_refund_id"], e.data["refunded_total"]) for e in events] == [
        ("R1", "100.00"),
        ("R2", "200.00"),
        ("R3", "300.00"),
    ]
    assert events[2].data == {
        "refund_id": last.json()["id"],
        "pos_refund_id": "R3",
        "order_id": order_uuid,
        "merchant_id": str(merchant.merchant_id),
        "consumer_id": order["consumer_id"],
        "amount": "100.00",
        "cash_amount": "66.66",
        "voucher_amount": "33.34",
        "order_amount": "300.00",
        "refunded_total": "300.00",
        "refunded_at": "2024-03-15T11:00:00Z",
    }
    detail = (await harness.client.get("/v1/orders/T1-V", headers=merchant.pos)).json()
    assert [r["refund_id"] for r in detail["refunds"]] == ["R1", "R2", "R3"]


async def test_a_full_refund_at_once_gives_back_all_vouchers_and_cash(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)

    response = await harness.refund(merchant, "T1-V", "R-ALL", "300.00")

    assert response.status_code == 201
    assert (response.json()["voucher_amount"], response.json()["cash_amount"]) == (
        "100.00",
        "200.00",
    )
    assert response.json()["order"]["status"] == "refunded"


async def test_refunding_more_than_is_left_is_422_saying_how_much_is_refundable(
    harness: Harness,
) -> None:
    merchant, _ = await _voucher_order(harness)
    await harness.refund(merchant, "T1-V", "R1", "250.00")
    before = await harness.snapshot()

    response = await harness.refund(merchant, "T1-V", "R2", "50.01")

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "refund_exceeds_order"
    assert body["fields"][0]["field"] == "amount"
    assert body["refundable"] == "50.00"
    assert "50.00 still refundable" in body["detail"]
    assert await harness.snapshot() == before


async def test_the_same_refund_again_is_200_and_counted_once(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)
    first = await harness.refund(merchant, "T1-V", "R1", "30.00")

    again = await harness.refund(merchant, "T1-V", "R1", "30")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["order"]["refunded_amount"] == "30.00"
    assert await harness.count(Refund) == 1
    assert len(await harness.events("order.refunded")) == 1


async def test_the_same_refund_id_with_another_amount_is_409_and_changes_nothing(
    harness: Harness,
) -> None:
    merchant, _ = await _voucher_order(harness)
    await harness.refund(merchant, "T1-V", "R1", "30.00")
    before = await harness.snapshot()

    response = await harness.refund(merchant, "T1-V", "R1", "40.00")

    assert response.status_code == 409
    assert response.json()["differing_fields"] == ["amount"]
    assert await harness.snapshot() == before
    order = (await harness.client.get("/v1/orders/T1-V", headers=merchant.pos)).json()
    assert order["refunded_amount"] == "30.00"


async def test_bad_refunds_are_refused_and_change_nothing(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)
    before = await harness.snapshot()

    zero = await harness.refund(merchant, "T1-V", "R1", "0.00")
    fractional = await harness.refund(merchant, "T1-V", "R1", "1.001")
    bad_id = await harness.refund(merchant, "T1-V", "R 1", "1.00")
    unknown_order = await harness.refund(merchant, "T1-NOPE", "R1", "1.00")
    no_key = await harness.client.post(
        "/v1/orders/T1-V/refunds", json={"refund_id": "R1", "amount": "1.00"}
    )

    assert [zero.status_code, fractional.status_code, bad_id.status_code] == [422, 422, 422]
    assert unknown_order.status_code == 404
    assert no_key.status_code == 401
    assert await harness.snapshot() == before


async def test_concurrent_copies_of_one_refund_count_once(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)

    responses = await asyncio.gather(
        *(harness.refund(merchant, "T1-V", "R1", "30.00") for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert await harness.count(Refund) == 1
    assert len(await harness.events("order.refunded")) == 1


async def test_concurrent_refunds_never_exceed_the_order(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)

    responses = await asyncio.gather(
        *(harness.refund(merchant, "T1-V", f"R{i}", "100.00") for i in range(4))
    )

    assert sorted(r.status_code for r in responses) == [201, 201, 201, 422]
    order = (await harness.client.get("/v1/orders/T1-V", headers=merchant.pos)).json()
    assert order["refunded_amount"] == "300.00"
    assert order["refunded_voucher_amount"] == "100.00"
    assert len(await harness.events("order.refunded")) == 3


async def test_admin_totals_tie_out_orders_and_refunds_to_the_fen(harness: Harness) -> None:
    merchant, _ = await _voucher_order(harness)
    other = await harness.order(merchant, harness.consumer(), "12.34", order_id="T2")
    assert other.status_code == 201
    assert (await harness.refund(merchant, "T1-V", "R1", "100.00")).status_code == 201

    forbidden = await harness.client.get("/v1/admin/totals", headers=merchant.pos)
    assert forbidden.status_code == 401
    response = await harness.client.get("/v1/admin/totals", headers=harness.admin)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "orders": 2,
        "amount": "312.34",
        "voucher_amount": "100.00",
        "cash_amount": "212.34",
        "refunds": 1,
        "refunded_amount": "100.00",
        "refunded_voucher_amount": "33.33",
        "refunded_cash_amount": "66.67",
    }
