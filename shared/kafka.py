"""Kafka plumbing (aiokafka): topic creation and a publisher that waits for acks.

We rely on neither the idempotent producer nor transactions (Tansu has neither, and
the outbox + inbox give exactly-once *effect* on any Kafka).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 3


async def ensure_topics(
    bootstrap_servers: str, topics: Iterable[str], *, partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create the topics that do not exist yet (idempotent; safe from several services)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another service created it between our list and create
    finally:
        await admin.close()


class EventPublisher:
    """Sends (topic, key, value) messages and returns only once the broker has them."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=2,
            max_request_size=8 * 1024 * 1024,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish_many(self, messages: Sequence[tuple[str, str, bytes]]) -> None:
        futures = [
            await self._producer.send(topic, value=value, key=key.encode())
            for topic, key, value in messages
        ]
        await asyncio.gather(*futures)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many([(topic, key, value)])
