"""The Alembic history of the orders service builds exactly the tables of its models."""

from __future__ import annotations

from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.orders.app import TABLES, create_app
from services.orders.settings import OrdersSettings
from shared.migrations import metadata_of


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata_of(TABLES)))


async def test_a_migrated_database_matches_the_models_and_serves(database_url: str) -> None:
    app = create_app(OrdersSettings(database_url=database_url, kafka_enabled=False))
    async with (
        app.router.lifespan_context(app),  # schema="migrate": upgrade to head
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.post(
            "/v1/merchants",
            json={"name": "Migrated", "giveback_rate": "0.20"},
            headers={"Authorization": f"Bearer {app.state.settings.admin_token}"},
        )
        assert response.status_code == 201, response.text

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()
