"""The points service: the program engine (pools, periods, positions, pool funds)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import Table

from services.points.api import router
from services.points.audit_api import router as audit_router
from services.points.handlers import SUBSCRIPTIONS, build_handlers
from services.points.models import (
    FundEntry,
    OrderGiveback,
    OrderRefund,
    OrderReward,
    PayoutCredit,
    PayoutRecord,
    PendingEvaluation,
    Period,
    PointEntry,
    Pool,
    Position,
)
from services.points.settings import PointsSettings
from services.points.settlement import settlement_scheduler
from services.points.settlement_api import router as settlement_router
from services.points.settlement_models import (
    Cohort,
    Settlement,
    SettlementBatch,
    SettlementCohort,
)
from shared.app import MESSAGING_TABLES, Schema, ServiceDefinition, create_service_app
from shared.clock import Clock
from shared.events import POINTS_TOPIC

NAME = "points"

#: The service's own tables; `TABLES` adds the outbox and the inbox (for migrations).
OWN_TABLES: list[Table] = [
    model.__table__  # type: ignore[union-attr]
    for model in (
        Pool, Period, Position, PointEntry, OrderGiveback, OrderReward,
        PendingEvaluation, FundEntry, PayoutRecord, OrderRefund, PayoutCredit,
        Settlement, SettlementBatch, SettlementCohort, Cohort,
    )
]
TABLES: list[Table] = [*OWN_TABLES, *MESSAGING_TABLES]


def definition(settings: PointsSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME,
        description="Green points: points per order, pools and their funds, give-back "
        "allocation and payouts (RULES 1.1-1.3).",
        settings=settings,
        routers=[router, audit_router, settlement_router],
        tables=OWN_TABLES,
        own_topic=POINTS_TOPIC,
        migrations_dir=Path(__file__).resolve().parent / "migrations",
        handlers=build_handlers(settings),
        subscriptions=SUBSCRIPTIONS,
        # RULES 1.2: settle each period at its due instant, whatever else happens.
        background=[settlement_scheduler],
    )


def create_app(
    settings: PointsSettings | None = None,
    *,
    clock: Clock | None = None,
    schema: Schema = "migrate",
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    service = definition(settings or PointsSettings())
    app = create_service_app(service, clock=clock, schema=schema, http_transport=http_transport)
    #: The handlers bound to this app's settings (tests drive them with handle_envelope).
    app.state.handlers = service.handlers
    return app
