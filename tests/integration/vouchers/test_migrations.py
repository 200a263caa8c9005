"""The Alembic history builds exactly the tables the models describe."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.vouchers.app import TABLES, create_app
from services.vouchers.settings import VouchersSettings
from shared.migrations import metadata_of
from tests.integration.vouchers.conftest import admin, credit


async def test_a_migrated_database_matches_the_models_and_serves(database_url: str) -> None:
    settings = VouchersSettings(database_url=database_url, kafka_enabled=False)
    app = create_app(settings, schema="migrate")
    async with app.router.lifespan_context(app):
        m = uuid.uuid4()
        await credit(app, m, "5.00")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            hold = {"hold_id": str(uuid.uuid4()), "member_id": str(m), "amount": "6.00",
                    "merchant_id": str(uuid.uuid4())}
            refused = await client.post("/v1/holds", json=hold, headers=admin(settings))
            assert refused.status_code == 409
            wallet = await client.get(f"/v1/members/{m}/wallet", headers=admin(settings))
            assert wallet.json()["balances"]["vouchers"] == "5.00"

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata_of(TABLES)))

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()
