"""The points service's Alembic history builds exactly the tables its models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from services.points.app import TABLES, create_app
from shared.db import Database
from shared.migrations import metadata_of

from .conftest import make_settings


async def test_a_migrated_database_matches_the_models(database_url: str) -> None:
    app = create_app(make_settings(database_url), schema="migrate")
    async with app.router.lifespan_context(app):
        pass
    db = Database(database_url)
    metadata = metadata_of(TABLES)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    try:
        async with db.engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await db.dispose()
    assert diff == []
