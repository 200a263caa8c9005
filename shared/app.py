"""The service factory: every service is a FastAPI app built the same way.

Its lifespan opens the database (migrated to head), and with Kafka enabled starts the
outbox relay and the event consumer as background tasks; they stop with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Table
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.auth import AdminDep
from shared.clock import AdjustableClock, Clock, SystemClock
from shared.db import Database
from shared.errors import install_error_handlers
from shared.events import dead_letter_topic
from shared.inbox import EventConsumer, Handler, ProcessedEvent
from shared.kafka import EventPublisher, ensure_topics
from shared.migrations import upgrade_to_head
from shared.outbox import OutboxMessage, OutboxRelay
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

#: Tables every service has: its outbox and its inbox.
MESSAGING_TABLES: tuple[Table, ...] = (OutboxMessage.__table__, ProcessedEvent.__table__)  # type: ignore[attr-defined]

BackgroundTask = Callable[[FastAPI], Coroutine[Any, Any, None]]


@dataclass
class ServiceDefinition:
    name: str
    description: str
    settings: ServiceSettings
    routers: Sequence[APIRouter]
    tables: Sequence[Table]
    own_topic: str
    migrations_dir: Path
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    subscriptions: Sequence[str] = ()
    background: Sequence[BackgroundTask] = ()


Schema = Literal["migrate", "create", "existing"]


def create_service_app(
    definition: ServiceDefinition,
    *,
    clock: Clock | None = None,
    schema: Schema = "migrate",
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = definition.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if schema == "migrate":
            await upgrade_to_head(definition.migrations_dir, settings.database_url)
        db = Database(settings.database_url)
        if schema == "create":
            await db.create_tables(all_tables(definition))
        app.state.db = db
        app.state.http = httpx.AsyncClient(timeout=5.0, transport=http_transport)
        tasks: list[asyncio.Task[None]] = []
        publisher: EventPublisher | None = None
        if settings.kafka_enabled:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                [definition.own_topic, dead_letter_topic(definition.name),
                 *definition.subscriptions],
            )
            publisher = EventPublisher(settings.kafka_bootstrap_servers)
            await publisher.start()
            relay = OutboxRelay(
                db, publisher,
                batch_size=settings.outbox_batch_size, poll_seconds=settings.outbox_poll_seconds,
            )
            tasks.append(asyncio.create_task(relay.run(), name=f"{definition.name}-relay"))
            if definition.handlers:
                consumer = EventConsumer(
                    db, definition.name, definition.subscriptions, definition.handlers,
                    bootstrap_servers=settings.kafka_bootstrap_servers,
                    publisher=publisher, max_attempts=settings.consumer_max_attempts,
                    session_timeout_ms=settings.kafka_session_timeout_ms,
                )
                app.state.consumer = consumer
                tasks.append(
                    asyncio.create_task(consumer.run(), name=f"{definition.name}-consumer")
                )
        # Jobs (settlement scheduler, hold expiry) run with or without the broker.
        for job in definition.background:
            tasks.append(asyncio.create_task(job(app), name=f"{definition.name}-job"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if publisher is not None:
                await publisher.stop()
            await app.state.http.aclose()
            await db.dispose()

    app = FastAPI(
        title=f"{definition.name} service",
        description=definition.description,
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if clock is None:
        clock = SystemClock() if settings.env == "production" else AdjustableClock()
    app.state.clock = clock
    app.state.name = definition.name
    app.state.consumer = None
    install_error_handlers(app)
    for router in definition.routers:
        app.include_router(router)

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, and whether the event consumer has its partitions."""
        consumer: EventConsumer | None = request.app.state.consumer
        return {
            "service": definition.name,
            "status": "ok",
            "consuming": consumer is not None and consumer.assigned.is_set(),
        }

    if isinstance(clock, AdjustableClock):
        app.include_router(_clock_router(clock))
    return app


class ClockSetting(BaseModel):
    now: AwareDatetime


def _clock_router(clock: AdjustableClock) -> APIRouter:
    router = APIRouter(tags=["development"])

    @router.put("/v1/admin/clock")
    async def set_clock(body: ClockSetting, _: AdminDep) -> dict[str, Any]:
        """Move this service's clock (development and tests only; absent in production)."""
        clock.set(body.now)
        return {"now": clock.now().isoformat()}

    return router


def all_tables(definition: ServiceDefinition) -> list[Table]:
    return [*definition.tables, *MESSAGING_TABLES]


# --- request dependencies ------------------------------------------------------------


async def _transaction(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.transaction() as session:
        yield session


async def _read(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.read() as session:
        yield session


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def _settings(request: Request) -> ServiceSettings:
    settings: ServiceSettings = request.app.state.settings
    return settings


def _http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


#: One transaction per request, committed *before* the response is sent (scope=function),
#: rolled back if the endpoint raises.
SessionDep = Annotated[AsyncSession, Depends(_transaction, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(_read, scope="function")]
ClockDep = Annotated[Clock, Depends(_clock)]
SettingsDep = Annotated[ServiceSettings, Depends(_settings)]
HttpDep = Annotated[httpx.AsyncClient, Depends(_http)]
