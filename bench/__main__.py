"""`make bench`: figures, not tests. Runs on SQLite and on PostgreSQL.

    python -m bench [--orders N] [--positions N] [--only sqlite|postgresql]

For each database: the settlement of N positions (default 1,000,000) and the time until
every wallet is credited, then the end-to-end throughput of posting orders over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import asyncpg

from bench.settlement import run_settlement_bench
from bench.throughput import run_throughput
from scripts.stack import SERVICES, free_port, running_stack

PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _create_pg_databases(prefix: str) -> dict[str, str]:
    conn = await asyncpg.connect(PG_DSN)
    try:
        urls = {}
        for name in SERVICES:
            db = f"{prefix}_{name}"
            await conn.execute(f'CREATE DATABASE "{db}"')
            urls[name] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
        return urls
    finally:
        await conn.close()


async def _drop_pg_databases(prefix: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        for name in SERVICES:
            await conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{name}" WITH (FORCE)')
    finally:
        await conn.close()


def bench_settlement(backend: str, positions: int) -> None:
    prefix = f"gp_bench_{uuid.uuid4().hex[:8]}"
    urls = asyncio.run(_create_pg_databases(prefix)) if backend == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_settlement_bench(positions, urls, Path(tmp))
        print(
            f"[{backend}] settlement of {r.positions} positions (seeded in "
            f"{r.seed_seconds:.1f} s): committed in {r.settle_seconds:.2f} s, paid "
            f"{r.total_paid} to {r.positions_paid} positions in {r.payout_events} events; "
            f"every wallet credited after {r.credited_seconds:.1f} s",
            flush=True,
        )
    finally:
        if backend == "postgresql":
            asyncio.run(_drop_pg_databases(prefix))


def bench_backend(backend: str, orders: int) -> None:
    prefix = f"gp_bench_{uuid.uuid4().hex[:8]}"
    urls = asyncio.run(_create_pg_databases(prefix)) if backend == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory() as tmp, running_stack(
            var_dir=Path(tmp),
            broker_port=free_port(),
            ports={n: free_port() for n in SERVICES},
            database_urls=urls,
            extra_env={f"{p}KAFKA_SESSION_TIMEOUT_MS": "3000" for p, _ in SERVICES.values()},
        ) as stack:
            result = asyncio.run(run_throughput(stack, orders=orders))
            print(
                f"[{backend}] {result.orders} orders over HTTP: posted in "
                f"{result.post_seconds:.1f} s, all wallets credited after "
                f"{result.total_seconds:.1f} s -> {result.orders_per_second:.0f} orders/s "
                "end to end",
                flush=True,
            )
    finally:
        if backend == "postgresql":
            asyncio.run(_drop_pg_databases(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000, help="0 skips the orders bench")
    parser.add_argument("--positions", type=int, default=1_000_000,
                        help="0 skips the settlement bench")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    for backend in ("sqlite", "postgresql"):
        if args.only in (None, backend):
            if args.positions:
                bench_settlement(backend, args.positions)
            if args.orders:
                bench_backend(backend, args.orders)


if __name__ == "__main__":
    main()
