"""HTTP API of the referrals service: sign-up, members, invitees and merchant bindings."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from sqlmodel.ext.asyncio.session import AsyncSession

from services.referrals import repository
from services.referrals.models import Binding, Member
from services.referrals.schemas import (
    BindingCreate,
    BindingPublic,
    BoundConsumerList,
    InviteeList,
    InviteePublic,
    MemberCreate,
    MemberPublic,
    MemberToken,
    RegisteredMember,
)
from shared.app import ClockDep, ReadSessionDep, SessionDep, SettingsDep
from shared.auth import AdminDep, MemberDep, PrincipalDep, issue_member_token
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable

router = APIRouter(prefix="/v1")

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Offset = Annotated[int, Query(ge=0, description="How many to skip")]


class UnknownInviteCode(Unprocessable):
    error = "unknown_invite_code"


class UnknownMerchant(Unprocessable):
    error = "unknown_merchant"


class AlreadyBound(Conflict):
    error = "already_bound"


def _field_problem(field: str, message: str) -> dict[str, Any]:
    # The same shape as a validation error, so clients find the field in one place.
    return {"fields": [{"field": field, "message": message}]}


def _member_public(member: Member, bound_merchant_id: UUID | None) -> MemberPublic:
    return MemberPublic(
        member_id=member.member_id,
        kind="merchant" if member.kind == "merchant" else "consumer",
        invite_code=member.invite_code,
        inviter_id=member.inviter_id,
        registered_at=member.registered_at,
        bound_merchant_id=bound_merchant_id,
    )


def _binding_public(binding: Binding) -> BindingPublic:
    return BindingPublic(
        consumer_id=binding.consumer_id,
        merchant_id=binding.merchant_id,
        source="scan" if binding.source == "scan" else "first_order",
        bound_at=binding.bound_at,
    )


async def _existing_member(session: AsyncSession, member_id: UUID) -> Member:
    member = await repository.get_member(session, member_id)
    if member is None:
        raise NotFound(f"no member {member_id}; members are created by POST /v1/members")
    return member


@router.post(
    "/members",
    status_code=status.HTTP_201_CREATED,
    tags=["members"],
    responses={422: {"description": "Malformed or unknown invite_code; nothing was created"}},
)
async def register_member(
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    body: MemberCreate | None = None,
) -> RegisteredMember:
    """Sign up a consumer (optionally with an inviter's code) and get their member token."""
    invite_code = body.invite_code if body is not None else None
    inviter_id: UUID | None = None
    if invite_code is not None:
        inviter = await repository.member_by_invite_code(session, invite_code)
        if inviter is None:
            message = (
                f"invite code {invite_code} belongs to no member; check it with the inviter, "
                "or sign up without an invite code"
            )
            raise UnknownInviteCode(
                f"invite_code: {message}", extra=_field_problem("invite_code", message)
            )
        # RULES 1.5: the inviter is an existing member and the new member is new, so
        # self-invites and invite cycles cannot happen; the link never changes later.
        inviter_id = inviter.member_id
    member = await repository.add_member(
        session,
        member_id=uuid.uuid4(),
        kind="consumer",
        inviter_id=inviter_id,
        registered_at=clock.now(),
    )
    # The token's validity is checked against real time, so it is issued in real time too.
    token = issue_member_token(settings, member.member_id)
    return RegisteredMember(
        **_member_public(member, bound_merchant_id=None).model_dump(), token=token
    )


@router.get("/members/{member_id}", tags=["members"])
async def read_member(
    member_id: UUID, session: ReadSessionDep, principal: PrincipalDep
) -> MemberPublic:
    """A member's profile: kind, own invite code, inviter and bound merchant."""
    principal.ensure_can_read(member_id)
    member = await _existing_member(session, member_id)
    binding = await repository.get_binding(session, member_id)
    return _member_public(member, None if binding is None else binding.merchant_id)


@router.post(
    "/members/{member_id}/tokens", status_code=status.HTTP_201_CREATED, tags=["members"]
)
async def issue_token(
    member_id: UUID, session: ReadSessionDep, settings: SettingsDep, _admin: AdminDep
) -> MemberToken:
    """Issue a fresh member token for a member (admin; e.g. for a merchant's app)."""
    member = await _existing_member(session, member_id)
    return MemberToken(member_id=member.member_id, token=issue_member_token(settings, member_id))


@router.get("/members/{member_id}/invitees", tags=["members"])
async def list_invitees(
    member_id: UUID,
    session: ReadSessionDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> InviteeList:
    """The members this member invited (RULES 1.5), oldest first."""
    principal.ensure_can_read(member_id)
    await _existing_member(session, member_id)
    invitees, total = await repository.invitees_of(session, member_id, limit=limit, offset=offset)
    return InviteeList(
        inviter_id=member_id,
        total=total,
        invitees=[
            InviteePublic(
                member_id=m.member_id,
                kind="merchant" if m.kind == "merchant" else "consumer",
                registered_at=m.registered_at,
            )
            for m in invitees
        ],
    )


@router.get("/members/{member_id}/binding", tags=["bindings"])
async def read_binding(
    member_id: UUID, session: ReadSessionDep, principal: PrincipalDep
) -> BindingPublic:
    """The merchant this consumer is bound to (RULES 1.4); 404 while unbound."""
    principal.ensure_can_read(member_id)
    await _existing_member(session, member_id)
    binding = await repository.get_binding(session, member_id)
    if binding is None:
        raise NotFound(
            f"member {member_id} is not bound to a merchant yet: scanning a merchant's code "
            "(POST /v1/bindings) or a first order binds them"
        )
    return _binding_public(binding)


@router.get("/members/{member_id}/bound-consumers", tags=["bindings"])
async def list_bound_consumers(
    member_id: UUID,
    session: ReadSessionDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> BoundConsumerList:
    """The consumers bound to this merchant member (RULES 1.4), in the order they were bound."""
    principal.ensure_can_read(member_id)
    await _existing_member(session, member_id)
    bindings, total = await repository.consumers_bound_to(
        session, member_id, limit=limit, offset=offset
    )
    return BoundConsumerList(
        merchant_id=member_id, total=total, bindings=[_binding_public(b) for b in bindings]
    )


@router.post(
    "/bindings",
    status_code=status.HTTP_201_CREATED,
    tags=["bindings"],
    responses={
        200: {"description": "Already bound to this merchant: the existing binding"},
        403: {"description": "A merchant member cannot bind to a merchant"},
        409: {"description": "Already bound to another merchant; bindings are permanent"},
        422: {"description": "merchant_id is not a registered merchant"},
    },
)
async def bind_to_merchant(
    body: BindingCreate,
    response: Response,
    session: SessionDep,
    clock: ClockDep,
    principal: MemberDep,
) -> BindingPublic:
    """Bind the calling consumer to the merchant whose code they scanned (first one wins)."""
    assert principal.member_id is not None, "MemberDep guarantees a member id"
    consumer = await repository.get_member(session, principal.member_id)
    if consumer is None:
        raise NotFound(
            f"the member of this token ({principal.member_id}) is not registered; "
            "sign up with POST /v1/members"
        )
    if consumer.kind != "consumer":
        raise Forbidden("a merchant member cannot bind to a merchant; only consumers bind")
    merchant = await repository.get_member(session, body.merchant_id)
    if merchant is None or merchant.kind != "merchant":
        message = (
            f"{body.merchant_id} is not a registered merchant; scan the merchant's code again "
            "or ask the merchant to check their registration"
        )
        raise UnknownMerchant(
            f"merchant_id: {message}", extra=_field_problem("merchant_id", message)
        )
    binding, created = await repository.bind_if_unbound(
        session,
        consumer_id=consumer.member_id,
        merchant_id=merchant.member_id,
        source="scan",
        bound_at=clock.now(),
    )
    if created:
        return _binding_public(binding)
    if binding.merchant_id == merchant.member_id:
        response.status_code = status.HTTP_200_OK
        return _binding_public(binding)
    # RULES 1.4: a binding is permanent unless an operator moves it.
    raise AlreadyBound(
        f"you are already bound to merchant {binding.merchant_id} since "
        f"{binding.bound_at.isoformat()}; bindings are permanent, so scanning another "
        "merchant's code does not change it",
        extra={"bound_merchant_id": str(binding.merchant_id)},
    )
