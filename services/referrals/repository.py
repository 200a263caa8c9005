"""The only code of the referrals service that touches the session and SQL.

Functions that change state also write the events describing the change to the outbox,
in the same transaction, so that state and events cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.referrals.domain import (
    BindingSource,
    Claim,
    MemberKind,
    MerchantBinding,
    generate_invite_code,
)
from services.referrals.models import Binding, Member, OrderEvaluation, RewardClaimRecord
from shared.events import (
    EventData,
    MemberBound,
    MemberRegistered,
    ReferralOrderEvaluated,
    RewardClaim,
)
from shared.outbox import record_event

PRODUCER = "referrals"

#: Attempts at drawing an unused invite code; with 32**8 codes the first one all but
#: always succeeds, so running out means something is broken (e.g. a rigged generator).
_INVITE_CODE_ATTEMPTS = 20


def emit(session: AsyncSession, event: EventData, *, occurred_at: datetime) -> UUID:
    """Write *event* to the outbox in the current transaction."""
    return record_event(session, event, producer=PRODUCER, occurred_at=occurred_at)


# --- members -------------------------------------------------------------------------


async def get_member(session: AsyncSession, member_id: UUID) -> Member | None:
    return await session.get(Member, member_id)


async def member_by_invite_code(session: AsyncSession, code: str) -> Member | None:
    result = await session.exec(select(Member).where(Member.invite_code == code))
    return result.one_or_none()


async def unused_invite_code(session: AsyncSession) -> str:
    for _ in range(_INVITE_CODE_ATTEMPTS):
        code = generate_invite_code()
        if await member_by_invite_code(session, code) is None:
            return code
    raise RuntimeError(f"no unused invite code found in {_INVITE_CODE_ATTEMPTS} attempts")


async def add_member(
    session: AsyncSession,
    *,
    member_id: UUID,
    kind: MemberKind,
    inviter_id: UUID | None,
    registered_at: datetime,
) -> Member:
    """Register a member with a fresh invite code and announce it (member.registered)."""
    member = Member(
        member_id=member_id,
        kind=kind,
        invite_code=await unused_invite_code(session),
        inviter_id=inviter_id,
        registered_at=registered_at,
    )
    session.add(member)
    await session.flush()
    emit(
        session,
        MemberRegistered(
            member_id=member_id, kind=kind, inviter_id=inviter_id, registered_at=registered_at
        ),
        occurred_at=registered_at,
    )
    return member


async def invitees_of(
    session: AsyncSession, inviter_id: UUID, *, limit: int, offset: int
) -> tuple[Sequence[Member], int]:
    """The members *inviter_id* invited, oldest first, and how many there are in all."""
    page = await session.exec(
        select(Member)
        .where(Member.inviter_id == inviter_id)
        .order_by(col(Member.registered_at), col(Member.member_id))
        .limit(limit)
        .offset(offset)
    )
    total = await session.exec(
        select(func.count()).select_from(Member).where(Member.inviter_id == inviter_id)
    )
    return page.all(), total.one()


# --- bindings ------------------------------------------------------------------------


def _as_domain(binding: Binding) -> MerchantBinding:
    source: BindingSource = "scan" if binding.source == "scan" else "first_order"
    return MerchantBinding(binding.merchant_id, binding.bound_at, source)


async def get_binding(session: AsyncSession, consumer_id: UUID) -> Binding | None:
    result = await session.exec(
        select(Binding)
        .where(Binding.consumer_id == consumer_id)
        .execution_options(populate_existing=True)
    )
    return result.one_or_none()


async def binding_of(session: AsyncSession, consumer_id: UUID) -> MerchantBinding | None:
    binding = await get_binding(session, consumer_id)
    return None if binding is None else _as_domain(binding)


async def bind_if_unbound(
    session: AsyncSession,
    *,
    consumer_id: UUID,
    merchant_id: UUID,
    source: BindingSource,
    bound_at: datetime,
) -> tuple[Binding, bool]:
    """RULES 1.4: the first binding wins. Returns the consumer's binding and whether it is new.

    An ``INSERT ... ON CONFLICT DO NOTHING`` rather than read-then-insert: two concurrent
    first bindings of one consumer cannot both win, on SQLite or PostgreSQL.
    """
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "consumer_id": consumer_id,
        "merchant_id": merchant_id,
        "source": source,
        "bound_at": bound_at,
    }
    statement = (
        insert(Binding)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["consumer_id"])
        .returning(col(Binding.consumer_id))
    )
    created = (await session.exec(statement)).first() is not None
    binding = await get_binding(session, consumer_id)
    assert binding is not None, "the binding exists: inserted now or earlier"
    if created:
        emit(
            session,
            MemberBound(
                consumer_id=consumer_id, merchant_id=merchant_id, source=source, bound_at=bound_at
            ),
            occurred_at=bound_at,
        )
    return binding, created


async def consumers_bound_to(
    session: AsyncSession, merchant_id: UUID, *, limit: int, offset: int
) -> tuple[Sequence[Binding], int]:
    """The consumers bound to *merchant_id*, in the order they were bound."""
    page = await session.exec(
        select(Binding)
        .where(Binding.merchant_id == merchant_id)
        .order_by(col(Binding.bound_at), col(Binding.consumer_id))
        .limit(limit)
        .offset(offset)
    )
    total = await session.exec(
        select(func.count()).select_from(Binding).where(Binding.merchant_id == merchant_id)
    )
    return page.all(), total.one()


# --- order evaluations ---------------------------------------------------------------


async def get_evaluation(session: AsyncSession, order_id: UUID) -> OrderEvaluation | None:
    return await session.get(OrderEvaluation, order_id)


async def record_evaluation(
    session: AsyncSession,
    *,
    order_id: UUID,
    consumer_id: UUID,
    merchant_id: UUID,
    completed_at: datetime,
    consumer_known: bool,
    claims: Sequence[Claim],
    evaluated_at: datetime,
) -> None:
    """Store an order's evaluation and publish it (exactly one per order)."""
    session.add(
        OrderEvaluation(
            order_id=order_id,
            consumer_id=consumer_id,
            merchant_id=merchant_id,
            completed_at=completed_at,
            evaluated_at=evaluated_at,
            consumer_known=consumer_known,
        )
    )
    # The parent row first: the claims reference it.
    await session.flush()
    session.add_all(
        RewardClaimRecord(
            order_id=order_id,
            kind=claim.kind,
            beneficiary_id=claim.beneficiary_id,
            rate=claim.rate,
            basis=claim.basis,
        )
        for claim in claims
    )
    await session.flush()
    emit(
        session,
        ReferralOrderEvaluated(
            order_id=order_id,
            consumer_id=consumer_id,
            merchant_id=merchant_id,
            rewards=tuple(
                RewardClaim(
                    kind=claim.kind,
                    beneficiary_id=claim.beneficiary_id,
                    rate=claim.rate,
                    basis=claim.basis,
                )
                for claim in claims
            ),
            evaluated_at=evaluated_at,
        ),
        occurred_at=evaluated_at,
    )
