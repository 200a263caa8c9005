"""RULES 1.3: cohorts, the release index and the voucher release (example GP-3 and more).

Expected figures are the ones RULES.md states, or worked out by hand in the comments,
or computed by an independent exact oracle (``fractions.Fraction``), never by the code
under test.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain.periods import growth
from services.points.domain.release import (
    DEFAULT_RELEASE_RULES,
    CohortState,
    PositionState,
    ReleaseRules,
    SettlementResult,
    cohort_budget,
    lifetime_cap,
    next_release_index,
    position_entitlement,
    pro_rata_share,
    release_factor,
    settle_cohort,
    settle_pool,
)

D = Decimal
FIFTEEN = D("0.15")
CENT = Fraction(1, 100)
ZERO_D = D("0.00")


def floor_cents(value: Fraction) -> Decimal:
    """Independent oracle: an exact rational rounded down to the cent."""
    return D(floor(value * 100)).scaleb(-2)


def gp3_cohort() -> CohortState:
    return CohortState(
        cohort=1, positions=(PositionState("X", D("200.00")), PositionState("Y", D("800.00")))
    )


def paid(result: SettlementResult) -> dict[Hashable, Decimal]:
    return {p.position_id: p.paid for p in result.payouts}


def run(
    cohorts: Sequence[CohortState],
    growths: Sequence[Decimal],
    fund: Decimal,
    rules: ReleaseRules = DEFAULT_RELEASE_RULES,
) -> list[SettlementResult]:
    """Settle a pool once per growth figure; the fund only pays out (no inflows)."""
    results: list[SettlementResult] = []
    index: Decimal | None = None
    states = list(cohorts)
    for g in growths:
        index = next_release_index(index, g, rules)
        result = settle_pool(fund, index, states, rules)
        results.append(result)
        states = list(result.states)
        fund = result.fund_after
    return results


# --- rules ----------------------------------------------------------------------------------


def test_default_rules_match_rules_1_3() -> None:
    rules = ReleaseRules()
    assert rules.base_rate == D("0.005")
    assert rules.multiplier == 5
    assert rules.cohort_share == D("0.01")
    assert rules.max_settlements == 40
    assert rules.growth_target == FIFTEEN


@pytest.mark.parametrize(
    "changes",
    [
        {"cohort_share": D("0.03")},  # 40 cohorts × 3% would pay out 120% of the fund
        {"base_rate": D("0")},
        {"multiplier": D("-5")},
        {"max_settlements": 0},
        {"growth_target": D("NaN")},
    ],
)
def test_rules_that_could_break_the_fund_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|keep it"):
        replace(DEFAULT_RELEASE_RULES, **changes)


# --- the release index ----------------------------------------------------------------------


def test_index_starts_at_one_and_grows_by_capped_growth() -> None:
    i1 = next_release_index(None, D("0.40"))
    assert i1 == 1  # the first settlement's growth does not move the index
    i2 = next_release_index(i1, FIFTEEN)
    assert i2 == D("1.15")
    assert next_release_index(i2, D("0.40")) == D("1.3225")  # growth above 15% counts as 15%
    assert next_release_index(i2, D("0.09")) == D("1.2535")  # a forced settlement's real growth
    assert next_release_index(i2, D("0")) == i2
    with pytest.raises(ValueError, match="negative"):
        next_release_index(i2, D("-0.01"))


def test_growth_from_periods_feeds_the_index() -> None:
    # RULES 1.2 example GP-2: 9% growth at day 30 -> g = 0.09 moves the index by 9%.
    g = growth(D("90000.00"), D("1000000.00"))
    assert next_release_index(D("1.15"), g) == D("1.2535")


# --- example GP-3 ---------------------------------------------------------------------------


def test_gp3_settlement_1_pays_half_a_percent_of_points() -> None:
    result = settle_pool(D("100000.00"), next_release_index(None, FIFTEEN), [gp3_cohort()])

    assert paid(result) == {"X": D("1.00"), "Y": D("4.00")}
    assert result.total_paid == D("5.00")
    assert result.fund_after == D("99995.00")
    (cohort,) = result.cohorts
    assert cohort.budget == D("1000.00")  # 1% of B
    assert not cohort.pro_rata
    assert cohort.start_index == 1
    assert cohort.settlement_of_cohort == 1
    assert result.states[0].start_index == 1
    assert result.states[0].settlements == 1


def test_gp3_settlements_2_3_4_at_15_percent() -> None:
    results = run([gp3_cohort()], [FIFTEEN] * 4, D("100000.00"))

    assert [paid(r)["X"] for r in results] == [D("1.00"), D("1.15"), D("1.32"), D("1.52")]
    # Y by hand: 4 × 1.15 = 4.60, 4 × 1.3225 = 5.29, 4 × 1.520875 = 6.0835 -> 6.08.
    assert [paid(r)["Y"] for r in results] == [D("4.00"), D("4.60"), D("5.29"), D("6.08")]
    assert [r.index for r in results] == [D("1"), D("1.15"), D("1.3225"), D("1.520875")]
    # The fund only pays out: 100,000.00 - 5.00 - 5.75 - 6.61 - 7.60.
    assert results[-1].fund_after == D("99975.04")


def test_gp3_forced_settlement_3_with_9_percent_growth() -> None:
    results = run([gp3_cohort()], [FIFTEEN, FIFTEEN, D("0.09"), FIFTEEN], D("100000.00"))

    # By hand: 1.15 × 1.09 = 1.2535 -> 1.25; 1.2535 × 1.15 = 1.441525 -> 1.44.
    assert [paid(r)["X"] for r in results[1:]] == [D("1.15"), D("1.25"), D("1.44")]
    assert results[3].index == D("1.441525")


def test_gp3_budget_binds_and_is_split_pro_rata() -> None:
    result = settle_pool(D("300.00"), D("1"), [gp3_cohort()])

    # Budget 1% × 300.00 = 3.00 < 5.00 entitled: X 3.00 × 1/5, Y 3.00 × 4/5.
    assert paid(result) == {"X": D("0.60"), "Y": D("2.40")}
    (cohort,) = result.cohorts
    assert cohort.pro_rata
    assert cohort.budget == D("3.00")
    assert cohort.total_entitlement == D("5.00")
    assert {p.position_id: p.entitlement for p in result.payouts} == {
        "X": D("1.00"),
        "Y": D("4.00"),
    }
    assert result.fund_after == D("297.00")


def test_gp3_fully_funded_x_reaches_five_times_at_settlement_36() -> None:
    results = run([gp3_cohort()], [FIFTEEN] * 37, D("100000.00"))

    x = [paid(r)["X"] for r in results[:36]]
    for n in range(1, 36):
        # Before the cap: 0.005 × 200.00 × 1.15^(n-1), rounded down (exact oracle).
        assert x[n - 1] == floor_cents(Fraction(115, 100) ** (n - 1)), n
    assert sum(x[:35], D(0)) == D("881.02")
    assert x[35] == D("118.98")  # RULES GP-3: what is left of the 1,000.00 cap
    final = {p.position_id: p for p in results[35].payouts}
    assert final["X"].released == D("1000.00")
    assert final["X"].closed
    assert final["Y"].released == D("4000.00")  # Y also reaches 5× at its 36th settlement
    assert final["Y"].closed
    assert all(not r.cohorts[0].pro_rata for r in results[:36])
    # Settlement 37: the cohort is closed, takes no budget and pays nothing.
    assert results[36].cohorts == ()
    assert results[36].payouts == ()
    assert results[36].fund_after == results[35].fund_after
    assert results[36].states[0].is_closed()


# --- the 40-settlement limit ----------------------------------------------------------------


def test_cohort_takes_part_in_at_most_40_settlements() -> None:
    # No growth at all: every settlement is forced with g = 0, X gets 1.00 each time and
    # stays far below its 1,000.00 cap, so only the settlement count can close it.
    results = run([gp3_cohort()], [D("0")] * 41, D("100000.00"))

    assert [paid(r)["X"] for r in results[:40]] == [D("1.00")] * 40
    last = {p.position_id: p for p in results[39].payouts}
    assert last["X"].released == D("40.00")
    assert last["X"].closed
    assert results[39].cohorts[0].settlement_of_cohort == 40
    assert results[39].cohorts[0].closed
    assert results[40].payouts == ()
    assert results[40].states[0].settlements == 40
    assert results[40].fund_after == results[39].fund_after


def test_more_open_cohorts_than_settlements_allow_are_refused() -> None:
    # A state no real pool can reach: 41 cohorts that have each had one settlement.
    cohorts = [CohortState(c, (PositionState("P", D("10.00")),), D("1"), 1) for c in range(1, 42)]
    with pytest.raises(ValueError, match="at most max_settlements=40"):
        settle_pool(D("100.00"), D("1"), cohorts)


def test_40_open_cohorts_pay_at_most_40_percent_of_the_fund() -> None:
    # Every cohort is hungry: 1,000,000.00 points entitle 5,000.00 at the first settlement.
    cohorts = [
        CohortState(c, (PositionState("P", D("1000000.00")),), D("1"), 40 - c) for c in range(1, 40)
    ]
    cohorts.append(CohortState(40, (PositionState("P", D("1000000.00")),)))

    result = settle_pool(D("1000.00"), D("1"), cohorts)

    assert [c.paid for c in result.cohorts] == [D("10.00")] * 40
    assert result.total_paid == D("400.00")
    assert result.fund_after == D("600.00")


# --- funding --------------------------------------------------------------------------------


def test_every_cohort_budget_comes_from_the_same_fund_balance() -> None:
    cohort1 = CohortState(
        1,
        (PositionState("X", D("200.00"), D("1.00")), PositionState("Y", D("800.00"), D("4.00"))),
        start_index=D("1"),
        settlements=1,
    )
    cohort2 = CohortState(2, (PositionState("Z", D("1000.00")),))

    result = settle_pool(D("300.00"), D("1.15"), [cohort1, cohort2])

    # Both budgets are 1% of 300.00 = 3.00 (not 1% of what is left after cohort 1).
    # Cohort 1 is entitled to 1.15 + 4.60 = 5.75 -> X 1.15 × 3/5.75 = 0.60, Y 2.40.
    # Cohort 2 (first settlement) is entitled to 5.00 -> all 3.00 to Z.
    assert paid(result) == {"X": D("0.60"), "Y": D("2.40"), "Z": D("3.00")}
    assert [c.budget for c in result.cohorts] == [D("3.00"), D("3.00")]
    assert result.fund_after == D("294.00")
    assert result.states[1].start_index == D("1.15")


def test_rounding_remainders_stay_in_the_fund() -> None:
    cohort = CohortState(1, tuple(PositionState(name, D("100.00")) for name in ("A", "B", "C")))
    result = settle_pool(D("100.00"), D("1"), [cohort])

    # Budget 1.00 for 3 × 0.50 = 1.50: each 0.50 × 1.00 / 1.50 = 0.333.. -> 0.33.
    assert set(paid(result).values()) == {D("0.33")}
    assert result.total_paid == D("0.99")
    assert result.fund_after == D("99.01")


def test_pro_rata_share_on_a_whole_cent_is_not_lost() -> None:
    # Budget 3.00, 3 × 3.00 entitled: each share is exactly 1.00. A rounded ratio
    # 3.00 / 9.00 = 0.333..3 would pay 0.99 each; the exact quotient pays 1.00.
    cohort = CohortState(1, tuple(PositionState(n, D("600.00")) for n in ("A", "B", "C")))
    result = settle_pool(D("300.00"), D("1"), [cohort])

    assert set(paid(result).values()) == {D("1.00")}
    assert result.fund_after == D("297.00")


def test_empty_fund_pays_nothing_but_the_settlement_still_counts() -> None:
    result = settle_pool(D("0.00"), D("1"), [gp3_cohort()])
    assert paid(result) == {"X": D("0.00"), "Y": D("0.00")}
    assert result.fund_after == D("0.00")
    assert result.states[0].settlements == 1


# --- the cap --------------------------------------------------------------------------------


def test_entitlement_is_capped_by_what_is_left_of_five_times_points() -> None:
    cohort = CohortState(
        1, (PositionState("X", D("200.00"), D("999.50")),), start_index=D("1"), settlements=30
    )
    result = settle_pool(D("100000.00"), D("66.21"), [cohort])

    (payout,) = result.payouts
    assert payout.entitlement == D("0.50")
    assert payout.paid == D("0.50")
    assert payout.released == D("1000.00")
    assert payout.closed
    assert result.states[0].is_closed()


def test_position_already_over_its_cap_receives_nothing() -> None:
    # A refund cut the points to 100.00 after 600.00 had been released (cap now 500.00).
    refunded = PositionState("R", D("100.00"), D("600.00"))
    other = PositionState("O", D("100.00"))
    cohort = CohortState(1, (refunded, other), start_index=D("1"), settlements=3)

    result = settle_pool(D("1000.00"), D("1.5"), [cohort])

    assert paid(result) == {"O": D("0.75")}
    assert result.states[0].positions[0] == refunded
    assert position_entitlement(D("100.00"), D("600.00"), D("0.0075")) == D("0.00")


# --- the scalars for set-based SQL -------------------------------------------------------


def test_cohort_scalars_reproduce_the_worked_figures() -> None:
    # Cohort 1 at settlement 3 and cohort 2 at settlement 4 are both 2 periods old.
    assert release_factor(D("1.3225"), D("1")) == D("0.0066125")
    assert release_factor(D("1.520875"), D("1.15")) == D("0.0066125")
    assert position_entitlement(D("200.00"), D("2.15"), D("0.0066125")) == D("1.32")
    assert cohort_budget(D("300.00")) == D("3.00")
    assert pro_rata_share(D("1.00"), D("3.00"), D("5.00")) == D("0.60")
    assert pro_rata_share(D("4.00"), D("3.00"), D("5.00")) == D("2.40")
    assert lifetime_cap(D("200.00")) == D("1000.00")


def test_settle_pool_applies_exactly_the_sql_formulas() -> None:
    cohort = CohortState(
        3,
        tuple(PositionState(i, D(pts)) for i, pts in enumerate(["0.01", "333.33", "12345.67"])),
        start_index=D("1.3225"),
        settlements=5,
    )
    result = settle_pool(D("12345.67"), D("2.0113571875"), [cohort])

    (summary,) = result.cohorts
    factor = release_factor(D("2.0113571875"), D("1.3225"))
    assert summary.factor == factor
    for payout, position in zip(result.payouts, cohort.positions, strict=True):
        # trunc(least(points * factor, cap_left), 2) as the SQL UPDATE computes it
        expected = floor_cents(
            min(Fraction(position.points) * Fraction(factor), 5 * Fraction(position.points))
        )
        assert payout.entitlement == expected
        if summary.pro_rata:
            assert payout.paid == floor_cents(
                Fraction(payout.entitlement)
                * Fraction(summary.budget)
                / Fraction(summary.total_entitlement)
            )
        else:
            assert payout.paid == payout.entitlement


def test_late_cohorts_are_released_exactly_like_the_first() -> None:
    # 60 periods at 15%; every period mints a 200.00-point position. Each cohort must get
    # 1.00, 1.15, 1.32, 1.52, ... whatever the index has grown to before it joined: the
    # index rounding of I_n / I_c must never cost a cent.
    fund = D("1000000000.00")  # large enough that no budget binds
    index: Decimal | None = None
    states: list[CohortState] = []
    received: dict[int, list[Decimal]] = {}
    for n in range(1, 61):
        index = next_release_index(index, FIFTEEN)
        states.append(CohortState(n, (PositionState(f"P{n}", D("200.00")),)))
        result = settle_pool(fund, index, states)
        for payout in result.payouts:
            received.setdefault(payout.cohort, []).append(payout.paid)
        states = [s for s in result.states if not s.is_closed()]

    for cohort, amounts in received.items():
        expected = [floor_cents(Fraction(115, 100) ** m) for m in range(min(len(amounts), 35))]
        assert amounts[: len(expected)] == expected, f"cohort {cohort}"
    assert received[1][35] == D("118.98")
    assert received[25][35] == D("118.98")


# --- refusals -------------------------------------------------------------------------------


def test_inconsistent_input_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        settle_pool(D("-0.01"), D("1"), [gp3_cohort()])
    with pytest.raises(ValueError, match="more than 2 decimals"):
        settle_pool(D("1.001"), D("1"), [gp3_cohort()])
    with pytest.raises(ValueError, match="once"):
        settle_pool(D("1.00"), D("1"), [gp3_cohort(), gp3_cohort()])
    with pytest.raises(ValueError, match="never decreases"):
        settle_pool(
            D("1.00"), D("1"), [replace(gp3_cohort(), start_index=D("1.15"), settlements=1)]
        )
    with pytest.raises(ValueError, match="start_index is set exactly"):
        CohortState(1, (), None, 3)
    with pytest.raises(ValueError, match="unique"):
        CohortState(1, (PositionState("X", D("1.00")), PositionState("X", D("2.00"))))
    with pytest.raises(ValueError, match="negative"):
        PositionState("X", D("-1.00"))
    settled_40_times = CohortState(1, (PositionState("X", D("1.00")),), D("1"), 40)
    with pytest.raises(ValueError, match="closed"):
        settle_cohort(settled_40_times, D("1.00"), D("1"))
    with pytest.raises(ValueError, match="positive"):
        pro_rata_share(D("1.00"), D("1.00"), D("0.00"))


def test_settling_does_not_mutate_its_input() -> None:
    cohort = gp3_cohort()
    before = repr(cohort)
    settle_pool(D("100000.00"), D("1"), [cohort])
    assert repr(cohort) == before


# --- properties -----------------------------------------------------------------------------


def cents(low: int, high: int) -> st.SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda c: D(c).scaleb(-2))


growths = st.integers(0, 3000).map(lambda bp: D(bp).scaleb(-4))  # 0% .. 30%


@st.composite
def pools(draw: st.DrawFn) -> tuple[Decimal, Decimal, list[CohortState]]:
    """A pool at its settlement n: B, I_n and its cohorts (open ones and a few closed)."""
    gs = draw(st.lists(growths, min_size=1, max_size=70))
    indexes: list[Decimal] = []
    previous: Decimal | None = None
    for g in gs:
        previous = next_release_index(previous, g)
        indexes.append(previous)
    n = len(gs)
    first_open = max(1, n - 39)
    numbers = draw(st.lists(st.integers(first_open, n), unique=True, max_size=40))
    numbers += draw(
        st.lists(st.integers(1, n), unique=True, max_size=3).map(
            lambda cs: [c for c in cs if c < first_open]  # these have had 40 settlements
        )
    )
    cohorts = []
    for c in numbers:
        settlements = n - c
        positions = []
        for i, points in enumerate(draw(st.lists(cents(1, 10**8), max_size=4))):
            released = ZERO_D if settlements == 0 else draw(cents(0, int(points * 500)))
            positions.append(PositionState(f"{c}-{i}", points, released))
        start = indexes[c - 1] if settlements else None
        cohorts.append(CohortState(c, tuple(positions), start, settlements))
    fund = draw(cents(0, 10**11))
    return fund, indexes[-1], cohorts


@settings(max_examples=300, deadline=None)
@given(pool=pools())
def test_one_settlement_keeps_every_invariant(
    pool: tuple[Decimal, Decimal, list[CohortState]],
) -> None:
    fund, index, cohorts = pool
    rules = DEFAULT_RELEASE_RULES
    result = settle_pool(fund, index, cohorts, rules)

    # The fund: remainders stay in it, it never goes negative, at most 40% leaves it.
    assert result.fund_before == fund
    assert result.fund_after == fund - result.total_paid
    assert result.fund_after >= 0
    assert result.total_paid <= fund * D("0.40")
    assert result.total_paid == sum((p.paid for p in result.payouts), ZERO_D)
    assert result.total_paid == sum((c.paid for c in result.cohorts), ZERO_D)

    before = {c.cohort: c for c in cohorts}
    positions_before = {p.position_id: p for c in cohorts for p in c.positions}
    settled = {c.cohort for c in result.cohorts}
    assert settled == {c.cohort for c in cohorts if not c.is_closed(rules)}

    for summary in result.cohorts:
        budget = Fraction(fund) / 100
        assert Fraction(summary.budget) == budget
        assert summary.paid <= summary.budget
        mine = [p for p in result.payouts if p.cohort == summary.cohort]
        assert summary.paid == sum((p.paid for p in mine), ZERO_D)
        assert summary.total_entitlement == sum((p.entitlement for p in mine), ZERO_D)
        assert summary.pro_rata is (summary.total_entitlement > summary.budget)
        start = before[summary.cohort].start_index or index
        assert abs(
            Fraction(summary.factor) - Fraction(rules.base_rate) * Fraction(index) / Fraction(start)
        ) <= Fraction(1, 10**20)
        if summary.pro_rata:
            # Each share is the exact pro-rata share rounded down: less than a cent lost
            # per position, and the lost cents stay in the fund.
            for p in mine:
                exact_share = Fraction(p.entitlement) * budget / Fraction(summary.total_entitlement)
                assert exact_share - CENT < Fraction(p.paid) <= exact_share
            assert Fraction(summary.budget) - Fraction(summary.paid) < CENT * max(1, len(mine))
        else:
            assert all(p.paid == p.entitlement for p in mine)

    for payout in result.payouts:
        position = positions_before[payout.position_id]
        cap = 5 * position.points
        assert payout.paid >= 0
        assert payout.paid == payout.paid.quantize(D("0.01"))
        assert payout.paid <= payout.entitlement
        assert payout.entitlement <= max(ZERO_D, cap - position.released)
        assert payout.released == position.released + payout.paid
        assert payout.released <= cap

    for state in result.states:
        old = before[state.cohort]
        if old.is_closed(rules):
            assert state == old
        else:
            assert state.settlements == old.settlements + 1
            assert state.start_index == (old.start_index or index)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(growths, cents(0, 10**7), st.lists(cents(1, 10**6), max_size=3)),
        min_size=1,
        max_size=60,
    )
)
def test_a_pool_over_many_settlements_keeps_every_invariant(
    steps: list[tuple[Decimal, Decimal, list[Decimal]]],
) -> None:
    fund = ZERO_D
    taken_in = ZERO_D
    paid_out = ZERO_D
    index: Decimal | None = None
    states: list[CohortState] = []
    released: dict[Hashable, Decimal] = {}
    caps: dict[Hashable, Decimal] = {}
    settlements_of: dict[int, int] = {}
    for n, (g, inflow, new_points) in enumerate(steps, start=1):
        fund += inflow
        taken_in += inflow
        index = next_release_index(index, g)
        positions = tuple(PositionState(f"{n}-{i}", p) for i, p in enumerate(new_points))
        caps.update({p.position_id: 5 * p.points for p in positions})
        states.append(CohortState(n, positions))

        result = settle_pool(fund, index, states)

        assert result.fund_after == fund - result.total_paid >= 0
        assert result.total_paid <= fund * D("0.40")
        for summary in result.cohorts:
            settlements_of[summary.cohort] = settlements_of.get(summary.cohort, 0) + 1
        for payout in result.payouts:
            assert payout.paid >= 0
            released[payout.position_id] = payout.released
        fund = result.fund_after
        paid_out += result.total_paid
        states = [s for s in result.states if not s.is_closed()]

    # Money is conserved: whatever came in was either paid out or is still in the fund.
    assert taken_in == paid_out + fund
    assert sum(released.values(), ZERO_D) == paid_out
    assert all(released[pid] <= caps[pid] for pid in released)
    assert all(count <= 40 for count in settlements_of.values())
    # A cohort that has been settled 40 times is no longer among the open states.
    assert all(s.settlements < 40 for s in states)
