"""The only code of the vouchers service that touches the session and SQL.

Balances change only through :func:`post_transactions`, which updates the balance rows
and writes the entries in the caller's transaction. A debit of an account that must not
go negative is a conditional ``UPDATE ... WHERE balance >= :x`` whose row count decides:
safe on SQLite (writers serialised) and on PostgreSQL (the row lock makes the second of
two racing debits re-check the new balance). Credits are one set-based upsert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    String,
    Table,
    Uuid,
    bindparam,
    case,
    func,
    literal,
    text,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.vouchers import domain
from services.vouchers.models import (
    AccountBalance,
    BookedPayout,
    CoinRedemption,
    LedgerEntry,
    PayoutBatch,
    VoucherHold,
    VoucherReturn,
)
from shared.db import MoneyColumn, bulk_insert
from shared.events import Payout
from shared.money import ZERO, from_fen, to_fen

BALANCES: Table = AccountBalance.__table__  # type: ignore[attr-defined]
ENTRIES: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
PAYOUTS: Table = BookedPayout.__table__  # type: ignore[attr-defined]
HOLDS: Table = VoucherHold.__table__  # type: ignore[attr-defined]
REDEMPTIONS: Table = CoinRedemption.__table__  # type: ignore[attr-defined]

#: Rows per statement of a bulk read (far below SQLite's and asyncpg's parameter limits).
_CHUNK = 2000


def lock_order(account: str) -> tuple[bool, str]:
    """The one order in which every transaction takes balance rows: by account, the points
    sources last. Every payout batch credits a source, so it is taken last and held for
    the shortest time (batches on other partitions overlap until then); and transactions
    that agree on one order queue behind each other instead of deadlocking.
    """
    return (account.startswith("source:"), account)


def _postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _in_lock_order(session: AsyncSession, account: Any) -> tuple[Any, Any]:
    """ORDER BY terms for :func:`lock_order` (code point order, whatever the collation)."""
    if _postgresql(session):
        account = account.collate("C")
    return account.startswith("source:"), account


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(session: AsyncSession, table: Table) -> Any:
    """The dialect's INSERT (both have ON CONFLICT with the same signature)."""
    return (postgresql.insert if _postgresql(session) else sqlite.insert)(table)


# --- balances and entries --------------------------------------------------------------


async def get_balances(
    session: AsyncSession, accounts: Iterable[str], *, for_update: bool = False
) -> dict[str, Decimal]:
    """Balances of *accounts* (missing ones are zero); locked until commit if asked."""
    wanted = sorted(set(accounts), key=lock_order)
    found: dict[str, Decimal] = {}
    for chunk in _chunks(wanted):
        query = (
            select(col(AccountBalance.account), col(AccountBalance.balance))
            .where(col(AccountBalance.account).in_(chunk))
            .order_by(*_in_lock_order(session, col(AccountBalance.account)))
        )
        if for_update:
            query = query.with_for_update()
        found.update({row[0]: row[1] for row in (await session.exec(query)).all()})
    return {account: found.get(account, ZERO) for account in wanted}


@dataclass
class _AccountDelta:
    asset: str
    member_id: UUID | None
    delta: Decimal = ZERO


async def _debit_guarded(session: AsyncSession, account: str, amount: Decimal) -> Decimal:
    """Take *amount* (> 0) off *account* only if it holds that much; the new balance."""
    row = (
        await session.exec(
            update(BALANCES)
            .where(BALANCES.c.account == account, BALANCES.c.balance >= amount)
            .values(balance=BALANCES.c.balance - amount)
            .returning(BALANCES.c.balance)
        )
    ).first()
    if row is None:
        available = (await get_balances(session, [account]))[account]
        raise domain.InsufficientBalance(account, available, amount)
    balance: Decimal = row[0]
    return balance


async def _add_to_balances(
    session: AsyncSession, deltas: Mapping[str, _AccountDelta]
) -> dict[str, Decimal]:
    """One upsert adding each delta to its account (creating the row); the new balances.

    Rows are written in account order, the order PostgreSQL then locks them in.
    """
    if not deltas:
        return {}
    ordered = sorted(deltas.items(), key=lambda item: lock_order(item[0]))
    if _postgresql(session):
        # A settlement batch touches 2,000 wallets: one array per column instead of
        # 10,000 bind parameters.
        result = await (await session.connection()).execute(
            _UPSERT_ARRAYS,
            {
                "accounts": [account for account, _ in ordered],
                "assets": [d.asset for _, d in ordered],
                "members": [d.member_id for _, d in ordered],
                "fen": [to_fen(d.delta) for _, d in ordered],
                "guarded": [domain.must_stay_non_negative(account) for account, _ in ordered],
            },
        )
        return {row[0]: from_fen(row[1]) for row in result.all()}
    rows = [
        {
            "account": account,
            "asset": d.asset,
            "member_id": d.member_id,
            "balance": d.delta,
            "non_negative": domain.must_stay_non_negative(account),
        }
        for account, d in ordered
    ]
    insert = _insert(session, BALANCES)
    statement = insert.on_conflict_do_update(
        index_elements=[BALANCES.c.account],
        set_={"balance": BALANCES.c.balance + insert.excluded.balance},
    ).returning(BALANCES.c.account, BALANCES.c.balance)
    result = await session.exec(statement, params=rows)
    return {row[0]: row[1] for row in result.all()}


_UPSERT_ARRAYS = text(
    "INSERT INTO account_balances (account, asset, member_id, balance, non_negative) "
    "SELECT * FROM unnest(:accounts, :assets, :members, :fen, :guarded) "
    "ON CONFLICT (account) DO UPDATE SET balance = account_balances.balance + excluded.balance "
    "RETURNING account, balance"
).bindparams(
    bindparam("accounts", type_=postgresql.ARRAY(String)),
    bindparam("assets", type_=postgresql.ARRAY(String)),
    bindparam("members", type_=postgresql.ARRAY(Uuid)),
    bindparam("fen", type_=postgresql.ARRAY(BigInteger)),
    bindparam("guarded", type_=postgresql.ARRAY(Boolean)),
)


_ENTRY_COLUMNS = (
    "transaction_id", "account", "asset", "member_id", "amount", "balance_after", "reason",
    "order_id", "settlement_id", "payout_id", "hold_id", "redemption_id", "fund",
    "created_at",
)


async def post_transactions(
    session: AsyncSession, transactions: Sequence[domain.LedgerTransaction], now: datetime
) -> dict[str, Decimal]:
    """Book balanced *transactions*: balances first (guarded debits may refuse), then entries.

    Returns the new balance of every account touched. Raises
    :class:`domain.InsufficientBalance` when a guarded account cannot pay; the caller's
    transaction must then roll back (earlier statements may have run).
    """
    deltas: dict[str, _AccountDelta] = {}
    for txn in transactions:
        for posting in txn.postings:
            entry = deltas.get(posting.account)
            if entry is None:
                entry = deltas[posting.account] = _AccountDelta(posting.asset, posting.member_id)
            entry.delta += posting.amount
    guarded = {
        account: d
        for account, d in deltas.items()
        if d.delta < ZERO and domain.must_stay_non_negative(account)
    }
    if guarded and len(deltas) > 1 and _postgresql(session):
        # The guarded debits run before the upsert: lock every existing row in
        # lock_order first. (Without debits the upsert alone locks in that order.)
        await get_balances(session, deltas, for_update=True)
    final: dict[str, Decimal] = {}
    for account in sorted(guarded, key=lock_order):
        final[account] = await _debit_guarded(session, account, -guarded[account].delta)
    final.update(
        # Accounts whose postings cancel out are upserted too: that reads their balance.
        await _add_to_balances(session, {a: d for a, d in deltas.items() if a not in guarded})
    )
    # Walk each account forward from its balance before this booking.
    running = {account: final.get(account, ZERO) - d.delta for account, d in deltas.items()}
    rows: list[tuple[Any, ...]] = []
    for txn in transactions:
        for posting in txn.postings:
            balance = running[posting.account] = running[posting.account] + posting.amount
            rows.append((
                txn.transaction_id, posting.account, posting.asset, posting.member_id,
                posting.amount, balance, txn.reason, txn.order_id, txn.settlement_id,
                txn.payout_id, txn.hold_id, txn.redemption_id, txn.fund,
                now,
            ))
    await insert_entries(session, rows)
    return final


async def insert_entries(session: AsyncSession, rows: Sequence[Sequence[Any]]) -> None:
    """Ledger entries, each a tuple of :data:`_ENTRY_COLUMNS`."""
    await bulk_insert(session, ENTRIES, _ENTRY_COLUMNS, rows)


async def wallet_entries(
    session: AsyncSession, member_id: UUID, *, before_id: int | None, limit: int
) -> list[LedgerEntry]:
    """A member's wallet entries, newest first."""
    query = select(LedgerEntry).where(col(LedgerEntry.member_id) == member_id)
    if before_id is not None:
        query = query.where(col(LedgerEntry.id) < before_id)
    query = query.order_by(col(LedgerEntry.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


async def account_entries(
    session: AsyncSession, account: str, *, before_id: int | None, limit: int
) -> list[LedgerEntry]:
    """One account's entries, newest first (for accounts that are not a member's wallet)."""
    query = select(LedgerEntry).where(
        col(LedgerEntry.account) == account, col(LedgerEntry.member_id).is_(None)
    )
    if before_id is not None:
        query = query.where(col(LedgerEntry.id) < before_id)
    query = query.order_by(col(LedgerEntry.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


# --- payouts ---------------------------------------------------------------------------


async def get_batch(session: AsyncSession, batch_id: UUID) -> PayoutBatch | None:
    return await session.get(PayoutBatch, batch_id)


def add_batch(session: AsyncSession, batch: PayoutBatch) -> None:
    session.add(batch)


async def booked_payout_ids(session: AsyncSession, payout_ids: Sequence[UUID]) -> set[UUID]:
    """Which of *payout_ids* were booked already (by an earlier batch)."""
    if _postgresql(session):
        # One array parameter, not 2,000 (the statement then costs no more than it reads).
        connection = await session.connection()
        return set((await connection.execute(_BOOKED_AMONG, {"ids": list(payout_ids)})).scalars())
    found: set[UUID] = set()
    for chunk in _chunks(payout_ids):
        query = select(BookedPayout.payout_id).where(col(BookedPayout.payout_id).in_(chunk))
        found.update((await session.exec(query)).all())
    return found


_PAYOUT_COLUMNS = (
    "payout_id", "batch_id", "member_id", "asset", "account", "reason", "fund", "amount",
    "applied", "unrecovered", "order_id", "settlement_id", "booked_at",
)


_BOOKED_AMONG = text(
    "SELECT payout_id FROM booked_payouts WHERE payout_id = ANY(:ids)"
).bindparams(bindparam("ids", type_=postgresql.ARRAY(Uuid))).columns(payout_id=Uuid)


async def insert_booked_payouts(
    session: AsyncSession,
    batch_id: UUID,
    bookings: Sequence[domain.PayoutBooking],
    now: datetime,
) -> None:
    """Record each booked payout once (its payout_id is the key)."""
    await bulk_insert(session, PAYOUTS, _PAYOUT_COLUMNS, [
        _payout_row(b.payout, batch_id, b.applied, b.unrecovered, now) for b in bookings
    ])


def _payout_row(
    p: Payout, batch_id: UUID, applied: Decimal, unrecovered: Decimal, now: datetime
) -> tuple[Any, ...]:
    """A booked_payouts row, in :data:`_PAYOUT_COLUMNS` order."""
    account = domain.wallet_account(p.member_id, p.asset)
    return (p.payout_id, batch_id, p.member_id, p.asset, account, p.reason, p.fund, p.amount,
            applied, unrecovered, p.order_id, p.settlement_id, now)


async def book_credits(
    session: AsyncSession, batch_id: UUID, payouts: Sequence[Payout], now: datetime
) -> None:
    """Book credit-only *payouts* (none negative, none booked before) into the wallets.

    What :func:`domain.book_payout` does with a credit (the wallet gains the amount, the
    points source gives it), set-based because a settlement sends a million: the payouts
    are copied in, the wallet balances and entries are derived from them in SQL, and
    the source side is one entry per asset, reason, fund, order and settlement. The
    batch's credits are one ledger transaction whose id is the batch id. A wallet entry's
    balance_after is the new balance less what the batch's later entries add to it (a
    window in payout_id order, the order the entries are inserted in).
    """
    rows = []
    groups: dict[tuple[domain.Asset, str, str, UUID | None, UUID | None], Decimal] = {}
    for p in payouts:
        rows.append(_payout_row(p, batch_id, p.amount, ZERO, now))
        key = (p.asset, p.reason, p.fund, p.order_id, p.settlement_id)
        groups[key] = groups.get(key, ZERO) + p.amount
    await bulk_insert(session, PAYOUTS, _PAYOUT_COLUMNS, rows)

    bp = PAYOUTS.alias("bp")
    of_batch = (bp.c.batch_id == batch_id, bp.c.applied != 0)
    upsert = _insert(session, BALANCES)
    credit_wallets = upsert.from_select(
        ["account", "asset", "member_id", "balance", "non_negative"],
        sa_select(bp.c.account, bp.c.asset, bp.c.member_id, func.sum(bp.c.applied),
                  literal(True))
        .where(*of_batch)
        .group_by(bp.c.account, bp.c.asset, bp.c.member_id)
        .order_by(*_in_lock_order(session, bp.c.account)),
    ).on_conflict_do_update(
        index_elements=[BALANCES.c.account],
        set_={"balance": BALANCES.c.balance + upsert.excluded.balance},
    )
    new_balances: Any
    if _postgresql(session):
        # One statement: the entries join the upsert's RETURNING (a hash join over the
        # batch) instead of looking up 2,000 balance rows again.
        new_balances = credit_wallets.returning(BALANCES.c.account, BALANCES.c.balance).cte(
            "credited"
        )
    else:
        await session.exec(credit_wallets)
        new_balances = BALANCES.alias("ab")
    added_later = func.coalesce(
        func.sum(bp.c.applied).over(
            partition_by=bp.c.account, order_by=bp.c.payout_id, rows=(1, None)
        ),
        0,
    )
    entries_of_batch = ENTRIES.insert().from_select(
        ["transaction_id", "account", "asset", "member_id", "amount", "balance_after",
         "reason", "order_id", "settlement_id", "payout_id", "fund", "created_at"],
        sa_select(literal(batch_id, PAYOUTS.c.batch_id.type), bp.c.account, bp.c.asset,
                  bp.c.member_id, bp.c.applied, new_balances.c.balance - added_later,
                  bp.c.reason, bp.c.order_id, bp.c.settlement_id, bp.c.payout_id, bp.c.fund,
                  bp.c.booked_at)
        .join(new_balances, new_balances.c.account == bp.c.account)
        .where(*of_batch)
        .order_by(bp.c.payout_id),
    )
    if _postgresql(session):
        entries_of_batch = entries_of_batch.add_cte(new_balances)
    await session.exec(entries_of_batch)

    # The points source gives the lot: a handful of entries, made here.
    sources: dict[str, _AccountDelta] = {}
    for (asset, *_), amount in groups.items():
        source = sources.setdefault(domain.source_account(asset), _AccountDelta(asset, None))
        source.delta -= amount
    final = await _add_to_balances(session, {a: d for a, d in sources.items() if d.delta})
    running = {account: final[account] - d.delta for account, d in sources.items() if d.delta}
    entries = []
    for (asset, reason, fund, order_id, settlement_id), amount in sorted(
        groups.items(), key=lambda item: tuple(str(part) for part in item[0])
    ):
        if amount:
            account = domain.source_account(asset)
            running[account] -= amount
            entries.append((batch_id, account, asset, None, -amount, running[account], reason,
                            order_id, settlement_id, None, None, None, fund, now))
    await insert_entries(session, entries)


# --- holds -----------------------------------------------------------------------------


async def insert_hold_if_absent(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """Insert a hold unless its hold_id exists (waits for a concurrent insert to finish)."""
    statement = (
        _insert(session, HOLDS)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[HOLDS.c.hold_id])
        .returning(HOLDS.c.hold_id)
    )
    return (await session.exec(statement)).first() is not None


async def get_hold(
    session: AsyncSession, hold_id: UUID, *, for_update: bool = False
) -> VoucherHold | None:
    query = select(VoucherHold).where(col(VoucherHold.hold_id) == hold_id)
    if for_update:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def captured_hold_of_order(
    session: AsyncSession, order_id: UUID, *, for_update: bool = False
) -> VoucherHold | None:
    query = select(VoucherHold).where(
        col(VoucherHold.order_id) == order_id, col(VoucherHold.status) == "captured"
    )
    if for_update:
        query = query.with_for_update()
    return (await session.exec(query.execution_options(populate_existing=True))).first()


def add_hold(session: AsyncSession, hold: VoucherHold) -> None:
    session.add(hold)


async def close_expired_holds(
    session: AsyncSession, now: datetime, *, limit: int
) -> list[tuple[UUID, UUID, Decimal]]:
    """Mark up to *limit* held holds past their expiry as expired: (hold, member, amount).

    A conditional UPDATE: a hold captured or released meanwhile is no longer 'held'
    and is left alone (on PostgreSQL the UPDATE waits for such a change and re-checks).
    """
    due = (
        select(VoucherHold.hold_id)
        .where(col(VoucherHold.status) == "held", col(VoucherHold.expires_at) <= now)
        .order_by(col(VoucherHold.expires_at))
        .limit(limit)
    )
    statement = (
        update(HOLDS)
        .where(HOLDS.c.hold_id.in_(due.scalar_subquery()), HOLDS.c.status == "held")
        .values(status="expired", closed_at=now)
        .returning(HOLDS.c.hold_id, HOLDS.c.member_id, HOLDS.c.amount)
    )
    return [(row[0], row[1], row[2]) for row in (await session.exec(statement)).all()]


async def get_voucher_return(session: AsyncSession, refund_id: UUID) -> VoucherReturn | None:
    return await session.get(VoucherReturn, refund_id)


def add_voucher_return(session: AsyncSession, record: VoucherReturn) -> None:
    session.add(record)


# --- coin redemptions ------------------------------------------------------------------


async def insert_redemption_if_absent(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    statement = (
        _insert(session, REDEMPTIONS)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[REDEMPTIONS.c.member_id, REDEMPTIONS.c.redemption_id]
        )
        .returning(REDEMPTIONS.c.redemption_id)
    )
    return (await session.exec(statement)).first() is not None


async def get_redemption(
    session: AsyncSession, member_id: UUID, redemption_id: str
) -> CoinRedemption | None:
    query = select(CoinRedemption).where(
        col(CoinRedemption.member_id) == member_id,
        col(CoinRedemption.redemption_id) == redemption_id,
    )
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def set_coins_left(
    session: AsyncSession, member_id: UUID, redemption_id: str, coins_left: Decimal
) -> None:
    await session.exec(
        update(REDEMPTIONS)
        .where(
            REDEMPTIONS.c.member_id == member_id, REDEMPTIONS.c.redemption_id == redemption_id
        )
        .values(coins_left=coins_left)
    )


# --- audit figures ---------------------------------------------------------------------


def _sum(column: Any) -> Any:
    """Σ of a money column, zero (not NULL) over no rows."""
    return func.coalesce(func.sum(column), literal(ZERO, MoneyColumn()))


async def credited_by_asset_and_reason(
    session: AsyncSession,
) -> list[tuple[str, str, int, Decimal, Decimal, Decimal]]:
    """(asset, reason, count, Σ amount, Σ applied, Σ unrecovered) of the booked payouts."""
    query = (
        sa_select(
            col(BookedPayout.asset),
            col(BookedPayout.reason),
            func.count(),
            _sum(BookedPayout.amount),
            _sum(BookedPayout.applied),
            _sum(BookedPayout.unrecovered),
        )
        .group_by(col(BookedPayout.asset), col(BookedPayout.reason))
        .order_by(col(BookedPayout.asset), col(BookedPayout.reason))
    )
    # Six columns: more than sqlmodel.select is typed for, so plain SQLAlchemy.
    rows = (await session.exec(cast(Any, query))).all()
    return [(row[0], row[1], row[2], row[3], row[4], row[5]) for row in rows]


async def balance_sums_by_kind(session: AsyncSession) -> dict[tuple[str, str], Decimal]:
    """Σ balance per (kind of account, asset); kinds: vouchers, vouchers_held, coins, cash,
    receivable, source, unrecovered, coins_redeemed."""
    account = col(AccountBalance.account)
    kind = case(
        (account.like("wallet:%:vouchers:held"), literal("vouchers_held")),
        (account.like("wallet:%"), col(AccountBalance.asset)),
        (account.like("merchant:%:receivable"), literal("receivable")),
        (account.like("source:%"), literal("source")),
        (account.like("unrecovered:%"), literal("unrecovered")),
        (account == domain.COINS_REDEEMED_ACCOUNT, literal("coins_redeemed")),
        else_=literal("other"),
    ).label("kind")
    query = select(kind, AccountBalance.asset, func.sum(AccountBalance.balance)).group_by(
        kind, col(AccountBalance.asset)
    )
    return {(row[0], row[1]): row[2] for row in (await session.exec(query)).all()}


async def hold_sums(session: AsyncSession) -> dict[str, Decimal]:
    """Σ captured, Σ of it unrecovered, Σ returned (and to members) over all holds."""
    query = select(
        _sum(VoucherHold.captured_amount),
        _sum(VoucherHold.captured_unrecovered),
        _sum(VoucherHold.returned_amount),
        _sum(VoucherHold.returned_to_member),
    )
    row = (await session.exec(query)).one()
    return {
        "captured": row[0],
        "captured_unrecovered": row[1],
        "returned": row[2],
        "returned_to_member": row[3],
    }


async def count_holds_by_status(session: AsyncSession) -> dict[str, int]:
    query = select(VoucherHold.status, func.count()).group_by(col(VoucherHold.status))
    return {row[0]: row[1] for row in (await session.exec(query)).all()}


async def payout_count_and_total(session: AsyncSession) -> tuple[int, Decimal]:
    row = (await session.exec(select(func.count(), _sum(BookedPayout.amount)))).one()
    return row[0], row[1]


async def count_unbalanced_transactions(session: AsyncSession) -> int:
    """Transactions whose postings do not sum to zero for some asset (should be none)."""
    unbalanced = (
        select(LedgerEntry.transaction_id, LedgerEntry.asset)
        .group_by(col(LedgerEntry.transaction_id), col(LedgerEntry.asset))
        .having(func.sum(LedgerEntry.amount) != 0)
        .subquery()
    )
    count: int = (await session.exec(select(func.count()).select_from(unbalanced))).one()
    return count


async def count_balances_off_their_entries(session: AsyncSession) -> int:
    """Balance rows that differ from the sum of their account's entries (should be none)."""
    sums = (
        select(LedgerEntry.account, func.sum(LedgerEntry.amount).label("total"))
        .group_by(col(LedgerEntry.account))
        .subquery()
    )
    query = (
        select(func.count())
        .select_from(AccountBalance)
        .outerjoin(sums, sums.c.account == AccountBalance.account)
        .where(col(AccountBalance.balance) != func.coalesce(sums.c.total, 0))
    )
    count: int = (await session.exec(query)).one()
    return count


async def count_negative_guarded_balances(session: AsyncSession) -> int:
    """Wallets, held vouchers, receivables and the mall below zero (should be none)."""
    query = (
        select(func.count())
        .select_from(AccountBalance)
        .where(col(AccountBalance.non_negative), col(AccountBalance.balance) < 0)
    )
    count: int = (await session.exec(query)).one()
    return count
