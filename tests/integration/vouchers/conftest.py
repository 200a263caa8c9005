"""The vouchers service against a real database (SQLite and PostgreSQL), no broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select

from services.vouchers.app import create_app
from services.vouchers.handlers import CONSUMER, HANDLERS
from services.vouchers.models import AccountBalance, LedgerEntry
from services.vouchers.settings import VouchersSettings
from shared.auth import issue_member_token
from shared.clock import FixedClock
from shared.db import Database
from shared.events import (
    Envelope,
    EventData,
    FundsPaidOut,
    OrderCompleted,
    OrderRefunded,
    Payout,
    PayoutAsset,
    PayoutReason,
)
from shared.inbox import handle_envelope
from shared.outbox import OutboxMessage

START = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
D = Decimal


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(database_url: str) -> VouchersSettings:
    return VouchersSettings(database_url=database_url, kafka_enabled=False, env="test")


@pytest.fixture
async def app(settings: VouchersSettings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, schema="create", clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def db_of(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


def admin(settings: VouchersSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def member(settings: VouchersSettings, member_id: UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_member_token(settings, member_id)}"}


# --- events ----------------------------------------------------------------------------


def payout(
    member_id: UUID,
    amount: str,
    *,
    asset: PayoutAsset = "vouchers",
    reason: PayoutReason = "settlement",
    order_id: UUID | None = None,
    settlement_id: UUID | None = None,
    payout_id: UUID | None = None,
) -> Payout:
    return Payout(
        payout_id=payout_id or uuid.uuid4(),
        member_id=member_id,
        asset=asset,
        amount=D(amount),
        reason=reason,
        fund="consumer_pool" if reason == "settlement" else "order_giveback",
        order_id=order_id,
        settlement_id=settlement_id,
    )


def paid_out(
    *payouts: Payout, source: Literal["order", "settlement", "refund"] = "order"
) -> FundsPaidOut:
    return FundsPaidOut(
        batch_id=uuid.uuid4(),
        source=source,
        order_id=payouts[0].order_id if payouts and source != "settlement" else None,
        settlement_id=payouts[0].settlement_id if payouts and source == "settlement" else None,
        payouts=payouts,
    )


def completed(
    consumer_id: UUID,
    merchant_id: UUID,
    *,
    voucher_amount: str,
    hold_id: UUID | None,
    amount: str = "100.00",
    order_id: UUID | None = None,
) -> OrderCompleted:
    return OrderCompleted(
        order_id=order_id or uuid.uuid4(),
        pos_order_id=f"pos-{uuid.uuid4().hex[:8]}",
        merchant_id=merchant_id,
        consumer_id=consumer_id,
        amount=D(amount),
        voucher_amount=D(voucher_amount),
        cash_amount=D(amount) - D(voucher_amount),
        giveback_rate=D("0.20"),
        completed_at=START,
        voucher_hold_id=hold_id,
    )


def refunded(order: OrderCompleted, *, voucher_amount: str, amount: str) -> OrderRefunded:
    return OrderRefunded(
        refund_id=uuid.uuid4(),
        pos_refund_id=f"refund-{uuid.uuid4().hex[:8]}",
        order_id=order.order_id,
        merchant_id=order.merchant_id,
        consumer_id=order.consumer_id,
        amount=D(amount),
        cash_amount=D(amount) - D(voucher_amount),
        voucher_amount=D(voucher_amount),
        order_amount=order.amount,
        refunded_total=D(amount),
        refunded_at=START,
    )


async def deliver(app: FastAPI, event: EventData | Envelope) -> bool:
    envelope = event if isinstance(event, Envelope) else event.envelope(producer="test")
    return await handle_envelope(db_of(app), CONSUMER, HANDLERS, envelope)


async def credit(app: FastAPI, member_id: UUID, amount: str, asset: PayoutAsset = "vouchers"
                 ) -> None:
    """Give *member_id* some *asset* the way points does: a payout batch."""
    await deliver(app, paid_out(payout(member_id, amount, asset=asset, order_id=uuid.uuid4())))


# --- reading state ---------------------------------------------------------------------


async def wallet(client: httpx.AsyncClient, settings: VouchersSettings, member_id: UUID
                 ) -> dict[str, Any]:
    response = await client.get(f"/v1/members/{member_id}/wallet", headers=admin(settings))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def balances(client: httpx.AsyncClient, settings: VouchersSettings, member_id: UUID
                   ) -> dict[str, Decimal]:
    body = await wallet(client, settings, member_id)
    return {bucket: D(value) for bucket, value in body["balances"].items()}


async def account_balance(app: FastAPI, account: str) -> Decimal:
    async with db_of(app).read() as session:
        row = await session.get(AccountBalance, account)
        return row.balance if row else D("0.00")


async def entry_count(app: FastAPI) -> int:
    async with db_of(app).read() as session:
        return len((await session.exec(select(LedgerEntry.id))).all())


async def outbox(app: FastAPI, event_type: str) -> list[dict[str, Any]]:
    async with db_of(app).read() as session:
        rows = (
            await session.exec(
                select(OutboxMessage)
                .where(col(OutboxMessage.type) == event_type)
                .order_by(col(OutboxMessage.id))
            )
        ).all()
    return [Envelope.model_validate_json(row.payload).data for row in rows]


async def totals(client: httpx.AsyncClient, settings: VouchersSettings) -> dict[str, Any]:
    response = await client.get("/v1/admin/totals", headers=admin(settings))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_books_right(figures: dict[str, Any]) -> None:
    assert figures["checks"] == {
        "balanced": True,
        "unbalanced_transactions": 0,
        "balances_match_entries": True,
        "no_negative_balances": True,
        "negative_balances": 0,
        "books_tie_out": True,
    }
