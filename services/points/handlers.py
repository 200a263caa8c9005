"""Event handlers of the points service: earning per order (RULES 1.1, 1.2).

- ``order.completed`` mints the order's points into the current period of each pool,
  pays the consumer's gold coins at once and holds the give-back G as pending;
- ``referral.order_evaluated`` allocates G (fee, rewards, pool funds) and pays the
  rewards. Whichever of the two arrives second does the allocation, exactly once;
- ``order.refunded`` reverses the refund's share of the order (:mod:`.refunds`);
- ``payouts.credited`` marks a payout batch as booked by vouchers (:mod:`.audit`).

Each handler runs in the consumer's transaction together with its inbox row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from pydantic import TypeAdapter
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points import audit, refunds, repository, settlement
from services.points.domain.earning import allocate_giveback, earn
from services.points.models import OrderGiveback, OrderReward, PendingEvaluation, PointEntry
from services.points.settings import PointsSettings, PoolName
from shared.events import (
    ORDERS_TOPIC,
    REFERRALS_TOPIC,
    VOUCHERS_TOPIC,
    Envelope,
    FundsPaidOut,
    OrderCompleted,
    OrderRefunded,
    Payout,
    PayoutsCredited,
    ReferralOrderEvaluated,
    RewardClaim,
)
from shared.inbox import Handler, PermanentFailure
from shared.outbox import record_event

log = logging.getLogger(__name__)

PRODUCER = "points"
SUBSCRIPTIONS = (ORDERS_TOPIC, REFERRALS_TOPIC, VOUCHERS_TOPIC)

#: Payout and batch ids are derived from the order, so the same effect always has the
#: same id (vouchers can deduplicate on it, an auditor can recompute it).
PAYOUT_NAMESPACE = uuid.UUID("5b0f2a4e-61c1-4f37-9a53-3c3f0d1e8b72")

_CLAIMS = TypeAdapter(tuple[RewardClaim, ...])

PENDING = "pending"
ALLOCATED = "allocated"


def _derived_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(PAYOUT_NAMESPACE, ":".join(str(p) for p in parts))


def _pay_out(
    session: AsyncSession,
    batch_id: uuid.UUID,
    order_id: uuid.UUID,
    payouts: Sequence[Payout],
    at: datetime,
) -> None:
    """Record the payouts and the ``funds.paid_out`` event that credits the wallets."""
    repository.add_payouts(session, batch_id, payouts, at=at)
    record_event(
        session,
        FundsPaidOut(batch_id=batch_id, source="order", order_id=order_id, payouts=tuple(payouts)),
        producer=PRODUCER,
    )


# --- order.completed -----------------------------------------------------------------


async def record_order(
    session: AsyncSession, event: OrderCompleted, settings: PointsSettings
) -> None:
    """RULES 1.1: mint G points to C and to M, pay C's coins, hold G until it is allocated."""
    await repository.lock_order(session, event.order_id)
    if await repository.get_giveback(session, event.order_id) is not None:
        return  # the same order again, under another event id
    try:
        earning = earn(
            event.amount, event.voucher_amount, event.giveback_rate, settings.earning_rules()
        )
    except ValueError as exc:
        raise PermanentFailure(f"order {event.order_id} cannot earn: {exc}") from exc
    if earning.cash_amount != event.cash_amount:
        raise PermanentFailure(
            f"order {event.order_id}: cash_amount {event.cash_amount} is not "
            f"amount {event.amount} - voucher_amount {event.voucher_amount}"
        )
    at = event.completed_at
    # RULES 1.2: settle-before-mint: a period due at or before the order's completion is
    # settled first, so the points land in the period that contains completed_at.
    await settlement.settle_due_before(session, at, settings)
    cohorts: dict[PoolName, int | None] = {}
    mints: tuple[tuple[PoolName, uuid.UUID, Decimal], ...] = (
        ("consumer", event.consumer_id, earning.consumer_points),
        ("merchant", event.merchant_id, earning.merchant_points),
    )
    for pool, member_id, points in mints:
        cohorts[pool] = None
        if points <= 0:
            continue
        # RULES 1.2/1.3: the points of period k of a pool form the member's cohort-k position.
        cohort = await repository.count_mint(session, pool, points, settings, at)
        cohorts[pool] = cohort
        await repository.add_to_position(session, pool, cohort, member_id, points)
        repository.add_point_entry(
            session,
            PointEntry(
                order_id=event.order_id, pool=pool, cohort=cohort, member_id=member_id,
                points=points, created_at=at,
            ),
        )
    giveback = OrderGiveback(
        order_id=event.order_id,
        pos_order_id=event.pos_order_id,
        consumer_id=event.consumer_id,
        merchant_id=event.merchant_id,
        amount=event.amount,
        voucher_amount=event.voucher_amount,
        cash_amount=earning.cash_amount,
        giveback_rate=event.giveback_rate,
        earn_on=settings.earn_on,
        giveback=earning.giveback,
        consumer_points=earning.consumer_points,
        merchant_points=earning.merchant_points,
        coins=earning.coins,
        consumer_cohort=cohorts["consumer"],
        merchant_cohort=cohorts["merchant"],
        completed_at=at,
        state=PENDING,
    )
    repository.add_giveback(session, giveback)
    # RULES 1.1: G leaves the merchant and waits for the order's referral evaluation.
    repository.add_fund_transaction(
        session,
        [(f"merchant:{event.merchant_id}:giveback", -earning.giveback),
         ("giveback:pending", earning.giveback)],
        memo="giveback_held", order_id=event.order_id, at=at,
    )
    if earning.coins > 0:
        # RULES 1.1: gold coins are spendable at once; the platform pays them, not G.
        repository.add_fund_transaction(
            session,
            [("platform:coins", -earning.coins), ("payouts:coins", earning.coins)],
            memo="gold_coins", order_id=event.order_id, at=at,
        )
        coins = Payout(
            payout_id=_derived_id("order", event.order_id, "coins"),
            member_id=event.consumer_id,
            asset="coins",
            amount=earning.coins,
            reason="gold_coins",
            fund="platform:coins",
            order_id=event.order_id,
        )
        _pay_out(session, _derived_id("order", event.order_id, "coins-batch"), event.order_id,
                 [coins], at)
    pending = await repository.get_pending_evaluation(session, event.order_id)
    if pending is None:
        return
    if (pending.consumer_id, pending.merchant_id) != (event.consumer_id, event.merchant_id):
        # Leave both as they are for an operator: the order itself is fine.
        log.error("order %s: the referral evaluation names another consumer or merchant; "
                  "give-back left pending", event.order_id)
        return
    claims = _CLAIMS.validate_json(pending.rewards)
    await _allocate(session, giveback, claims, settings, max(at, pending.evaluated_at))
    await repository.delete_pending_evaluation(session, event.order_id)


# --- referral.order_evaluated --------------------------------------------------------


async def apply_evaluation(
    session: AsyncSession,
    event: ReferralOrderEvaluated,
    envelope: Envelope,
    settings: PointsSettings,
) -> None:
    """Allocate the order's G now, or keep the evaluation until the order arrives."""
    await repository.lock_order(session, event.order_id)
    giveback = await repository.get_giveback(session, event.order_id)
    if giveback is None:
        if await repository.get_pending_evaluation(session, event.order_id) is None:
            repository.add_pending_evaluation(
                session,
                PendingEvaluation(
                    order_id=event.order_id,
                    event_id=envelope.event_id,
                    consumer_id=event.consumer_id,
                    merchant_id=event.merchant_id,
                    rewards=_CLAIMS.dump_json(event.rewards).decode(),
                    evaluated_at=event.evaluated_at,
                ),
            )
        return
    if giveback.state != PENDING:
        return  # one evaluation per order: a second one changes nothing
    if (giveback.consumer_id, giveback.merchant_id) != (event.consumer_id, event.merchant_id):
        raise PermanentFailure(
            f"the evaluation of order {event.order_id} names consumer {event.consumer_id} and "
            f"merchant {event.merchant_id}, the order {giveback.consumer_id} and "
            f"{giveback.merchant_id}"
        )
    at = max(giveback.completed_at, event.evaluated_at)
    # RULES 1.3: B is the fund at the start of a settlement; money allocated after a due
    # instant goes to the fund after that settlement.
    await settlement.settle_due_before(session, at, settings)
    await _allocate(session, giveback, event.rewards, settings, at)


async def _allocate(
    session: AsyncSession,
    giveback: OrderGiveback,
    claims: Sequence[RewardClaim],
    settings: PointsSettings,
    at: datetime,
) -> None:
    """RULES 1.1: fee, rewards (paid as vouchers), remainder R into the two pool funds."""
    # Refunds that came before the evaluation already gave part of G back: split the rest.
    basis = await refunds.allocation_basis(session, giveback)
    try:
        allocation = allocate_giveback(
            basis.giveback, basis.consumer_points, basis.cash_amount, claims,
            settings.earning_rules(),
        )
    except ValueError as exc:
        raise PermanentFailure(f"order {giveback.order_id}: {exc}") from exc
    order_id = giveback.order_id
    payouts: list[Payout] = []
    rewards: list[OrderReward] = []
    for seq, (claim, share) in enumerate(zip(claims, allocation.rewards, strict=True)):
        payout_id = None
        if share.amount > 0:
            payout_id = _derived_id("order", order_id, "reward", seq)
            payouts.append(
                Payout(
                    payout_id=payout_id,
                    member_id=claim.beneficiary_id,
                    asset="vouchers",
                    amount=share.amount,
                    reason="binding_reward" if claim.kind == "binding" else "invite_reward",
                    fund="giveback",
                    order_id=order_id,
                )
            )
        rewards.append(
            OrderReward(
                order_id=order_id, seq=seq, kind=claim.kind, beneficiary_id=claim.beneficiary_id,
                rate=claim.rate, basis=claim.basis, due=share.due, amount=share.amount,
                payout_id=payout_id,
            )
        )
    repository.add_order_rewards(session, rewards)
    repository.add_fund_transaction(
        session,
        [
            ("giveback:pending", -allocation.giveback),
            ("platform:fees", allocation.platform_fee),
            ("payouts:rewards", allocation.rewards_total),
            ("fund:consumer_pool", allocation.consumer_pool),
            ("fund:merchant_pool", allocation.merchant_pool),
        ],
        memo="giveback_allocated", order_id=order_id, at=at,
    )
    pool_shares: tuple[tuple[PoolName, Decimal], ...] = (
        ("consumer", allocation.consumer_pool),
        ("merchant", allocation.merchant_pool),
    )
    for pool, amount in pool_shares:
        if amount > 0:
            await repository.credit_pool_fund(session, pool, amount, settings, at)
    giveback.state = ALLOCATED
    giveback.platform_fee = allocation.platform_fee
    giveback.rewards_total = allocation.rewards_total
    giveback.rewards_scaled = allocation.rewards_scaled
    giveback.consumer_pool = allocation.consumer_pool
    giveback.merchant_pool = allocation.merchant_pool
    giveback.allocated_at = at
    repository.add_giveback(session, giveback)
    if payouts:
        _pay_out(session, _derived_id("order", order_id, "rewards-batch"), order_id, payouts, at)


# --- wiring ----------------------------------------------------------------------------


def build_handlers(settings: PointsSettings) -> dict[str, Handler]:
    """The handlers keyed by event type, bound to the program's settings."""

    async def on_order_completed(
        session: AsyncSession, event: OrderCompleted, _: Envelope
    ) -> None:
        await record_order(session, event, settings)

    async def on_referral_order_evaluated(
        session: AsyncSession, event: ReferralOrderEvaluated, envelope: Envelope
    ) -> None:
        await apply_evaluation(session, event, envelope, settings)

    async def on_order_refunded(
        session: AsyncSession, event: OrderRefunded, _: Envelope
    ) -> None:
        await refunds.apply_refund(session, event, settings)

    return {
        OrderCompleted.TYPE: on_order_completed,
        ReferralOrderEvaluated.TYPE: on_referral_order_evaluated,
        OrderRefunded.TYPE: on_order_refunded,
        PayoutsCredited.TYPE: audit.record_payouts_credited,
    }
