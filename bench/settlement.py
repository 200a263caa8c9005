"""Settlement of N positions through the running system (RULES 1.3 at platform scale).

The points database is migrated and seeded with N positions in one cohort (set-based
SQL, see services/points/bench_support.py), the stack is started on it, and then:
- *settlement*: the admin's POST that runs the due settlement, until it has committed;
- *wallets credited*: from that POST until vouchers has announced (payouts.credited on
  the broker) that it booked every payout of the settlement into the wallets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer

from scripts.stack import SERVICES, free_port, running_stack
from services.points.bench_support import seed_settlement_bench
from services.points.settings import PointsSettings
from shared.db import Database
from shared.events import VOUCHERS_TOPIC, PayoutsCredited
from shared.migrations import upgrade_to_head
from shared.settings import DEV_ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}


@dataclass
class SettlementBench:
    positions: int
    positions_paid: int
    payout_events: int
    total_paid: str
    seed_seconds: float
    settle_seconds: float
    credited_seconds: float


async def _count_credited(bootstrap: str, target: list[int], done: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(VOUCHERS_TOPIC, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        credited = 0
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batch.values():
                for record in records:
                    envelope = json.loads(record.value)
                    if envelope["type"] == PayoutsCredited.TYPE:
                        credited += int(envelope["data"]["count"])
            if target and credited >= target[0]:
                done.set()
                return
    finally:
        await consumer.stop()


async def _seed(points_url: str, positions: int, first_day: str) -> tuple[datetime, float]:
    await upgrade_to_head(ROOT / "services" / "points" / "migrations", points_url)
    settings = PointsSettings(database_url=points_url, kafka_enabled=False,
                              consumer_first_day=first_day)
    db = Database(points_url)
    started = time.perf_counter()
    try:
        seed = await seed_settlement_bench(db, settings, positions=positions)
    finally:
        await db.dispose()
    return seed.as_of, time.perf_counter() - started


def run_settlement_bench(
    positions: int, database_urls: dict[str, str] | None, var_dir: Path
) -> SettlementBench:
    # The program starts today, so the seeded period is due in ten days: only the
    # admin's as_of settles it, not the scheduler.
    first_day = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    urls = dict(database_urls or {})
    urls.setdefault("points", f"sqlite+aiosqlite:///{var_dir / 'points.db'}")
    as_of, seed_seconds = asyncio.run(_seed(urls["points"], positions, first_day))
    env = {f"{p}KAFKA_SESSION_TIMEOUT_MS": "3000" for p, _ in SERVICES.values()}
    env["POINTS_CONSUMER_FIRST_DAY"] = env["POINTS_MERCHANT_FIRST_DAY"] = first_day
    with running_stack(var_dir=var_dir, broker_port=free_port(),
                       ports={n: free_port() for n in SERVICES},
                       database_urls=urls, extra_env=env) as stack:
        return asyncio.run(_settle(stack.url("points"), f"127.0.0.1:{stack.broker_port}",
                                   as_of, positions, seed_seconds))


async def _settle(points_url: str, bootstrap: str, as_of: datetime, positions: int,
                  seed_seconds: float) -> SettlementBench:
    target: list[int] = []
    done = asyncio.Event()
    counter = asyncio.create_task(_count_credited(bootstrap, target, done))
    try:
        async with httpx.AsyncClient(base_url=points_url, timeout=600) as client:
            # The period is due in ten days: move the points service's clock there.
            moved = await client.put("/v1/admin/clock", json={"now": as_of.isoformat()},
                                     headers=ADMIN)
            moved.raise_for_status()
            started = time.perf_counter()
            r = await client.post("/v1/pools/consumer/settlements",
                                  json={"as_of": as_of.isoformat()}, headers=ADMIN)
            settled = time.perf_counter() - started
            r.raise_for_status()
        record = r.json()["settlements"][0]
        target.append(int(record["positions_paid"]))
        await asyncio.wait_for(done.wait(), timeout=1800)
        credited = time.perf_counter() - started
    finally:
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    return SettlementBench(
        positions=positions, positions_paid=target[0], payout_events=record["payout_events"],
        total_paid=record["total_paid"], seed_seconds=seed_seconds, settle_seconds=settled,
        credited_seconds=credited,
    )
