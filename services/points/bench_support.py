"""Benchmark support: seed a pool with N positions in one cohort, then time its settlement.

``make bench`` (bench/) seeds with :func:`seed_settlement_bench` and times
:func:`services.points.settlement.run_due_settlements`; :func:`time_settlement` does both
steps' second half. Seeding is set-based too (``generate_series`` on PostgreSQL, a
recursive CTE on SQLite), so a million positions take seconds, not minutes.

Run by hand::

    .venv/bin/python -m services.points.bench_support --positions 1000000 \
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.points.settings import PointsSettings, PoolName
from services.points.settlement import SettlementRecord, run_due_settlements
from shared.db import Database
from shared.money import from_fen

#: Points of position i, in fen: 100.00 … 10,099.99, spread deterministically.
_POINTS_FEN_SQL = "(10000 + ((CAST(i AS bigint) * 7919) % 1000000))"


@dataclass(frozen=True)
class BenchSeed:
    pool: PoolName
    positions: int
    points: Decimal
    fund: Decimal
    #: The instant the seeded period's settlement is due: pass it as ``as_of``.
    as_of: datetime


async def seed_settlement_bench(
    db: Database,
    settings: PointsSettings,
    *,
    positions: int,
    pool: PoolName = "consumer",
    pro_rata: bool = False,
    tidy: bool = True,
) -> BenchSeed:
    """Seed *positions* positions into cohort 1 of *pool*, its period 1 and a funded pool.

    The tables must exist and hold no pool yet. The period reaches its growth target on
    its first day, so its settlement is due at the start of day ``min_days + 1``. The fund
    covers every cohort budget (or, with *pro_rata*, half of it, so the budget is split).
    With *tidy* it then vacuums, analyses and (PostgreSQL) checkpoints, as a live database
    would have by the time the period is due (tests skip it).
    """
    if positions < 1:
        raise ValueError("seed at least one position")
    started = settings.first_period_start(pool)
    postgresql = not db.is_sqlite
    if postgresql:
        member_sql = "md5('bench-member-' || i)::uuid"
        series = f"SELECT i FROM generate_series(1, {int(positions)}) AS i"
        prefix = ""
    else:
        member_sql = "printf('%032x', i)"
        series = "SELECT i FROM seq"
        prefix = f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq " \
                 f"WHERE i < {int(positions)}) "
    async with db.transaction() as session:
        connection = await session.connection()
        await connection.execute(
            text(
                f"INSERT INTO positions (pool, cohort, member_id, points, released, "
                f"settlements, closed) {prefix}"
                f"SELECT :pool, 1, {member_sql}, {_POINTS_FEN_SQL}, 0, 0, false "
                f"FROM ({series}) AS s"
            ),
            {"pool": pool},
        )
        total_fen = int(
            (
                await connection.execute(
                    text("SELECT SUM(points) FROM positions WHERE pool = :pool"), {"pool": pool}
                )
            ).scalar_one()
        )
    points = from_fen(total_fen)
    entitlement = points * settings.base_rate
    # Each cohort's budget is cohort_share × B: size B so the budget covers (or halves) it.
    fund = (entitlement / settings.cohort_share * (Decimal("0.5") if pro_rata else 1))
    fund = fund.quantize(Decimal("0.01")) + Decimal("1.00")
    reference = settings.base_points(pool)
    async with db.transaction() as session:
        from services.points.models import Period, Pool

        session.add(
            Pool(
                kind=pool, fund_balance=fund, period_number=1, period_started_at=started,
                reference_size=reference, minted=points, created_at=started,
                target_reached_at=started + timedelta(hours=1),
            )
        )
        session.add(
            Period(pool=pool, number=1, started_at=started, reference_size=reference,
                   minted=points)
        )
    if tidy:
        await _tidy_up(db)
    if points < reference * settings.growth_target:
        # Not enough points for the target: the settlement is forced at day max_days + 1.
        as_of = started + timedelta(days=settings.max_days)
    else:
        as_of = started + timedelta(days=settings.min_days)
    return BenchSeed(pool=pool, positions=positions, points=points, fund=fund, as_of=as_of)


async def _tidy_up(db: Database) -> None:
    """What a live database has done by the time a period is due: statistics gathered,
    dead rows vacuumed, and (PostgreSQL, if allowed) the seeding's WAL checkpointed."""
    if db.is_sqlite:
        async with db.transaction() as session:
            await (await session.connection()).execute(text("ANALYZE"))
        return
    async with db.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE positions"))
        try:
            await autocommit.execute(text("CHECKPOINT"))
        except Exception:  # noqa: BLE001 - only a superuser may; the timing is then noisier
            pass


@dataclass(frozen=True)
class BenchResult:
    seconds: float
    settlement: SettlementRecord


async def time_settlement(db: Database, settings: PointsSettings, seed: BenchSeed) -> BenchResult:
    """Run the seeded pool's settlement in one transaction (committed) and time it."""
    started = time.perf_counter()
    async with db.transaction() as session:
        records = await run_due_settlements(session, seed.pool, seed.as_of, settings)
    seconds = time.perf_counter() - started
    if len(records) != 1:
        raise RuntimeError(f"expected one settlement, got {len(records)}")
    return BenchResult(seconds, records[0])


# --- by hand ---------------------------------------------------------------------------------


async def _main(url: str, positions: int, pro_rata: bool) -> None:
    import asyncpg

    from services.points.app import TABLES

    database = None
    if make_url(url).get_backend_name() == "postgresql":
        database = f"gp_bench_{uuid.uuid4().hex[:12]}"
        admin_dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'CREATE DATABASE "{database}"')
        await admin.close()
        url = f"{url.rsplit('/', 1)[0]}/{database}"
    else:
        path = make_url(url).database
        for suffix in ("", "-wal", "-shm"):
            if path:
                Path(path + suffix).unlink(missing_ok=True)
    db = Database(url)
    try:
        await db.create_tables(TABLES)
        settings = PointsSettings(database_url=url, kafka_enabled=False)
        started = time.perf_counter()
        seed = await seed_settlement_bench(db, settings, positions=positions, pro_rata=pro_rata)
        print(f"seeded {positions} positions in {time.perf_counter() - started:.1f} s")
        result = await time_settlement(db, settings, seed)
        s = result.settlement
        print(
            f"settlement of {positions} positions: {result.seconds:.2f} s; paid {s.total_paid} "
            f"to {s.positions_paid} positions in {s.payout_events} events "
            f"(pro rata: {s.cohorts[0].pro_rata if s.cohorts else None})"
        )
    finally:
        await db.dispose()
        if database is not None:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="sqlite+aiosqlite:///var/bench-points.db")
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--pro-rata", action="store_true")
    args = parser.parse_args()
    asyncio.run(_main(args.url, args.positions, args.pro_rata))


if __name__ == "__main__":
    main()
