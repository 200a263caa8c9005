"""Refunds: ``order.refunded`` reverses the order's effects not yet paid out (RULES, general).

For the refund's share of the order's earning base (:mod:`services.points.domain.refunds`):

- **points**: the consumer's and the merchant's positions of the order's cohorts lose the
  reversed points, only as far as ``released ≤ multiplier × points`` still holds (RULES
  1.7); the rest is unrecovered. The period's minted total drops if it is still open;
- **coins**: a negative ``reversal`` payout from ``platform:coins`` (vouchers takes back
  what the wallet still holds and books any shortfall as its own unrecovered amount);
- **give-back**: a pending G shrinks (the allocation later splits only what is left); an
  allocated G gives back its fee and pool portions, taken from the funds as far as they
  still hold them, the rest booked to ``platform:unrecovered``; the rewards stay paid.

Everything happens once per ``refund_id``, in the consumer's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from services.points import refund_repository, repository, settlement, settlement_repository
from services.points.domain.refunds import (
    Allocated,
    AllocationBasis,
    EarnOn,
    OrderEffects,
    Recovery,
    RefundDue,
    Share,
    basis_left,
    earning_base,
    recover,
    refund_due,
    reverse_position,
)
from services.points.models import OrderGiveback, OrderRefund, PointEntry
from services.points.refund_repository import PoolState
from services.points.settings import PointsSettings
from shared.events import FundsPaidOut, OrderRefunded, Payout
from shared.inbox import PermanentFailure
from shared.money import ZERO
from shared.outbox import record_event

PRODUCER = "points"
PENDING = "pending"
ALLOCATED = "allocated"

#: Ids of a refund's payouts are derived from the refund: the same effect, the same id.
REFUND_NAMESPACE = uuid.UUID("0d6c3f0e-2b8a-4f7e-9d51-6a1f4c2e9b30")

UNRECOVERED_ACCOUNT = "platform:unrecovered"
FEES_ACCOUNT = "platform:fees"


def _derived_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(REFUND_NAMESPACE, ":".join(str(p) for p in parts))


def _earn_on(giveback: OrderGiveback) -> EarnOn:
    """The order keeps the earn_on it earned with (RULES 1.1), whatever the settings say now."""
    return "gross" if giveback.earn_on == "gross" else "cash"


def reversed_so_far(refunds: Sequence[OrderRefund]) -> RefundDue:
    """Σ of what earlier refunds of the order were due to reverse, effect by effect."""
    total = RefundDue()
    for r in refunds:
        total = total.plus(
            RefundDue(
                consumer_points=r.consumer_points_due,
                merchant_points=r.merchant_points_due,
                coins=r.coins,
                pending_giveback=r.pending_giveback,
                platform_fee=r.platform_fee_due,
                rewards=r.rewards_kept,
                consumer_pool=r.consumer_pool_due,
                merchant_pool=r.merchant_pool_due,
            )
        )
    return total


async def allocation_basis(session: AsyncSession, giveback: OrderGiveback) -> AllocationBasis:
    """What is left of the order's G, points and cash for its allocation (RULES 1.1)."""
    earlier = await refund_repository.refunds_of_order(session, giveback.order_id)
    return basis_left(
        giveback.giveback,
        giveback.consumer_points,
        giveback.cash_amount,
        reversed_so_far(earlier),
        sum((r.cash_amount for r in earlier), ZERO),
    )


def _effects(giveback: OrderGiveback) -> OrderEffects:
    allocated = None
    if giveback.state == ALLOCATED:
        allocated = Allocated(
            platform_fee=giveback.platform_fee or ZERO,
            rewards=giveback.rewards_total or ZERO,
            consumer_pool=giveback.consumer_pool or ZERO,
            merchant_pool=giveback.merchant_pool or ZERO,
        )
    return OrderEffects(
        consumer_points=giveback.consumer_points,
        merchant_points=giveback.merchant_points,
        coins=giveback.coins,
        giveback=giveback.giveback,
        allocated=allocated,
    )


def _check_refund(giveback: OrderGiveback, event: OrderRefunded) -> None:
    if (giveback.consumer_id, giveback.merchant_id) != (event.consumer_id, event.merchant_id):
        raise PermanentFailure(
            f"refund {event.refund_id} names consumer {event.consumer_id} and merchant "
            f"{event.merchant_id}; order {event.order_id} has {giveback.consumer_id} and "
            f"{giveback.merchant_id}"
        )
    if event.order_amount != giveback.amount:
        raise PermanentFailure(
            f"refund {event.refund_id} says order {event.order_id} was {event.order_amount}; "
            f"points recorded {giveback.amount}"
        )
    if event.cash_amount + event.voucher_amount != event.amount or event.amount <= 0:
        raise PermanentFailure(
            f"refund {event.refund_id}: cash {event.cash_amount} + vouchers "
            f"{event.voucher_amount} is not its amount {event.amount}"
        )
    if event.refunded_total > giveback.amount:
        raise PermanentFailure(
            f"refund {event.refund_id}: refunded_total {event.refunded_total} exceeds the "
            f"order amount {giveback.amount}"
        )


async def apply_refund(
    session: AsyncSession, event: OrderRefunded, settings: PointsSettings
) -> None:
    """RULES (general): reverse this refund's share of the order's effects, exactly once."""
    await repository.lock_order(session, event.order_id)
    if await refund_repository.get_refund(session, event.refund_id) is not None:
        return  # the same refund again, under another event id
    giveback = await repository.get_giveback(session, event.order_id)
    if giveback is None:
        # order.completed and order.refunded share a topic and key: the order comes first.
        raise PermanentFailure(
            f"refund {event.refund_id} of order {event.order_id}: the points service never "
            "recorded that order (was its order.completed event refused?)"
        )
    _check_refund(giveback, event)
    earlier = await refund_repository.refunds_of_order(session, event.order_id)
    base = earning_base(event.amount, event.cash_amount, _earn_on(giveback))
    order_base = earning_base(giveback.amount, giveback.cash_amount, _earn_on(giveback))
    final = event.refunded_total == giveback.amount
    allocation_share = None
    if giveback.state == ALLOCATED:
        # The allocation split the base that refunds before it had left.
        before = sum((r.base for r in earlier if r.giveback_state == PENDING), ZERO)
        allocation_share = Share(base, max(order_base - before, ZERO), final)
    due = refund_due(
        _effects(giveback), reversed_so_far(earlier), Share(base, order_base, final),
        allocation_share,
    )
    at = event.refunded_at
    # RULES 1.2/1.3: a settlement due before the refund happens first, as before a mint:
    # it measures its period and pays from its fund as they were at its due instant.
    await settlement.settle_due_before(session, at, settings)
    pools = await refund_repository.lock_pools(session)
    consumer = await _reverse_points(
        session, event, pools, "consumer", giveback.consumer_cohort, giveback.consumer_id,
        due.consumer_points, settings, at,
    )
    merchant = await _reverse_points(
        session, event, pools, "merchant", giveback.merchant_cohort, giveback.merchant_id,
        due.merchant_points, settings, at,
    )
    if due.coins > 0:
        _reverse_coins(session, event, giveback.consumer_id, due.coins, at)
    if giveback.state == ALLOCATED:
        fee, consumer_pool, merchant_pool = await _take_back_allocation(
            session, event, pools, due, at
        )
    else:
        fee = consumer_pool = merchant_pool = Recovery(ZERO, ZERO, ZERO)
        # RULES 1.1: G waits for the evaluation; give this refund's part back at once.
        repository.add_fund_transaction(
            session,
            [("giveback:pending", -due.pending_giveback),
             (f"merchant:{event.merchant_id}:giveback", due.pending_giveback)],
            memo="giveback_refunded", order_id=event.order_id, at=at,
            refund_id=event.refund_id,
        )
    refund_repository.add_refund(
        session,
        OrderRefund(
            refund_id=event.refund_id,
            pos_refund_id=event.pos_refund_id,
            order_id=event.order_id,
            amount=event.amount,
            cash_amount=event.cash_amount,
            voucher_amount=event.voucher_amount,
            refunded_total=event.refunded_total,
            final=final,
            base=base,
            giveback_state=giveback.state,
            consumer_points_due=consumer.due,
            consumer_points_reversed=consumer.recovered,
            merchant_points_due=merchant.due,
            merchant_points_reversed=merchant.recovered,
            coins=due.coins,
            pending_giveback=due.pending_giveback,
            platform_fee_due=fee.due,
            platform_fee_recovered=fee.recovered,
            consumer_pool_due=consumer_pool.due,
            consumer_pool_recovered=consumer_pool.recovered,
            merchant_pool_due=merchant_pool.due,
            merchant_pool_recovered=merchant_pool.recovered,
            rewards_kept=due.rewards,
            unrecovered=fee.unrecovered + consumer_pool.unrecovered + merchant_pool.unrecovered,
            refunded_at=at,
        ),
    )


async def _reverse_points(
    session: AsyncSession,
    event: OrderRefunded,
    pools: dict[str, PoolState],
    pool: str,
    cohort: int | None,
    member_id: uuid.UUID,
    due: Decimal,
    settings: PointsSettings,
    at: datetime,
) -> Recovery:
    """Take *due* points off the member's position of the order's cohort, within its cap."""
    if due == 0 or cohort is None:
        return Recovery(due, ZERO, due)
    position = await refund_repository.lock_position(session, pool, cohort, member_id)
    if position is None:
        return Recovery(due, ZERO, due)
    reversal = reverse_position(due, position.points, position.released, settings.multiplier)
    if reversal.recovered == 0:
        return reversal
    await refund_repository.reduce_position(session, pool, cohort, member_id, reversal.recovered)
    state = pools.get(pool)
    if state is not None and state.period_number == cohort:
        # RULES 1.2: only an open period's growth still counts; a settled one keeps its own.
        await refund_repository.reduce_open_period_minted(
            session, pool, cohort, reversal.recovered
        )
    else:
        # A settled cohort keeps Σ of what it may still receive for the members' view
        # (coverage): fewer points, a smaller promise.
        await settlement_repository.points_reversed(
            session, pool, cohort, reversal.recovered, settings.multiplier
        )
    repository.add_point_entry(
        session,
        PointEntry(
            order_id=event.order_id, pool=pool, cohort=cohort, member_id=member_id,
            points=-reversal.recovered, created_at=at, refund_id=event.refund_id,
        ),
    )
    return reversal


def _reverse_coins(
    session: AsyncSession,
    event: OrderRefunded,
    consumer_id: uuid.UUID,
    coins: Decimal,
    at: datetime,
) -> None:
    """A negative payout: vouchers debits what the wallet holds, the rest is its loss."""
    repository.add_fund_transaction(
        session,
        [("payouts:coins", -coins), ("platform:coins", coins)],
        memo="coins_reversed", order_id=event.order_id, at=at, refund_id=event.refund_id,
    )
    payout = Payout(
        payout_id=_derived_id("refund", event.refund_id, "coins"),
        member_id=consumer_id,
        asset="coins",
        amount=-coins,
        reason="reversal",
        fund="platform:coins",
        order_id=event.order_id,
    )
    batch_id = _derived_id("refund", event.refund_id, "coins-batch")
    repository.add_payouts(session, batch_id, [payout], at=at)
    record_event(
        session,
        FundsPaidOut(
            batch_id=batch_id, source="refund", order_id=event.order_id, payouts=(payout,)
        ),
        producer=PRODUCER,
    )


async def _take_back_allocation(
    session: AsyncSession,
    event: OrderRefunded,
    pools: dict[str, PoolState],
    due: RefundDue,
    at: datetime,
) -> tuple[Recovery, Recovery, Recovery]:
    """Return the fee and pool portions to the merchant; what a fund no longer holds (paid
    out in settlements) is the platform's loss, booked to ``platform:unrecovered``."""
    await refund_repository.lock_account(session, FEES_ACCOUNT)
    fee = recover(due.platform_fee, await refund_repository.account_balance(session, FEES_ACCOUNT))

    def fund_of(pool: str) -> Decimal:
        state = pools.get(pool)
        return state.fund_balance if state is not None else ZERO

    consumer_pool = recover(due.consumer_pool, fund_of("consumer"))
    merchant_pool = recover(due.merchant_pool, fund_of("merchant"))
    unrecovered = fee.unrecovered + consumer_pool.unrecovered + merchant_pool.unrecovered
    repository.add_fund_transaction(
        session,
        [
            ("fund:consumer_pool", -consumer_pool.recovered),
            ("fund:merchant_pool", -merchant_pool.recovered),
            (FEES_ACCOUNT, -fee.recovered),
            (UNRECOVERED_ACCOUNT, -unrecovered),
            (f"merchant:{event.merchant_id}:giveback", due.allocated_taken_back),
        ],
        memo="giveback_reversed", order_id=event.order_id, at=at, refund_id=event.refund_id,
    )
    for pool, taken in (("consumer", consumer_pool), ("merchant", merchant_pool)):
        if taken.recovered > 0:
            await refund_repository.debit_pool_fund(session, pool, taken.recovered)
    return fee, consumer_pool, merchant_pool
