"""Routes of the vouchers service (all under /v1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response, status

from services.vouchers import service
from services.vouchers.models import VoucherHold
from services.vouchers.schemas import (
    HoldCapture,
    HoldCreate,
    HoldPublic,
    ReceivablePublic,
    RedemptionCreate,
    RedemptionPublic,
    TotalsPublic,
    WalletPublic,
)
from services.vouchers.settings import VouchersSettings
from shared.app import ClockDep, ReadSessionDep, SessionDep
from shared.auth import AdminDep, MemberDep, PrincipalDep
from shared.errors import Forbidden, Unprocessable

router = APIRouter(prefix="/v1")


def _vouchers_settings(request: Request) -> VouchersSettings:
    settings: VouchersSettings = request.app.state.settings
    return settings


VouchersSettingsDep = Annotated[VouchersSettings, Depends(_vouchers_settings)]

Limit = Annotated[int, Query(ge=1, le=200, description="Entries per page (at most 200)")]
Cursor = Annotated[
    str | None, Query(max_length=20, description="The `next_cursor` of the previous page")
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    403: {"description": "The token may not do this"},
}


def _before_id(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or int(cursor) < 1:
        raise Unprocessable(
            f"cursor {cursor!r} is not one this API returned; pass a page's next_cursor, "
            "or omit it to start from the newest entry"
        )
    return int(cursor)


def _hold(hold: VoucherHold) -> HoldPublic:
    return HoldPublic.model_validate(hold, from_attributes=True)


@router.get("/members/{member_id}/wallet", tags=["wallets"], responses=_ERRORS)
async def read_wallet(
    member_id: UUID,
    principal: PrincipalDep,
    session: ReadSessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> WalletPublic:
    """A member's balances and wallet history, newest first (the member's token or admin)."""
    principal.ensure_can_read(member_id)
    return await service.read_wallet(
        session, member_id, before_id=_before_id(cursor), limit=limit
    )


@router.post(
    "/holds",
    status_code=status.HTTP_201_CREATED,
    tags=["holds"],
    responses={
        **_ERRORS,
        200: {"description": "The same hold was placed before", "model": HoldPublic},
        409: {"description": "insufficient_vouchers, or hold_id_reused with another body"},
    },
)
async def place_hold(
    body: HoldCreate,
    _: AdminDep,
    session: SessionDep,
    clock: ClockDep,
    settings: VouchersSettingsDep,
    response: Response,
) -> HoldPublic:
    """Hold a consumer's vouchers at checkout (idempotent on hold_id; admin token)."""
    hold, created = await service.place_hold(
        session, body, now=clock.now(), ttl=timedelta(seconds=settings.hold_ttl_seconds)
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _hold(hold)


@router.get("/holds/{hold_id}", tags=["holds"], responses={**_ERRORS, 404: {}})
async def read_hold(hold_id: UUID, principal: PrincipalDep, session: ReadSessionDep) -> HoldPublic:
    """One voucher hold (admin, or the member whose vouchers it holds)."""
    hold = await service.read_hold(session, hold_id)
    principal.ensure_can_read(hold.member_id)
    return _hold(hold)


@router.post(
    "/holds/{hold_id}/capture",
    tags=["holds"],
    responses={**_ERRORS, 404: {}, 409: {"description": "hold_not_capturable"}},
)
async def capture_hold(
    hold_id: UUID,
    _: AdminDep,
    session: SessionDep,
    clock: ClockDep,
    body: HoldCapture | None = None,
) -> HoldPublic:
    """Capture a hold: the merchant is owed its amount (idempotent; admin token)."""
    hold = await service.capture_hold(
        session, hold_id, order_id=body.order_id if body else None, now=clock.now()
    )
    return _hold(hold)


@router.post(
    "/holds/{hold_id}/release",
    tags=["holds"],
    responses={**_ERRORS, 404: {}, 409: {"description": "hold_not_releasable"}},
)
async def release_hold(
    hold_id: UUID, _: AdminDep, session: SessionDep, clock: ClockDep
) -> HoldPublic:
    """Give a hold's vouchers back to the member (idempotent; admin token)."""
    return _hold(await service.release_hold(session, hold_id, now=clock.now()))


@router.post(
    "/members/{member_id}/coins/redemptions",
    status_code=status.HTTP_201_CREATED,
    tags=["coins"],
    responses={
        **_ERRORS,
        200: {"description": "The same redemption was made before", "model": RedemptionPublic},
        409: {"description": "insufficient_coins, or redemption_id_reused with another body"},
    },
)
async def redeem_coins(
    member_id: UUID,
    body: RedemptionCreate,
    principal: MemberDep,
    session: SessionDep,
    clock: ClockDep,
    response: Response,
) -> RedemptionPublic:
    """Spend gold coins in the platform mall (idempotent on redemption_id; member token)."""
    if principal.member_id != member_id:
        raise Forbidden("a member token can only spend its own member's coins")
    redemption, created = await service.redeem_coins(session, member_id, body, now=clock.now())
    if not created:
        response.status_code = status.HTTP_200_OK
    return RedemptionPublic.model_validate(redemption, from_attributes=True)


@router.get("/merchants/{merchant_id}/receivable", tags=["merchants"], responses=_ERRORS)
async def read_receivable(
    merchant_id: UUID,
    principal: PrincipalDep,
    session: ReadSessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ReceivablePublic:
    """What the platform owes a merchant for vouchers accepted (admin or the merchant)."""
    principal.ensure_can_read(merchant_id)
    return await service.read_receivable(
        session, merchant_id, before_id=_before_id(cursor), limit=limit
    )


@router.get("/admin/totals", tags=["admin"], responses=_ERRORS)
async def read_totals(_: AdminDep, session: ReadSessionDep) -> TotalsPublic:
    """Ledger figures for the platform audit, with the ledger's own consistency checks."""
    return await service.read_totals(session)
