"""Async database engine, unit of work and the money column type.

SQLite (aiosqlite) is the embedded default, PostgreSQL (asyncpg) the production
database; both go through the same code. On SQLite every transaction starts with
``BEGIN IMMEDIATE`` so that writers queue on the database lock instead of failing
half-way with "database is locked" when a read transaction tries to upgrade.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Dialect, Table, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.money import from_fen, to_fen

_READONLY = "gp_readonly"


class MoneyColumn(TypeDecorator[Decimal]):
    """Stores a 2-decimal Decimal as integer fen: exact on SQLite and PostgreSQL alike.

    SQL arithmetic (SUM, set-based settlements) works on the integer fen; values
    read back through this type are Decimals again.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:  # noqa: ARG002
        return None if value is None else to_fen(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:  # noqa: ARG002
        return None if value is None else from_fen(int(value))


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url):
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin (see below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Readers take no lock up front (WAL lets them run beside a writer).
            readonly = conn.get_execution_options().get(_READONLY, False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """One service's database: engine, sessions and the transaction boundary."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_engine(url, **engine_kwargs)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False, autoflush=True
        )
        #: Called after every commit that wrote outbox events (wakes the relay).
        self.after_commit_with_events: list[Callable[[], None]] = []

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The unit of work: commits if the block succeeds, rolls back if it raises."""
        async with self._sessions() as session, session.begin():
            yield session
        if session.info.pop("has_events", False):
            for notify in self.after_commit_with_events:
                notify()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries only; nothing it does is committed."""
        async with self._sessions() as session:
            await session.connection(execution_options={_READONLY: True})
            yield session

    async def create_tables(self, tables: Sequence[Table]) -> None:
        from sqlmodel import SQLModel

        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=list(tables))

    async def dispose(self) -> None:
        await self.engine.dispose()


async def bulk_insert(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert *rows* (values in *columns* order) in the session's transaction, at driver speed.

    SQLAlchemy's ``executemany`` spends most of its time per parameter; a settlement
    books millions of rows. Here each column's own bind processor (MoneyColumn to fen,
    UUIDs and datetimes for SQLite) runs once per value, or once per run of the same
    value, and the rows go to the driver whole: binary ``COPY`` on PostgreSQL,
    ``executemany`` on SQLite. Constraints hold as for any INSERT; nothing is upserted.
    """
    if not rows:
        return
    conn = await session.connection()
    dialect = conn.dialect
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    ]
    by_column = zip(*rows, strict=True)
    processed = list(zip(*(_processed(values, process)
                           for values, process in zip(by_column, processors, strict=True)),
                         strict=True))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if dialect.name == "postgresql":
        if not driver.is_in_transaction():
            # The asyncpg adapter opens its transaction on the first statement; COPY
            # outside it would commit on its own.
            await conn.exec_driver_sql("SELECT 1")
        await driver.copy_records_to_table(
            table.name, records=processed, columns=list(columns), schema_name=table.schema
        )
        return
    quote = dialect.identifier_preparer
    sql = (
        f"INSERT INTO {quote.format_table(table)} "
        f"({', '.join(quote.quote(name) for name in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    await driver.executemany(sql, processed)


def _processed(values: Sequence[Any], process: Callable[[Any], Any] | None) -> list[Any]:
    if process is None:
        return list(values)
    out: list[Any] = []
    last: Any = object()
    last_out: Any = None
    for value in values:
        if value is not last:
            last, last_out = value, (None if value is None else process(value))
        out.append(last_out)
    return out
