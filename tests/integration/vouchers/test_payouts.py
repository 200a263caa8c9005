"""funds.paid_out: payouts from points are booked into wallets once, set-based."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from services.vouchers import repository
from services.vouchers.settings import VouchersSettings
from shared.inbox import PermanentFailure
from tests.integration.vouchers.conftest import (
    D,
    account_balance,
    assert_books_right,
    balances,
    credit,
    db_of,
    deliver,
    entry_count,
    member,
    outbox,
    paid_out,
    payout,
    totals,
    wallet,
)


async def test_payouts_are_credited_and_shown_in_the_wallet_with_their_order_ids(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    consumer, inviter = uuid.uuid4(), uuid.uuid4()
    order = uuid.uuid4()
    batch = paid_out(
        payout(inviter, "50.00", reason="invite_reward", order_id=order),
        payout(consumer, "10.00", asset="coins", reason="gold_coins", order_id=order),
        payout(consumer, "3.33", asset="cash", reason="settlement", order_id=order),
    )

    assert await deliver(app, batch) is True

    assert await balances(client, settings, inviter) == {
        "vouchers": D("50.00"), "vouchers_held": D("0.00"), "coins": D("0.00"),
        "cash": D("0.00"),
    }
    body = await wallet(client, settings, consumer)
    assert body["balances"]["coins"] == "10.00"
    assert body["balances"]["cash"] == "3.33"
    assert {(e["asset"], e["amount"], e["reason"], e["order_id"]) for e in body["entries"]} == {
        ("coins", "10.00", "gold_coins", str(order)),
        ("cash", "3.33", "settlement", str(order)),
    }
    coin_entry = next(e for e in body["entries"] if e["asset"] == "coins")
    assert coin_entry["payout_id"] == str(batch.payouts[1].payout_id)
    assert coin_entry["balance_after"] == "10.00"
    assert await outbox(app, "payouts.credited") == [
        {"batch_id": str(batch.batch_id), "count": 3, "total": "63.33"}
    ]


async def test_a_settlement_payout_names_its_settlement(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m, settlement = uuid.uuid4(), uuid.uuid4()
    await deliver(app, paid_out(payout(m, "1.15", settlement_id=settlement), source="settlement"))

    [entry] = (await wallet(client, settings, m))["entries"]
    assert entry["settlement_id"] == str(settlement)
    assert entry["fund"] == "consumer_pool"


async def test_the_same_funds_paid_out_delivered_twice_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    envelope = paid_out(payout(m, "7.00", order_id=uuid.uuid4())).envelope(producer="points")

    assert await deliver(app, envelope) is True
    entries = await entry_count(app)
    assert await deliver(app, envelope) is False

    assert (await balances(client, settings, m))["vouchers"] == D("7.00")
    assert await entry_count(app) == entries
    assert len(await outbox(app, "payouts.credited")) == 1


async def test_a_batch_republished_under_a_new_event_id_is_not_booked_again(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    batch = paid_out(payout(m, "7.00", order_id=uuid.uuid4()))
    await deliver(app, batch)

    await deliver(app, batch.envelope(producer="points"))  # a fresh event_id
    same_payout_new_batch = paid_out(*batch.payouts)
    await deliver(app, same_payout_new_batch)

    assert (await balances(client, settings, m))["vouchers"] == D("7.00")
    credited = await outbox(app, "payouts.credited")
    assert [c["count"] for c in credited] == [1, 0]
    assert (await totals(client, settings))["payouts"] == {"count": 1, "total": "7.00"}


async def test_a_large_batch_that_repeats_a_booked_payout_books_only_the_others(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    # A large batch is booked set-based; one payout of it booked before (by another
    # batch) is still skipped, and every other one booked once.
    settlement = uuid.uuid4()
    first = paid_out(
        *(payout(uuid.uuid4(), "1.00", settlement_id=settlement) for _ in range(150)),
        source="settlement",
    )
    await deliver(app, first)
    again = first.payouts[77]
    fresh = [payout(uuid.uuid4(), "2.00", settlement_id=settlement) for _ in range(149)]
    second = paid_out(*fresh[:10], again, *fresh[10:], source="settlement")

    assert await deliver(app, second) is True

    assert (await balances(client, settings, again.member_id))["vouchers"] == D("1.00")
    assert (await balances(client, settings, fresh[100].member_id))["vouchers"] == D("2.00")
    credited = await outbox(app, "payouts.credited")
    assert [(c["count"], c["total"]) for c in credited] == [(150, "150.00"), (149, "298.00")]
    figures = await totals(client, settings)
    assert figures["payouts"] == {"count": 299, "total": "448.00"}
    assert_books_right(figures)


async def test_a_crash_before_commit_is_retried_and_counts_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: VouchersSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = uuid.uuid4()
    envelope = paid_out(payout(m, "5.00"), payout(m, "2.50", asset="coins")).envelope(
        producer="points"
    )
    real = repository.book_credits
    calls = 0

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)  # the balances and entries are written by now
        if calls == 1:
            raise ConnectionResetError("database went away before commit")

    monkeypatch.setattr(repository, "book_credits", crash_once)

    with pytest.raises(ConnectionResetError):
        await deliver(app, envelope)
    assert await entry_count(app) == 0
    assert await deliver(app, envelope) is True

    assert await balances(client, settings, m) == {
        "vouchers": D("5.00"), "vouchers_held": D("0.00"), "coins": D("2.50"),
        "cash": D("0.00"),
    }
    assert len(await outbox(app, "payouts.credited")) == 1
    assert_books_right(await totals(client, settings))


async def test_a_reversal_claws_back_what_it_can_and_books_the_rest_unrecovered(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    order = uuid.uuid4()
    earned = paid_out(payout(m, "10.00", asset="coins", reason="gold_coins", order_id=order))
    await deliver(app, earned)
    redeemed = await client.post(
        f"/v1/members/{m}/coins/redemptions",
        json={"redemption_id": "tea-1", "amount": "6.00", "item": "green tea"},
        headers=member(settings, m),
    )
    assert redeemed.status_code == 201, redeemed.text

    refund = paid_out(
        payout(m, "-10.00", asset="coins", reason="reversal", order_id=order), source="refund"
    )
    await deliver(app, refund)

    body = await wallet(client, settings, m)
    assert body["balances"]["coins"] == "0.00"
    assert body["entries"][0]["reason"] == "reversal"
    assert body["entries"][0]["amount"] == "-4.00"
    assert body["entries"][0]["order_id"] == str(order)
    figures = await totals(client, settings)
    assert figures["unrecovered"]["coins"] == "6.00"
    assert figures["coins_redeemed"] == "6.00"
    assert figures["credited_by_asset"]["coins"] == "0.00"
    assert {"asset": "coins", "reason": "reversal", "count": 1, "amount": "-10.00",
            "applied": "-4.00", "unrecovered": "6.00"} in figures["credited"]
    assert_books_right(figures)
    assert await outbox(app, "payouts.credited") == [
        {"batch_id": str(earned.batch_id), "count": 1, "total": "10.00"},
        {"batch_id": str(refund.batch_id), "count": 1, "total": "-10.00"},
    ]


async def test_a_negative_payout_that_is_not_a_reversal_is_refused_whole(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    bad = paid_out(payout(m, "5.00"), payout(m, "-1.00", reason="settlement"))

    with pytest.raises(PermanentFailure, match="reversal"):
        await deliver(app, bad)

    assert (await balances(client, settings, m))["vouchers"] == D("0.00")
    assert await entry_count(app) == 0
    assert await outbox(app, "payouts.credited") == []


async def test_a_settlement_of_thousands_of_payouts_is_booked_in_a_few_statements(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    members = [uuid.uuid4() for _ in range(3000)]
    settlement = uuid.uuid4()
    batch = paid_out(
        *(payout(m, f"{1 + i % 50}.{i % 100:02d}", settlement_id=settlement)
          for i, m in enumerate(members)),
        source="settlement",
    )
    expected_total = sum((p.amount for p in batch.payouts), D("0.00"))
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    engine = db_of(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await deliver(app, batch)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    # Set-based: a handful of bulk statements, not one round trip per payout.
    assert statements < 30, statements
    assert await account_balance(app, "source:points:vouchers") == -expected_total
    assert (await balances(client, settings, members[1234]))["vouchers"] == D("35.34")
    assert await outbox(app, "payouts.credited") == [
        {"batch_id": str(batch.batch_id), "count": 3000, "total": str(expected_total)}
    ]
    figures = await totals(client, settings)
    assert figures["wallets"]["vouchers"] == str(expected_total)
    assert_books_right(figures)


async def test_a_credit_and_a_reversal_for_one_wallet_in_one_batch(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m = uuid.uuid4()
    await credit(app, m, "2.00")
    await deliver(app, paid_out(payout(m, "3.00"), payout(m, "-6.00", reason="reversal")))

    body = await wallet(client, settings, m)
    assert body["balances"]["vouchers"] == "0.00"
    assert [(e["amount"], e["balance_after"]) for e in body["entries"]] == [
        ("-5.00", "0.00"), ("3.00", "5.00"), ("2.00", "2.00")
    ]
    figures = await totals(client, settings)
    assert figures["unrecovered"]["vouchers"] == "1.00"
    assert_books_right(figures)


async def test_a_batch_that_credits_and_reverses_one_wallet_reverses_after_the_credits(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    # Credits are booked set-based, reversals payout by payout after them: the reversal
    # sees the batch's own credit and takes no more than the wallet then holds.
    m = uuid.uuid4()
    order = uuid.uuid4()
    batch = paid_out(
        payout(m, "3.00", asset="coins", reason="gold_coins", order_id=order),
        payout(m, "-5.00", asset="coins", reason="reversal", order_id=order),
        source="refund",
    )

    await deliver(app, batch)

    body = await wallet(client, settings, m)
    assert body["balances"]["coins"] == "0.00"
    assert [(e["amount"], e["balance_after"]) for e in reversed(body["entries"])] == [
        ("3.00", "3.00"), ("-3.00", "0.00"),
    ]
    figures = await totals(client, settings)
    assert figures["unrecovered"]["coins"] == "2.00"
    assert_books_right(figures)
    assert await outbox(app, "payouts.credited") == [
        {"batch_id": str(batch.batch_id), "count": 2, "total": "-2.00"}
    ]


async def test_several_credits_to_one_wallet_in_a_batch_walk_its_balance_forward(
    app: FastAPI, client: httpx.AsyncClient, settings: VouchersSettings
) -> None:
    m, other = uuid.uuid4(), uuid.uuid4()
    settlement = uuid.uuid4()
    await deliver(app, paid_out(payout(m, "1.00", settlement_id=settlement),
                                source="settlement"))
    batch = paid_out(
        payout(m, "2.00", settlement_id=settlement),
        payout(other, "7.00", settlement_id=settlement),
        payout(m, "0.50", settlement_id=settlement),
        payout(m, "0.00", settlement_id=settlement),
        source="settlement",
    )

    await deliver(app, batch)

    body = await wallet(client, settings, m)
    assert body["balances"]["vouchers"] == "3.50"
    # Oldest first, each entry's balance_after is the one before it plus its amount (the
    # batch's entries in payout_id order), ending at the balance; a zero payout is
    # booked but moves nothing, so it writes no entry.
    walked = [(D(e["amount"]), D(e["balance_after"])) for e in reversed(body["entries"])]
    assert sorted(amount for amount, _ in walked) == [D("0.50"), D("1.00"), D("2.00")]
    running = D("0.00")
    for amount, balance_after in walked:
        running += amount
        assert balance_after == running
    assert running == D("3.50")
    figures = await totals(client, settings)
    assert figures["payouts"] == {"count": 5, "total": "10.50"}
    assert_books_right(figures)
