"""Referral rules as a functional core: invite codes, bindings and invites (RULES 1.4, 1.5).

Plain values in, plain values out: no I/O, no clock, no framework. The caller loads what
referrals knows about the consumer of an order, asks :func:`evaluate_order` which rewards
are due and whether the order binds the consumer, and persists the answer.

Referrals only decides *who* is owed *which rate* of *which basis*; the points service
turns the claims into money because only it knows the give-back G (RULES 1.1 step 2).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Literal
from uuid import UUID

#: RULES 1.4 / 1.5 defaults (the program configuration may change them).
DEFAULT_BINDING_RATE = Decimal("0.05")
DEFAULT_INVITE_RATE = Decimal("0.05")

#: Invite codes are typed by people from a phone screen or a poster: upper-case letters
#: and digits without the look-alikes 0/O and 1/I. 32 symbols, 8 of them: 32**8 ~ 1.1e12
#: codes, so a random code practically never collides (the database still checks).
INVITE_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
INVITE_CODE_LENGTH = 8

MemberKind = Literal["consumer", "merchant"]
BindingSource = Literal["scan", "first_order"]
ClaimKind = Literal["binding", "invite"]
ClaimBasis = Literal["consumer_points", "cash_amount"]

_SYSTEM_RANDOM = secrets.SystemRandom()


class InvalidInviteCode(ValueError):
    """A typed invite code that cannot be one of ours (wrong length or characters)."""


def generate_invite_code(rng: Random | None = None) -> str:
    """A fresh random invite code (cryptographically random unless *rng* is given)."""
    source = rng or _SYSTEM_RANDOM
    return "".join(source.choice(INVITE_CODE_ALPHABET) for _ in range(INVITE_CODE_LENGTH))


def normalise_invite_code(typed: str) -> str:
    """The canonical form of a code a person typed: case, spaces and dashes don't matter."""
    code = "".join(typed.split()).replace("-", "").upper()
    if len(code) != INVITE_CODE_LENGTH:
        raise InvalidInviteCode(
            f"an invite code has {INVITE_CODE_LENGTH} characters, this one has {len(code)}"
        )
    foreign = sorted(set(code) - set(INVITE_CODE_ALPHABET))
    if foreign:
        raise InvalidInviteCode(
            f"an invite code uses only {INVITE_CODE_ALPHABET} (no 0, O, 1 or I); "
            f"it cannot contain {''.join(foreign)!r}"
        )
    return code


def is_invite_code(value: str) -> bool:
    """Whether *value* is a code in canonical form (as stored and as answered)."""
    return len(value) == INVITE_CODE_LENGTH and set(value) <= set(INVITE_CODE_ALPHABET)


def as_utc(instant: datetime) -> datetime:
    """Events carry aware instants; a naive one is read as UTC rather than rejected."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


@dataclass(frozen=True)
class ReferralProgram:
    """The referral parameters of the green points program (RULES 1.4, 1.5)."""

    binding_rate: Decimal = DEFAULT_BINDING_RATE
    invite_rate: Decimal = DEFAULT_INVITE_RATE
    #: None: the inviter is rewarded on every order of the invitee, for ever.
    invite_reward_days: int | None = None
    bind_on_first_order: bool = True

    def __post_init__(self) -> None:
        for name in ("binding_rate", "invite_rate"):
            rate: Decimal = getattr(self, name)
            if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1):
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.invite_reward_days is not None and self.invite_reward_days < 1:
            raise ValueError(
                f"invite_reward_days must be at least 1 (or None for unlimited), "
                f"got {self.invite_reward_days}"
            )


@dataclass(frozen=True)
class MerchantBinding:
    """RULES 1.4: the one merchant a consumer is bound to, and since when."""

    merchant_id: UUID
    bound_at: datetime
    source: BindingSource


@dataclass(frozen=True)
class Buyer:
    """What referrals knows about the consumer of an order."""

    member_id: UUID
    kind: MemberKind
    inviter_id: UUID | None
    registered_at: datetime
    binding: MerchantBinding | None


@dataclass(frozen=True)
class Claim:
    """A reward due on one order: *beneficiary_id* is owed *rate* x *basis*."""

    kind: ClaimKind
    beneficiary_id: UUID
    rate: Decimal
    basis: ClaimBasis


@dataclass(frozen=True)
class OrderOutcome:
    """The referral effects of one order: a binding it creates, and the rewards due."""

    new_binding: MerchantBinding | None
    claims: tuple[Claim, ...]


def binds_on_order(program: ReferralProgram, buyer: Buyer) -> bool:
    """RULES 1.4: an unbound consumer is bound by their first order (bind_on_first_order)."""
    return program.bind_on_first_order and buyer.kind == "consumer" and buyer.binding is None


def binding_reward_due(binding: MerchantBinding | None, completed_at: datetime) -> bool:
    """RULES 1.4: orders after the binding earn the bound merchant its reward.

    Only a binding that existed when the order completed counts: a consumer who scans a
    merchant's code today does not earn that merchant anything on yesterday's order.
    """
    return binding is not None and as_utc(binding.bound_at) <= as_utc(completed_at)


def invite_reward_due(
    program: ReferralProgram, buyer: Buyer, completed_at: datetime
) -> bool:
    """RULES 1.5: the inviter is rewarded on the invitee's orders within invite_reward_days."""
    if buyer.inviter_id is None:
        return False
    if program.invite_reward_days is None:
        return True
    window_ends = as_utc(buyer.registered_at) + timedelta(days=program.invite_reward_days)
    return as_utc(completed_at) < window_ends


def evaluate_order(
    program: ReferralProgram,
    buyer: Buyer | None,
    *,
    merchant_id: UUID,
    completed_at: datetime,
) -> OrderOutcome:
    """Which referral rewards an order earns and whether it binds its consumer.

    *buyer* is None when referrals does not know the consumer: nothing is due then.
    At most one claim of each kind; a claim with a zero rate is not a reward.
    """
    if buyer is None:
        return OrderOutcome(new_binding=None, claims=())
    claims: list[Claim] = []
    new_binding: MerchantBinding | None = None
    if binds_on_order(program, buyer):
        # RULES 1.4: the order that binds is not a "later" order: it earns no binding reward.
        new_binding = MerchantBinding(merchant_id, as_utc(completed_at), "first_order")
    elif buyer.binding is not None and binding_reward_due(buyer.binding, completed_at):
        # RULES 1.4: at *any* merchant, the bound one included.
        claims.append(
            Claim("binding", buyer.binding.merchant_id, program.binding_rate, "consumer_points")
        )
    if buyer.inviter_id is not None and invite_reward_due(program, buyer, completed_at):
        # RULES 1.5: invite_rate x A_cash to the inviter.
        claims.append(Claim("invite", buyer.inviter_id, program.invite_rate, "cash_amount"))
    return OrderOutcome(
        new_binding=new_binding,
        claims=tuple(claim for claim in claims if claim.rate > 0),
    )
