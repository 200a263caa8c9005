"""HTTP routes of the audit (RULES 1.7) and of the refunds of an order (admin)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from services.points import audit, refund_repository, repository
from services.points.dependencies import PointsSettingsDep
from services.points.schemas import AuditReport, OrderRefundsPublic, RefundPublic
from shared.app import ClockDep, HttpDep, ReadSessionDep
from shared.auth import AdminDep
from shared.errors import NotFound

router = APIRouter(prefix="/v1", tags=["audit"])




@router.get("/audit")
async def run_audit(
    _: AdminDep,
    session: ReadSessionDep,
    settings: PointsSettingsDep,
    clock: ClockDep,
    http: HttpDep,
) -> AuditReport:
    """Prove the program's invariants from the books, across the services (admin)."""
    return await audit.run_audit(session, settings, http, clock.now())


@router.get("/orders/{order_id}/refunds")
async def order_refunds(
    order_id: UUID, _: AdminDep, session: ReadSessionDep, settings: PointsSettingsDep
) -> OrderRefundsPublic:
    """What each refund of an order reversed, and what it could not recover (admin)."""
    if await repository.get_giveback(session, order_id) is None:
        raise NotFound(f"no completed order {order_id} is known to the points service")
    refunds = await refund_repository.refunds_of_order(session, order_id)
    return OrderRefundsPublic(
        order_id=order_id,
        refunds=[
            RefundPublic(
                refund_id=r.refund_id,
                pos_refund_id=r.pos_refund_id,
                amount=r.amount,
                cash_amount=r.cash_amount,
                voucher_amount=r.voucher_amount,
                refunded_total=r.refunded_total,
                final=r.final,
                giveback_state="allocated" if r.giveback_state == "allocated" else "pending",
                consumer_points_due=r.consumer_points_due,
                consumer_points_reversed=r.consumer_points_reversed,
                merchant_points_due=r.merchant_points_due,
                merchant_points_reversed=r.merchant_points_reversed,
                points_unrecovered=(
                    r.consumer_points_due - r.consumer_points_reversed
                    + r.merchant_points_due - r.merchant_points_reversed
                ),
                coins_reversed=r.coins,
                pending_giveback_returned=r.pending_giveback,
                platform_fee_due=r.platform_fee_due,
                platform_fee_recovered=r.platform_fee_recovered,
                consumer_pool_due=r.consumer_pool_due,
                consumer_pool_recovered=r.consumer_pool_recovered,
                merchant_pool_due=r.merchant_pool_due,
                merchant_pool_recovered=r.merchant_pool_recovered,
                rewards_kept=r.rewards_kept,
                unrecovered=r.unrecovered,
                refunded_at=r.refunded_at.astimezone(settings.zone),
            )
            for r in refunds
        ],
    )
