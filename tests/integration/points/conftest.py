"""Fixtures and factories of the points service's integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select

from services.points.app import create_app
from services.points.settings import PointsSettings
from shared.auth import issue_member_token
from shared.clock import FixedClock
from shared.events import (
    Envelope,
    EventData,
    FundsPaidOut,
    OrderCompleted,
    ReferralOrderEvaluated,
    RewardClaim,
)
from shared.inbox import handle_envelope
from shared.outbox import OutboxMessage

NOW = datetime(2024, 3, 20, 4, 0, tzinfo=UTC)


@dataclass
class Points:
    """The app under test and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: PointsSettings
    admin: dict[str, str] = field(default_factory=dict)


def make_settings(database_url: str, **overrides: object) -> PointsSettings:
    return PointsSettings(database_url=database_url, kafka_enabled=False, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def points(database_url: str) -> AsyncIterator[Points]:
    settings = make_settings(database_url)
    app = create_app(settings, schema="create", clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Points(
                app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}
            )


# --- factories -------------------------------------------------------------------------


def order_completed(
    consumer_id: uuid.UUID,
    merchant_id: uuid.UUID,
    *,
    amount: str = "1000.00",
    vouchers: str = "0.00",
    rate: str = "0.20",
    order_id: uuid.UUID | None = None,
    completed_at: datetime = NOW,
) -> OrderCompleted:
    order_id = order_id or uuid.uuid4()
    return OrderCompleted(
        order_id=order_id,
        pos_order_id=f"pos-{order_id.hex[:8]}",
        merchant_id=merchant_id,
        consumer_id=consumer_id,
        amount=Decimal(amount),
        voucher_amount=Decimal(vouchers),
        cash_amount=Decimal(amount) - Decimal(vouchers),
        giveback_rate=Decimal(rate),
        completed_at=completed_at,
    )


def binding(beneficiary: uuid.UUID, rate: str = "0.05") -> RewardClaim:
    return RewardClaim(
        kind="binding", beneficiary_id=beneficiary, rate=Decimal(rate), basis="consumer_points"
    )


def invite(beneficiary: uuid.UUID, rate: str = "0.05") -> RewardClaim:
    return RewardClaim(
        kind="invite", beneficiary_id=beneficiary, rate=Decimal(rate), basis="cash_amount"
    )


def evaluated(order: OrderCompleted, *rewards: RewardClaim) -> ReferralOrderEvaluated:
    return ReferralOrderEvaluated(
        order_id=order.order_id,
        consumer_id=order.consumer_id,
        merchant_id=order.merchant_id,
        rewards=rewards,
        evaluated_at=order.completed_at,
    )


async def deliver(points: Points, event: EventData) -> bool:
    """Apply *event* through the points consumer's inbox, as Kafka delivery would."""
    producer = "orders" if isinstance(event, OrderCompleted) else "referrals"
    return await handle_envelope(
        points.app.state.db, "points", points.app.state.handlers, event.envelope(producer=producer)
    )


async def paid_out(points: Points) -> list[FundsPaidOut]:
    """The funds.paid_out events in the outbox, oldest first."""
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


def member_headers(points: Points, member_id: uuid.UUID) -> dict[str, str]:
    # Issued now (real time): the token's expiry is checked against the real clock.
    return {"Authorization": f"Bearer {issue_member_token(points.settings, member_id)}"}
