"""Alembic, one migration history per service (each service owns one database).

Each service's ``migrations/env.py`` calls :func:`run_env` with its own tables; the
service upgrades its database to head at start-up with :func:`upgrade_to_head`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.types import TypeDecorator


def metadata_of(tables: Sequence[Table]) -> MetaData:
    """A MetaData holding only one service's tables (all services share SQLModel's)."""
    metadata = MetaData()
    for table in tables:
        table.to_metadata(metadata)
    return metadata


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head_sync(migrations_dir: Path, database_url: str) -> None:
    command.upgrade(alembic_config(migrations_dir, database_url), "head")


async def upgrade_to_head(migrations_dir: Path, database_url: str) -> None:
    # env.py runs its own event loop, so it goes to a thread of its own.
    await asyncio.to_thread(upgrade_to_head_sync, migrations_dir, database_url)


def render_item(type_: str, obj: Any, _context: Any) -> str | Literal[False]:
    """Write custom column types (MoneyColumn, ...) as the plain SQL type they store, so a
    migration never imports application code that may later move or change."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def run_env(tables: Sequence[Table]) -> None:
    """The body of every service's env.py (online mode, async engines)."""
    metadata = metadata_of(tables)
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is set by alembic_config()"

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            await connection.commit()
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_async())
