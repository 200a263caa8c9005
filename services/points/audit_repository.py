"""SQL of the audit (RULES 1.7) and of the payout reconciliation: set-based sums only.

Money columns are integer fen (:class:`shared.db.MoneyColumn`): ``SUM`` is exact and reads
back as a Decimal. Comparisons with a rate (the cap ``multiplier × points``) are done on
the raw integers with the rate as an integer ratio, so nothing is rounded in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, exists, func, or_, type_coerce, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points.models import (
    FundEntry,
    OrderGiveback,
    OrderRefund,
    PayoutCredit,
    PayoutRecord,
    PointEntry,
    Pool,
    Position,
)
from services.points.settlement_models import SettlementBatch
from shared.money import ZERO


def _money(value: Decimal | None) -> Decimal:
    return ZERO if value is None else value


async def _sum(session: AsyncSession, column: Any, *where: Any) -> Decimal:
    query = select(func.sum(column))
    if where:
        query = query.where(*where)
    total: Decimal | None = (await session.exec(query)).one()
    return _money(total)


# --- payouts.credited ----------------------------------------------------------------------


async def record_payout_credit(
    session: AsyncSession, batch_id: UUID, count: int, total: Decimal, at: datetime
) -> None:
    """Mark a payout batch as credited by vouchers; a second credit of it changes nothing."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.exec(
        dialect.insert(PayoutCredit)
        .values(batch_id=batch_id, count=count, total=total, credited_at=at)
        .on_conflict_do_nothing(index_elements=["batch_id"])
    )


# --- 1. the fund ledger --------------------------------------------------------------------


async def unbalanced_transactions(session: AsyncSession, *, limit: int) -> tuple[int, list[UUID]]:
    unbalanced = (
        select(FundEntry.txn_id)
        .group_by(col(FundEntry.txn_id))
        .having(func.sum(col(FundEntry.amount)) != 0)
        .subquery()
    )
    count = (await session.exec(select(func.count()).select_from(unbalanced))).one()
    ids = (await session.exec(select(unbalanced.c.txn_id).limit(limit))).all()
    return int(count), [UUID(str(i)) for i in ids]


async def transaction_count(session: AsyncSession) -> int:
    count = (await session.exec(select(func.count(func.distinct(FundEntry.txn_id))))).one()
    return int(count)


async def account_balances(session: AsyncSession, accounts: Sequence[str]) -> dict[str, Decimal]:
    rows = await session.exec(
        select(FundEntry.account, func.sum(col(FundEntry.amount)))
        .where(col(FundEntry.account).in_(accounts))
        .group_by(col(FundEntry.account))
    )
    found = {account: _money(total) for account, total in rows.all()}
    return {account: found.get(account, ZERO) for account in accounts}


async def merchant_giveback_balance(session: AsyncSession) -> Decimal:
    """Σ of every ``merchant:<id>:giveback`` account (negative: G that left merchants)."""
    return await _sum(
        session, col(FundEntry.amount),
        col(FundEntry.account).like("merchant:%:giveback"),
    )


# --- 2. pool funds -------------------------------------------------------------------------


async def pool_funds(session: AsyncSession) -> dict[str, Decimal]:
    rows = await session.exec(select(col(Pool.kind), col(Pool.fund_balance)))
    return {str(kind): balance for kind, balance in rows.all()}


# --- 3. positions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionFigures:
    positions: int
    points: Decimal
    released: Decimal
    over_cap: int
    over_settlements: int
    negative: int
    entries_points: Decimal


async def position_figures(
    session: AsyncSession, multiplier: Decimal, max_settlements: int
) -> PositionFigures:
    numerator, denominator = multiplier.as_integer_ratio()
    released_fen = type_coerce(col(Position.released), BigInteger)
    points_fen = type_coerce(col(Position.points), BigInteger)
    count = (await session.exec(select(func.count()).select_from(Position))).one()
    over_cap = (
        await session.exec(
            select(func.count())
            .select_from(Position)
            .where(released_fen * denominator > points_fen * numerator)
        )
    ).one()
    over_settlements = (
        await session.exec(
            select(func.count())
            .select_from(Position)
            .where(col(Position.settlements) > max_settlements)
        )
    ).one()
    negative = (
        await session.exec(
            select(func.count())
            .select_from(Position)
            .where(or_(points_fen < 0, released_fen < 0))
        )
    ).one()
    return PositionFigures(
        positions=int(count),
        points=await _sum(session, col(Position.points)),
        released=await _sum(session, col(Position.released)),
        over_cap=int(over_cap),
        over_settlements=int(over_settlements),
        negative=int(negative),
        entries_points=await _sum(session, col(PointEntry.points)),
    )


# --- 4. give-back --------------------------------------------------------------------------


@dataclass(frozen=True)
class GivebackFigures:
    orders: int
    giveback: Decimal
    allocated_fee: Decimal
    allocated_rewards: Decimal
    allocated_consumer_pool: Decimal
    allocated_merchant_pool: Decimal
    #: G of orders still waiting for their evaluation (before refunds).
    pending_giveback: Decimal
    #: Of that, what refunds already gave back to the merchants.
    pending_returned_of_pending: Decimal
    #: Pending G that refunds gave back to the merchants, of every order.
    pending_returned: Decimal


async def giveback_figures(session: AsyncSession) -> GivebackFigures:
    allocated = col(OrderGiveback.state) == "allocated"
    pending = col(OrderGiveback.state) == "pending"
    count = (await session.exec(select(func.count()).select_from(OrderGiveback))).one()
    of_pending_orders = exists().where(
        col(OrderGiveback.order_id) == col(OrderRefund.order_id), pending
    )
    return GivebackFigures(
        orders=int(count),
        giveback=await _sum(session, col(OrderGiveback.giveback)),
        allocated_fee=await _sum(session, col(OrderGiveback.platform_fee), allocated),
        allocated_rewards=await _sum(session, col(OrderGiveback.rewards_total), allocated),
        allocated_consumer_pool=await _sum(session, col(OrderGiveback.consumer_pool), allocated),
        allocated_merchant_pool=await _sum(session, col(OrderGiveback.merchant_pool), allocated),
        pending_giveback=await _sum(session, col(OrderGiveback.giveback), pending),
        pending_returned_of_pending=await _sum(
            session, col(OrderRefund.pending_giveback), of_pending_orders
        ),
        pending_returned=await _sum(session, col(OrderRefund.pending_giveback)),
    )


# --- refunds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundFigures:
    refunds: int
    amount: Decimal
    consumer_points_due: Decimal
    consumer_points_reversed: Decimal
    merchant_points_due: Decimal
    merchant_points_reversed: Decimal
    coins: Decimal
    pending_giveback: Decimal
    taken_back_due: Decimal
    recovered: Decimal
    pool_recovered: Decimal
    unrecovered: Decimal
    rewards_kept: Decimal


async def refund_figures(session: AsyncSession) -> RefundFigures:
    count = (await session.exec(select(func.count()).select_from(OrderRefund))).one()

    async def total(column: Any) -> Decimal:
        return await _sum(session, column)

    fee_due = await total(col(OrderRefund.platform_fee_due))
    consumer_pool_due = await total(col(OrderRefund.consumer_pool_due))
    merchant_pool_due = await total(col(OrderRefund.merchant_pool_due))
    fee = await total(col(OrderRefund.platform_fee_recovered))
    pools = await total(col(OrderRefund.consumer_pool_recovered)) + await total(
        col(OrderRefund.merchant_pool_recovered)
    )
    return RefundFigures(
        refunds=int(count),
        amount=await total(col(OrderRefund.amount)),
        consumer_points_due=await total(col(OrderRefund.consumer_points_due)),
        consumer_points_reversed=await total(col(OrderRefund.consumer_points_reversed)),
        merchant_points_due=await total(col(OrderRefund.merchant_points_due)),
        merchant_points_reversed=await total(col(OrderRefund.merchant_points_reversed)),
        coins=await total(col(OrderRefund.coins)),
        pending_giveback=await total(col(OrderRefund.pending_giveback)),
        taken_back_due=fee_due + consumer_pool_due + merchant_pool_due,
        recovered=fee + pools,
        pool_recovered=pools,
        unrecovered=await total(col(OrderRefund.unrecovered)),
        rewards_kept=await total(col(OrderRefund.rewards_kept)),
    )


# --- 5. vouchers released ------------------------------------------------------------------


async def vouchers_released(session: AsyncSession) -> Decimal:
    """Σ vouchers paid out of give-back money: rewards and settlements (RULES 1.7)."""
    rewards = await _sum(
        session, col(PayoutRecord.amount),
        col(PayoutRecord.asset) == "vouchers",
        col(PayoutRecord.reason).in_(("binding_reward", "invite_reward")),
    )
    # Every settlement payout is vouchers (its batches keep the totals).
    return rewards + await _sum(session, col(SettlementBatch.total))


# --- 6. payouts emitted and credited ---------------------------------------------------------


@dataclass(frozen=True)
class PayoutFigures:
    emitted_batches: int
    emitted_payouts: int
    emitted_total: Decimal
    credited_batches: int
    credited_payouts: int
    credited_total: Decimal
    in_flight_batches: int
    in_flight_payouts: int
    in_flight_total: Decimal
    oldest_in_flight: datetime | None
    #: Credited batches whose count or total differs from what points emitted.
    mismatched: list[UUID]
    #: Credited batches points never emitted.
    unknown: list[UUID]


async def payout_figures(session: AsyncSession, *, limit: int) -> PayoutFigures:
    # Every batch points emitted: those of the payouts rows (rewards, coins, reversals)
    # and those of the settlements, which keep a row per batch only.
    batches = union_all(
        select(
            PayoutRecord.batch_id.label("batch_id"),  # type: ignore[attr-defined]
            func.count().label("payouts"),
            func.sum(col(PayoutRecord.amount)).label("total"),
            func.min(col(PayoutRecord.created_at)).label("created_at"),
        ).group_by(col(PayoutRecord.batch_id)),
        select(
            col(SettlementBatch.batch_id), col(SettlementBatch.payouts),
            col(SettlementBatch.total), col(SettlementBatch.created_at),
        ),
    ).subquery()
    emitted = (
        await session.exec(
            select(func.count(), func.sum(batches.c.payouts), func.sum(batches.c.total))
        )
    ).one()
    credited = (
        await session.exec(
            select(func.count(), func.sum(col(PayoutCredit.count)),
                   func.sum(col(PayoutCredit.total)))
        )
    ).one()
    not_credited = ~exists().where(col(PayoutCredit.batch_id) == batches.c.batch_id)
    in_flight = (
        await session.exec(
            select(
                func.count(), func.sum(batches.c.payouts), func.sum(batches.c.total),
                func.min(batches.c.created_at),
            ).where(not_credited)
        )
    ).one()
    mismatched = (
        await session.exec(
            select(batches.c.batch_id)
            .join(PayoutCredit, col(PayoutCredit.batch_id) == batches.c.batch_id)
            .where(
                or_(
                    col(PayoutCredit.count) != batches.c.payouts,
                    col(PayoutCredit.total) != batches.c.total,
                )
            )
            .limit(limit)
        )
    ).all()
    unknown = (
        await session.exec(
            select(PayoutCredit.batch_id)
            .where(~exists().where(batches.c.batch_id == col(PayoutCredit.batch_id)))
            .limit(limit)
        )
    ).all()
    return PayoutFigures(
        emitted_batches=int(emitted[0]),
        emitted_payouts=int(emitted[1] or 0),
        emitted_total=_money(emitted[2]),
        credited_batches=int(credited[0]),
        credited_payouts=int(credited[1] or 0),
        credited_total=_money(credited[2]),
        in_flight_batches=int(in_flight[0]),
        in_flight_payouts=int(in_flight[1] or 0),
        in_flight_total=_money(in_flight[2]),
        oldest_in_flight=in_flight[3],
        mismatched=[UUID(str(b)) for b in mismatched],
        unknown=[UUID(str(b)) for b in unknown],
    )


# --- 7. the orders points has seen -----------------------------------------------------------


@dataclass(frozen=True)
class OrdersSeen:
    orders: int
    amount: Decimal
    voucher_amount: Decimal
    cash_amount: Decimal
    refunds: int
    refunded_amount: Decimal
    refunded_voucher_amount: Decimal
    refunded_cash_amount: Decimal


async def orders_seen(session: AsyncSession) -> OrdersSeen:
    orders = (await session.exec(select(func.count()).select_from(OrderGiveback))).one()
    refunds = (await session.exec(select(func.count()).select_from(OrderRefund))).one()
    return OrdersSeen(
        orders=int(orders),
        amount=await _sum(session, col(OrderGiveback.amount)),
        voucher_amount=await _sum(session, col(OrderGiveback.voucher_amount)),
        cash_amount=await _sum(session, col(OrderGiveback.cash_amount)),
        refunds=int(refunds),
        refunded_amount=await _sum(session, col(OrderRefund.amount)),
        refunded_voucher_amount=await _sum(session, col(OrderRefund.voucher_amount)),
        refunded_cash_amount=await _sum(session, col(OrderRefund.cash_amount)),
    )
