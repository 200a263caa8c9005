"""Request and response bodies of the referrals API."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.referrals.domain import (
    INVITE_CODE_ALPHABET,
    INVITE_CODE_LENGTH,
    BindingSource,
    InvalidInviteCode,
    MemberKind,
    normalise_invite_code,
)

_INVITE_CODE_EXAMPLE = "7KQ2M9XA"


class MemberCreate(BaseModel):
    """Sign-up from the mobile app, optionally with the invite code of the inviter."""

    model_config = ConfigDict(extra="forbid")

    invite_code: str | None = Field(
        default=None,
        max_length=40,
        description=(
            f"The inviter's code: {INVITE_CODE_LENGTH} characters of {INVITE_CODE_ALPHABET}; "
            "case, spaces and dashes are ignored. Empty or absent: no inviter."
        ),
        examples=[_INVITE_CODE_EXAMPLE],
    )

    @field_validator("invite_code")
    @classmethod
    def _canonical_invite_code(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return normalise_invite_code(value)
        except InvalidInviteCode as exc:
            raise ValueError(str(exc)) from exc


class MemberPublic(BaseModel):
    member_id: UUID
    kind: MemberKind
    invite_code: str = Field(
        description="This member's own code, to give to the people they invite",
        examples=[_INVITE_CODE_EXAMPLE],
    )
    inviter_id: UUID | None = Field(description="Who invited this member (RULES 1.5)")
    registered_at: datetime
    bound_merchant_id: UUID | None = Field(
        description="The merchant this consumer is bound to (RULES 1.4), if any"
    )


class RegisteredMember(MemberPublic):
    token: str = Field(description="The member's bearer token (JWT) for the mobile app")


class MemberToken(BaseModel):
    member_id: UUID
    token: str = Field(description="A fresh member bearer token (JWT)")


class BindingCreate(BaseModel):
    """The merchant whose QR / payment code the consumer scanned."""

    model_config = ConfigDict(extra="forbid")

    merchant_id: UUID


class BindingPublic(BaseModel):
    consumer_id: UUID
    merchant_id: UUID
    source: BindingSource = Field(
        description="scan: the consumer scanned the merchant's code; "
        "first_order: bound by the consumer's first order (RULES 1.4)"
    )
    bound_at: datetime


class InviteePublic(BaseModel):
    member_id: UUID
    kind: MemberKind
    registered_at: datetime


class InviteeList(BaseModel):
    inviter_id: UUID
    total: int = Field(description="How many members this member invited in all")
    invitees: list[InviteePublic] = Field(description="This page, oldest first")


class BoundConsumerList(BaseModel):
    merchant_id: UUID
    total: int = Field(description="How many consumers are bound to this merchant in all")
    bindings: list[BindingPublic] = Field(description="This page, in the order they were bound")
