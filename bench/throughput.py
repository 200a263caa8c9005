"""End-to-end throughput: N orders posted over HTTP, timed from the first POST until the
last wallet has been credited with that order's coins (the slowest path of an order:
orders -> broker -> points -> broker -> vouchers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

import httpx

from scripts.stack import Stack
from shared.settings import DEV_ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}


@dataclass
class ThroughputResult:
    orders: int
    post_seconds: float
    total_seconds: float

    @property
    def orders_per_second(self) -> float:
        return self.orders / self.total_seconds


async def _wait_for_coins(
    client: httpx.AsyncClient, members: list[tuple[str, str]], expected: dict[str, Decimal]
) -> None:
    pending = dict(members)
    while pending:
        for member_id, token in list(pending.items()):
            r = await client.get(f"/v1/members/{member_id}/wallet?limit=1",
                                 headers={"Authorization": f"Bearer {token}"})
            coins = Decimal(r.json()["balances"]["coins"]) if r.status_code == 200 else None
            if coins is not None and coins >= expected[member_id]:
                del pending[member_id]
        if pending:
            await asyncio.sleep(0.2)


async def run_throughput(stack: Stack, orders: int = 10_000, consumers: int = 200,
                         concurrency: int = 32) -> ThroughputResult:
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with (
        httpx.AsyncClient(base_url=stack.url("orders"), timeout=60, limits=limits) as o,
        httpx.AsyncClient(base_url=stack.url("referrals"), timeout=60) as ref,
        httpx.AsyncClient(base_url=stack.url("vouchers"), timeout=60) as v,
    ):
        r = await o.post("/v1/merchants", json={"name": "bench", "giveback_rate": "0.20"},
                         headers=ADMIN)
        r.raise_for_status()
        pos = {"X-API-Key": r.json()["api_key"]}
        members: list[tuple[str, str]] = []
        for _ in range(consumers):
            m = (await ref.post("/v1/members", json={})).json()
            members.append((m["member_id"], m["token"]))
        # Orders learns members from referrals' events; wait until it knows the last one
        # (a throwaway member places the probe order, so bench members start at zero).
        probe_member = (await ref.post("/v1/members", json={})).json()["member_id"]
        probe = {"order_id": f"warm-{uuid.uuid4().hex}", "consumer_id": probe_member,
                 "amount": "1.00"}
        while (await o.post("/v1/orders", json=probe, headers=pos)).status_code >= 400:
            await asyncio.sleep(0.1)

        amount = Decimal("100.00")
        expected: dict[str, Decimal] = {mid: Decimal(0) for mid, _ in members}
        for i in range(orders):
            expected[members[i % consumers][0]] += amount * Decimal("0.01")  # RULES 1.1 coins

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(orders):
            queue.put_nowait(i)
        run = uuid.uuid4().hex[:8]

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"order_id": f"b-{run}-{i}", "consumer_id": members[i % consumers][0],
                        "amount": str(amount)}
                resp = await o.post("/v1/orders", json=body, headers=pos)
                if resp.status_code not in (200, 201):
                    raise RuntimeError(f"order {i}: {resp.status_code} {resp.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        posted = time.perf_counter() - start
        await _wait_for_coins(v, members, expected)
        total = time.perf_counter() - start
    return ThroughputResult(orders=orders, post_seconds=posted, total_seconds=total)
