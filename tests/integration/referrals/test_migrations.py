"""The Alembic history builds exactly the tables the models describe."""

from __future__ import annotations

from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from services.referrals.app import TABLES, create_app
from services.referrals.settings import ReferralsSettings
from shared.migrations import metadata_of


async def test_migrated_database_matches_the_models(database_url: str) -> None:
    app = create_app(
        ReferralsSettings(database_url=database_url, kafka_enabled=False), schema="migrate"
    )
    async with app.router.lifespan_context(app):
        def differences(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata_of(TABLES)))

        async with app.state.db.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
        # The migrated database works: a sign-up goes through.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/v1/members", json={})).status_code == 201
