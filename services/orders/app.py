"""The orders service: merchants and their POS keys, orders, refunds (RULES 1.1, 1.6)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import Table

from services.orders.api import router
from services.orders.handlers import CONSUMER, HANDLERS, SUBSCRIPTIONS
from services.orders.models import KnownMember, Merchant, MerchantApiKey, Order, Refund
from services.orders.settings import OrdersSettings
from shared.app import MESSAGING_TABLES, Schema, ServiceDefinition, create_service_app
from shared.clock import Clock
from shared.events import ORDERS_TOPIC

#: The service's own tables.
OWN_TABLES: list[Table] = [
    Merchant.__table__,  # type: ignore[attr-defined]
    MerchantApiKey.__table__,  # type: ignore[attr-defined]
    Order.__table__,  # type: ignore[attr-defined]
    Refund.__table__,  # type: ignore[attr-defined]
    KnownMember.__table__,  # type: ignore[attr-defined]
]
#: Everything its database holds (what its migrations create): own tables, outbox, inbox.
TABLES: list[Table] = [*OWN_TABLES, *MESSAGING_TABLES]


def definition(settings: OrdersSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=CONSUMER,
        description=(
            "Order intake for POS systems: merchants and their terminal keys, orders "
            "(idempotent on the POS's order id, with voucher holds at checkout), refunds "
            "and batch upload for terminals that were offline."
        ),
        settings=settings,
        routers=[router],
        tables=OWN_TABLES,
        own_topic=ORDERS_TOPIC,
        migrations_dir=Path(__file__).resolve().parent / "migrations",
        handlers=HANDLERS,
        subscriptions=SUBSCRIPTIONS,
    )


def create_app(
    settings: OrdersSettings | None = None,
    *,
    clock: Clock | None = None,
    schema: Schema = "migrate",
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    return create_service_app(
        definition(settings or OrdersSettings()),
        clock=clock,
        schema=schema,
        http_transport=http_transport,
    )
