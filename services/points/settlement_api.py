"""HTTP routes of the settlements (admin): run or preview, list, read one (RULES 1.2, 1.3)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_UP
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from services.points import settlement, settlement_repository
from services.points.dependencies import PointsSettingsDep
from services.points.settings import PointsSettings, PoolName
from services.points.settlement_models import Settlement
from services.points.settlement_schemas import (
    CohortSettlementPublic,
    LastSettlementPublic,
    NextSettlementPublic,
    PoolSettlementPublic,
    SettlementListPublic,
    SettlementPublic,
    SettlementRunPublic,
    SettlementRunRequest,
)
from shared.app import ClockDep, ReadSessionDep, SessionDep
from shared.auth import AdminDep
from shared.errors import NotFound, Unprocessable
from shared.money import CENT

router = APIRouter(prefix="/v1", tags=["settlements"])




def _local(settings: PointsSettings, value: datetime) -> datetime:
    """Instants are answered in the program's time zone (RULES: calendar days)."""
    return value.astimezone(settings.zone)


def _local_or_none(settings: PointsSettings, value: datetime | None) -> datetime | None:
    return None if value is None else _local(settings, value)


def settlement_public(
    settings: PointsSettings, record: settlement.SettlementRecord
) -> SettlementPublic:
    return SettlementPublic(
        settlement_id=record.id,
        pool=record.pool,
        number=record.number,
        dry_run=record.dry_run,
        period_started_at=_local(settings, record.period_started_at),
        period_ended_at=_local(settings, record.period_ended_at),
        due_reason=record.due_reason,
        forced=record.forced,
        target_reached_at=_local_or_none(settings, record.target_reached_at),
        reached_on_day=record.reached_on_day,
        reference_size=record.reference_size,
        minted=record.minted,
        growth=record.growth,
        release_index=record.release_index,
        fund_before=record.fund_before,
        fund_after=record.fund_after,
        total_paid=record.total_paid,
        positions_paid=record.positions_paid,
        payout_events=record.payout_events,
        cohorts=[
            CohortSettlementPublic(
                cohort=c.cohort, settlement_of_cohort=c.settlement_of_cohort,
                start_index=c.start_index, factor=c.factor, budget=c.budget,
                total_entitlement=c.total_entitlement, pro_rata=c.pro_rata, paid=c.paid,
                positions=c.positions, positions_paid=c.positions_paid, closed=c.closed,
            )
            for c in record.cohorts
        ],
        created_at=_local(settings, record.created_at),
    )


def next_settlement_public(
    settings: PointsSettings, due: settlement.NextSettlement
) -> NextSettlementPublic:
    return NextSettlementPublic(
        number=due.number,
        period_started_at=_local(settings, due.period_started_at),
        due_at=_local(settings, due.due_at),
        settle_on_day=due.settle_on_day,
        forced=due.forced,
        target_reached=due.target_reached,
        target_reached_at=_local_or_none(settings, due.target_reached_at),
        reached_on_day=due.reached_on_day,
        # The points that reach the target: rounded up, or they would not reach it.
        target_points=due.target_points.quantize(CENT, rounding=ROUND_UP),
        points_to_target=due.points_to_target,
        reason=due.reason,
    )


def _last_public(settings: PointsSettings, last: Settlement) -> LastSettlementPublic:
    return LastSettlementPublic(
        settlement_id=last.id, number=last.number,
        period_ended_at=_local(settings, last.period_ended_at), forced=last.forced,
        growth=last.growth, release_index=last.release_index, total_paid=last.total_paid,
        positions_paid=last.positions_paid, fund_after=last.fund_after,
    )


def pool_settlement_public(
    settings: PointsSettings, status: settlement.PoolSettlementStatus
) -> PoolSettlementPublic:
    """A pool's settlement status, for ``GET /v1/pools``."""
    return PoolSettlementPublic(
        release_index=status.release_index,
        next_settlement=next_settlement_public(settings, status.next_settlement),
        last_settlement=(
            None if status.last_settlement is None
            else _last_public(settings, status.last_settlement)
        ),
    )


@router.post("/pools/{pool}/settlements")
async def run_settlements(
    pool: PoolName,
    body: SettlementRunRequest,
    _: AdminDep,
    session: SessionDep,
    settings: PointsSettingsDep,
    clock: ClockDep,
) -> SettlementRunPublic:
    """Settle (or, with dry_run, preview) every period of the pool due by as_of (admin)."""
    now = clock.now()
    if body.as_of > now and not body.dry_run:
        raise Unprocessable(
            f"as_of {body.as_of.isoformat()} is later than the service's clock "
            f"({now.isoformat()}): a period cannot be settled before its due instant has "
            "passed; use dry_run=true to preview a future settlement"
        )
    run = await settlement.run_settlements_as_of(
        session, pool, body.as_of, settings, dry_run=body.dry_run
    )
    if run.settlements:
        numbers = ", ".join(str(r.number) for r in run.settlements)
        verb = "would settle" if body.dry_run else "settled"
        detail = f"{verb} period(s) {numbers} of the {pool} pool"
    else:
        detail = (
            f"nothing is due by {_local(settings, body.as_of).isoformat()}: period "
            f"{run.next_due.number} is due at "
            f"{_local(settings, run.next_due.due_at).isoformat()} ({run.next_due.reason})"
        )
    return SettlementRunPublic(
        pool=pool,
        as_of=_local(settings, body.as_of),
        dry_run=body.dry_run,
        settlements=[settlement_public(settings, r) for r in run.settlements],
        next_due=next_settlement_public(settings, run.next_due),
        detail=detail,
    )


@router.get("/pools/{pool}/settlements")
async def list_settlements(
    pool: PoolName,
    _: AdminDep,
    session: ReadSessionDep,
    settings: PointsSettingsDep,
    limit: Annotated[int, Query(ge=1, le=500, description="How many, newest first")] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SettlementListPublic:
    """The pool's settlements, newest first, with each cohort's part (admin)."""
    found = await settlement_repository.list_settlements(
        session, pool, limit=limit, offset=offset
    )
    return SettlementListPublic(
        pool=pool,
        settlements=[
            settlement_public(settings, settlement.record_of(s, cohorts)) for s, cohorts in found
        ],
    )


@router.get("/settlements/{settlement_id}")
async def get_settlement(
    settlement_id: UUID, _: AdminDep, session: ReadSessionDep, settings: PointsSettingsDep
) -> SettlementPublic:
    """One settlement with each cohort's part (admin)."""
    found = await settlement_repository.get_settlement(session, settlement_id)
    if found is None:
        raise NotFound(
            f"no settlement {settlement_id}; GET /v1/pools/{{pool}}/settlements lists them"
        )
    return settlement_public(settings, settlement.record_of(*found))
