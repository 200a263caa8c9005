"""SQL of the settlements (RULES 1.2, 1.3): set-based, a few statements per cohort.

A settlement over a million positions must not loop over rows in Python. Per eligible
cohort it runs one aggregate (how many open positions, Σ entitlement), one
``INSERT … SELECT`` of what each position is paid into a temporary table, one ``UPDATE``
of the positions; per settlement one ``INSERT … SELECT`` of the batched ``funds.paid_out``
outbox rows, their JSON built in SQL, and one of the batches' counts and totals.

Points keeps no row per payout of a settlement: writing a million of them took half the
settlement's time. Each payout is in its event (and booked one by one in vouchers);
points keeps the positions' ``released``, each batch's count and total
(:class:`~services.points.settlement_models.SettlementBatch`) and the settlement's record.

Exact integer-fen arithmetic, agreeing to the fen with :mod:`services.points.domain.release`:

- the factor (20 decimals) is passed as two integers, so a position's entitlement is
  computed in 64-bit integers whenever no product can overflow (every real position:
  up to ~4.6 million points), several times faster than ``numeric``;
- otherwise PostgreSQL computes in ``numeric`` (exact products; ``floor`` and ``div`` of
  non-negative values round down), with every ratio passed as a ``numeric`` parameter,
  and SQLite (64-bit integers only, no decimal type) calls two deterministic SQL functions
  that do the exact math of one row in Python integers (:func:`register_sqlite_functions`):
  ``gp_entitlement`` and ``gp_pro_rata`` (the pro-rata split always uses them / numeric).
  The statements stay set-based either way.

In fen (``p`` points, ``r`` released, ``f`` the cohort's factor, ``m`` the multiplier)::

    entitlement = max(0, min(floor(p × f), floor(m × p − r)))
    paid        = entitlement                                   if Σ entitlement <= budget
                  floor(entitlement × budget / Σ entitlement)   otherwise (exact quotient)

with ``budget = cohort_share × B`` in fen, exact (it may have decimals: 0.01 × 12345 fen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_UP, Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Connection,
    Numeric,
    String,
    Uuid,
    bindparam,
    case,
    func,
    literal,
    text,
)
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import BindParameter, TextClause
from sqlmodel import UTCDateTime, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points import repository
from services.points.models import FundEntry, Period, Pool
from services.points.settings import PointsSettings, PoolName
from services.points.settlement_models import Cohort, Settlement, SettlementCohort
from shared.money import ZERO, from_fen

#: The account a settlement's payouts go to (the fund's counterpart in the fund ledger).
SETTLEMENT_PAYOUTS_ACCOUNT = "payouts:settlements"


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- SQLite: the exact per-row math as deterministic SQL functions -------------------------


@lru_cache(maxsize=1024)
def _ratio(value: str) -> tuple[int, int]:
    """An exact decimal text as (numerator, denominator); parsed once per distinct value."""
    return Decimal(value).as_integer_ratio()


def sqlite_entitlement(points: int, released: int, factor: str, multiplier: str) -> int:
    """``max(0, min(floor(points × factor), floor(multiplier × points − released)))`` in fen."""
    f_num, f_den = _ratio(factor)
    m_num, m_den = _ratio(multiplier)
    by_factor = points * f_num // f_den
    cap_left = (m_num * points - m_den * released) // m_den
    return max(0, min(by_factor, cap_left))


def sqlite_pro_rata(entitlement: int, budget: str, total: int) -> int:
    """``floor(entitlement × budget / total)`` in fen, from the exact quotient."""
    b_num, b_den = _ratio(budget)
    return entitlement * b_num // (total * b_den)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Register ``gp_entitlement`` and ``gp_pro_rata`` on one SQLite connection.

    Works on a ``sqlite3`` connection and on SQLAlchemy's adapted aiosqlite connection (it
    forwards ``create_function``); usable from an engine's ``connect`` event.
    """
    dbapi_connection.create_function("gp_entitlement", 4, sqlite_entitlement, deterministic=True)
    dbapi_connection.create_function("gp_pro_rata", 3, sqlite_pro_rata, deterministic=True)


_FUNCTIONS_REGISTERED = "gp_settlement_functions"


def _register_on_connection(connection: Connection) -> None:
    pooled = connection.connection  # the pool's proxy; its .info lives as long as the DBAPI one
    if not pooled.info.get(_FUNCTIONS_REGISTERED):
        register_sqlite_functions(pooled.dbapi_connection)
        pooled.info[_FUNCTIONS_REGISTERED] = True


async def ensure_sqlite_functions(session: AsyncSession) -> None:
    """Make sure the session's SQLite connection has the settlement's SQL functions.

    Registered lazily, once per pooled connection, so it works whatever created the engine
    (the service's lifespan, a test, the benchmark) and costs nothing after the first time.
    """
    if is_postgresql(session):
        return
    connection = await session.connection()
    await connection.run_sync(_register_on_connection)


# --- typed parameters for the text() statements ----------------------------------------------


def _statement(sql: str, **params: Any) -> TextClause:
    """*sql* with typed bound parameters (UUIDs and instants go through their column types)."""
    binds: list[BindParameter[Any]] = []
    for name, value in params.items():
        if isinstance(value, UUID):
            binds.append(bindparam(name, value, type_=Uuid()))
        elif isinstance(value, datetime):
            binds.append(bindparam(name, value, type_=UTCDateTime()))
        elif isinstance(value, Decimal):
            binds.append(bindparam(name, value, type_=Numeric()))
        elif isinstance(value, bool):
            raise TypeError(f"parameter {name}: pass booleans as SQL, not as parameters")
        elif isinstance(value, int):
            binds.append(bindparam(name, value, type_=BigInteger()))
        else:
            binds.append(bindparam(name, value, type_=String()))
    return text(sql).bindparams(*binds)


async def _execute(session: AsyncSession, statement: Executable) -> CursorResult[Any]:
    """Run a Core statement on the session's connection, in its transaction."""
    connection = await session.connection()
    return await connection.execute(statement)


# --- the pool's period clock (RULES 1.2) -------------------------------------------------------


@dataclass(frozen=True)
class PoolState:
    kind: str
    fund_balance: Decimal
    period_number: int
    period_started_at: datetime
    reference_size: Decimal
    minted: Decimal
    target_reached_at: datetime | None


_POOL_COLUMNS = (
    col(Pool.kind), col(Pool.fund_balance), col(Pool.period_number),
    col(Pool.period_started_at), col(Pool.reference_size), col(Pool.minted),
    col(Pool.target_reached_at),
)


def _pool_state(row: Any) -> PoolState:
    return PoolState(
        kind=row[0], fund_balance=row[1], period_number=int(row[2]), period_started_at=row[3],
        reference_size=row[4], minted=row[5], target_reached_at=row[6],
    )


async def pool_states(session: AsyncSession) -> dict[str, PoolState]:
    """Both pools' current period, in one small query (the settle-before-mint check)."""
    rows = (await _execute(session, sa_select(*_POOL_COLUMNS))).all()
    return {str(row[0]): _pool_state(row) for row in rows}


async def lock_pool(session: AsyncSession, pool: PoolName) -> PoolState | None:
    """The pool's row, locked until commit on PostgreSQL (SQLite already serialises writers).

    Mints update the same row, so none can slip into a period while it is being settled.
    """
    query = sa_select(*_POOL_COLUMNS).where(col(Pool.kind) == pool).with_for_update()
    row = (await _execute(session, query)).one_or_none()
    return None if row is None else _pool_state(row)


async def lock_pools(session: AsyncSession) -> None:
    """Lock every pool row in a fixed order (by kind: consumer, merchant), until commit."""
    await session.exec(
        select(col(Pool.kind)).order_by(col(Pool.kind)).with_for_update()
    )


async def ensure_pool(
    session: AsyncSession, pool: PoolName, settings: PointsSettings, now: datetime
) -> None:
    """Create the pool with period 1 at the configured start if it does not exist yet."""
    await repository._ensure_pool(session, pool, settings, now)


async def close_period(
    session: AsyncSession,
    pool: PoolName,
    state: PoolState,
    *,
    ended_at: datetime,
    total_paid: Decimal,
    next_reference_size: Decimal,
) -> None:
    """RULES 1.2/1.3: debit the payouts, end period n at *ended_at*, open period n + 1 there."""
    result = await session.exec(
        sa_update(Pool)
        .where(
            col(Pool.kind) == pool,
            col(Pool.period_number) == state.period_number,
            col(Pool.fund_balance) >= total_paid,
        )
        .values(
            fund_balance=col(Pool.fund_balance) - total_paid,
            period_number=state.period_number + 1,
            period_started_at=ended_at,
            reference_size=next_reference_size,
            minted=ZERO,
            target_reached_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise RuntimeError(
            f"the {pool} pool changed under settlement {state.period_number}, or its fund "
            f"cannot cover {total_paid}; nothing was settled"
        )
    await session.exec(
        sa_update(Period)
        .where(col(Period.pool) == pool, col(Period.number) == state.period_number)
        .values(settled_at=ended_at, target_reached_at=state.target_reached_at)
        .execution_options(synchronize_session=False)
    )
    session.add(
        Period(
            pool=pool, number=state.period_number + 1, started_at=ended_at,
            reference_size=next_reference_size, minted=ZERO,
        )
    )


# --- settlements and cohorts --------------------------------------------------------------------


async def settlement_index(session: AsyncSession, pool: PoolName, number: int) -> Decimal | None:
    """I_n of settlement *number* of the pool, None if there is no such settlement."""
    found = (
        await session.exec(
            select(col(Settlement.release_index)).where(
                col(Settlement.pool) == pool, col(Settlement.number) == number
            )
        )
    ).one_or_none()
    return found


def add_cohort(session: AsyncSession, pool: PoolName, number: int, start_index: Decimal) -> None:
    """RULES 1.3: cohort n takes part from settlement n on and remembers I_c = I_n."""
    session.add(Cohort(pool=pool, number=number, start_index=start_index))


async def open_cohorts(session: AsyncSession, pool: PoolName) -> list[Cohort]:
    rows = await session.exec(
        select(Cohort)
        .where(col(Cohort.pool) == pool, col(Cohort.closed).is_(False))
        .order_by(col(Cohort.number))
    )
    return list(rows.all())


async def advance_cohort(
    session: AsyncSession,
    pool: PoolName,
    number: int,
    *,
    settlements: int,
    closed: bool,
    still_possible: Decimal,
) -> None:
    await session.exec(
        sa_update(Cohort)
        .where(col(Cohort.pool) == pool, col(Cohort.number) == number)
        .values(settlements=settlements, closed=closed, still_possible=still_possible)
        .execution_options(synchronize_session=False)
    )


def add_settlement(
    session: AsyncSession, settlement: Settlement, cohorts: Sequence[SettlementCohort]
) -> None:
    session.add(settlement)
    session.add_all(cohorts)


def add_settlement_fund_entries(
    session: AsyncSession,
    settlement_id: UUID,
    pool: PoolName,
    paid_by_cohort: Sequence[tuple[int, int, Decimal]],
    at: datetime,
) -> None:
    """Debit the pool fund, one balanced pair of legs per cohort, all under the settlement id.

    ``paid_by_cohort`` holds (settlement number, cohort, amount paid).
    """
    session.add_all(
        FundEntry(
            txn_id=settlement_id, account=account, amount=amount,
            memo=f"settlement {number} cohort {cohort}", order_id=None, created_at=at,
        )
        for number, cohort, paid in paid_by_cohort
        if paid > 0
        for account, amount in ((f"fund:{pool}_pool", -paid), (SETTLEMENT_PAYOUTS_ACCOUNT, paid))
    )


# --- the per-cohort statements (RULES 1.3) ----------------------------------------------------


@dataclass(frozen=True)
class CohortRelease:
    """The cohort-level scalars of one cohort's release at one settlement."""

    pool: PoolName
    cohort: int
    factor: Decimal
    multiplier: Decimal
    max_settlements: int
    #: cohort_share × B in fen (exact, may have decimals).
    budget_fen: Decimal
    #: Σ entitlement in fen; the budget is split pro rata when it is larger.
    total_fen: int = 0

    @property
    def pro_rata(self) -> bool:
        return Decimal(self.total_fen) > self.budget_fen


_WHERE_OPEN = "pool = :pool AND cohort = :cohort AND NOT closed"

#: ``floor(points × F / 10²⁰)`` is computed as ``(points × F_hi + points × F_lo / 10¹⁰) / 10¹⁰``
#: with ``F = F_hi × 10¹⁰ + F_lo``; exact in 64-bit integers while every product stays
#: below 2⁶² (see :func:`_int8_limit`), and several times cheaper than ``numeric``.
_SPLIT = 10**10
_FACTOR_SCALE = 20

# The exact entitlement in fen, in 64-bit integer arithmetic for every position small
# enough (all real ones), else in PostgreSQL numeric / SQLite's exact Python function.
# Integer "/" truncates toward zero on both databases, which is floor for the non-negative
# operands; a negative cap_left only ever meets max(0, …).
_INT8_ENTITLEMENT = """
    (CASE WHEN points <= :int_limit AND released <= :int_limit
          THEN {greatest}(0, {least}(
                   (points * :f_hi + (points * :f_lo) / 10000000000) / 10000000000,
                   (:m_num * points - :m_den * released) / :m_den))
          ELSE {exact}
     END)
"""
_PG_EXACT = """CAST(GREATEST(0, LEAST(
                   floor(points * CAST(:factor AS numeric)),
                   floor(CAST(:multiplier AS numeric) * points - released))) AS bigint)"""
_SQLITE_EXACT = "gp_entitlement(points, released, :factor, :multiplier)"


def _int8_limit(f_hi: int, m_num: int, m_den: int) -> int:
    """The largest points/released (fen) for which the integer formula cannot overflow."""
    return (2**62) // max(f_hi, _SPLIT, m_num, m_den)


def _entitlement_sql(postgresql: bool) -> str:
    if postgresql:
        return _INT8_ENTITLEMENT.format(greatest="GREATEST", least="LEAST", exact=_PG_EXACT)
    # SQLite's two-argument max()/min() are its GREATEST/LEAST.
    return _INT8_ENTITLEMENT.format(greatest="max", least="min", exact=_SQLITE_EXACT)


def _paid_sql(postgresql: bool, release: CohortRelease) -> str:
    entitlement = _entitlement_sql(postgresql)
    if not release.pro_rata:
        return entitlement
    if postgresql:
        return f"div({entitlement} * CAST(:budget_num AS numeric), CAST(:total_den AS numeric))"
    return f"gp_pro_rata({entitlement}, :budget, :total)"


def _release_params(postgresql: bool, release: CohortRelease) -> dict[str, Any]:
    m_num, m_den = release.multiplier.as_integer_ratio()
    scaled = release.factor.scaleb(_FACTOR_SCALE)
    if scaled == scaled.to_integral_value():
        f_hi, f_lo = divmod(int(scaled), _SPLIT)
        limit = _int8_limit(f_hi, m_num, m_den)
    else:  # more than 20 decimals: every row takes the exact branch
        f_hi, f_lo, limit = 0, 0, -1
    params: dict[str, Any] = {
        "pool": release.pool, "cohort": release.cohort, "f_hi": f_hi, "f_lo": f_lo,
        "int_limit": limit, "m_num": m_num, "m_den": m_den,
    }
    if not postgresql:
        params |= {"factor": str(release.factor), "multiplier": str(release.multiplier)}
        if release.pro_rata:
            params |= {"budget": str(release.budget_fen), "total": release.total_fen}
        return params
    params |= {"factor": release.factor, "multiplier": release.multiplier}
    if release.pro_rata:
        b_num, b_den = release.budget_fen.as_integer_ratio()
        params |= {
            "budget_num": Decimal(b_num), "total_den": Decimal(release.total_fen * b_den)
        }
    return params


@dataclass(frozen=True)
class CohortFigures:
    """The cohort's open positions before a settlement (all in fen)."""

    positions: int
    total_entitlement: int
    points: int
    released: int


async def cohort_entitlements(session: AsyncSession, release: CohortRelease) -> CohortFigures:
    """How many open positions the cohort has, Σ of their entitlements, points, released."""
    postgresql = is_postgresql(session)
    sql = (
        f"SELECT count(*), COALESCE(SUM({_entitlement_sql(postgresql)}), 0), "
        f"COALESCE(SUM(points), 0), COALESCE(SUM(released), 0) "
        f"FROM positions WHERE {_WHERE_OPEN}"
    )
    params = _release_params(postgresql, release)
    row: Any = (await _execute(session, _statement(sql, **params))).one()
    return CohortFigures(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


@dataclass(frozen=True)
class PayoutIds:
    """How a settlement's payout, batch and event ids are made, in SQL.

    Each is a random 64-bit prefix of the settlement followed by a 64-bit counter: unique,
    generated set-based on both databases, and increasing within the settlement (a btree
    appends to one place instead of writing all over the index).
    """

    payout_prefix: str
    batch_prefix: str
    event_prefix: str
    per_event: int

    @property
    def payout_text_prefix(self) -> str:
        """The first 19 characters of every payout id's text: ``xxxxxxxx-xxxx-xxxx-``."""
        p = self.payout_prefix
        return f"{p[:8]}-{p[8:12]}-{p[12:16]}-"


def _payout_text(postgresql: bool, counter_sql: str) -> str:
    """SQL of a payout id's canonical text, straight from its counter (no UUID round trip):
    the dashed prefix, then the counter's 16 hex digits as ``xxxx-xxxxxxxxxxxx``."""
    if postgresql:
        return (
            f"(CAST(:payout_text AS text) || lpad(to_hex({counter_sql} >> 48), 4, '0') || '-' "
            f"|| lpad(to_hex({counter_sql} & 281474976710655), 12, '0'))"
        )
    return (
        f"(:payout_text || printf('%04x-%012x', {counter_sql} >> 48, "
        f"{counter_sql} & 281474976710655))"
    )


def _hex_id(postgresql: bool, prefix_param: str, counter_sql: str) -> str:
    """SQL of a UUID made of a 16-hex-digit prefix parameter and a counter."""
    if postgresql:
        return (
            f"CAST(CAST(:{prefix_param} AS text) || lpad(to_hex({counter_sql}), 16, '0') AS uuid)"
        )
    return f"printf('%s%016x', :{prefix_param}, {counter_sql})"


#: What each position is paid while a settlement runs: seq numbers the settlement's
#: payouts 1, 2, … (payout n's id is made from n), paid is in fen. Temporary: no WAL, no
#: row outlives the transaction (PostgreSQL drops the table at commit; SQLite's rows are
#: deleted by :func:`end_settlement_payouts`).
_SETTLEMENT_PAYOUTS_POSTGRESQL = (
    "CREATE TEMP TABLE IF NOT EXISTS settlement_payouts "
    "(seq bigint NOT NULL, member_id uuid NOT NULL, paid bigint NOT NULL) ON COMMIT DROP"
)
# INTEGER PRIMARY KEY is SQLite's rowid: the index on seq costs nothing.
_SETTLEMENT_PAYOUTS_SQLITE = (
    "CREATE TEMP TABLE IF NOT EXISTS settlement_payouts "
    "(seq INTEGER PRIMARY KEY, member_id CHAR(32) NOT NULL, paid INTEGER NOT NULL)"
)


async def start_settlement_payouts(session: AsyncSession) -> None:
    """An empty ``settlement_payouts`` table for this settlement (one transaction may run
    several settlements of a pool, one after the other)."""
    if is_postgresql(session):
        await _execute(session, text(_SETTLEMENT_PAYOUTS_POSTGRESQL))
        await _execute(session, text("TRUNCATE settlement_payouts"))
    else:
        await _execute(session, text(_SETTLEMENT_PAYOUTS_SQLITE))
        await _execute(session, text("DELETE FROM temp.settlement_payouts"))


async def index_settlement_payouts(session: AsyncSession) -> None:
    """PostgreSQL: index seq once every cohort's rows are in (an index built afterwards
    costs a fraction of one maintained row by row); the events read it by ranges."""
    if is_postgresql(session):
        await _execute(
            session,
            text("CREATE INDEX IF NOT EXISTS settlement_payouts_seq ON settlement_payouts (seq)"),
        )


async def end_settlement_payouts(session: AsyncSession) -> None:
    """SQLite: empty the connection's temporary table (PostgreSQL drops it at commit)."""
    if not is_postgresql(session):
        await _execute(session, text("DELETE FROM temp.settlement_payouts"))


async def insert_cohort_payouts(
    session: AsyncSession, release: CohortRelease, *, offset: int
) -> tuple[int, Decimal]:
    """What each position of the cohort is paid, if more than 0 (one INSERT … SELECT).

    The payouts are numbered ``offset + 1 …`` within the settlement; every ``per_event``
    of them share a batch (one ``funds.paid_out`` event). Returns (how many, Σ paid).
    """
    postgresql = is_postgresql(session)
    sql = f"""
        INSERT INTO settlement_payouts (seq, member_id, paid)
        SELECT :offset + t.rn, t.member_id, t.paid
        FROM (
            SELECT s.member_id, s.paid, row_number() OVER () AS rn
            FROM (
                SELECT member_id, CAST({_paid_sql(postgresql, release)} AS bigint) AS paid
                FROM positions WHERE {_WHERE_OPEN}
            ) AS s
            WHERE s.paid > 0
        ) AS t
    """
    params = _release_params(postgresql, release) | {"offset": offset}
    result = await _execute(session, _statement(sql, **params))
    count = int(result.rowcount)
    if count == 0:
        return 0, ZERO
    if not release.pro_rata:
        # Every entitlement is paid in full, zeros included: Σ paid is Σ entitlement.
        return count, from_fen(release.total_fen)
    total_sql = _statement(
        "SELECT COALESCE(SUM(paid), 0) FROM settlement_payouts WHERE seq > :offset",
        offset=offset,
    )
    total = (await _execute(session, total_sql)).scalar_one()
    return count, from_fen(int(total))


async def update_cohort_positions(session: AsyncSession, release: CohortRelease) -> int:
    """One UPDATE of every open position of the cohort: released += paid, one more settlement,
    closed at max_settlements or at the cap (RULES 1.3). Returns how many positions took part.
    """
    postgresql = is_postgresql(session)
    paid = _paid_sql(postgresql, release)
    m_num, m_den = release.multiplier.as_integer_ratio()
    sql = f"""
        UPDATE positions SET
            released = released + {paid},
            settlements = settlements + 1,
            closed = (settlements + 1 >= :max_settlements)
                     OR ((released + {paid}) * :m_den >= points * :m_num)
        WHERE {_WHERE_OPEN}
    """
    params = _release_params(postgresql, release) | {
        "max_settlements": release.max_settlements, "m_num": m_num, "m_den": m_den,
    }
    result = await _execute(session, _statement(sql, **params))
    return int(result.rowcount)


# --- the batched funds.paid_out events -------------------------------------------------------


# Distinctive values that stand for the per-row parts while the JSON templates are made.
_EVENT_MARK = UUID("00000000-0000-4000-8000-0000000e0e01")
_BATCH_MARK = UUID("00000000-0000-4000-8000-0000000e0e02")
_PAYOUT_MARK = UUID("00000000-0000-4000-8000-0000000e0e03")
_MEMBER_MARK = UUID("00000000-0000-4000-8000-0000000e0e04")
_AMOUNT_MARK = Decimal("987654321.98")
_PAYOUTS_MARK = '"payouts":[]'


def _split(text: str, *marks: str) -> list[str]:
    """Cut *text* at each of *marks* in turn (a mark may stand in several places)."""
    parts: list[str] = []
    for mark in marks:
        head, found, text = text.partition(mark)
        if not found:
            raise RuntimeError(f"cannot make a JSON template: {mark!r} not in {text!r}")
        parts.append(head)
    if any(mark in text for mark in marks):
        raise RuntimeError(f"cannot make a JSON template: a mark is left in {text!r}")
    return [*parts, text]


@dataclass(frozen=True)
class EventTemplate:
    """The exact JSON of a ``funds.paid_out`` envelope, cut where per-row values go.

    Made by pydantic from the event models themselves (so the outbox rows SQL assembles
    are byte-for-byte what :func:`shared.outbox.record_event` would write), then filled in
    SQL with plain string concatenation, the cheapest way to build a million objects.
    """

    #: envelope: e0 <event_id> e1 <batch_id: the key> e2 <batch_id> e3 <payouts,
    #: comma-separated> e4
    envelope: tuple[str, str, str, str, str]
    #: one payout: p0 <payout_id> p1 <member_id> p2 <amount> p3
    payout: tuple[str, str, str, str]

    @classmethod
    def make(
        cls, *, settlement_id: UUID, fund: str, producer: str, occurred_at: datetime
    ) -> EventTemplate:
        from shared.events import FundsPaidOut, Payout

        payout = Payout(
            payout_id=_PAYOUT_MARK, member_id=_MEMBER_MARK, asset="vouchers",
            amount=_AMOUNT_MARK, reason="settlement", fund=fund, settlement_id=settlement_id,
        ).model_dump_json()
        event = FundsPaidOut(
            batch_id=_BATCH_MARK, source="settlement", settlement_id=settlement_id, payouts=()
        )
        envelope = event.envelope(
            producer=producer, occurred_at=occurred_at, event_id=_EVENT_MARK
        ).model_dump_json()
        e = _split(envelope, str(_EVENT_MARK), str(_BATCH_MARK), str(_BATCH_MARK), _PAYOUTS_MARK)
        p = _split(payout, str(_PAYOUT_MARK), str(_MEMBER_MARK), str(_AMOUNT_MARK))
        return cls(
            envelope=(e[0], e[1], e[2], e[3] + '"payouts":[', "]" + e[4]),
            payout=(p[0], p[1], p[2], p[3]),
        )


async def _prefer_lz4(session: AsyncSession) -> None:
    """PostgreSQL: compress this transaction's large outbox payloads with lz4 if built in.

    A million payouts make ~200 MB of JSON; pglz compresses it several times slower.
    """
    available = (
        await _execute(
            session,
            text(
                "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
                "AND 'lz4' = ANY(enumvals)"
            ),
        )
    ).scalar_one_or_none()
    if available:
        await _execute(session, text("SET LOCAL default_toast_compression = 'lz4'"))


async def insert_payout_events(
    session: AsyncSession,
    ids: PayoutIds,
    *,
    payouts: int,
    topic: str,
    event_type: str,
    template: EventTemplate,
    created_at: datetime,
) -> int:
    """One outbox row per batch of the settlement's *payouts*: a ``funds.paid_out`` envelope.

    Batch n holds the payouts numbered ``n × per_event + 1 …``, read from
    ``settlement_payouts`` by one range scan each, and its JSON is assembled in SQL from
    :class:`EventTemplate` (set-based: a million payouts never become Python objects,
    nor a huge hash aggregate). Returns how many events were written.
    """
    batches = -(-payouts // ids.per_event)
    if batches == 0:
        return 0
    if is_postgresql(session):
        await _prefer_lz4(session)
        sql = _PAYOUT_EVENTS_POSTGRESQL
    else:
        sql = _PAYOUT_EVENTS_SQLITE
    e0, e1, e2, e3, e4 = template.envelope
    p0, p1, p2, p3 = template.payout
    params: dict[str, Any] = {
        "batches": batches, "per_event": ids.per_event, "topic": topic,
        "event_type": event_type, "created_at": created_at, "event_prefix": ids.event_prefix,
        "batch_prefix": ids.batch_prefix, "payout_text": ids.payout_text_prefix,
        "e0": e0, "e1": e1, "e2": e2, "e3": e3, "e4": e4, "p0": p0, "p1": p1, "p2": p2, "p3": p3,
    }
    await _execute(session, _statement(sql, **params))
    session.info["has_events"] = True  # wakes the outbox relay after commit
    return batches


async def insert_settlement_batches(
    session: AsyncSession, ids: PayoutIds, *, settlement_id: UUID, created_at: datetime
) -> None:
    """One :class:`SettlementBatch` per event: its payouts' count, total and id range."""
    postgresql = is_postgresql(session)
    batch = "((seq - 1) / :per_event)"
    settlement = "CAST(:settlement_id AS uuid)" if postgresql else ":settlement_id"
    at = "CAST(:created_at AS timestamptz)" if postgresql else ":created_at"
    sql = f"""
        INSERT INTO settlement_batches (batch_id, settlement_id, payouts, total,
                                        first_payout_id, last_payout_id, created_at)
        SELECT {_hex_id(postgresql, "batch_prefix", "b.n")}, {settlement}, b.payouts, b.total,
               {_hex_id(postgresql, "payout_prefix", "b.first")},
               {_hex_id(postgresql, "payout_prefix", "b.last")}, {at}
        FROM (
            SELECT {batch} AS n, count(*) AS payouts, SUM(paid) AS total,
                   MIN(seq) AS first, MAX(seq) AS last
            FROM settlement_payouts GROUP BY {batch}
        ) AS b
    """
    await _execute(session, _statement(
        sql, per_event=ids.per_event, batch_prefix=ids.batch_prefix,
        payout_prefix=ids.payout_prefix, settlement_id=settlement_id, created_at=created_at,
    ))


def _payout_events_postgresql() -> str:
    """PostgreSQL: one INSERT … SELECT; batch n's payouts string_agg'ed from a seq range."""
    event_id = _hex_id(True, "event_prefix", "b.n")
    batch_id = _hex_id(True, "batch_prefix", "b.n")
    return f"""
        INSERT INTO outbox (event_id, topic, key, type, payload, created_at)
        SELECT {event_id}, CAST(:topic AS text), CAST({batch_id} AS text),
               CAST(:event_type AS text),
               CAST(:e0 AS text) || CAST({event_id} AS text) || CAST(:e1 AS text)
               || CAST({batch_id} AS text) || CAST(:e2 AS text)
               || CAST({batch_id} AS text) || CAST(:e3 AS text)
               || (SELECT string_agg(
                       CAST(:p0 AS text) || {_payout_text(True, "seq")} || CAST(:p1 AS text)
                       || CAST(member_id AS text) || CAST(:p2 AS text)
                       || CAST(paid / 100 AS text) || '.'
                       || lpad(CAST(paid % 100 AS text), 2, '0') || CAST(:p3 AS text),
                       ',' ORDER BY seq)
                   FROM settlement_payouts
                   WHERE seq BETWEEN b.n * :per_event + 1 AND (b.n + 1) * :per_event)
               || CAST(:e4 AS text),
               CAST(:created_at AS timestamptz)
        FROM generate_series(0, CAST(:batches AS bigint) - 1) AS b(n)
        ORDER BY b.n
    """


def _dashed(column: str) -> str:
    """SQLite: a UUID stored as 32 hex digits, in its canonical dashed text form."""
    return (
        f"(substr({column}, 1, 8) || '-' || substr({column}, 9, 4) || '-' || "
        f"substr({column}, 13, 4) || '-' || substr({column}, 17, 4) || '-' || "
        f"substr({column}, 21, 12))"
    )


def _payout_events_sqlite() -> str:
    """SQLite: the same INSERT … SELECT, with group_concat and UUIDs dashed by substr.

    The rows of a rowid range come in rowid (seq) order: group_concat keeps it.
    """
    event_id = _hex_id(False, "event_prefix", "b.n")
    batch_id = _hex_id(False, "batch_prefix", "b.n")
    return f"""
        WITH RECURSIVE b(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n + 1 < :batches)
        INSERT INTO outbox (event_id, topic, key, type, payload, created_at)
        SELECT {event_id}, :topic, {_dashed(batch_id)}, :event_type,
               :e0 || {_dashed(event_id)} || :e1 || {_dashed(batch_id)} || :e2
               || {_dashed(batch_id)} || :e3
               || (SELECT group_concat(
                       :p0 || {_payout_text(False, "seq")} || :p1 || {_dashed("member_id")}
                       || :p2 || printf('%d.%02d', paid / 100, paid % 100) || :p3,
                       ',')
                   FROM settlement_payouts
                   WHERE seq BETWEEN b.n * :per_event + 1 AND (b.n + 1) * :per_event)
               || :e4,
               :created_at
        FROM b
        ORDER BY b.n
    """


#: The statements are the same for every settlement (only their parameters change).
_PAYOUT_EVENTS_POSTGRESQL = _payout_events_postgresql()
_PAYOUT_EVENTS_SQLITE = _payout_events_sqlite()


# --- reading settlements ------------------------------------------------------------------------


async def get_settlement(
    session: AsyncSession, settlement_id: UUID
) -> tuple[Settlement, list[SettlementCohort]] | None:
    settlement = await session.get(Settlement, settlement_id)
    if settlement is None:
        return None
    return settlement, await _cohorts_of(session, [settlement_id])


async def _cohorts_of(
    session: AsyncSession, settlement_ids: Sequence[UUID]
) -> list[SettlementCohort]:
    if not settlement_ids:
        return []
    rows = await session.exec(
        select(SettlementCohort)
        .where(col(SettlementCohort.settlement_id).in_(settlement_ids))
        .order_by(col(SettlementCohort.cohort))
    )
    return list(rows.all())


async def list_settlements(
    session: AsyncSession, pool: PoolName, *, limit: int, offset: int = 0
) -> list[tuple[Settlement, list[SettlementCohort]]]:
    """The pool's settlements, newest first, each with its cohorts."""
    settlements = list(
        (
            await session.exec(
                select(Settlement)
                .where(col(Settlement.pool) == pool)
                .order_by(col(Settlement.number).desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    )
    cohorts = await _cohorts_of(session, [s.id for s in settlements])
    by_settlement: dict[UUID, list[SettlementCohort]] = {s.id: [] for s in settlements}
    for cohort in cohorts:
        by_settlement[cohort.settlement_id].append(cohort)
    return [(s, by_settlement[s.id]) for s in settlements]


async def last_settlements(session: AsyncSession) -> dict[str, Settlement]:
    """Each pool's latest settlement."""
    latest = (
        select(col(Settlement.pool), func.max(col(Settlement.number)).label("number"))
        .group_by(col(Settlement.pool))
        .subquery()
    )
    rows = await session.exec(
        select(Settlement).join(
            latest,
            (col(Settlement.pool) == latest.c.pool) & (col(Settlement.number) == latest.c.number),
        )
    )
    return {s.pool: s for s in rows.all()}


# --- what the open positions may still receive (members' view) --------------------------------


async def still_possible_of_settled_cohorts(
    session: AsyncSession, pools: Sequence[str]
) -> dict[str, Decimal]:
    """Σ still possible of each pool's open settled cohorts (at most max_settlements rows)."""
    rows = await session.exec(
        select(col(Cohort.pool), func.sum(col(Cohort.still_possible)))
        .where(col(Cohort.pool).in_(pools), col(Cohort.closed).is_(False))
        .group_by(col(Cohort.pool))
    )
    found = {str(pool): total or ZERO for pool, total in rows.all()}
    return {pool: found.get(pool, ZERO) for pool in pools}


async def points_reversed(
    session: AsyncSession, pool: str, cohort: int, points: Decimal, multiplier: Decimal
) -> None:
    """A refund took *points* from an open position of settled cohort *cohort*.

    What that position may still receive drops by ``multiplier × points`` (its released
    stays ≤ multiplier × points): keep the cohort's sum in step. For a position of the
    current, unsettled period, reducing the pool's minted total is enough.
    """
    drop = (multiplier * points).quantize(Decimal("0.01"), rounding=ROUND_UP)
    await session.exec(
        sa_update(Cohort)
        .where(col(Cohort.pool) == pool, col(Cohort.number) == cohort,
               col(Cohort.closed).is_(False))
        .values(
            still_possible=case(
                (col(Cohort.still_possible) > drop, col(Cohort.still_possible) - drop),
                else_=literal(0, BigInteger()),
            )
        )
        .execution_options(synchronize_session=False)
    )
