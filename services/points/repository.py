"""The only code of the points service that touches the session and SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, and_, case, delete, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import UTCDateTime, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points.models import (
    FundEntry,
    OrderGiveback,
    OrderReward,
    PayoutRecord,
    PendingEvaluation,
    Period,
    PointEntry,
    Pool,
    Position,
)
from services.points.settings import PointsSettings, PoolName
from shared.events import Payout
from shared.money import ZERO


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on both databases."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- serialising the two arrivals of one order -----------------------------------------


async def lock_order(session: AsyncSession, order_id: UUID) -> None:
    """Serialise the handlers of one order until the end of the transaction.

    An order and its referral evaluation arrive on different topics and may be handled
    at the same time; without this lock each could miss the other's uncommitted row and
    leave the give-back pending forever. SQLite already serialises writers.
    """
    if _dialect(session) == "postgresql":
        key = int.from_bytes(order_id.bytes[:8], "big", signed=True)
        await session.exec(select(func.pg_advisory_xact_lock(key)))


# --- pools and periods (RULES 1.2) ----------------------------------------------------


async def _ensure_pool(
    session: AsyncSession, pool: PoolName, settings: PointsSettings, now: datetime
) -> None:
    """Create the pool with its first period (period 1 at the configured start)."""
    started = settings.first_period_start(pool)
    base = settings.base_points(pool)
    await session.exec(
        _insert(session, Pool)
        .values(
            kind=pool, fund_balance=ZERO, period_number=1, period_started_at=started,
            reference_size=base, minted=ZERO, created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["kind"])
    )
    await session.exec(
        _insert(session, Period)
        .values(pool=pool, number=1, started_at=started, reference_size=base, minted=ZERO)
        .on_conflict_do_nothing(index_elements=["pool", "number"])
    )


async def _update_pool(session: AsyncSession, pool: PoolName, **values: Any) -> int | None:
    """Apply *values* to the pool row; returns its current period number, None if absent."""
    result = await session.exec(
        update(Pool)
        .where(col(Pool.kind) == pool)
        .values(**values)
        .returning(col(Pool.period_number))
        .execution_options(synchronize_session=False)
    )
    number = result.scalar_one_or_none()
    return None if number is None else int(number)


async def count_mint(
    session: AsyncSession,
    pool: PoolName,
    points: Decimal,
    settings: PointsSettings,
    now: datetime,
) -> int:
    """Count *points* into the pool's current period; returns that period's number (the cohort).

    The pool row's update locks it until commit, so a settlement that moves the pool to
    its next period cannot interleave with the mint.
    """
    # RULES 1.2: the mint that makes the period's total reach growth_target × S_k records
    # its instant; compared in integer fen as minted × den >= num × S_k (no division).
    num, den = settings.growth_target.as_integer_ratio()
    crosses = and_(
        col(Pool.target_reached_at).is_(None),
        (col(Pool.minted) + points) * literal(den, BigInteger())
        >= col(Pool.reference_size) * literal(num, BigInteger()),
    )
    values = {
        "minted": col(Pool.minted) + points,
        "target_reached_at": case(
            (crosses, literal(now, UTCDateTime())), else_=col(Pool.target_reached_at)
        ),
    }
    number = await _update_pool(session, pool, **values)
    if number is None:
        await _ensure_pool(session, pool, settings, now)
        number = await _update_pool(session, pool, **values)
        assert number is not None
    await session.exec(
        update(Period)
        .where(col(Period.pool) == pool, col(Period.number) == number)
        .values(minted=col(Period.minted) + points)
        .execution_options(synchronize_session=False)
    )
    return number


async def credit_pool_fund(
    session: AsyncSession,
    pool: PoolName,
    amount: Decimal,
    settings: PointsSettings,
    now: datetime,
) -> None:
    values = {"fund_balance": col(Pool.fund_balance) + amount}
    if await _update_pool(session, pool, **values) is None:
        await _ensure_pool(session, pool, settings, now)
        await _update_pool(session, pool, **values)


async def list_pools(session: AsyncSession) -> list[Pool]:
    return list((await session.exec(select(Pool).order_by(col(Pool.kind)))).all())


# --- positions and the points ledger (RULES 1.1, 1.3) ---------------------------------


async def add_to_position(
    session: AsyncSession, pool: PoolName, cohort: int, member_id: UUID, points: Decimal
) -> None:
    """Add *points* to the member's position in the cohort, creating it if needed."""
    stmt = _insert(session, Position).values(
        pool=pool, cohort=cohort, member_id=member_id, points=points,
        released=ZERO, settlements=0, closed=False,
    )
    await session.exec(
        stmt.on_conflict_do_update(
            index_elements=["pool", "cohort", "member_id"],
            set_={"points": col(Position.points) + stmt.excluded.points},
        )
    )


def add_point_entry(session: AsyncSession, entry: PointEntry) -> None:
    session.add(entry)


@dataclass(frozen=True)
class MemberPoints:
    positions: list[Position]
    entries: list[PointEntry]


async def member_points(session: AsyncSession, member_id: UUID, *, limit: int) -> MemberPoints:
    positions = (
        await session.exec(
            select(Position)
            .where(col(Position.member_id) == member_id)
            .order_by(col(Position.pool), col(Position.cohort))
        )
    ).all()
    entries = (
        await session.exec(
            select(PointEntry)
            .where(col(PointEntry.member_id) == member_id)
            .order_by(col(PointEntry.created_at).desc(), col(PointEntry.id).desc())
            .limit(limit)
        )
    ).all()
    return MemberPoints(list(positions), list(entries))


# --- the orders' give-back (RULES 1.1) -----------------------------------------------


async def get_giveback(session: AsyncSession, order_id: UUID) -> OrderGiveback | None:
    return await session.get(OrderGiveback, order_id)


def add_giveback(session: AsyncSession, giveback: OrderGiveback) -> None:
    session.add(giveback)


def add_order_rewards(session: AsyncSession, rewards: Sequence[OrderReward]) -> None:
    session.add_all(rewards)


async def order_rewards(session: AsyncSession, order_id: UUID) -> list[OrderReward]:
    rows = await session.exec(
        select(OrderReward).where(col(OrderReward.order_id) == order_id).order_by(
            col(OrderReward.seq)
        )
    )
    return list(rows.all())


async def get_pending_evaluation(
    session: AsyncSession, order_id: UUID
) -> PendingEvaluation | None:
    return await session.get(PendingEvaluation, order_id)


def add_pending_evaluation(session: AsyncSession, pending: PendingEvaluation) -> None:
    session.add(pending)


async def delete_pending_evaluation(session: AsyncSession, order_id: UUID) -> None:
    await session.exec(
        delete(PendingEvaluation).where(col(PendingEvaluation.order_id) == order_id)
    )


# --- money: the fund ledger and the payouts ------------------------------------------


Leg = tuple[str, Decimal]


def add_fund_transaction(
    session: AsyncSession,
    legs: Sequence[Leg],
    *,
    memo: str,
    order_id: UUID | None,
    at: datetime,
    refund_id: UUID | None = None,
) -> UUID:
    """Book one balanced movement of money (its legs sum to zero); zero legs are left out."""
    total = sum((amount for _, amount in legs), ZERO)
    if total != 0:
        raise ValueError(f"an unbalanced fund transaction ({memo}): legs sum to {total}")
    txn_id = uuid.uuid4()
    session.add_all(
        FundEntry(
            txn_id=txn_id, account=account, amount=amount, memo=memo, order_id=order_id,
            created_at=at, refund_id=refund_id,
        )
        for account, amount in legs
        if amount != 0
    )
    return txn_id


async def fund_entries_of_order(session: AsyncSession, order_id: UUID) -> list[FundEntry]:
    rows = await session.exec(
        select(FundEntry).where(col(FundEntry.order_id) == order_id).order_by(col(FundEntry.id))
    )
    return list(rows.all())


def add_payouts(
    session: AsyncSession, batch_id: UUID, payouts: Sequence[Payout], *, at: datetime
) -> None:
    session.add_all(
        PayoutRecord(
            payout_id=p.payout_id, batch_id=batch_id, member_id=p.member_id, asset=p.asset,
            amount=p.amount, reason=p.reason, fund=p.fund, order_id=p.order_id,
            settlement_id=p.settlement_id, created_at=at,
        )
        for p in payouts
    )


async def payouts_of_order(session: AsyncSession, order_id: UUID) -> list[PayoutRecord]:
    rows = await session.exec(
        select(PayoutRecord)
        .where(col(PayoutRecord.order_id) == order_id)
        .order_by(col(PayoutRecord.created_at), col(PayoutRecord.reason))
    )
    return list(rows.all())


async def unbalanced_fund_transactions(session: AsyncSession) -> list[UUID]:
    """Fund transactions whose legs do not sum to zero (the audit expects none)."""
    rows = await session.exec(
        select(FundEntry.txn_id)
        .group_by(col(FundEntry.txn_id))
        .having(func.sum(col(FundEntry.amount)) != 0)
    )
    return list(rows.all())
