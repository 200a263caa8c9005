"""Idempotent consumer: the inbox row ``(consumer, event_id)`` is written in the same
transaction as the handler's own writes, so a redelivered event finds it and is
skipped; Kafka offsets are committed only after that transaction has committed.
An event that keeps failing goes to the consumer's dead-letter topic with the error
and the partition moves on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import Database
from shared.events import Envelope, EventData, dead_letter_topic, parse_event
from shared.kafka import EventPublisher

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]


class ProcessedEvent(SQLModel, table=True):
    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=100)
    event_id: UUID = Field(primary_key=True)
    event_type: str = Field(max_length=100)
    processed_at: datetime


class PermanentFailure(Exception):
    """Raised by a handler for an event that can never succeed (straight to the DLQ)."""


async def handle_envelope(
    db: Database, consumer: str, handlers: Mapping[str, Handler], envelope: Envelope
) -> bool:
    """Apply *envelope* once. Returns False if it was a duplicate or of no interest."""
    handler = handlers.get(envelope.type)
    if handler is None:
        return False
    event: EventData = parse_event(envelope)
    try:
        async with db.transaction() as session:
            if await session.get(ProcessedEvent, (consumer, envelope.event_id)) is not None:
                return False
            session.add(
                ProcessedEvent(
                    consumer=consumer,
                    event_id=envelope.event_id,
                    event_type=envelope.type,
                    processed_at=datetime.now(UTC),
                )
            )
            # Flushed first so a concurrent copy of this event fails here, not later.
            await session.flush()
            await handler(session, event, envelope)
    except IntegrityError:
        # Either another consumer instance processed this very event concurrently
        # (then we are done) or the handler hit a real constraint (re-raise).
        async with db.read() as session:
            if await session.get(ProcessedEvent, (consumer, envelope.event_id)) is not None:
                return False
        raise
    return True


#: PostgreSQL's "try again": a deadlock or a serialization failure rolled us back.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble (database down, a deadlock) is retried forever, never
    dead-lettered."""
    if isinstance(exc, OperationalError | ConnectionError | OSError):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES
    )


class EventConsumer:
    """Consumes *topics* as consumer group *name* and applies *handlers* exactly once."""

    def __init__(
        self,
        db: Database,
        name: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        *,
        bootstrap_servers: str,
        publisher: EventPublisher,
        max_attempts: int = 5,
        retry_delay: float = 0.2,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.db = db
        self.name = name
        self.topics = list(topics)
        self.handlers = handlers
        self.bootstrap_servers = bootstrap_servers
        self.publisher = publisher
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.session_timeout_ms = session_timeout_ms
        self.processed = 0
        self.dead_lettered = 0
        self.assigned = asyncio.Event()

    async def process_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one Kafka record: retried on failure, dead-lettered when it keeps failing."""
        try:
            envelope = Envelope.model_validate_json(record.value or b"")
        except ValidationError as exc:
            await self.dead_letter(record, f"not an event envelope: {exc}", attempts=1)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                if await handle_envelope(self.db, self.name, self.handlers, envelope):
                    self.processed += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                permanent = isinstance(exc, PermanentFailure | ValidationError | LookupError)
                if not _is_transient(exc) and (permanent or attempt >= self.max_attempts):
                    log.exception("%s: giving up on %s after %d attempts",
                                  self.name, envelope.event_id, attempt)
                    await self.dead_letter(record, f"{type(exc).__name__}: {exc}", attempt)
                    return
                log.warning("%s: %s failed (attempt %d): %r",
                            self.name, envelope.event_id, attempt, exc)
                await asyncio.sleep(min(self.retry_delay * 2 ** (attempt - 1), 5.0))

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int
    ) -> None:
        body = {
            "consumer": self.name,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": error,
            "attempts": attempts,
            "failed_at": datetime.now(UTC).isoformat(),
            "original": (record.value or b"").decode("utf-8", errors="replace"),
        }
        key = (record.key or b"").decode("utf-8", errors="replace")
        await self.publisher.publish(dead_letter_topic(self.name), key, json.dumps(body).encode())
        self.dead_lettered += 1

    async def _apply_partition(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord[bytes, bytes]],
    ) -> None:
        for record in records:
            await self.process_record(record)
        # Committed only now: every record up to here has been applied (or
        # dead-lettered) in a committed database transaction.
        try:
            await consumer.commit({TopicPartition(tp.topic, tp.partition):
                                   records[-1].offset + 1})
        except (CommitFailedError, IllegalStateError):
            # Lost the partition in a rebalance: its new owner redelivers, and the
            # inbox skips what we already applied.
            log.warning("%s: offset commit failed after a rebalance", self.name)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
            # Joining a group takes about half the session timeout on Tansu; tests and
            # the local stack use a short one, production keeps Kafka's usual 10 s.
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 6, 100),
        )
        await consumer.start()
        # Partitions are independent (an entity's events share one): each is applied in
        # order by at most one task at a time, and a partition whose task is done is
        # polled again at once, without waiting for the others. (Waiting for every
        # partition of a poll before the next left the database and this process idle
        # for a third of a settlement's crediting.) The fetcher keeps prefetching every
        # assigned partition meanwhile.
        busy: dict[TopicPartition, asyncio.Task[None]] = {}
        try:
            while True:
                idle = [tp for tp in consumer.assignment() if tp not in busy]
                if idle or not busy:
                    # Only what is fetched already while others work; else wait for data.
                    batch = await consumer.getmany(*idle, timeout_ms=0 if busy else 200)
                    if consumer.assignment():
                        self.assigned.set()
                    for tp, records in batch.items():
                        busy[tp] = asyncio.create_task(
                            self._apply_partition(consumer, tp, records)
                        )
                if busy:
                    # Wakes as soon as one partition is done, and looks for new records
                    # on the idle ones every 20 ms.
                    done, _ = await asyncio.wait(
                        busy.values(), timeout=0.02, return_when=asyncio.FIRST_COMPLETED
                    )
                    for tp, task in list(busy.items()):
                        if task in done:
                            del busy[tp]
                            task.result()  # process_record handles every failure itself
        finally:
            for task in busy.values():
                task.cancel()
            await asyncio.gather(*busy.values(), return_exceptions=True)
            await consumer.stop()
