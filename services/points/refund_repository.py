"""SQL of refunds (RULES, general rules): the only refund code that touches the session.

Lock order, the same as the mints' and the settlements': the pool rows (consumer, then
merchant), then positions. On PostgreSQL the pool rows are taken ``FOR UPDATE`` so that a
settlement cannot pay out of a fund, or close a period, between the moment a refund reads
what is recoverable and the moment it takes it back. SQLite serialises writers anyway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points.models import FundEntry, OrderRefund, Period, Pool, Position
from shared.money import ZERO


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def get_refund(session: AsyncSession, refund_id: UUID) -> OrderRefund | None:
    return await session.get(OrderRefund, refund_id)


async def refunds_of_order(session: AsyncSession, order_id: UUID) -> list[OrderRefund]:
    rows = await session.exec(
        select(OrderRefund)
        .where(col(OrderRefund.order_id) == order_id)
        .order_by(col(OrderRefund.refunded_at), col(OrderRefund.refunded_total))
    )
    return list(rows.all())


def add_refund(session: AsyncSession, refund: OrderRefund) -> None:
    session.add(refund)


# --- pools and positions ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolState:
    fund_balance: Decimal
    period_number: int


async def lock_pools(session: AsyncSession) -> dict[str, PoolState]:
    """The pools' fund balance and current period, locked until commit."""
    rows = await session.exec(
        select(col(Pool.kind), col(Pool.fund_balance), col(Pool.period_number))
        .order_by(col(Pool.kind))
        .with_for_update()
    )
    return {kind: PoolState(balance, number) for kind, balance, number in rows.all()}


@dataclass(frozen=True)
class PositionState:
    points: Decimal
    released: Decimal


async def lock_position(
    session: AsyncSession, pool: str, cohort: int, member_id: UUID
) -> PositionState | None:
    row = (
        await session.exec(
            select(col(Position.points), col(Position.released))
            .where(
                col(Position.pool) == pool,
                col(Position.cohort) == cohort,
                col(Position.member_id) == member_id,
            )
            .with_for_update()
        )
    ).one_or_none()
    return None if row is None else PositionState(row[0], row[1])


async def reduce_position(
    session: AsyncSession, pool: str, cohort: int, member_id: UUID, points: Decimal
) -> None:
    await session.exec(
        update(Position)
        .where(
            col(Position.pool) == pool,
            col(Position.cohort) == cohort,
            col(Position.member_id) == member_id,
        )
        .values(points=col(Position.points) - points)
        .execution_options(synchronize_session=False)
    )


async def reduce_open_period_minted(
    session: AsyncSession, pool: str, cohort: int, points: Decimal
) -> bool:
    """Take *points* off the minted total of period *cohort* if it is still open.

    A settled period keeps its figures: its growth was measured and its settlement done.
    Returns whether the period was open.
    """
    result = await session.exec(
        update(Period)
        .where(
            col(Period.pool) == pool,
            col(Period.number) == cohort,
            col(Period.settled_at).is_(None),
        )
        .values(minted=col(Period.minted) - points)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await session.exec(
        update(Pool)
        .where(col(Pool.kind) == pool, col(Pool.period_number) == cohort)
        .values(minted=col(Pool.minted) - points)
        .execution_options(synchronize_session=False)
    )
    return True


async def debit_pool_fund(session: AsyncSession, pool: str, amount: Decimal) -> None:
    """Take *amount* out of a pool fund; never below zero (RULES: no fund goes negative)."""
    result = await session.exec(
        update(Pool)
        .where(col(Pool.kind) == pool, col(Pool.fund_balance) >= amount)
        .values(fund_balance=col(Pool.fund_balance) - amount)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise RuntimeError(f"the {pool} pool fund holds less than {amount}")


# --- ledger accounts ----------------------------------------------------------------------


async def lock_account(session: AsyncSession, account: str) -> None:
    """Serialise takers of a ledger account that has no row to lock (PostgreSQL)."""
    if _is_postgresql(session):
        key = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big", signed=True)
        await session.exec(select(func.pg_advisory_xact_lock(key)))


async def account_balance(session: AsyncSession, account: str) -> Decimal:
    total = (
        await session.exec(
            select(func.sum(col(FundEntry.amount))).where(col(FundEntry.account) == account)
        )
    ).one()
    return total if total is not None else ZERO
