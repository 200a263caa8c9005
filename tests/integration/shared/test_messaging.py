"""The outbox, the relay, the broker and the idempotent consumer, end to end.

Real Tansu broker, real SQLite and PostgreSQL: an event written in a transaction is
published, consumed and applied exactly once, even when delivered twice, when the
handler crashes before its commit, and when a poison message sits in front of it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlmodel import Field, SQLModel, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.app import MESSAGING_TABLES
from shared.db import Database
from shared.events import Envelope, MemberRegistered, dead_letter_topic
from shared.inbox import EventConsumer, ProcessedEvent, handle_envelope
from shared.kafka import EventPublisher, ensure_topics
from shared.outbox import OutboxMessage, OutboxRelay, record_event


class Tally(SQLModel, table=True):
    __tablename__ = "test_tally"

    member_id: uuid.UUID = Field(primary_key=True)
    seen: int = 0


async def count_member(session: AsyncSession, event: MemberRegistered, _: Envelope) -> None:
    row = await session.get(Tally, event.member_id)
    if row is None:
        session.add(Tally(member_id=event.member_id, seen=1))
    else:
        row.seen += 1
        session.add(row)


HANDLERS: dict[str, Any] = {MemberRegistered.TYPE: count_member}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.create_tables([Tally.__table__, *MESSAGING_TABLES])  # type: ignore[attr-defined]
    yield database
    await database.dispose()


def registered(member_id: uuid.UUID | None = None) -> MemberRegistered:
    return MemberRegistered(
        member_id=member_id or uuid.uuid4(),
        kind="consumer",
        inviter_id=None,
        registered_at=datetime(2024, 3, 15, tzinfo=UTC),
    )


async def seen(db: Database, member_id: uuid.UUID) -> int:
    async with db.read() as session:
        row = await session.get(Tally, member_id)
        return 0 if row is None else row.seen


async def test_event_delivered_twice_is_applied_once(db: Database) -> None:
    event = registered()
    envelope = event.envelope(producer="test")

    assert await handle_envelope(db, "tally", HANDLERS, envelope) is True
    assert await handle_envelope(db, "tally", HANDLERS, envelope) is False

    assert await seen(db, event.member_id) == 1


async def test_handler_crashing_before_commit_is_retried_and_counts_once(db: Database) -> None:
    event = registered()
    envelope = event.envelope(producer="test")
    crashes = {"left": 1}

    async def flaky(session: AsyncSession, ev: MemberRegistered, env: Envelope) -> None:
        await count_member(session, ev, env)
        await session.flush()  # the write reached the database, but is not committed
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        await handle_envelope(db, "tally", {MemberRegistered.TYPE: flaky}, envelope)
    assert await seen(db, event.member_id) == 0  # rolled back with the inbox row

    assert await handle_envelope(db, "tally", {MemberRegistered.TYPE: flaky}, envelope) is True
    assert await handle_envelope(db, "tally", {MemberRegistered.TYPE: flaky}, envelope) is False
    assert await seen(db, event.member_id) == 1


async def test_outbox_rolled_back_with_its_transaction(db: Database) -> None:
    async def failing_business_transaction() -> None:
        async with db.transaction() as session:
            record_event(session, registered(), producer="test")
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        await failing_business_transaction()
    async with db.read() as session:
        assert (await session.exec(select(func.count()).select_from(OutboxMessage))).one() == 0


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_outbox_to_broker_to_inbox_exactly_once_with_poison_dead_lettered(
    db: Database, kafka_bootstrap: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic, consumer_name = f"it-{suffix}.events", f"it-{suffix}"
    await ensure_topics(kafka_bootstrap, [topic, dead_letter_topic(consumer_name)])
    publisher = EventPublisher(kafka_bootstrap)
    await publisher.start()
    relay = OutboxRelay(db, publisher, poll_seconds=0.05)
    consumer = EventConsumer(
        db, consumer_name, [topic], HANDLERS,
        bootstrap_servers=kafka_bootstrap, publisher=publisher, max_attempts=2, retry_delay=0.01,
        session_timeout_ms=2000,
    )
    first, second = registered(), registered()
    tasks: list[asyncio.Task[None]] = []
    try:
        # A poison message first on the partition of `first`: it must not block it.
        key = str(first.member_id)
        await publisher.publish(topic, key, b"{not json")
        async with db.transaction() as session:
            for ev in (first, second):
                envelope = ev.envelope(producer="test")
                # Route to the test topic; the relay publishes what the outbox row says.
                session.add(OutboxMessage(
                    event_id=envelope.event_id, topic=topic, key=envelope.key,
                    type=envelope.type, payload=envelope.model_dump_json(),
                    created_at=datetime.now(UTC),
                ))
                # The same event published twice (a relay that crashed before marking
                # it sent) must still be applied once.
                await publisher.publish(topic, envelope.key, envelope.model_dump_json().encode())
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]

        async def both_applied() -> bool:
            return await seen(db, first.member_id) >= 1 and await seen(db, second.member_id) >= 1

        await wait_until(both_applied)

        async def relay_done() -> bool:
            async with db.read() as session:
                pending = select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.published_at == None  # noqa: E711
                )
                return (await session.exec(pending)).one() == 0

        await wait_until(relay_done)
        await wait_until(lambda: _true_if(consumer.dead_lettered >= 1))
        # Everything delivered so far has been handled: exactly once each.
        async with db.read() as session:
            inbox = (await session.exec(select(func.count()).select_from(ProcessedEvent))).one()
        assert inbox == 2
        assert await seen(db, first.member_id) == 1
        assert await seen(db, second.member_id) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()

    dlq = AIOKafkaConsumer(
        dead_letter_topic(consumer_name), bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    await dlq.start()
    letters: list[dict[str, Any]] = []
    try:
        for _ in range(50):
            batch = await dlq.getmany(timeout_ms=200)
            letters += [json.loads(r.value) for records in batch.values() for r in records]
            if letters:
                break
    finally:
        await dlq.stop()
    assert len(letters) == 1
    assert letters[0]["original"] == "{not json"
    assert "not an event envelope" in letters[0]["error"]
    assert letters[0]["consumer"] == consumer_name


async def _true_if(value: bool) -> bool:
    return value
