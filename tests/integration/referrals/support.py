"""Factories for the referrals integration tests: a running service and the events it sees."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import httpx
from fastapi import FastAPI
from sqlmodel import SQLModel, col, func, select

from services.referrals.app import create_app
from services.referrals.settings import ReferralsSettings
from shared.clock import FixedClock
from shared.db import Database
from shared.events import Envelope, EventData, MerchantRegistered, OrderCompleted, parse_event
from shared.inbox import handle_envelope
from shared.outbox import OutboxMessage
from shared.settings import DEV_ADMIN_TOKEN

T0 = datetime(2024, 3, 15, 9, 0, tzinfo=UTC)
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}

E = TypeVar("E", bound=EventData)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def merchant_registered(
    merchant_id: UUID | None = None, *, registered_at: datetime = T0 - timedelta(days=30)
) -> MerchantRegistered:
    return MerchantRegistered(
        merchant_id=merchant_id or uuid.uuid4(),
        name="Green Grocer",
        giveback_rate=Decimal("0.20"),
        registered_at=registered_at,
    )


def order_completed(
    consumer_id: UUID,
    merchant_id: UUID,
    *,
    completed_at: datetime,
    cash: Decimal = Decimal("1000.00"),
) -> OrderCompleted:
    return OrderCompleted(
        order_id=uuid.uuid4(),
        pos_order_id=f"pos-{uuid.uuid4().hex[:8]}",
        merchant_id=merchant_id,
        consumer_id=consumer_id,
        amount=cash,
        voucher_amount=Decimal("0.00"),
        cash_amount=cash,
        giveback_rate=Decimal("0.20"),
        completed_at=completed_at,
    )


@dataclass
class Service:
    """A running referrals app, its HTTP client and its clock."""

    app: FastAPI
    client: httpx.AsyncClient
    clock: FixedClock

    @property
    def db(self) -> Database:
        db: Database = self.app.state.db
        return db

    async def deliver(self, event: EventData | Envelope) -> bool:
        """Hand one event to the service's consumer (an envelope: exactly that delivery)."""
        envelope = event if isinstance(event, Envelope) else event.envelope(producer="orders")
        return await handle_envelope(self.db, "referrals", self.app.state.handlers, envelope)

    async def events(self, event_type: type[E]) -> list[E]:
        """What the service published (its outbox) of one type, oldest first."""
        async with self.db.read() as session:
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(OutboxMessage.type == event_type.TYPE)
                    .order_by(col(OutboxMessage.id))
                )
            ).all()
        parsed = [parse_event(Envelope.model_validate_json(row.payload)) for row in rows]
        return [event for event in parsed if isinstance(event, event_type)]

    async def count(self, table: type[SQLModel]) -> int:
        async with self.db.read() as session:
            total: int = (await session.exec(select(func.count()).select_from(table))).one()
            return total

    async def register(self, invite_code: str | None = None) -> dict[str, Any]:
        body = {} if invite_code is None else {"invite_code": invite_code}
        response = await self.client.post("/v1/members", json=body)
        assert response.status_code == 201, response.text
        member: dict[str, Any] = response.json()
        return member

    async def merchant(self, merchant_id: UUID | None = None) -> UUID:
        event = merchant_registered(merchant_id)
        assert await self.deliver(event)
        return event.merchant_id

    async def scan(self, member: dict[str, Any], merchant_id: UUID) -> httpx.Response:
        return await self.client.post(
            "/v1/bindings", json={"merchant_id": str(merchant_id)}, headers=bearer(member["token"])
        )


@asynccontextmanager
async def running_service(database_url: str, **program: Any) -> AsyncIterator[Service]:
    """The referrals app on *database_url*, with program settings *program*."""
    settings = ReferralsSettings(database_url=database_url, kafka_enabled=False, **program)
    clock = FixedClock(T0)
    app = create_app(settings, schema="create", clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Service(app, client, clock)
