"""All database access of the orders service (the only module that touches a session)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.orders.models import KnownMember, Merchant, MerchantApiKey, Order, Refund
from services.orders.schemas import OrderTotals
from shared.events import EventData
from shared.outbox import record_event

PRODUCER = "orders"


def record(session: AsyncSession, event: EventData, *, at: datetime) -> UUID:
    """Write *event* to the outbox in the current transaction."""
    return record_event(session, event, producer=PRODUCER, occurred_at=at)


# --- merchants and keys ----------------------------------------------------------------


def add(session: AsyncSession, *rows: Merchant | MerchantApiKey | Order | Refund) -> None:
    session.add_all(rows)


async def flush(session: AsyncSession) -> None:
    await session.flush()


async def get_merchant(session: AsyncSession, merchant_id: UUID) -> Merchant | None:
    return await session.get(Merchant, merchant_id)


async def list_api_keys(session: AsyncSession, merchant_id: UUID) -> Sequence[MerchantApiKey]:
    query = (
        select(MerchantApiKey)
        .where(MerchantApiKey.merchant_id == merchant_id)
        .order_by(col(MerchantApiKey.created_at), col(MerchantApiKey.id))
    )
    return (await session.exec(query)).all()


async def get_api_key(
    session: AsyncSession, merchant_id: UUID, key_id: UUID
) -> MerchantApiKey | None:
    key = await session.get(MerchantApiKey, key_id)
    return key if key is not None and key.merchant_id == merchant_id else None


async def merchant_for_key_hash(session: AsyncSession, key_hash: str) -> Merchant | None:
    """The merchant whose active (not revoked) POS key has this hash."""
    query = (
        select(Merchant)
        .join(MerchantApiKey, col(MerchantApiKey.merchant_id) == col(Merchant.id))
        .where(MerchantApiKey.key_hash == key_hash, col(MerchantApiKey.revoked_at).is_(None))
    )
    return (await session.exec(query)).first()


# --- orders and refunds ----------------------------------------------------------------


async def get_order(
    session: AsyncSession, merchant_id: UUID, pos_order_id: str, *, for_update: bool = False
) -> Order | None:
    query = select(Order).where(
        Order.merchant_id == merchant_id, Order.pos_order_id == pos_order_id
    )
    if for_update:
        # PostgreSQL: refunds of one order queue here; SQLite ignores it (writers are
        # serialised by BEGIN IMMEDIATE anyway).
        query = query.with_for_update()
    return (await session.exec(query)).first()


async def list_member_orders(
    session: AsyncSession, consumer_id: UUID, *, limit: int, offset: int
) -> Sequence[Order]:
    query = (
        select(Order)
        .where(Order.consumer_id == consumer_id)
        .order_by(col(Order.created_at).desc(), col(Order.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return (await session.exec(query)).all()


async def get_refund(session: AsyncSession, order_id: UUID, pos_refund_id: str) -> Refund | None:
    query = select(Refund).where(Refund.order_id == order_id, Refund.pos_refund_id == pos_refund_id)
    return (await session.exec(query)).first()


async def list_refunds(session: AsyncSession, order_id: UUID) -> Sequence[Refund]:
    query = select(Refund).where(Refund.order_id == order_id).order_by(col(Refund.refunded_total))
    return (await session.exec(query)).all()


# --- the replica of known members ------------------------------------------------------


async def is_known_member(session: AsyncSession, member_id: UUID) -> bool:
    return await session.get(KnownMember, member_id) is not None


async def remember_member(
    session: AsyncSession, member_id: UUID, *, kind: str, source: str, at: datetime
) -> None:
    """Add *member_id* to the replica; a member already there is left as it is."""
    values = {"member_id": member_id, "kind": kind, "source": source, "recorded_at": at}
    table = KnownMember.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=["member_id"])
    await session.exec(statement)


# --- totals for the platform audit -------------------------------------------------------


async def order_totals(session: AsyncSession) -> OrderTotals:
    """Σ of every order and refund, in one pass each (the audit ties points out to these).

    SUM over a MoneyColumn reads back through the column type: already a Decimal.
    """
    orders = (
        await session.exec(
            select(
                func.count(),
                func.coalesce(func.sum(col(Order.amount)), 0),
                func.coalesce(func.sum(col(Order.voucher_amount)), 0),
                func.coalesce(func.sum(col(Order.cash_amount)), 0),
            )
        )
    ).one()
    refunds = (
        await session.exec(
            select(
                func.count(),
                func.coalesce(func.sum(col(Refund.amount)), 0),
                func.coalesce(func.sum(col(Refund.voucher_amount)), 0),
                func.coalesce(func.sum(col(Refund.cash_amount)), 0),
            )
        )
    ).one()
    return OrderTotals(
        orders=orders[0],
        amount=orders[1],
        voucher_amount=orders[2],
        cash_amount=orders[3],
        refunds=refunds[0],
        refunded_amount=refunds[1],
        refunded_voucher_amount=refunds[2],
        refunded_cash_amount=refunds[3],
    )
