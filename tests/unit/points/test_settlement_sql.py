"""The pieces the set-based settlement SQL is built from agree with the pure rules.

- SQLite's ``gp_entitlement`` / ``gp_pro_rata`` functions compute, in integer fen, exactly
  what :mod:`services.points.domain.release` computes in Decimal (RULES 1.3);
- the ``funds.paid_out`` JSON template, filled the way SQL fills it, is byte for byte what
  pydantic writes for the same event (so vouchers parses SQL-built events like any other).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain.release import (
    ReleaseRules,
    position_entitlement,
    pro_rata_share,
    release_factor,
)
from services.points.settings import PointsSettings
from services.points.settlement import due_of
from services.points.settlement_repository import (
    EventTemplate,
    sqlite_entitlement,
    sqlite_pro_rata,
)
from shared.events import FundsPaidOut, Payout
from shared.money import from_fen, to_fen

D = Decimal

indices = st.decimals(min_value=D("1"), max_value=D("400"), places=6)
multipliers = st.sampled_from([D("5"), D("4.5"), D("3"), D("2.25")])
base_rates = st.sampled_from([D("0.005"), D("0.01"), D("0.3"), D("1.5")])


@settings(max_examples=300)
@given(
    points=st.integers(1, 10**12),
    released_permille=st.integers(0, 6000),
    start=indices,
    growth=st.decimals(min_value=D("1"), max_value=D("300"), places=4),
    multiplier=multipliers,
    base_rate=base_rates,
)
def test_the_sqlite_entitlement_is_the_rules_entitlement(
    points: int, released_permille: int, start: Decimal, growth: Decimal,
    multiplier: Decimal, base_rate: Decimal,
) -> None:
    rules = ReleaseRules(base_rate=base_rate, multiplier=multiplier)
    factor = release_factor(start * growth, start, rules)
    # released up to 6 × points (more than the cap: a refund may have cut the points)
    released = points * released_permille // 1000

    in_sql = sqlite_entitlement(points, released, str(factor), str(multiplier))

    expected = position_entitlement(from_fen(points), from_fen(released), factor, rules)
    assert in_sql == to_fen(expected)


@settings(max_examples=300)
@given(
    entitlement=st.integers(0, 10**9),
    extra=st.integers(1, 10**9),
    budget_fen=st.decimals(min_value=D("0"), max_value=D("1e12"), places=4),
)
def test_the_sqlite_pro_rata_share_is_the_rules_share(
    entitlement: int, extra: int, budget_fen: Decimal
) -> None:
    total = entitlement + extra  # the cohort's total is at least this position's

    in_sql = sqlite_pro_rata(entitlement, str(budget_fen), total)

    budget = budget_fen.scaleb(-2)
    assert in_sql == to_fen(pro_rata_share(from_fen(entitlement), budget, from_fen(total)))


def test_a_share_exactly_on_a_cent_keeps_its_cent() -> None:
    # 3.00 of budget over 9.00 of entitlement: a 3.00 entitlement gets exactly 1.00
    assert sqlite_pro_rata(300, "300", 900) == 100


@given(
    amount_fen=st.integers(1, 10**11),
    fund=st.sampled_from(["fund:consumer_pool", "fund:merchant_pool"]),
)
def test_the_event_json_sql_builds_is_the_json_pydantic_writes(amount_fen: int, fund: str) -> None:
    settlement_id, batch_id, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    payouts = [
        Payout(payout_id=uuid.uuid4(), member_id=uuid.uuid4(), asset="vouchers",
               amount=from_fen(amount_fen + n), reason="settlement", fund=fund,
               settlement_id=settlement_id)
        for n in range(3)
    ]
    occurred = datetime(2024, 3, 24, 16, 0, tzinfo=UTC)
    template = EventTemplate.make(
        settlement_id=settlement_id, fund=fund, producer="points", occurred_at=occurred
    )

    # what the SQL concatenates: template pieces around each row's values
    p0, p1, p2, p3 = template.payout
    rows = ",".join(
        f"{p0}{p.payout_id}{p1}{p.member_id}{p2}{to_fen(p.amount) // 100}."
        f"{to_fen(p.amount) % 100:02d}{p3}"
        for p in payouts
    )
    e0, e1, e2, e3, e4 = template.envelope
    built = f"{e0}{event_id}{e1}{batch_id}{e2}{batch_id}{e3}{rows}{e4}"

    event = FundsPaidOut(batch_id=batch_id, source="settlement", settlement_id=settlement_id,
                         payouts=tuple(payouts))
    expected = event.envelope(producer="points", occurred_at=occurred, event_id=event_id)
    assert built == expected.model_dump_json()


def test_a_mint_counted_before_its_period_began_reaches_the_target_on_day_one() -> None:
    # an order completed before the settlement that opened the period, delivered after it
    settings_ = PointsSettings(kafka_enabled=False)
    started = datetime(2024, 4, 14, tzinfo=settings_.zone)
    before = datetime(2024, 4, 13, 23, 0, tzinfo=settings_.zone)

    due = due_of(started, before, settings_)

    assert (due.reached_on_day, due.settle_on_day, due.forced) == (1, 11, False)
