"""The vouchers service: members' wallets as a double-entry ledger, checkout holds,
merchant receivables and gold coin redemptions."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import Table

from services.vouchers import service
from services.vouchers.api import router
from services.vouchers.handlers import CONSUMER, HANDLERS, TOPICS
from services.vouchers.models import (
    AccountBalance,
    BookedPayout,
    CoinRedemption,
    LedgerEntry,
    PayoutBatch,
    VoucherHold,
    VoucherReturn,
)
from services.vouchers.settings import VouchersSettings
from shared.app import MESSAGING_TABLES, Schema, ServiceDefinition, create_service_app
from shared.clock import Clock
from shared.events import VOUCHERS_TOPIC

log = logging.getLogger(__name__)

OWN_TABLES: list[Table] = [
    LedgerEntry.__table__,  # type: ignore[attr-defined]
    AccountBalance.__table__,  # type: ignore[attr-defined]
    BookedPayout.__table__,  # type: ignore[attr-defined]
    PayoutBatch.__table__,  # type: ignore[attr-defined]
    VoucherHold.__table__,  # type: ignore[attr-defined]
    VoucherReturn.__table__,  # type: ignore[attr-defined]
    CoinRedemption.__table__,  # type: ignore[attr-defined]
]
#: Everything in this service's database (Alembic's env.py migrates these).
TABLES: list[Table] = [*OWN_TABLES, *MESSAGING_TABLES]

DESCRIPTION = (
    "Members' wallets (vouchers, gold coins, cash) as a double-entry ledger; voucher holds "
    "at checkout; merchant receivables for vouchers accepted; gold coin redemptions."
)


async def expire_holds_job(app: FastAPI) -> None:
    """Background job: release expired checkout holds every few seconds (RULES 1.6)."""
    settings: VouchersSettings = app.state.settings
    while True:
        try:
            await service.expire_due_holds(
                app.state.db, app.state.clock.now(), batch=settings.hold_sweep_batch
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("releasing expired voucher holds failed; retrying")
        await asyncio.sleep(settings.hold_sweep_seconds)


def definition(settings: VouchersSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=CONSUMER,
        description=DESCRIPTION,
        settings=settings,
        routers=[router],
        tables=OWN_TABLES,
        own_topic=VOUCHERS_TOPIC,
        migrations_dir=Path(__file__).resolve().parent / "migrations",
        handlers=HANDLERS,
        subscriptions=TOPICS,
        background=[expire_holds_job],
    )


def create_app(
    settings: VouchersSettings | None = None,
    *,
    clock: Clock | None = None,
    schema: Schema = "migrate",
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    return create_service_app(
        definition(settings or VouchersSettings()),
        clock=clock,
        schema=schema,
        http_transport=http_transport,
    )
