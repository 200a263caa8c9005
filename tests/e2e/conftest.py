"""The whole system as real processes: the Tansu broker and the four services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.stack import SERVICES, Stack, free_port, start_stack
from shared.settings import DEV_ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("stack")
    running = start_stack(
        var_dir=var_dir,
        broker_port=free_port(),
        ports={name: free_port() for name in SERVICES},
        extra_env={f"{p}KAFKA_SESSION_TIMEOUT_MS": "2000" for p, _ in SERVICES.values()},
    )
    try:
        yield running
    finally:
        running.stop()


class System:
    """HTTP clients for each service of a running stack."""

    def __init__(self, stack: Stack, clients: dict[str, httpx.AsyncClient]) -> None:
        self.stack = stack
        self.orders = clients["orders"]
        self.points = clients["points"]
        self.vouchers = clients["vouchers"]
        self.referrals = clients["referrals"]


@pytest.fixture
async def system(stack: Stack) -> AsyncIterator[System]:
    clients = {n: httpx.AsyncClient(base_url=stack.url(n), timeout=10.0) for n in SERVICES}
    try:
        yield System(stack, clients)
    finally:
        for client in clients.values():
            await client.aclose()


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll *check* until it returns a truthy value (events take a moment to flow)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
