"""HTTP routes of the orders service (POS, admin and member facing)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import httpx
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from services.orders import repository, service
from services.orders.models import Merchant
from services.orders.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    BatchResult,
    ErrorBody,
    MerchantCreate,
    MerchantCreated,
    MerchantPublic,
    OrderBatch,
    OrderCreate,
    OrderDetail,
    OrderPublic,
    OrderTotals,
    RefundCreate,
    RefundReceipt,
)
from services.orders.settings import OrdersSettings
from shared.app import ClockDep, HttpDep, ReadSessionDep, SessionDep
from shared.auth import (
    AdminDep,
    PosKeyDep,
    PrincipalDep,
    bearer_scheme,
    get_principal,
    pos_key_scheme,
)
from shared.clock import Clock
from shared.db import Database
from shared.errors import Forbidden, Unauthorized

router = APIRouter(prefix="/v1")


def _settings(request: Request) -> OrdersSettings:
    settings: OrdersSettings = request.app.state.settings
    return settings


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


OrdersSettingsDep = Annotated[OrdersSettings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]


async def _pos_merchant(db: DatabaseDep, api_key: PosKeyDep) -> Merchant:
    async with db.read() as session:
        return await service.authenticate_pos(session, api_key)


#: The merchant whose POS key (X-API-Key) signed the request.
PosMerchantDep = Annotated[Merchant, Depends(_pos_merchant)]

PosOrderId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="POS id")
]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def _order_context(
    db: Database, http: httpx.AsyncClient, settings: OrdersSettings, clock: Clock
) -> service.OrderContext:
    return service.OrderContext(db=db, http=http, settings=settings, clock=clock)


# --- merchants -------------------------------------------------------------------------


@router.post(
    "/merchants",
    status_code=status.HTTP_201_CREATED,
    tags=["merchants"],
    responses=_errors(401, 403, 422),
)
async def register_merchant(
    body: MerchantCreate,
    _admin: AdminDep,
    session: SessionDep,
    settings: OrdersSettingsDep,
    clock: ClockDep,
) -> MerchantCreated:
    """Register a merchant with its give-back rate; answers its first POS key, shown once."""
    return await service.register_merchant(session, settings, clock, body)


@router.post(
    "/merchants/{merchant_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    tags=["merchants"],
    responses=_errors(401, 403, 404),
)
async def issue_api_key(
    merchant_id: UUID,
    _admin: AdminDep,
    session: SessionDep,
    clock: ClockDep,
    body: Annotated[ApiKeyCreate | None, Body()] = None,
) -> ApiKeyCreated:
    """Issue a POS key for another terminal of the merchant (the key is shown only once)."""
    terminal = body.terminal if body is not None else None
    return await service.issue_api_key(session, clock, merchant_id, terminal)


@router.delete(
    "/merchants/{merchant_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["merchants"],
    responses=_errors(401, 403, 404),
)
async def revoke_api_key(
    merchant_id: UUID, key_id: UUID, _admin: AdminDep, session: SessionDep, clock: ClockDep
) -> None:
    """Revoke a terminal's POS key (a lost or retired terminal); other keys keep working."""
    await service.revoke_api_key(session, clock, merchant_id, key_id)


@router.get("/merchants/{merchant_id}", tags=["merchants"], responses=_errors(401, 403, 404))
async def read_merchant(
    merchant_id: UUID,
    request: Request,
    session: ReadSessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(pos_key_scheme)],
) -> MerchantPublic:
    """A merchant and its terminal keys (admin, or that merchant's POS key or member token)."""
    if credentials is not None:
        # The admin, or the merchant itself with its member token (member id = merchant id).
        get_principal(request, credentials).ensure_can_read(merchant_id)
    elif api_key:
        merchant = await service.authenticate_pos(session, api_key)
        if merchant.id != merchant_id:
            raise Forbidden("a POS key can only read its own merchant")
    else:
        raise Unauthorized("send the admin token (Authorization: Bearer) or a POS key (X-API-Key)")
    return await service.merchant_view(session, merchant_id)


# --- orders ----------------------------------------------------------------------------


@router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    tags=["orders"],
    responses={
        200: {"model": OrderPublic, "description": "The same order was already recorded"},
        **_errors(400, 401, 409, 422, 503),
    },
)
async def create_order(
    body: OrderCreate,
    response: Response,
    merchant: PosMerchantDep,
    db: DatabaseDep,
    http: HttpDep,
    settings: OrdersSettingsDep,
    clock: ClockDep,
) -> OrderPublic:
    """Record a sale (idempotent on the POS's order id; holds vouchers if some are used)."""
    outcome = await service.place_order(_order_context(db, http, settings, clock), merchant, body)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return service.order_public(outcome.order)


@router.post("/orders/batch", tags=["orders"], responses=_errors(400, 401, 422))
async def create_orders_batch(
    body: OrderBatch,
    merchant: PosMerchantDep,
    db: DatabaseDep,
    http: HttpDep,
    settings: OrdersSettingsDep,
    clock: ClockDep,
) -> BatchResult:
    """Upload up to 500 orders of a terminal that was offline; one result per order."""
    ctx = _order_context(db, http, settings, clock)
    return await service.place_orders_batch(ctx, merchant, body.orders)


@router.get("/orders/{order_id}", tags=["orders"], responses=_errors(401, 404))
async def read_order(
    order_id: PosOrderId, merchant: PosMerchantDep, session: ReadSessionDep
) -> OrderDetail:
    """One of the merchant's orders, by the POS's order id, with its refunds."""
    return await service.order_detail(session, merchant, order_id)


@router.post(
    "/orders/{order_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    tags=["orders"],
    responses={
        200: {"model": RefundReceipt, "description": "The same refund was already recorded"},
        **_errors(400, 401, 404, 409, 422),
    },
)
async def refund_order(
    order_id: PosOrderId,
    body: RefundCreate,
    response: Response,
    merchant: PosMerchantDep,
    session: SessionDep,
    clock: ClockDep,
) -> RefundReceipt:
    """Refund part or all of an order (idempotent on the POS's refund id)."""
    outcome = await service.refund_order(session, clock, merchant, order_id, body)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return outcome.receipt


@router.get("/members/{member_id}/orders", tags=["members"], responses=_errors(401, 403))
async def list_member_orders(
    member_id: UUID,
    principal: PrincipalDep,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[OrderPublic]:
    """A consumer's orders, newest first (their own member token, or the admin)."""
    principal.ensure_can_read(member_id)
    return await service.member_orders(session, member_id, limit=limit, offset=offset)


@router.get("/admin/totals", tags=["admin"], responses=_errors(401, 403))
async def order_totals(_: AdminDep, session: ReadSessionDep) -> OrderTotals:
    """Σ orders and refunds as recorded here (the audit ties the books out to these)."""
    return await repository.order_totals(session)
