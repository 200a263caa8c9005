"""HTTP routes of the points service."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Annotated, cast
from uuid import UUID

from fastapi import APIRouter, Query

from services.points import repository, settlement
from services.points.dependencies import PointsSettingsDep
from services.points.models import OrderGiveback, Pool
from services.points.schemas import (
    AllocationFigures,
    FundEntryPublic,
    MemberPointsPublic,
    OrderAllocationPublic,
    PayoutPublic,
    PeriodPublic,
    PointEntryPublic,
    PoolPublic,
    PoolsPublic,
    PositionPublic,
    RewardPublic,
)
from services.points.settings import PointsSettings, PoolName
from services.points.settlement_api import pool_settlement_public
from shared.app import ReadSessionDep
from shared.auth import AdminDep, PrincipalDep
from shared.errors import NotFound
from shared.money import ZERO

router = APIRouter(prefix="/v1", tags=["points"])

_GROWTH_PLACES = Decimal("0.000001")
POOLS: tuple[PoolName, ...] = ("consumer", "merchant")




def _local(settings: PointsSettings, value: datetime) -> datetime:
    """Instants are answered in the program's time zone (RULES: calendar days)."""
    return value.astimezone(settings.zone)


@router.get("/members/{member_id}/points")
async def member_points(
    member_id: UUID,
    principal: PrincipalDep,
    session: ReadSessionDep,
    settings: PointsSettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many entries, newest first")]
    = 100,
) -> MemberPointsPublic:
    """A member's points: totals per pool, positions per cohort and the latest entries."""
    principal.ensure_can_read(member_id)
    found = await repository.member_points(session, member_id, limit=limit)
    totals = dict.fromkeys(POOLS, ZERO)
    for position in found.positions:
        totals[cast(PoolName, position.pool)] += position.points
    # RULES (general, honest by construction): what may still come, and the fund behind it.
    held = sorted({cast(PoolName, p.pool) for p in found.positions if not p.closed})
    coverage = await settlement.pool_coverage(session, held, settings)
    return MemberPointsPublic(
        member_id=member_id,
        consumer_points=totals["consumer"],
        merchant_points=totals["merchant"],
        positions=[
            PositionPublic(
                pool=cast(PoolName, p.pool), cohort=p.cohort, points=p.points,
                released=p.released, settlements=p.settlements,
                settlements_left=settlement.settlements_left(p.settlements, p.closed, settings),
                closed=p.closed,
                cap=(settings.multiplier * p.points).quantize(Decimal("0.01"), ROUND_DOWN),
                still_possible=settlement.position_still_possible(
                    p.points, p.released, p.closed, settings
                ),
                coverage=None if p.closed else coverage[cast(PoolName, p.pool)].coverage,
            )
            for p in found.positions
        ],
        entries=[
            PointEntryPublic(
                order_id=e.order_id, pool=cast(PoolName, e.pool), cohort=e.cohort,
                points=e.points, created_at=_local(settings, e.created_at),
            )
            for e in found.entries
        ],
    )


def _pool_public(
    settings: PointsSettings,
    kind: PoolName,
    pool: Pool | None,
    status: settlement.PoolSettlementStatus,
) -> PoolPublic:
    if pool is None:
        # Not used yet: created on its first mint, with period 1 at the configured start.
        started, size = settings.first_period_start(kind), settings.base_points(kind)
        number, minted, fund = 1, ZERO, ZERO
    else:
        started, size = pool.period_started_at, pool.reference_size
        number, minted, fund = pool.period_number, pool.minted, pool.fund_balance
    target = settings.growth_target * size
    return PoolPublic(
        pool=kind,
        fund_balance=fund,
        base_points=settings.base_points(kind),
        period=PeriodPublic(
            number=number,
            started_at=_local(settings, started),
            reference_size=size,
            minted=minted,
            growth=(minted / size).quantize(_GROWTH_PLACES, rounding=ROUND_DOWN),
            growth_target=settings.growth_target,
            target_points=target.quantize(Decimal("0.01"), rounding=ROUND_DOWN),
            target_reached=minted >= target,
            target_reached_at=(
                None if pool is None or pool.target_reached_at is None
                else _local(settings, pool.target_reached_at)
            ),
        ),
        settlement=pool_settlement_public(settings, status),
    )


@router.get("/pools")
async def pools(_: AdminDep, session: ReadSessionDep, settings: PointsSettingsDep) -> PoolsPublic:
    """Both pools: fund, current period and growth, next and last settlement (admin)."""
    stored = {p.kind: p for p in await repository.list_pools(session)}
    status = await settlement.pool_settlement_status(session, settings)
    return PoolsPublic(
        program=settings.program,
        timezone=settings.timezone,
        pools=[
            _pool_public(settings, kind, stored.get(kind), status[kind]) for kind in POOLS
        ],
    )


def _figures(settings: PointsSettings, giveback: OrderGiveback) -> AllocationFigures | None:
    if giveback.allocated_at is None:
        return None
    return AllocationFigures(
        platform_fee=giveback.platform_fee or ZERO,
        rewards_total=giveback.rewards_total or ZERO,
        rewards_scaled=bool(giveback.rewards_scaled),
        consumer_pool=giveback.consumer_pool or ZERO,
        merchant_pool=giveback.merchant_pool or ZERO,
        allocated_at=_local(settings, giveback.allocated_at),
    )


@router.get("/orders/{order_id}/allocation")
async def order_allocation(
    order_id: UUID, _: AdminDep, session: ReadSessionDep, settings: PointsSettingsDep
) -> OrderAllocationPublic:
    """Where one order's give-back went: points, coins, fee, rewards, pool funds (admin)."""
    giveback = await repository.get_giveback(session, order_id)
    if giveback is None:
        if await repository.get_pending_evaluation(session, order_id) is not None:
            raise NotFound(
                f"order {order_id} has not reached the points service yet (its referral "
                "evaluation has); retry once the order.completed event is processed"
            )
        raise NotFound(f"no completed order {order_id} is known to the points service")
    rewards = await repository.order_rewards(session, order_id)
    payouts = await repository.payouts_of_order(session, order_id)
    entries = await repository.fund_entries_of_order(session, order_id)
    return OrderAllocationPublic(
        order_id=giveback.order_id,
        pos_order_id=giveback.pos_order_id,
        consumer_id=giveback.consumer_id,
        merchant_id=giveback.merchant_id,
        amount=giveback.amount,
        voucher_amount=giveback.voucher_amount,
        cash_amount=giveback.cash_amount,
        giveback_rate=giveback.giveback_rate,
        earn_on="gross" if giveback.earn_on == "gross" else "cash",
        giveback=giveback.giveback,
        consumer_points=giveback.consumer_points,
        merchant_points=giveback.merchant_points,
        coins=giveback.coins,
        consumer_cohort=giveback.consumer_cohort,
        merchant_cohort=giveback.merchant_cohort,
        completed_at=_local(settings, giveback.completed_at),
        state="allocated" if giveback.state == "allocated" else "pending",
        allocation=_figures(settings, giveback),
        rewards=[
            RewardPublic(
                kind="binding" if r.kind == "binding" else "invite",
                beneficiary_id=r.beneficiary_id,
                rate=r.rate,
                basis="consumer_points" if r.basis == "consumer_points" else "cash_amount",
                due=r.due,
                amount=r.amount,
                payout_id=r.payout_id,
            )
            for r in rewards
        ],
        payouts=[
            PayoutPublic(
                payout_id=p.payout_id, batch_id=p.batch_id, member_id=p.member_id,
                asset=p.asset, amount=p.amount, reason=p.reason, fund=p.fund,
                created_at=_local(settings, p.created_at),
            )
            for p in payouts
        ],
        fund_entries=[
            FundEntryPublic(
                txn_id=e.txn_id, account=e.account, amount=e.amount, memo=e.memo,
                created_at=_local(settings, e.created_at),
            )
            for e in entries
        ],
    )
