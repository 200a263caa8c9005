"""Transactional outbox: events are written in the same transaction as the state they
describe, and a relay publishes them afterwards. A crash between commit and publish
only delays the event; a crash between publish and "mark sent" publishes it twice,
which the consumers' inbox turns back into once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Index, Text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import Database
from shared.events import EventData
from shared.kafka import EventPublisher

log = logging.getLogger(__name__)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: UUID = Field(unique=True)
    topic: str = Field(max_length=200)
    key: str = Field(max_length=200)
    type: str = Field(max_length=100)
    payload: str = Field(sa_type=Text)
    created_at: datetime
    published_at: datetime | None = None


def record_event(
    session: AsyncSession, event: EventData, *, producer: str, occurred_at: datetime | None = None
) -> UUID:
    """Add *event* to the outbox within the caller's transaction; returns its event_id."""
    envelope = event.envelope(producer=producer, occurred_at=occurred_at)
    session.add(
        OutboxMessage(
            event_id=envelope.event_id,
            topic=event.TOPIC,
            key=envelope.key,
            type=envelope.type,
            payload=envelope.model_dump_json(),
            created_at=datetime.now(UTC),
        )
    )
    session.info["has_events"] = True
    return envelope.event_id


class OutboxRelay:
    """Publishes unsent outbox rows in id order and marks them sent."""

    def __init__(
        self,
        db: Database,
        publisher: EventPublisher,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.2,
        batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._batch_bytes = batch_bytes
        #: Rows per read: up to batch_size for ordinary events, as many as fit in
        #: batch_bytes when they are large (a settlement's 500 payout batches are
        #: ~300 MB: read at once, the first would reach Kafka only after the last was
        #: loaded). It starts small and doubles while the events stay small.
        self._limit = min(batch_size, 64)
        self._wakeup = asyncio.Event()
        db.after_commit_with_events.append(self._wakeup.set)

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many events went out."""
        query = (
            select(OutboxMessage)
            .where(col(OutboxMessage.published_at).is_(None))
            .order_by(col(OutboxMessage.id))
            .limit(self._limit)
        )
        if self._db.is_sqlite:
            # One relay per SQLite file: read, publish, then mark in a short write
            # transaction so that the database lock is not held while Kafka acks.
            async with self._db.read() as session:
                rows = list((await session.exec(query)).all())
            if rows:
                await self._send(rows)
                async with self._db.transaction() as session:
                    await self._mark_sent(session, rows)
            return len(rows)
        # PostgreSQL: several replicas may relay; SKIP LOCKED hands each row to one.
        async with self._db.transaction() as session:
            rows = list((await session.exec(query.with_for_update(skip_locked=True))).all())
            if rows:
                await self._send(rows)
                await self._mark_sent(session, rows)
        return len(rows)

    async def _send(self, rows: list[OutboxMessage]) -> None:
        messages = [(r.topic, r.key, r.payload.encode()) for r in rows]
        size = sum(len(value) for _, _, value in messages)
        fit = self._batch_bytes * len(rows) // max(size, 1)
        self._limit = max(1, min(self._batch_size, 2 * self._limit, fit))
        await self._publisher.publish_many(messages)

    @staticmethod
    async def _mark_sent(session: AsyncSession, rows: list[OutboxMessage]) -> None:
        await session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_([r.id for r in rows]))
            .values(published_at=datetime.now(UTC))
        )

    async def run(self) -> None:
        while True:
            limit = self._limit
            try:
                sent = await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                sent = 0
                await asyncio.sleep(1.0)
            if sent < limit:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)
                except TimeoutError:
                    pass
