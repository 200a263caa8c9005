"""Fakes and factories of the refund and audit tests: the vouchers and orders services' books
(served over httpx.MockTransport) and the events those services would send."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col, select

from services.points import repository
from services.points.app import create_app
from services.points.models import Period, Pool, Position
from shared.clock import FixedClock
from shared.events import (
    Envelope,
    EventData,
    FundsPaidOut,
    OrderCompleted,
    OrderRefunded,
    PayoutsCredited,
)
from shared.inbox import handle_envelope
from shared.outbox import OutboxMessage

from .conftest import NOW, Points, make_settings

D = Decimal
ZERO = D("0.00")


@dataclass
class FakeBooks:
    """What GET /v1/admin/totals answers on the vouchers and orders services."""

    admin_token: str = ""
    vouchers: dict[str, Any] | None = None
    orders: dict[str, Any] | None = None
    #: Set to make a service unreachable (connection refused).
    down: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        service = {8003: "vouchers", 8001: "orders"}.get(request.url.port or 0, "?")
        self.requests.append(f"{service} {request.url.path}")
        if service in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            return httpx.Response(401, json={"error": "unauthorized", "detail": "admin only"})
        body = self.vouchers if service == "vouchers" else self.orders
        if request.url.path != "/v1/admin/totals" or body is None:
            return httpx.Response(404, json={"error": "not_found", "detail": "Not Found"})
        return httpx.Response(200, json=body)


@asynccontextmanager
async def points_with_books(database_url: str, books: FakeBooks) -> AsyncIterator[Points]:
    settings = make_settings(database_url)
    books.admin_token = settings.admin_token
    app = create_app(
        settings, schema="create", clock=FixedClock(NOW),
        http_transport=httpx.MockTransport(books.handle),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Points(
                app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}
            )


# --- events -------------------------------------------------------------------------------


def order_refunded(
    order: OrderCompleted,
    amount: str,
    *,
    refunded_total: str,
    vouchers: str = "0.00",
    refund_id: uuid.UUID | None = None,
    refunded_at: datetime | None = None,
) -> OrderRefunded:
    refund_id = refund_id or uuid.uuid4()
    return OrderRefunded(
        refund_id=refund_id,
        pos_refund_id=f"r-{refund_id.hex[:8]}",
        order_id=order.order_id,
        merchant_id=order.merchant_id,
        consumer_id=order.consumer_id,
        amount=D(amount),
        cash_amount=D(amount) - D(vouchers),
        voucher_amount=D(vouchers),
        order_amount=order.amount,
        refunded_total=D(refunded_total),
        refunded_at=refunded_at or NOW + timedelta(hours=1),
    )


async def deliver_from(points: Points, event: EventData, producer: str) -> bool:
    return await handle_envelope(
        points.app.state.db, "points", points.app.state.handlers,
        event.envelope(producer=producer),
    )


async def outbox_batches(points: Points) -> list[FundsPaidOut]:
    async with points.app.state.db.read() as session:
        rows = (
            await session.exec(
                select(OutboxMessage)
                .where(col(OutboxMessage.type) == FundsPaidOut.TYPE)
                .order_by(col(OutboxMessage.id))
            )
        ).all()
    return [
        FundsPaidOut.model_validate(Envelope.model_validate_json(r.payload).data) for r in rows
    ]


async def vouchers_credit_everything(points: Points, books: FakeBooks) -> None:
    """Vouchers books every batch points emitted and acknowledges each (payouts.credited)."""
    batches = await outbox_batches(points)
    for batch in batches:
        total = sum((p.amount for p in batch.payouts), ZERO)
        await deliver_from(
            points,
            PayoutsCredited(batch_id=batch.batch_id, count=len(batch.payouts), total=total),
            "vouchers",
        )
    books.vouchers = {
        "payouts": {
            "count": sum(len(b.payouts) for b in batches),
            "total": str(sum((p.amount for b in batches for p in b.payouts), ZERO)),
        },
        "unrecovered": {"vouchers": "0.00", "coins": "0.00", "cash": "0.00"},
    }


def orders_books(orders: list[OrderCompleted], refunds: list[OrderRefunded]) -> dict[str, Any]:
    """The orders service's totals for these orders and refunds."""
    return {
        "orders": len(orders),
        "amount": str(sum((o.amount for o in orders), ZERO)),
        "voucher_amount": str(sum((o.voucher_amount for o in orders), ZERO)),
        "cash_amount": str(sum((o.cash_amount for o in orders), ZERO)),
        "refunds": len(refunds),
        "refunded_amount": str(sum((r.amount for r in refunds), ZERO)),
        "refunded_voucher_amount": str(sum((r.voucher_amount for r in refunds), ZERO)),
        "refunded_cash_amount": str(sum((r.cash_amount for r in refunds), ZERO)),
    }


# --- a settlement, simulated -------------------------------------------------------------


async def simulate_settlement(
    points: Points, consumer_id: uuid.UUID, *, released: str, paid: str
) -> None:
    """Settlement 1 of the consumer pool: period 1 closes, the consumer's position has
    released *released* and the fund has paid *paid* out as vouchers."""
    async with points.app.state.db.transaction() as session:
        await session.exec(
            update(Position)
            .where(col(Position.pool) == "consumer", col(Position.member_id) == consumer_id)
            .values(released=D(released), settlements=1)
        )
        await session.exec(
            update(Period)
            .where(col(Period.pool) == "consumer", col(Period.number) == 1)
            .values(settled_at=NOW)
        )
        await session.exec(
            update(Pool)
            .where(col(Pool.kind) == "consumer")
            .values(period_number=2, period_started_at=NOW, reference_size=D("1000200.00"),
                    minted=ZERO, fund_balance=col(Pool.fund_balance) - D(paid))
        )
        session.add(Period(pool="consumer", number=2, started_at=NOW,
                           reference_size=D("1000200.00"), minted=ZERO))
        repository.add_fund_transaction(
            session, [("fund:consumer_pool", -D(paid)), ("payouts:settlements", D(paid))],
            memo="settlement", order_id=None, at=NOW,
        )
