"""Use cases of the vouchers service: load state, apply the rules of :mod:`domain`, persist.

Each function works inside the caller's transaction (a request's ``SessionDep`` or the
inbox transaction of an event handler); only :func:`expire_due_holds` opens its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from sqlmodel.ext.asyncio.session import AsyncSession

from services.vouchers import domain, repository
from services.vouchers.models import (
    CoinRedemption,
    LedgerEntry,
    PayoutBatch,
    VoucherHold,
    VoucherReturn,
)
from services.vouchers.schemas import (
    AssetFigures,
    CreditedLine,
    HoldCreate,
    LedgerChecks,
    PayoutFigures,
    ReceivableEntryPublic,
    ReceivablePublic,
    RedemptionCreate,
    TotalsPublic,
    VoucherFigures,
    WalletBalances,
    WalletEntryPublic,
    WalletPublic,
)
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.events import FundsPaidOut, OrderCompleted, OrderRefunded, Payout, PayoutsCredited
from shared.inbox import PermanentFailure
from shared.money import ZERO
from shared.outbox import record_event

log = logging.getLogger(__name__)

PRODUCER = "vouchers"


class InsufficientVouchers(Conflict):
    error = "insufficient_vouchers"


class InsufficientCoins(Conflict):
    error = "insufficient_coins"


class HoldIdReused(Conflict):
    error = "hold_id_reused"


class RedemptionIdReused(Conflict):
    error = "redemption_id_reused"


class HoldNotCapturable(Conflict):
    error = "hold_not_capturable"


class HoldNotReleasable(Conflict):
    error = "hold_not_releasable"


# --- payouts from points ---------------------------------------------------------------


def _unique(payouts: Sequence[Payout]) -> list[Payout]:
    seen: set[UUID] = set()
    unique = []
    for payout in payouts:
        if payout.payout_id in seen:
            log.warning("payout %s appears twice in one batch; booked once", payout.payout_id)
            continue
        seen.add(payout.payout_id)
        unique.append(payout)
    return unique


async def book_payout_batch(session: AsyncSession, event: FundsPaidOut, now: datetime) -> None:
    """Book every new payout of a batch into its wallet, set-based, then acknowledge it.

    A payout already booked (its payout_id is known) is skipped, whatever batch brought
    it; a batch already booked is skipped whole.
    """
    if await repository.get_batch(session, event.batch_id) is not None:
        log.info("payout batch %s was booked already; ignored", event.batch_id)
        return
    payouts = _unique(event.payouts)
    booked = await repository.booked_payout_ids(session, [p.payout_id for p in payouts])
    new = [p for p in payouts if p.payout_id not in booked]
    credits = [p for p in new if p.amount >= ZERO]
    if credits:
        # No wallet can refuse a credit: booked set-based (a settlement sends a million).
        await repository.book_credits(session, event.batch_id, credits, now)
    reversals = [p for p in new if p.amount < ZERO]
    if reversals:
        # A reversal takes no more than the wallet holds (the batch's credits included):
        # lock those rows, then book payout by payout.
        debited = {domain.wallet_account(p.member_id, p.asset) for p in reversals}
        balances = await repository.get_balances(session, debited, for_update=True)
        try:
            bookings = domain.book_payouts(reversals, balances)
        except domain.InvalidPayout as exc:
            raise PermanentFailure(str(exc)) from exc
        await repository.post_transactions(
            session, [b.transaction for b in bookings if b.transaction.postings], now
        )
        await repository.insert_booked_payouts(session, event.batch_id, bookings, now)
        for b in bookings:
            if b.unrecovered > ZERO:
                log.warning(
                    "reversal %s of member %s: %s %s could not be taken back (unrecovered)",
                    b.payout.payout_id, b.payout.member_id, b.unrecovered, b.payout.asset,
                )
    total = sum((p.amount for p in new), ZERO)
    repository.add_batch(
        session,
        PayoutBatch(
            batch_id=event.batch_id,
            source=event.source,
            order_id=event.order_id,
            settlement_id=event.settlement_id,
            count=len(new),
            total=total,
            booked_at=now,
        ),
    )
    record_event(
        session,
        PayoutsCredited(batch_id=event.batch_id, count=len(new), total=total),
        producer=PRODUCER,
        occurred_at=now,
    )


# --- checkout holds (RULES 1.6) --------------------------------------------------------


def _same_hold(hold: VoucherHold, request: HoldCreate) -> bool:
    return (
        hold.member_id == request.member_id
        and hold.amount == request.amount
        and hold.merchant_id == request.merchant_id
        and hold.pos_order_id == request.pos_order_id
    )


async def place_hold(
    session: AsyncSession, request: HoldCreate, *, now: datetime, ttl: timedelta
) -> tuple[VoucherHold, bool]:
    """Hold vouchers at checkout; returns the hold and whether this call created it."""
    created = await repository.insert_hold_if_absent(
        session,
        {
            "hold_id": request.hold_id,
            "member_id": request.member_id,
            "merchant_id": request.merchant_id,
            "pos_order_id": request.pos_order_id,
            "amount": request.amount,
            "status": "held",
            "created_at": now,
            "expires_at": now + ttl,
            "captured_amount": ZERO,
            "captured_unrecovered": ZERO,
            "returned_amount": ZERO,
            "returned_to_member": ZERO,
        },
    )
    hold = await repository.get_hold(session, request.hold_id)
    if hold is None:  # pragma: no cover - the row was just inserted or found
        raise NotFound(f"hold {request.hold_id} vanished; retry the request")
    if not created:
        if _same_hold(hold, request):
            return hold, False
        raise HoldIdReused(
            f"hold {request.hold_id} exists with a different body (member {hold.member_id}, "
            f"amount {hold.amount}, merchant {hold.merchant_id}, pos_order_id "
            f"{hold.pos_order_id!r}); use a new hold_id for a different hold"
        )
    try:
        await repository.post_transactions(
            session, [domain.hold_vouchers(hold.hold_id, hold.member_id, hold.amount)], now
        )
    except domain.InsufficientBalance as exc:
        raise InsufficientVouchers(
            f"member {request.member_id} has {exc.available} vouchers available, the hold asks "
            f"for {request.amount}; hold at most {exc.available} and pay the rest in cash",
            extra={"available": str(exc.available), "requested": str(request.amount)},
        ) from exc
    return hold, True


async def _get_hold_for_update(session: AsyncSession, hold_id: UUID) -> VoucherHold:
    hold = await repository.get_hold(session, hold_id, for_update=True)
    if hold is None:
        raise NotFound(f"no voucher hold {hold_id}; place it with POST /v1/holds first")
    return hold


async def _capture(
    session: AsyncSession,
    hold: VoucherHold,
    *,
    due: Decimal,
    held: Decimal,
    merchant_id: UUID,
    order_id: UUID | None,
    now: datetime,
) -> None:
    """Capture *due* vouchers for *hold* (of which *held* are still held) and record it."""
    available = ZERO
    if due > held:
        account = domain.wallet_account(hold.member_id, "vouchers")
        available = (await repository.get_balances(session, [account], for_update=True))[account]
    plan = domain.plan_capture(due, held, available)
    txn = domain.capture_hold(
        plan, hold_id=hold.hold_id, member_id=hold.member_id, merchant_id=merchant_id,
        order_id=order_id,
    )
    await repository.post_transactions(session, [txn], now)
    if plan.unrecovered > ZERO:
        log.warning(
            "hold %s of member %s: order %s paid %s vouchers but only %s could be taken; "
            "%s unrecovered", hold.hold_id, hold.member_id, order_id, due,
            due - plan.unrecovered, plan.unrecovered,
        )
    hold.status = "captured"
    hold.closed_at = now
    hold.merchant_id = merchant_id
    hold.order_id = order_id
    hold.captured_amount = plan.due
    hold.captured_unrecovered = plan.unrecovered
    repository.add_hold(session, hold)


async def capture_hold(
    session: AsyncSession, hold_id: UUID, *, order_id: UUID | None, now: datetime
) -> VoucherHold:
    """Capture a hold on request (idempotent); a released or expired hold cannot be."""
    hold = await _get_hold_for_update(session, hold_id)
    if hold.status == "captured":
        return hold
    if hold.status != "held":
        raise HoldNotCapturable(
            f"hold {hold_id} was {hold.status} at {hold.closed_at}; its vouchers are free "
            "again, place a new hold"
        )
    await _capture(
        session, hold, due=hold.amount, held=hold.amount, merchant_id=hold.merchant_id,
        order_id=order_id, now=now,
    )
    return hold


async def _release(session: AsyncSession, hold: VoucherHold, now: datetime) -> None:
    await repository.post_transactions(
        session, [domain.release_hold(hold.hold_id, hold.member_id, hold.amount)], now
    )
    hold.status = "released"
    hold.closed_at = now
    repository.add_hold(session, hold)


async def release_hold(session: AsyncSession, hold_id: UUID, *, now: datetime) -> VoucherHold:
    """Give the held vouchers back (idempotent); a captured hold cannot be released."""
    hold = await _get_hold_for_update(session, hold_id)
    if hold.status == "captured":
        raise HoldNotReleasable(
            f"hold {hold_id} was captured by order {hold.order_id}; refund the order to give "
            "the vouchers back"
        )
    if hold.status == "held":
        await _release(session, hold, now)
    return hold


async def read_hold(session: AsyncSession, hold_id: UUID) -> VoucherHold:
    hold = await repository.get_hold(session, hold_id)
    if hold is None:
        raise NotFound(f"no voucher hold {hold_id}")
    return hold


async def expire_due_holds(db: Database, now: datetime, *, batch: int = 500) -> int:
    """Release every hold past its expiry (RULES 1.6); returns how many. Run by a job."""
    expired = 0
    while True:
        async with db.transaction() as session:
            closed = await repository.close_expired_holds(session, now, limit=batch)
            await repository.post_transactions(
                session,
                [domain.release_hold(h, m, amount, expired=True) for h, m, amount in closed],
                now,
            )
        expired += len(closed)
        if len(closed) < batch:
            if expired:
                log.info("released %d expired voucher holds", expired)
            return expired


async def on_order_completed(session: AsyncSession, event: OrderCompleted) -> None:
    """RULES 1.6: the order completed, so its held vouchers pay the merchant."""
    now = event.completed_at
    if event.voucher_hold_id is None:
        if event.voucher_amount > ZERO:
            log.warning(
                "order %s paid %s in vouchers without a hold; nothing to capture",
                event.order_id, event.voucher_amount,
            )
        return
    due = event.voucher_amount
    hold = await repository.get_hold(session, event.voucher_hold_id, for_update=True)
    if hold is None:
        if due == ZERO:
            return
        log.warning(
            "order %s names unknown voucher hold %s; taking %s from the free vouchers",
            event.order_id, event.voucher_hold_id, due,
        )
        hold = VoucherHold(
            hold_id=event.voucher_hold_id, member_id=event.consumer_id,
            merchant_id=event.merchant_id, pos_order_id=event.pos_order_id, amount=due,
            status="released", created_at=now, expires_at=now,
        )
        repository.add_hold(session, hold)
        await _capture(
            session, hold, due=due, held=ZERO, merchant_id=event.merchant_id,
            order_id=event.order_id, now=now,
        )
        return
    if hold.member_id != event.consumer_id:
        log.warning(
            "hold %s belongs to member %s but order %s is of consumer %s; capturing the hold",
            hold.hold_id, hold.member_id, event.order_id, event.consumer_id,
        )
    if hold.status == "captured":
        if hold.order_id is None:
            hold.order_id = event.order_id
            repository.add_hold(session, hold)
        return
    if due == ZERO:
        if hold.status == "held":
            await _release(session, hold, now)
        return
    await _capture(
        session, hold, due=due, held=hold.amount if hold.status == "held" else ZERO,
        merchant_id=event.merchant_id, order_id=event.order_id, now=now,
    )


async def on_order_refunded(session: AsyncSession, event: OrderRefunded) -> None:
    """RULES 1.6: a refunded order gives the captured vouchers back to the consumer."""
    if event.voucher_amount <= ZERO:
        return
    if await repository.get_voucher_return(session, event.refund_id) is not None:
        return
    hold = await repository.captured_hold_of_order(session, event.order_id, for_update=True)
    if hold is None:
        log.warning(
            "refund %s of order %s returns %s vouchers but none were captured for that order",
            event.refund_id, event.order_id, event.voucher_amount,
        )
        return
    plan = domain.plan_voucher_return(
        event.voucher_amount,
        captured=hold.captured_amount,
        captured_unrecovered=hold.captured_unrecovered,
        returned=hold.returned_amount,
        returned_to_member=hold.returned_to_member,
    )
    if plan.amount < event.voucher_amount:
        log.warning(
            "refund %s asks %s vouchers back for order %s; only %s were still captured",
            event.refund_id, event.voucher_amount, event.order_id, plan.amount,
        )
    txn = domain.return_vouchers(
        plan, refund_id=event.refund_id, hold_id=hold.hold_id, member_id=hold.member_id,
        merchant_id=hold.merchant_id, order_id=event.order_id,
    )
    await repository.post_transactions(session, [txn], event.refunded_at)
    hold.returned_amount += plan.amount
    hold.returned_to_member += plan.to_member
    repository.add_hold(session, hold)
    repository.add_voucher_return(
        session,
        VoucherReturn(
            refund_id=event.refund_id, order_id=event.order_id, hold_id=hold.hold_id,
            requested=event.voucher_amount, amount=plan.amount, to_member=plan.to_member,
            to_unrecovered=plan.to_unrecovered, created_at=event.refunded_at,
        ),
    )


# --- gold coins (RULES 1.1) ------------------------------------------------------------


async def redeem_coins(
    session: AsyncSession, member_id: UUID, request: RedemptionCreate, *, now: datetime
) -> tuple[CoinRedemption, bool]:
    """Spend coins in the mall once per client reference; returns it and whether it is new."""
    created = await repository.insert_redemption_if_absent(
        session,
        {
            "member_id": member_id,
            "redemption_id": request.redemption_id,
            "amount": request.amount,
            "item": request.item,
            "coins_left": ZERO,
            "created_at": now,
        },
    )
    if not created:
        existing = await repository.get_redemption(session, member_id, request.redemption_id)
        assert existing is not None  # the insert conflicted with it
        if existing.amount == request.amount and existing.item == request.item:
            return existing, False
        raise RedemptionIdReused(
            f"redemption {request.redemption_id!r} was already made for {existing.amount} "
            f"coins (item {existing.item!r}); use a new redemption_id for a new redemption"
        )
    txn = domain.redeem_coins(member_id, request.redemption_id, request.amount)
    try:
        balances = await repository.post_transactions(session, [txn], now)
    except domain.InsufficientBalance as exc:
        raise InsufficientCoins(
            f"member {member_id} has {exc.available} coins, the redemption asks for "
            f"{request.amount}",
            extra={"available": str(exc.available), "requested": str(request.amount)},
        ) from exc
    coins_left = balances[domain.wallet_account(member_id, "coins")]
    await repository.set_coins_left(session, member_id, request.redemption_id, coins_left)
    redemption = await repository.get_redemption(session, member_id, request.redemption_id)
    assert redemption is not None
    return redemption, True


# --- reads -----------------------------------------------------------------------------


def _next_cursor(entries: Sequence[LedgerEntry], limit: int) -> str | None:
    return str(entries[limit - 1].id) if len(entries) > limit else None


async def read_wallet(
    session: AsyncSession, member_id: UUID, *, before_id: int | None, limit: int
) -> WalletPublic:
    accounts = domain.wallet_accounts(member_id)
    balances = await repository.get_balances(session, accounts.values())
    entries = await repository.wallet_entries(
        session, member_id, before_id=before_id, limit=limit + 1
    )
    return WalletPublic(
        member_id=member_id,
        balances=WalletBalances(**{bucket: balances[a] for bucket, a in accounts.items()}),
        entries=[
            WalletEntryPublic(
                entry_id=e.id or 0,
                transaction_id=e.transaction_id,
                asset=domain.wallet_bucket(e.account) or "vouchers",
                amount=e.amount,
                balance_after=e.balance_after,
                reason=e.reason,
                order_id=e.order_id,
                settlement_id=e.settlement_id,
                payout_id=e.payout_id,
                hold_id=e.hold_id,
                redemption_id=e.redemption_id,
                fund=e.fund,
                created_at=e.created_at,
            )
            for e in entries[:limit]
        ],
        next_cursor=_next_cursor(entries, limit),
    )


async def read_receivable(
    session: AsyncSession, merchant_id: UUID, *, before_id: int | None, limit: int
) -> ReceivablePublic:
    account = domain.receivable_account(merchant_id)
    balance = (await repository.get_balances(session, [account]))[account]
    entries = await repository.account_entries(
        session, account, before_id=before_id, limit=limit + 1
    )
    return ReceivablePublic(
        merchant_id=merchant_id,
        amount=balance,
        entries=[
            ReceivableEntryPublic(
                entry_id=e.id or 0,
                amount=e.amount,
                balance_after=e.balance_after,
                reason=e.reason,
                order_id=e.order_id,
                hold_id=e.hold_id,
                created_at=e.created_at,
            )
            for e in entries[:limit]
        ],
        next_cursor=_next_cursor(entries, limit),
    )


async def read_totals(session: AsyncSession) -> TotalsPublic:
    """The figures of the platform audit, straight from the ledger."""
    sums = await repository.balance_sums_by_kind(session)

    def total(kind: str, asset: domain.Asset) -> Decimal:
        return sums.get((kind, asset), ZERO)

    def negated(kind: str) -> AssetFigures:
        # The source and unrecovered accounts run negative; shown as positive figures.
        return AssetFigures(**{a: ZERO - total(kind, a) for a in domain.ASSETS})

    # Σ of everything but the source = Σ credited, per asset, when the books are right.
    ties = all(
        sum((v for (kind, a), v in sums.items() if kind != "source" and a == asset), ZERO)
        == -total("source", asset)
        for asset in domain.ASSETS
    )
    count, payout_total = await repository.payout_count_and_total(session)
    holds = await repository.hold_sums(session)
    unbalanced = await repository.count_unbalanced_transactions(session)
    negative = await repository.count_negative_guarded_balances(session)
    off = await repository.count_balances_off_their_entries(session)
    return TotalsPublic(
        credited=[
            CreditedLine(
                asset=asset, reason=reason, count=n, amount=amount, applied=applied,
                unrecovered=unrecovered,
            )
            for asset, reason, n, amount, applied, unrecovered in (
                await repository.credited_by_asset_and_reason(session)
            )
        ],
        payouts=PayoutFigures(count=count, total=payout_total),
        credited_by_asset=negated("source"),
        wallets=WalletBalances(
            vouchers=total("vouchers", "vouchers"),
            vouchers_held=total("vouchers_held", "vouchers"),
            coins=total("coins", "coins"),
            cash=total("cash", "cash"),
        ),
        unrecovered=negated("unrecovered"),
        vouchers=VoucherFigures(
            held=total("vouchers_held", "vouchers"),
            captured=holds["captured"],
            captured_unrecovered=holds["captured_unrecovered"],
            returned=holds["returned"],
            holds_by_status=await repository.count_holds_by_status(session),
        ),
        merchant_receivables=total("receivable", "vouchers"),
        coins_redeemed=total("coins_redeemed", "coins"),
        checks=LedgerChecks(
            balanced=unbalanced == 0,
            unbalanced_transactions=unbalanced,
            balances_match_entries=off == 0,
            no_negative_balances=negative == 0,
            negative_balances=negative,
            books_tie_out=ties,
        ),
    )
