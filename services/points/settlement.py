"""Periods and settlements of the green points pools (RULES 1.2, 1.3): the service layer.

One function settles, whoever asks: :func:`run_due_settlements` settles every period of
a pool that is due at or before ``as_of``, in order, in the caller's transaction. Three
callers share it:

- the ``order.completed`` handler, before it mints (settle-before-mint: a mint always
  lands in the period that contains the order's completion instant; usually nothing is
  due and the check is one small query, :func:`settle_due_before`);
- the scheduler (:func:`settlement_scheduler`), every ``settlement_check_seconds``;
- an admin (``POST /v1/pools/{pool}/settlements``), for a given ``as_of``, or as a dry
  run that computes the same settlement and writes nothing.

A settlement is one transaction: the settlement row (``(pool, number)`` is unique, so a
period is settled once), the cohorts' figures, the positions (one UPDATE per cohort), the
payouts, the fund ledger, the next period and the batched ``funds.paid_out`` events, or
none of them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import TYPE_CHECKING, cast

from sqlmodel.ext.asyncio.session import AsyncSession

from services.points import settlement_repository as repo
from services.points.domain.periods import (
    SettlementDue,
    day_of_period,
    growth,
    next_reference_size,
    settlement_due_at,
    target_points,
)
from services.points.domain.release import (
    cohort_budget,
    next_release_index,
    release_factor,
)
from services.points.settings import PointsSettings, PoolName
from services.points.settlement_models import Settlement, SettlementCohort
from services.points.settlement_repository import (
    CohortFigures,
    CohortRelease,
    EventTemplate,
    PayoutIds,
    PoolState,
)
from shared.events import POINTS_TOPIC, FundsPaidOut
from shared.money import CENT, ZERO, from_fen

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.clock import Clock
    from shared.db import Database

log = logging.getLogger(__name__)

PRODUCER = "points"
POOLS: tuple[PoolName, ...] = ("consumer", "merchant")

#: Coverage (fund ÷ what the open positions may still receive) is shown to 4 decimals,
#: rounded down: an "up to" promise never looks better covered than it is.
COVERAGE_PLACES = Decimal("0.0001")


def pool_fund_account(pool: PoolName) -> str:
    return f"fund:{pool}_pool"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortRecord:
    """One cohort's part of one settlement (RULES 1.3)."""

    cohort: int
    settlement_of_cohort: int
    start_index: Decimal
    factor: Decimal
    budget: Decimal
    total_entitlement: Decimal
    pro_rata: bool
    paid: Decimal
    positions: int
    positions_paid: int
    closed: bool


@dataclass(frozen=True)
class SettlementRecord:
    """What one settlement did (or, for a dry run, would do)."""

    id: uuid.UUID
    pool: PoolName
    number: int
    period_started_at: datetime
    period_ended_at: datetime
    due_reason: str
    forced: bool
    target_reached_at: datetime | None
    reached_on_day: int | None
    reference_size: Decimal
    minted: Decimal
    growth: Decimal
    release_index: Decimal
    fund_before: Decimal
    fund_after: Decimal
    total_paid: Decimal
    positions_paid: int
    payout_events: int
    cohorts: tuple[CohortRecord, ...]
    created_at: datetime
    dry_run: bool = False


def record_of(settlement: Settlement, cohorts: Sequence[SettlementCohort]) -> SettlementRecord:
    """A stored settlement as a record."""
    return SettlementRecord(
        id=settlement.id,
        pool=cast(PoolName, settlement.pool),
        number=settlement.number,
        period_started_at=settlement.period_started_at,
        period_ended_at=settlement.period_ended_at,
        due_reason=settlement.due_reason,
        forced=settlement.forced,
        target_reached_at=settlement.target_reached_at,
        reached_on_day=settlement.reached_on_day,
        reference_size=settlement.reference_size,
        minted=settlement.minted,
        growth=settlement.growth,
        release_index=settlement.release_index,
        fund_before=settlement.fund_before,
        fund_after=settlement.fund_after,
        total_paid=settlement.total_paid,
        positions_paid=settlement.positions_paid,
        payout_events=settlement.payout_events,
        cohorts=tuple(
            CohortRecord(
                cohort=c.cohort, settlement_of_cohort=c.settlement_of_cohort,
                start_index=c.start_index, factor=c.factor, budget=c.budget,
                total_entitlement=c.total_entitlement, pro_rata=c.pro_rata, paid=c.paid,
                positions=c.positions, positions_paid=c.positions_paid, closed=c.closed,
            )
            for c in cohorts
        ),
        created_at=settlement.created_at,
    )


# --- when a period is due (RULES 1.2) --------------------------------------------------------


def due_of(
    started_at: datetime, target_reached_at: datetime | None, settings: PointsSettings
) -> SettlementDue:
    """When the period that began at *started_at* is settled, and why (RULES 1.2)."""
    # A mint counted late (its order completed before the period began, the event arrived
    # after the previous settlement) counts as reaching the target on day 1.
    reached = None if target_reached_at is None else max(target_reached_at, started_at)
    return settlement_due_at(started_at, reached, settings.min_days, settings.max_days)


@dataclass(frozen=True)
class PeriodClock:
    """The current period of a pool (the pool may not exist yet: period 1 at the start)."""

    number: int
    started_at: datetime
    reference_size: Decimal
    minted: Decimal
    target_reached_at: datetime | None
    fund_balance: Decimal


def _clock_of(pool: PoolName, state: PoolState | None, settings: PointsSettings) -> PeriodClock:
    if state is None:
        return PeriodClock(
            number=1, started_at=settings.first_period_start(pool),
            reference_size=settings.base_points(pool), minted=ZERO, target_reached_at=None,
            fund_balance=ZERO,
        )
    return PeriodClock(
        number=state.period_number, started_at=state.period_started_at,
        reference_size=state.reference_size, minted=state.minted,
        target_reached_at=state.target_reached_at, fund_balance=state.fund_balance,
    )


@dataclass(frozen=True)
class NextSettlement:
    """The next settlement of a pool: when, and why then."""

    pool: PoolName
    number: int
    period_started_at: datetime
    due_at: datetime
    settle_on_day: int
    forced: bool
    target_reached: bool
    target_reached_at: datetime | None
    reached_on_day: int | None
    #: growth_target × S_k, and how many points the period still needs to reach it.
    target_points: Decimal
    points_to_target: Decimal
    minted: Decimal
    reference_size: Decimal
    reason: str


def next_settlement_of(
    pool: PoolName, clock: PeriodClock, settings: PointsSettings
) -> NextSettlement:
    due = due_of(clock.started_at, clock.target_reached_at, settings)
    target = target_points(clock.reference_size, settings.growth_target)
    missing = max(ZERO, target - clock.minted).quantize(CENT, rounding=ROUND_UP)
    reached = clock.target_reached_at is not None
    if reached:
        reason = due.reason
    else:
        forced_on = due.due_at.astimezone(settings.zone).strftime("%Y-%m-%d %H:%M")
        reason = (
            f"target not reached yet: needs {missing} more points; forced on {forced_on} "
            f"({settings.timezone}) otherwise"
        )
    return NextSettlement(
        pool=pool,
        number=clock.number,
        period_started_at=clock.started_at,
        due_at=due.due_at,
        settle_on_day=due.settle_on_day,
        forced=due.forced,
        target_reached=reached,
        target_reached_at=clock.target_reached_at,
        reached_on_day=(
            None if clock.target_reached_at is None
            else day_of_period(clock.started_at, max(clock.target_reached_at, clock.started_at))
        ),
        target_points=target,
        points_to_target=ZERO if reached else missing,
        minted=clock.minted,
        reference_size=clock.reference_size,
        reason=reason,
    )


async def next_settlement(
    session: AsyncSession, pool: PoolName, settings: PointsSettings
) -> NextSettlement:
    states = await repo.pool_states(session)
    return next_settlement_of(pool, _clock_of(pool, states.get(pool), settings), settings)


# --- settling ------------------------------------------------------------------------------------


def _require_aware(as_of: datetime) -> None:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(f"as_of must be a timezone-aware instant, got {as_of!r}")


async def _due_now(
    session: AsyncSession, pool: PoolName, as_of: datetime, settings: PointsSettings
) -> bool:
    states = await repo.pool_states(session)
    clock = _clock_of(pool, states.get(pool), settings)
    return due_of(clock.started_at, clock.target_reached_at, settings).due_at <= as_of


async def run_due_settlements(
    session: AsyncSession,
    pool: PoolName,
    as_of: datetime,
    settings: PointsSettings,
    *,
    dry_run: bool = False,
) -> list[SettlementRecord]:
    """Settle, in order, every period of *pool* that is due at or before *as_of*.

    RULES 1.2: a period is never settled before its due instant; a program idle for
    months catches up with one (forced) settlement per period. Runs in the caller's
    transaction. With *dry_run* the same settlements are computed inside a savepoint that
    is rolled back: nothing is written, the records say what would be paid.
    """
    _require_aware(as_of)
    if not await _due_now(session, pool, as_of, settings):
        return []  # the common case: one small query
    if not dry_run:
        return await _settle_due(session, pool, as_of, settings, dry_run=False)
    savepoint = await session.begin_nested()
    try:
        return await _settle_due(session, pool, as_of, settings, dry_run=True)
    finally:
        await savepoint.rollback()


@dataclass(frozen=True)
class SettlementRun:
    settlements: list[SettlementRecord]
    next_due: NextSettlement


async def run_settlements_as_of(
    session: AsyncSession,
    pool: PoolName,
    as_of: datetime,
    settings: PointsSettings,
    *,
    dry_run: bool = False,
) -> SettlementRun:
    """:func:`run_due_settlements` plus the pool's next settlement after them (admin)."""
    _require_aware(as_of)
    if not dry_run:
        records = await run_due_settlements(session, pool, as_of, settings)
        return SettlementRun(records, await next_settlement(session, pool, settings))
    savepoint = await session.begin_nested()
    try:
        records = await _settle_due(session, pool, as_of, settings, dry_run=True)
        return SettlementRun(records, await next_settlement(session, pool, settings))
    finally:
        await savepoint.rollback()


async def settle_due_before(
    session: AsyncSession, at: datetime, settings: PointsSettings
) -> list[SettlementRecord]:
    """Settle whatever is due at or before *at* in either pool (settle-before-mint).

    Called by the handlers before they change a pool, so that an order completed after a
    due instant lands in the next period. Usually nothing is due: one query of two rows.
    """
    _require_aware(at)
    states = await repo.pool_states(session)
    due: list[PoolName] = []
    for pool in POOLS:
        clock = _clock_of(pool, states.get(pool), settings)
        if due_of(clock.started_at, clock.target_reached_at, settings).due_at <= at:
            due.append(pool)
    if not due:
        return []
    # The handler goes on to update both pools: take both row locks now, in the order every
    # writer takes them (consumer, then merchant), so that concurrent handlers cannot
    # deadlock. Rows that do not exist yet cannot be locked, so create them first.
    for pool in POOLS:
        await repo.ensure_pool(session, pool, settings, at)
    await repo.lock_pools(session)
    records: list[SettlementRecord] = []
    for pool in due:
        records += await _settle_due(session, pool, at, settings, dry_run=False)
    return records


async def _settle_due(
    session: AsyncSession,
    pool: PoolName,
    as_of: datetime,
    settings: PointsSettings,
    *,
    dry_run: bool,
) -> list[SettlementRecord]:
    await repo.ensure_sqlite_functions(session)
    records: list[SettlementRecord] = []
    while True:
        state = await repo.lock_pool(session, pool)
        if state is None:
            # Nothing minted or funded yet, but the clock runs from the configured start.
            await repo.ensure_pool(session, pool, settings, as_of)
            state = await repo.lock_pool(session, pool)
            assert state is not None
        due = due_of(state.period_started_at, state.target_reached_at, settings)
        if due.due_at > as_of:
            return records
        records.append(await _settle_period(session, pool, state, due, settings, dry_run))


async def _settle_period(
    session: AsyncSession,
    pool: PoolName,
    state: PoolState,
    due: SettlementDue,
    settings: PointsSettings,
    dry_run: bool,
) -> SettlementRecord:
    """Settlement n of the pool: close period n at its due instant (RULES 1.2, 1.3)."""
    rules = settings.release_rules()
    number = state.period_number
    fund_before = state.fund_balance
    # RULES 1.2: g_n = minted / S_n; RULES 1.3: I_1 = 1, I_n = I_(n-1) × (1 + min(g_n, target)).
    period_growth = growth(state.minted, state.reference_size)
    previous = None if number == 1 else await repo.settlement_index(session, pool, number - 1)
    if number > 1 and previous is None:
        raise RuntimeError(f"settlement {number - 1} of the {pool} pool is missing")
    index = next_release_index(previous, period_growth, rules)

    settlement_id = uuid.uuid4()
    ids = PayoutIds(
        payout_prefix=uuid.uuid4().hex[:16], batch_prefix=uuid.uuid4().hex[:16],
        event_prefix=uuid.uuid4().hex[:16], per_event=settings.payouts_per_event,
    )
    fund = pool_fund_account(pool)
    # RULES 1.3: cohort n takes part from this settlement on, remembering I_c = I_n.
    repo.add_cohort(session, pool, number, index)
    await session.flush()
    await repo.start_settlement_payouts(session)
    # Every cohort's budget is cohort_share × B, of the same B (the balance at the start).
    budget = cohort_budget(fund_before, rules)
    budget_fen = budget.scaleb(2)
    offset = 0
    cohort_rows: list[SettlementCohort] = []
    for cohort in await repo.open_cohorts(session, pool):
        release = CohortRelease(
            pool=pool, cohort=cohort.number,
            factor=release_factor(index, cohort.start_index, rules),
            multiplier=rules.multiplier, max_settlements=rules.max_settlements,
            budget_fen=budget_fen,
        )
        figures = await repo.cohort_entitlements(session, release)
        if figures.positions == 0:
            # Every position capped (or none at all): the cohort takes part in nothing more.
            await repo.advance_cohort(
                session, pool, cohort.number, settlements=cohort.settlements, closed=True,
                still_possible=ZERO,
            )
            continue
        release = replace(release, total_fen=figures.total_entitlement)
        paid_count, paid = await repo.insert_cohort_payouts(session, release, offset=offset)
        await repo.update_cohort_positions(session, release)
        settlements = cohort.settlements + 1
        closed = settlements >= rules.max_settlements
        await repo.advance_cohort(
            session, pool, cohort.number, settlements=settlements, closed=closed,
            still_possible=ZERO if closed else _still_possible(figures, paid, rules.multiplier),
        )
        offset += paid_count
        cohort_rows.append(
            SettlementCohort(
                settlement_id=settlement_id, cohort=cohort.number,
                settlement_of_cohort=settlements, start_index=cohort.start_index,
                factor=release.factor, budget=budget,
                total_entitlement=from_fen(figures.total_entitlement),
                pro_rata=release.pro_rata, paid=paid, positions=figures.positions,
                positions_paid=paid_count, closed=closed,
            )
        )

    total_paid = sum((c.paid for c in cohort_rows), ZERO)
    if total_paid > fund_before:  # excluded by ReleaseRules (cohort_share × max <= 1)
        raise RuntimeError(f"settlement would pay {total_paid} from a fund of {fund_before}")
    events = 0
    if offset:
        template = EventTemplate.make(
            settlement_id=settlement_id, fund=fund, producer=PRODUCER, occurred_at=due.due_at
        )
        await repo.index_settlement_payouts(session)
        events = await repo.insert_payout_events(
            session, ids, payouts=offset, topic=POINTS_TOPIC, event_type=FundsPaidOut.TYPE,
            template=template, created_at=datetime.now(UTC),
        )
        # Dated like the rest of the settlement's books: the due instant.
        await repo.insert_settlement_batches(
            session, ids, settlement_id=settlement_id, created_at=due.due_at
        )
    await repo.end_settlement_payouts(session)
    repo.add_settlement_fund_entries(
        session, settlement_id, pool, [(number, c.cohort, c.paid) for c in cohort_rows],
        due.due_at,
    )
    # RULES 1.2: period n ends at the due instant, period n + 1 starts there with
    # S_(n+1) = S_n + minted.
    await repo.close_period(
        session, pool, state, ended_at=due.due_at, total_paid=total_paid,
        next_reference_size=next_reference_size(state.reference_size, state.minted),
    )
    settlement = Settlement(
        id=settlement_id,
        pool=pool,
        number=number,
        period_started_at=state.period_started_at,
        period_ended_at=due.due_at,
        due_reason=due.reason,
        forced=due.forced,
        target_reached_at=state.target_reached_at,
        reached_on_day=due.reached_on_day,
        reference_size=state.reference_size,
        minted=state.minted,
        growth=period_growth,
        release_index=index,
        fund_before=fund_before,
        fund_after=fund_before - total_paid,
        total_paid=total_paid,
        positions_paid=offset,
        cohorts=len(cohort_rows),
        payout_events=events,
        created_at=datetime.now(UTC),
    )
    repo.add_settlement(session, settlement, cohort_rows)
    # Flushed here so that a second settlement of the same period fails now, not at commit.
    await session.flush()
    if dry_run:
        session.info.pop("has_events", None)
    log.info(
        "%s%s pool settlement %d: paid %s to %d positions in %d cohorts (%s)",
        "dry run: " if dry_run else "", pool, number, total_paid, offset, len(cohort_rows),
        due.reason,
    )
    return replace(record_of(settlement, cohort_rows), dry_run=dry_run)


def _still_possible(figures: CohortFigures, paid: Decimal, multiplier: Decimal) -> Decimal:
    """Σ max(0, multiplier × points − released) of the positions that took part, after.

    Every open position has released ≤ multiplier × points (RULES 1.7; refunds keep it),
    so the sum of the maxima is the maximum of the sum; one that reached its cap counts 0.
    """
    left = multiplier * from_fen(figures.points) - from_fen(figures.released) - paid
    return max(ZERO, left.quantize(CENT, rounding=ROUND_DOWN))


# --- the scheduler -------------------------------------------------------------------------------


async def settle_all_due(db: Database, now: datetime, settings: PointsSettings) -> int:
    """Settle what is due in both pools, one transaction per pool; returns how many."""
    settled = 0
    for pool in POOLS:
        async with db.transaction() as session:
            settled += len(await run_due_settlements(session, pool, now, settings))
    return settled


async def settlement_scheduler(app: FastAPI) -> None:
    """Background task: every ``settlement_check_seconds``, settle what the clock says is due.

    The first check comes one interval after start-up, not at once: a service (or a test)
    that has just started has its clock set before anything is settled behind its back.
    """
    settings: PointsSettings = app.state.settings
    db: Database = app.state.db
    clock: Clock = app.state.clock
    while True:
        await asyncio.sleep(settings.settlement_check_seconds)
        try:
            await settle_all_due(db, clock.now(), settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled settlement failed; retrying in %ss",
                          settings.settlement_check_seconds)


# --- the members' view: what may still come, and how well it is covered ----------------------


@dataclass(frozen=True)
class PoolCoverage:
    fund_balance: Decimal
    #: Σ what the pool's open positions may still receive (up to their caps).
    still_possible: Decimal
    #: fund ÷ still_possible, rounded down to 4 decimals; None when nothing is owed.
    coverage: Decimal | None


async def pool_coverage(
    session: AsyncSession, pools: Sequence[PoolName], settings: PointsSettings
) -> dict[PoolName, PoolCoverage]:
    """RULES (general, honest by construction): the fund behind each pool's promises."""
    if not pools:
        return {}
    states = await repo.pool_states(session)
    settled = await repo.still_possible_of_settled_cohorts(session, list(pools))
    result: dict[PoolName, PoolCoverage] = {}
    for pool in pools:
        state = states.get(pool)
        fund = ZERO if state is None else state.fund_balance
        # The current period's positions have released nothing: multiplier × minted.
        current = ZERO if state is None else settings.multiplier * state.minted
        still_possible = settled[pool] + current.quantize(CENT, rounding=ROUND_DOWN)
        coverage = (
            None if still_possible <= 0
            else (fund / still_possible).quantize(COVERAGE_PLACES, rounding=ROUND_DOWN)
        )
        result[pool] = PoolCoverage(fund, still_possible, coverage)
    return result


def position_still_possible(
    points: Decimal, released: Decimal, closed: bool, settings: PointsSettings
) -> Decimal:
    """RULES 1.3: up to ``multiplier × points − released`` more, none once closed."""
    if closed:
        return ZERO
    left = settings.multiplier * points - released
    return max(ZERO, left.quantize(CENT, rounding=ROUND_DOWN))


def settlements_left(settlements: int, closed: bool, settings: PointsSettings) -> int:
    return 0 if closed else max(0, settings.max_settlements - settlements)


# --- pool status (admin) --------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettlementStatus:
    next_settlement: NextSettlement
    #: I of the last settlement (None before the first).
    release_index: Decimal | None
    last_settlement: Settlement | None


async def pool_settlement_status(
    session: AsyncSession, settings: PointsSettings
) -> dict[PoolName, PoolSettlementStatus]:
    states = await repo.pool_states(session)
    last = await repo.last_settlements(session)
    result: dict[PoolName, PoolSettlementStatus] = {}
    for pool in POOLS:
        latest = last.get(pool)
        result[pool] = PoolSettlementStatus(
            next_settlement=next_settlement_of(
                pool, _clock_of(pool, states.get(pool), settings), settings
            ),
            release_index=None if latest is None else latest.release_index,
            last_settlement=latest,
        )
    return result
