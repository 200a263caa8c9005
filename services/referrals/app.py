"""The referrals service: members, invite codes, inviter links, merchant bindings, and
the referral evaluation of every completed order (RULES 1.4, 1.5)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import Table

from services.referrals.api import router
from services.referrals.handlers import CONSUMER_NAME, SUBSCRIPTIONS, handlers_for
from services.referrals.models import Binding, Member, OrderEvaluation, RewardClaimRecord
from services.referrals.settings import ReferralsSettings
from shared.app import MESSAGING_TABLES, Schema, ServiceDefinition, create_service_app
from shared.clock import Clock, SystemClock
from shared.events import REFERRALS_TOPIC

#: The tables this service owns (without the outbox and inbox every service has).
OWN_TABLES: list[Table] = [
    Member.__table__,  # type: ignore[attr-defined]
    Binding.__table__,  # type: ignore[attr-defined]
    OrderEvaluation.__table__,  # type: ignore[attr-defined]
    RewardClaimRecord.__table__,  # type: ignore[attr-defined]
]
#: Everything in this service's database (what its migrations create).
TABLES: list[Table] = [*OWN_TABLES, *MESSAGING_TABLES]

DESCRIPTION = (
    "Members (consumers, and merchants as members), invite codes and inviters (RULES 1.5), "
    "merchant bindings (RULES 1.4). Evaluates every completed order and publishes one "
    "`referral.order_evaluated` per order with the rewards due."
)


def definition(settings: ReferralsSettings, clock: Clock | None = None) -> ServiceDefinition:
    return ServiceDefinition(
        name=CONSUMER_NAME,
        description=DESCRIPTION,
        settings=settings,
        routers=[router],
        tables=OWN_TABLES,
        own_topic=REFERRALS_TOPIC,
        migrations_dir=Path(__file__).resolve().parent / "migrations",
        handlers=handlers_for(settings.program(), clock or SystemClock()),
        subscriptions=SUBSCRIPTIONS,
    )


def create_app(
    settings: ReferralsSettings | None = None,
    *,
    clock: Clock | None = None,
    schema: Schema = "migrate",
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings or ReferralsSettings()
    service = definition(settings, clock)
    app = create_service_app(service, clock=clock, schema=schema, http_transport=http_transport)
    # The handlers must read the clock the app really uses: without an explicit clock,
    # create_service_app picks one (an adjustable clock outside production). The lifespan
    # reads `service.handlers` only at start-up, so rebinding them here is in time.
    service.handlers = handlers_for(settings.program(), app.state.clock)
    #: The handlers with this app's program and clock (tests drive them with handle_envelope).
    app.state.handlers = service.handlers
    return app
