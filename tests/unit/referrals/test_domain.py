"""Referral rules (RULES 1.4, 1.5) and invite codes, as pure functions."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.referrals.domain import (
    INVITE_CODE_ALPHABET,
    INVITE_CODE_LENGTH,
    Buyer,
    InvalidInviteCode,
    MerchantBinding,
    ReferralProgram,
    evaluate_order,
    generate_invite_code,
    is_invite_code,
    normalise_invite_code,
)

T0 = datetime(2024, 3, 15, 8, 0, tzinfo=UTC)
PROGRAM = ReferralProgram()


def buyer(
    *,
    inviter_id: UUID | None = None,
    binding: MerchantBinding | None = None,
    registered_at: datetime = T0,
    kind: str = "consumer",
) -> Buyer:
    return Buyer(
        member_id=uuid.uuid4(),
        kind="merchant" if kind == "merchant" else "consumer",
        inviter_id=inviter_id,
        registered_at=registered_at,
        binding=binding,
    )


def bound_to(merchant_id: UUID, at: datetime = T0) -> MerchantBinding:
    return MerchantBinding(merchant_id, at, "scan")


# --- invite codes --------------------------------------------------------------------


def test_invite_codes_avoid_look_alike_characters() -> None:
    for ambiguous in "0O1I":
        assert ambiguous not in INVITE_CODE_ALPHABET


@given(st.integers(min_value=0))
def test_generated_code_is_canonical_and_survives_being_retyped(seed: int) -> None:
    code = generate_invite_code(Random(seed))

    assert len(code) == INVITE_CODE_LENGTH
    assert is_invite_code(code)
    retyped = f" {code[:4].lower()}-{code[4:]} "
    assert normalise_invite_code(retyped) == code


def test_system_generated_codes_differ() -> None:
    assert len({generate_invite_code() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("ABCD234", "8 characters"),
        ("ABCD23456", "8 characters"),
        ("ABCD2340", "cannot contain '0'"),
        ("OBCD2345", "cannot contain 'O'"),
        ("ABCD2341", "cannot contain '1'"),
        ("ABCD234I", "cannot contain 'I'"),
        ("ABCD23$5", "cannot contain '$'"),
    ],
)
def test_malformed_codes_are_refused_saying_why(typed: str, problem: str) -> None:
    with pytest.raises(InvalidInviteCode, match=re.escape(problem)):
        normalise_invite_code(typed)


@given(st.text(max_size=12))
def test_normalised_code_is_always_canonical(typed: str) -> None:
    try:
        code = normalise_invite_code(typed)
    except InvalidInviteCode:
        return
    assert is_invite_code(code)
    assert normalise_invite_code(code) == code


@st.composite
def registrations(draw: st.DrawFn) -> list[str | None]:
    """Sign-ups, each with no code, a code already handed out, or a made-up code."""
    count = draw(st.integers(min_value=1, max_value=40))
    return [
        draw(st.one_of(st.none(), st.just("existing"), st.just("made-up")))
        for _ in range(count)
    ]


@given(registrations(), st.integers(min_value=0))
def test_inviter_graph_built_by_registration_has_no_cycle(
    plan: list[str | None], seed: int
) -> None:
    """RULES 1.5: an inviter is fixed at registration from an existing member's code."""
    rng = Random(seed)
    member_by_code: dict[str, UUID] = {}
    inviter_of: dict[UUID, UUID | None] = {}
    order: dict[UUID, int] = {}
    for step, choice in enumerate(plan):
        typed: str | None = None
        if choice == "existing" and member_by_code:
            typed = rng.choice(sorted(member_by_code)).lower()
        elif choice == "made-up":
            typed = generate_invite_code(rng)
        inviter: UUID | None = None
        if typed is not None:
            found = member_by_code.get(normalise_invite_code(typed))
            if found is None:
                continue  # an unknown code: the sign-up is refused, nothing is created
            inviter = found
        member_id = uuid.UUID(int=rng.getrandbits(128))
        code = generate_invite_code(rng)
        if code in member_by_code or member_id in inviter_of:
            continue  # the database's unique constraints refuse a duplicate
        member_by_code[code] = member_id
        inviter_of[member_id] = inviter
        order[member_id] = step

    for member_id in inviter_of:
        seen = {member_id}
        current = inviter_of[member_id]
        while current is not None:
            assert current not in seen, "an invite cycle"
            assert order[current] < order[member_id], "an inviter registered after the invitee"
            seen.add(current)
            current = inviter_of[current]


# --- the program ---------------------------------------------------------------------


def test_program_defaults_are_the_rules() -> None:
    assert PROGRAM.binding_rate == Decimal("0.05")
    assert PROGRAM.invite_rate == Decimal("0.05")
    assert PROGRAM.invite_reward_days is None
    assert PROGRAM.bind_on_first_order is True


@pytest.mark.parametrize(
    "changes",
    [
        {"binding_rate": Decimal("-0.01")},
        {"invite_rate": Decimal("1.01")},
        {"invite_rate": Decimal("NaN")},
        {"invite_reward_days": 0},
    ],
)
def test_program_refuses_impossible_parameters(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ReferralProgram(**changes)  # type: ignore[arg-type]


# --- evaluating an order -------------------------------------------------------------


def test_example_gp1_bound_and_invited_consumer_earns_both_rewards() -> None:
    """RULES GP-1: C bound to B, invited by I: B gets 5% of points, I 5% of the cash."""
    b, i, m = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    c = buyer(inviter_id=i, binding=bound_to(b))

    outcome = evaluate_order(PROGRAM, c, merchant_id=m, completed_at=T0 + timedelta(days=1))

    assert outcome.new_binding is None
    assert [(x.kind, x.beneficiary_id, x.rate, x.basis) for x in outcome.claims] == [
        ("binding", b, Decimal("0.05"), "consumer_points"),
        ("invite", i, Decimal("0.05"), "cash_amount"),
    ]


def test_unknown_consumer_earns_nothing_and_binds_nothing() -> None:
    outcome = evaluate_order(PROGRAM, None, merchant_id=uuid.uuid4(), completed_at=T0)

    assert outcome.new_binding is None
    assert outcome.claims == ()


def test_first_order_binds_to_its_merchant_without_a_binding_reward() -> None:
    m = uuid.uuid4()
    completed = T0 + timedelta(hours=2)

    outcome = evaluate_order(PROGRAM, buyer(), merchant_id=m, completed_at=completed)

    assert outcome.new_binding == MerchantBinding(m, completed, "first_order")
    assert outcome.claims == ()


def test_no_first_order_binding_when_the_program_turns_it_off() -> None:
    program = ReferralProgram(bind_on_first_order=False)

    outcome = evaluate_order(program, buyer(), merchant_id=uuid.uuid4(), completed_at=T0)

    assert outcome.new_binding is None
    assert outcome.claims == ()


def test_merchant_members_are_never_bound() -> None:
    outcome = evaluate_order(
        PROGRAM, buyer(kind="merchant"), merchant_id=uuid.uuid4(), completed_at=T0
    )

    assert outcome.new_binding is None


def test_binding_reward_goes_to_the_bound_merchant_at_any_merchant() -> None:
    bound, other = uuid.uuid4(), uuid.uuid4()
    c = buyer(binding=bound_to(bound))

    for merchant in (bound, other):
        outcome = evaluate_order(PROGRAM, c, merchant_id=merchant, completed_at=T0)
        assert [(x.kind, x.beneficiary_id) for x in outcome.claims] == [("binding", bound)]


def test_binding_made_after_the_order_completed_earns_nothing_on_it() -> None:
    c = buyer(binding=bound_to(uuid.uuid4(), at=T0 + timedelta(seconds=1)))

    outcome = evaluate_order(PROGRAM, c, merchant_id=uuid.uuid4(), completed_at=T0)

    assert outcome.claims == ()
    assert outcome.new_binding is None


def test_invite_reward_ends_after_invite_reward_days() -> None:
    program = ReferralProgram(invite_reward_days=30)
    c = buyer(inviter_id=uuid.uuid4(), registered_at=T0)
    window_end = T0 + timedelta(days=30)

    def invite_due(at: datetime) -> bool:
        outcome = evaluate_order(program, c, merchant_id=uuid.uuid4(), completed_at=at)
        return any(x.kind == "invite" for x in outcome.claims)

    assert invite_due(T0)
    assert invite_due(window_end - timedelta(microseconds=1))
    assert not invite_due(window_end)
    assert not invite_due(window_end + timedelta(days=365))


def test_invite_reward_unlimited_by_default() -> None:
    c = buyer(inviter_id=uuid.uuid4(), registered_at=T0)

    outcome = evaluate_order(
        PROGRAM, c, merchant_id=uuid.uuid4(), completed_at=T0 + timedelta(days=3650)
    )

    assert [x.kind for x in outcome.claims] == ["invite"]


def test_zero_rates_are_not_rewards() -> None:
    program = ReferralProgram(binding_rate=Decimal("0"), invite_rate=Decimal("0"))
    c = buyer(inviter_id=uuid.uuid4(), binding=bound_to(uuid.uuid4()))

    outcome = evaluate_order(program, c, merchant_id=uuid.uuid4(), completed_at=T0)

    assert outcome.claims == ()


def test_naive_instants_are_read_as_utc() -> None:
    c = buyer(binding=bound_to(uuid.uuid4(), at=T0))

    outcome = evaluate_order(
        PROGRAM, c, merchant_id=uuid.uuid4(), completed_at=T0.replace(tzinfo=None)
    )

    assert [x.kind for x in outcome.claims] == ["binding"]


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@st.composite
def buyers(draw: st.DrawFn) -> Buyer:
    binding = draw(
        st.none()
        | st.builds(
            MerchantBinding, st.uuids(), instants, st.sampled_from(["scan", "first_order"])
        )
    )
    return Buyer(
        member_id=draw(st.uuids()),
        kind=draw(st.sampled_from(["consumer", "merchant"])),
        inviter_id=draw(st.none() | st.uuids()),
        registered_at=draw(instants),
        binding=binding,
    )


programs = st.builds(
    ReferralProgram,
    binding_rate=st.decimals(min_value=0, max_value=1, places=2),
    invite_rate=st.decimals(min_value=0, max_value=1, places=2),
    invite_reward_days=st.none() | st.integers(min_value=1, max_value=3650),
    bind_on_first_order=st.booleans(),
)


@given(programs, buyers(), st.uuids(), instants)
def test_at_most_one_claim_of_each_kind_to_the_right_member(
    program: ReferralProgram, c: Buyer, merchant: UUID, completed: datetime
) -> None:
    outcome = evaluate_order(program, c, merchant_id=merchant, completed_at=completed)

    kinds = [x.kind for x in outcome.claims]
    assert len(kinds) == len(set(kinds))
    for claim in outcome.claims:
        assert claim.beneficiary_id != c.member_id  # nobody rewards themself
        assert claim.rate > 0
        if claim.kind == "binding":
            assert c.binding is not None
            assert claim.beneficiary_id == c.binding.merchant_id
            assert claim.basis == "consumer_points"
            assert claim.rate == program.binding_rate
        else:
            assert claim.beneficiary_id == c.inviter_id
            assert claim.basis == "cash_amount"
            assert claim.rate == program.invite_rate


@given(programs, buyers(), st.uuids(), instants)
def test_the_order_that_binds_earns_no_binding_claim(
    program: ReferralProgram, c: Buyer, merchant: UUID, completed: datetime
) -> None:
    outcome = evaluate_order(program, c, merchant_id=merchant, completed_at=completed)

    if outcome.new_binding is not None:
        assert c.binding is None
        assert outcome.new_binding.merchant_id == merchant
        assert "binding" not in [x.kind for x in outcome.claims]


@given(st.lists(instants, min_size=2, max_size=10), st.lists(st.uuids(), min_size=10))
def test_after_the_first_order_binds_every_later_order_rewards_that_merchant(
    completions: list[datetime], merchants: list[UUID]
) -> None:
    completions.sort()
    c = buyer()
    rewarded: list[UUID] = []
    for completed, merchant in zip(completions, merchants, strict=False):
        outcome = evaluate_order(PROGRAM, c, merchant_id=merchant, completed_at=completed)
        if outcome.new_binding is not None:
            c = Buyer(c.member_id, c.kind, c.inviter_id, c.registered_at, outcome.new_binding)
        rewarded += [x.beneficiary_id for x in outcome.claims if x.kind == "binding"]

    assert rewarded == [merchants[0]] * (len(completions) - 1)
