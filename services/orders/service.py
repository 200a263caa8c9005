"""Use cases of the orders service: load state, apply the rules of `domain`, persist the
result and its events in one transaction.

Order intake talks to other services (referrals, vouchers) *between* short database
transactions, never inside one: no transaction or SQLite write lock is held while a
remote call is in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.orders import clients, domain, repository
from services.orders.models import Merchant, MerchantApiKey, Order, Refund
from services.orders.schemas import (
    ApiKeyCreated,
    ApiKeyPublic,
    BatchItemResult,
    BatchResult,
    ErrorBody,
    FieldProblem,
    MerchantCreate,
    MerchantCreated,
    MerchantPublic,
    OrderCreate,
    OrderDetail,
    OrderPublic,
    RefundCreate,
    RefundPublic,
    RefundReceipt,
)
from services.orders.settings import OrdersSettings
from shared.auth import generate_api_key, hash_api_key, issue_member_token
from shared.clock import Clock
from shared.db import Database
from shared.errors import Conflict, DomainError, NotFound, Unauthorized, Unprocessable
from shared.events import MerchantRegistered, OrderCompleted, OrderRefunded
from shared.money import ZERO

log = logging.getLogger(__name__)


# --- errors ----------------------------------------------------------------------------


class InvalidField(Unprocessable):
    """A 422 naming the field, shaped like the framework's validation errors."""

    error = "validation_error"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(
            f"{field}: {message}",
            extra={"fields": [{"field": field, "message": message}], **extra},
        )


class UnknownConsumer(InvalidField):
    error = "unknown_consumer"


class RefundExceedsOrder(InvalidField):
    error = "refund_exceeds_order"


class IdempotencyConflict(Conflict):
    """The POS reused an order or refund id for a different body."""

    error = "idempotency_conflict"


# --- conversions -----------------------------------------------------------------------


def order_public(order: Order) -> OrderPublic:
    return OrderPublic(
        id=order.id,
        order_id=order.pos_order_id,
        merchant_id=order.merchant_id,
        consumer_id=order.consumer_id,
        amount=order.amount,
        voucher_amount=order.voucher_amount,
        cash_amount=order.cash_amount,
        giveback_rate=order.giveback_rate,
        status=domain.order_status(order.amount, order.refunded_amount),
        created_at=order.created_at,
        refunded_amount=order.refunded_amount,
        refunded_voucher_amount=order.refunded_voucher_amount,
        refunded_cash_amount=order.refunded_cash_amount,
    )


def refund_public(refund: Refund, order: Order) -> RefundPublic:
    return RefundPublic(
        id=refund.id,
        refund_id=refund.pos_refund_id,
        order_id=order.pos_order_id,
        amount=refund.amount,
        voucher_amount=refund.voucher_amount,
        cash_amount=refund.cash_amount,
        refunded_total=refund.refunded_total,
        created_at=refund.created_at,
    )


def _key_public(key: MerchantApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        key_id=key.id, terminal=key.terminal, created_at=key.created_at, revoked_at=key.revoked_at
    )


# --- merchants and POS keys ------------------------------------------------------------


async def authenticate_pos(session: AsyncSession, api_key: str) -> Merchant:
    """The merchant a POS key belongs to (401 for an unknown or revoked key)."""
    merchant = await repository.merchant_for_key_hash(session, hash_api_key(api_key))
    if merchant is None:
        raise Unauthorized(
            "the X-API-Key is not a valid POS key (unknown or revoked); "
            "ask the platform admin for a key for this terminal"
        )
    return merchant


def _new_key(merchant_id: UUID, terminal: str | None, clock: Clock) -> tuple[MerchantApiKey, str]:
    secret = generate_api_key()
    key = MerchantApiKey(
        merchant_id=merchant_id,
        key_hash=hash_api_key(secret),
        terminal=terminal,
        created_at=clock.now(),
    )
    return key, secret


async def register_merchant(
    session: AsyncSession, settings: OrdersSettings, clock: Clock, body: MerchantCreate
) -> MerchantCreated:
    try:
        rate = domain.check_giveback_rate(
            body.giveback_rate, settings.giveback_rate_min, settings.giveback_rate_max
        )
    except domain.InvalidGivebackRate as exc:
        raise InvalidField("giveback_rate", str(exc)) from exc
    now = clock.now()
    merchant = Merchant(name=body.name, giveback_rate=rate, created_at=now)
    key, secret = _new_key(merchant.id, "default", clock)
    repository.add(session, merchant)
    await repository.flush(session)
    repository.add(session, key)
    # A merchant is a member too (it may buy at other shops); orders knows it already.
    await repository.remember_member(
        session, merchant.id, kind="merchant", source="merchant", at=now
    )
    repository.record(
        session,
        MerchantRegistered(
            merchant_id=merchant.id, name=merchant.name, giveback_rate=rate, registered_at=now
        ),
        at=now,
    )
    return MerchantCreated(
        merchant_id=merchant.id,
        name=merchant.name,
        giveback_rate=rate,
        created_at=now,
        api_key_id=key.id,
        api_key=secret,
        # Wall-clock time, not the program clock: the token is checked against real time.
        member_token=issue_member_token(settings, merchant.id),
    )


async def _merchant_or_404(session: AsyncSession, merchant_id: UUID) -> Merchant:
    merchant = await repository.get_merchant(session, merchant_id)
    if merchant is None:
        raise NotFound(f"no merchant {merchant_id}")
    return merchant


async def issue_api_key(
    session: AsyncSession, clock: Clock, merchant_id: UUID, terminal: str | None
) -> ApiKeyCreated:
    await _merchant_or_404(session, merchant_id)
    key, secret = _new_key(merchant_id, terminal, clock)
    repository.add(session, key)
    return ApiKeyCreated(
        key_id=key.id,
        merchant_id=merchant_id,
        terminal=terminal,
        api_key=secret,
        created_at=key.created_at,
    )


async def revoke_api_key(
    session: AsyncSession, clock: Clock, merchant_id: UUID, key_id: UUID
) -> None:
    key = await repository.get_api_key(session, merchant_id, key_id)
    if key is None:
        raise NotFound(f"merchant {merchant_id} has no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        repository.add(session, key)


async def merchant_view(session: AsyncSession, merchant_id: UUID) -> MerchantPublic:
    merchant = await _merchant_or_404(session, merchant_id)
    keys = await repository.list_api_keys(session, merchant_id)
    return MerchantPublic(
        merchant_id=merchant.id,
        name=merchant.name,
        giveback_rate=merchant.giveback_rate,
        created_at=merchant.created_at,
        api_keys=[_key_public(k) for k in keys],
    )


# --- orders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderOutcome:
    order: Order
    created: bool


def _replay_order(order: Order, terms: dict[str, str]) -> OrderOutcome:
    """Same body again: the same order. Another body under the same id: 409."""
    if order.fingerprint == domain.fingerprint(terms):
        return OrderOutcome(order, created=False)
    stored = domain.order_terms(order.consumer_id, order.amount, order.voucher_amount)
    fields = domain.differing_fields(stored, terms)
    changes = ", ".join(f"{f} (recorded {stored[f]}, sent {terms[f]})" for f in fields)
    raise IdempotencyConflict(
        f"order {order.pos_order_id} was already recorded with other values: {changes}; "
        "send the recorded values to read it again, or use a new order_id for a new sale",
        extra={"differing_fields": fields},
    )


@dataclass(frozen=True)
class OrderContext:
    """What order intake needs besides the session: the world outside the database."""

    db: Database
    http: httpx.AsyncClient
    settings: OrdersSettings
    clock: Clock


async def place_order(ctx: OrderContext, merchant: Merchant, body: OrderCreate) -> OrderOutcome:
    """Record a sale once, however often the POS sends it (idempotent on its order id)."""
    if body.consumer_id == merchant.id:
        raise InvalidField(
            "consumer_id", "a merchant cannot be the consumer of an order at its own shop"
        )
    terms = domain.order_terms(body.consumer_id, body.amount, body.voucher_amount)
    async with ctx.db.read() as session:
        existing = await repository.get_order(session, merchant.id, body.order_id)
        known = existing is not None or await repository.is_known_member(session, body.consumer_id)
    if existing is not None:
        return _replay_order(existing, terms)
    if not known:
        await _learn_member(ctx, body.consumer_id)

    hold_id: UUID | None = None
    if body.voucher_amount > 0:
        # RULES 1.6: hold first; the vouchers service captures the hold when it
        # consumes order.completed (voucher_hold_id), or it expires.
        hold_id = domain.voucher_hold_id(merchant.id, body.order_id)
        await clients.hold_vouchers(
            ctx.http,
            ctx.settings,
            hold_id=hold_id,
            member_id=body.consumer_id,
            amount=body.voucher_amount,
            merchant_id=merchant.id,
            pos_order_id=body.order_id,
        )
    try:
        return await _insert_order_once(ctx, merchant, body, terms, hold_id)
    except DomainError:
        raise
    except Exception:
        if hold_id is not None:
            await _release_orphaned_hold(ctx, merchant.id, body.order_id, hold_id)
        raise


async def _learn_member(ctx: OrderContext, member_id: UUID) -> None:
    """A replica miss: ask referrals, and remember the member if it exists."""
    found = await clients.lookup_member(ctx.http, ctx.settings, member_id)
    if found is None:
        raise UnknownConsumer(
            "consumer_id",
            f"{member_id} is not a registered member; the consumer registers in the app first",
        )
    async with ctx.db.transaction() as session:
        await repository.remember_member(
            session, member_id, kind=found.kind, source="lookup", at=ctx.clock.now()
        )


async def _insert_order_once(
    ctx: OrderContext,
    merchant: Merchant,
    body: OrderCreate,
    terms: dict[str, str],
    hold_id: UUID | None,
) -> OrderOutcome:
    try:
        async with ctx.db.transaction() as session:
            existing = await repository.get_order(session, merchant.id, body.order_id)
            if existing is not None:
                return _replay_order(existing, terms)
            now = ctx.clock.now()
            order = Order(
                merchant_id=merchant.id,
                pos_order_id=body.order_id,
                consumer_id=body.consumer_id,
                amount=body.amount,
                voucher_amount=body.voucher_amount,
                cash_amount=domain.cash_part(body.amount, body.voucher_amount),
                giveback_rate=merchant.giveback_rate,
                voucher_hold_id=hold_id,
                fingerprint=domain.fingerprint(terms),
                status=domain.order_status(body.amount, ZERO),
                created_at=now,
            )
            repository.add(session, order)
            await repository.flush(session)
            repository.record(
                session,
                OrderCompleted(
                    order_id=order.id,
                    pos_order_id=order.pos_order_id,
                    merchant_id=order.merchant_id,
                    consumer_id=order.consumer_id,
                    amount=order.amount,
                    voucher_amount=order.voucher_amount,
                    cash_amount=order.cash_amount,
                    giveback_rate=order.giveback_rate,
                    completed_at=now,
                    voucher_hold_id=hold_id,
                ),
                at=now,
            )
            return OrderOutcome(order, created=True)
    except IntegrityError:
        # A concurrent copy of this order committed first (unique merchant + order id).
        async with ctx.db.read() as session:
            existing = await repository.get_order(session, merchant.id, body.order_id)
        if existing is None:
            raise
        return _replay_order(existing, terms)


async def _release_orphaned_hold(
    ctx: OrderContext, merchant_id: UUID, pos_order_id: str, hold_id: UUID
) -> None:
    """Release the hold of an order that could not be recorded, unless an order owns it."""
    try:
        async with ctx.db.read() as session:
            owner = await repository.get_order(session, merchant_id, pos_order_id)
    except Exception:
        log.warning("cannot tell whether hold %s is orphaned; leaving it to expire", hold_id)
        return
    if owner is None:
        await clients.release_voucher_hold(ctx.http, ctx.settings, hold_id)


def _validation_problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(field=".".join(str(p) for p in err["loc"]) or "body", message=err["msg"])
        for err in exc.errors()
    ]


async def place_orders_batch(
    ctx: OrderContext, merchant: Merchant, items: Sequence[Any]
) -> BatchResult:
    """Each item as if posted alone; one bad item does not stop the others."""
    results: list[BatchItemResult] = []
    for index, raw in enumerate(items):
        raw_id = raw.get("order_id") if isinstance(raw, dict) else None
        pos_id = raw_id if isinstance(raw_id, str) else None
        try:
            body = OrderCreate.model_validate(raw)
        except ValidationError as exc:
            problems = _validation_problems(exc)
            results.append(
                BatchItemResult(
                    index=index,
                    order_id=pos_id,
                    status=422,
                    error=ErrorBody(
                        error="validation_error",
                        detail="; ".join(f"{p.field}: {p.message}" for p in problems),
                        fields=problems,
                    ),
                )
            )
            continue
        try:
            outcome = await place_order(ctx, merchant, body)
        except DomainError as exc:
            fields = exc.extra.get("fields")
            results.append(
                BatchItemResult(
                    index=index,
                    order_id=pos_id,
                    status=exc.status_code,
                    error=ErrorBody(
                        error=exc.error,
                        detail=exc.detail,
                        fields=[FieldProblem(**f) for f in fields] if fields else None,
                    ),
                )
            )
            continue
        results.append(
            BatchItemResult(
                index=index,
                order_id=pos_id,
                status=201 if outcome.created else 200,
                order=order_public(outcome.order),
            )
        )
    return BatchResult(
        results=results,
        created=sum(1 for r in results if r.status == 201),
        replayed=sum(1 for r in results if r.status == 200),
        failed=sum(1 for r in results if r.status >= 400),
    )


async def _order_or_404(
    session: AsyncSession, merchant: Merchant, pos_order_id: str, *, for_update: bool = False
) -> Order:
    order = await repository.get_order(session, merchant.id, pos_order_id, for_update=for_update)
    if order is None:
        raise NotFound(f"merchant {merchant.id} has no order {pos_order_id!r}")
    return order


async def order_detail(session: AsyncSession, merchant: Merchant, pos_order_id: str) -> OrderDetail:
    order = await _order_or_404(session, merchant, pos_order_id)
    refunds = await repository.list_refunds(session, order.id)
    return OrderDetail(
        **order_public(order).model_dump(),
        refunds=[refund_public(r, order) for r in refunds],
    )


async def member_orders(
    session: AsyncSession, member_id: UUID, *, limit: int, offset: int
) -> list[OrderPublic]:
    orders = await repository.list_member_orders(session, member_id, limit=limit, offset=offset)
    return [order_public(o) for o in orders]


# --- refunds (general rules: a refund reverses the order, proportionally) --------------


@dataclass(frozen=True)
class RefundOutcome:
    receipt: RefundReceipt
    created: bool


def _receipt(refund: Refund, order: Order) -> RefundReceipt:
    return RefundReceipt(**refund_public(refund, order).model_dump(), order=order_public(order))


async def refund_order(
    session: AsyncSession, clock: Clock, merchant: Merchant, pos_order_id: str, body: RefundCreate
) -> RefundOutcome:
    """Record a (partial) refund once, however often the POS sends it."""
    # Locked: refunds of one order are applied one after the other.
    order = await _order_or_404(session, merchant, pos_order_id, for_update=True)
    terms = domain.refund_terms(body.amount)
    existing = await repository.get_refund(session, order.id, body.refund_id)
    if existing is not None:
        if existing.fingerprint == domain.fingerprint(terms):
            return RefundOutcome(_receipt(existing, order), created=False)
        stored = domain.refund_terms(existing.amount)
        raise IdempotencyConflict(
            f"refund {body.refund_id} of order {pos_order_id} was already recorded with "
            f"amount {stored['amount']}, not {terms['amount']}; use a new refund_id for "
            "another refund",
            extra={"differing_fields": domain.differing_fields(stored, terms)},
        )
    state = domain.RefundState(
        order_amount=order.amount,
        order_voucher_amount=order.voucher_amount,
        refunded_amount=order.refunded_amount,
        refunded_voucher_amount=order.refunded_voucher_amount,
    )
    try:
        split = domain.split_refund(state, body.amount)
    except domain.RefundExceedsOrder as exc:
        raise RefundExceedsOrder(
            "amount",
            f"{exc.requested} is more than the {exc.refundable} still refundable on order "
            f"{pos_order_id} (amount {order.amount}, refunded {order.refunded_amount})",
            refundable=str(exc.refundable),
        ) from exc
    after = state.after(split)
    now = clock.now()
    refund = Refund(
        order_id=order.id,
        pos_refund_id=body.refund_id,
        amount=body.amount,
        voucher_amount=split.voucher_amount,
        cash_amount=split.cash_amount,
        refunded_total=after.refunded_amount,
        fingerprint=domain.fingerprint(terms),
        created_at=now,
    )
    order.refunded_amount = after.refunded_amount
    order.refunded_voucher_amount = after.refunded_voucher_amount
    order.refunded_cash_amount = after.refunded_cash_amount
    order.status = domain.order_status(order.amount, after.refunded_amount)
    repository.add(session, refund, order)
    await repository.flush(session)
    repository.record(
        session,
        OrderRefunded(
            refund_id=refund.id,
            pos_refund_id=refund.pos_refund_id,
            order_id=order.id,
            merchant_id=order.merchant_id,
            consumer_id=order.consumer_id,
            amount=refund.amount,
            cash_amount=refund.cash_amount,
            voucher_amount=refund.voucher_amount,
            order_amount=order.amount,
            refunded_total=order.refunded_amount,
            refunded_at=now,
        ),
        at=now,
    )
    return RefundOutcome(_receipt(refund, order), created=True)
