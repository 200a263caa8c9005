"""Cohorts, the release index and the voucher release of the green points program (RULES 1.3).

A pure functional core: plain values in, new values out, no I/O, nothing mutated.

Numbers. Money (fund balances, budgets, entitlements, payouts) and points are 2-decimal
quantities; every money product and sum here is computed exactly (a context that traps
``Inexact``, so a lost digit is an error, never a silent difference) and a member's share
is rounded down to the cent only by :func:`shared.money.round_down`. The release index
and growth are not money: they are ratios computed in a pinned copy of Python's default
decimal context (28 significant digits, half-even), pinned so that a caller that changes
its thread's decimal context cannot change a result. 28 digits keep an index built from
hundreds of settlements within a relative 1e-25 of its exact value; the one place where
that residue could still cost a cent is handled by :data:`FACTOR_PLACES`.

Set-based use. A settlement of a pool with a million positions must not loop in Python,
so every per-position figure is a function of the position's own ``points`` and
``released`` and of cohort-level scalars computed here once per cohort:

- ``factor = release_factor(index, cohort.start_index, rules)`` (:data:`FACTOR_PLACES`
  decimal places), and ``entitlement = round_down(min(points × factor, cap_left))`` with
  ``cap_left = max(0, multiplier × points − released)`` (:func:`position_entitlement`);
- ``budget = cohort_budget(B, rules)``, the same ``B`` for every cohort;
- ``total = Σ entitlement`` over the cohort; if ``total <= budget`` each position is paid
  its entitlement, otherwise ``pro_rata_share(entitlement, budget, total)``, which is
  ``entitlement × budget / total`` rounded down to the cent.

In PostgreSQL (``numeric`` multiplies exactly; ``trunc`` and ``div`` truncate toward
zero, which is rounding down for these non-negative amounts) the same figures are::

    entitlement = trunc(least(points * :factor,
                              greatest(:multiplier * points - released, 0)), 2)
    paid = CASE WHEN :total <= :budget THEN entitlement
                ELSE div(entitlement * :budget * 100, :total) / 100 END

:func:`settle_pool` is built from exactly these functions, so Python and SQL agree to the
fen. The pro-rata share is deliberately *not* ``round_down(entitlement × (budget / total))``:
``budget / total`` has no finite decimal form in general (3.00 / 9.00), and a rounded ratio
turns a share that is exactly 1.00 into 0.99 (or, rounded up, could overspend a budget).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import (
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

from shared.money import ZERO, exact, round_down

# Index, growth and factor are ratios: 28 digits like the default context, pinned.
_RATIO = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
# Money products and sums: exact, as PostgreSQL numeric computes them; a lost digit raises.
_EXACT = Context(
    prec=80,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
# The pro-rata quotient: never rounded up, so the share never exceeds its exact value.
_FLOOR = Context(
    prec=80,
    rounding=ROUND_FLOOR,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

#: RULES 1.3: ``I_1 = 1`` at the pool's first settlement.
FIRST_INDEX = Decimal(1)

#: Decimal places of :func:`release_factor`. ``I_n / I_c`` of two 28-digit indices carries
#: a relative error near 1e-27, so a factor the rules make exactly 0.005 × 1.15 = 0.00575
#: can come out as 0.005749999999999999999999999997 and pay a 200-point position 1.14
#: instead of 1.15 (this happens for cohort 17 of a pool growing 15% every period).
#: Rounding the factor to 20 places removes that error while keeping every factor of up
#: to eight 15% settlements exact; the SQL side receives this very value as a parameter.
FACTOR_PLACES = 20
_FACTOR_QUANTUM = Decimal(1).scaleb(-FACTOR_PLACES)


@dataclass(frozen=True)
class ReleaseRules:
    """The RULES 1.3 defaults; an operator may change each in the program configuration."""

    base_rate: Decimal = Decimal("0.005")
    multiplier: Decimal = Decimal("5")
    cohort_share: Decimal = Decimal("0.01")
    max_settlements: int = 40
    growth_target: Decimal = Decimal("0.15")

    def __post_init__(self) -> None:
        for name in ("base_rate", "multiplier", "cohort_share", "growth_target"):
            value: Decimal = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.max_settlements < 1:
            raise ValueError(f"max_settlements must be at least 1, got {self.max_settlements}")
        # RULES (general) "a payout is never larger than the fund": at most max_settlements
        # cohorts are open at once, each with cohort_share × B, so together they must fit B.
        if self.cohort_share * self.max_settlements > 1:
            raise ValueError(
                f"cohort_share × max_settlements = {self.cohort_share * self.max_settlements} "
                "would let one settlement pay out more than the fund holds; keep it <= 1"
            )


DEFAULT_RELEASE_RULES = ReleaseRules()


# --- the release index -------------------------------------------------------------------


def next_release_index(
    previous: Decimal | None, growth: Decimal, rules: ReleaseRules = DEFAULT_RELEASE_RULES
) -> Decimal:
    """The index at a settlement, from the previous settlement's index and ``g_n``.

    RULES 1.3: ``I_1 = 1`` (pass ``previous=None`` at the pool's first settlement, whose
    growth does not move the index) and ``I_n = I_(n-1) × (1 + min(g_n, growth_target))``:
    a forced settlement at day 31 moves the index only by the growth the pool really had.
    """
    if not growth.is_finite() or growth < 0:
        raise ValueError(f"growth cannot be negative, got {growth}")
    if previous is None:
        return FIRST_INDEX
    _check_index("previous", previous)
    step = _RATIO.add(Decimal(1), min(growth, rules.growth_target))
    return _RATIO.multiply(previous, step)


def release_factor(
    index: Decimal, start_index: Decimal, rules: ReleaseRules = DEFAULT_RELEASE_RULES
) -> Decimal:
    """The cohort's scalar ``base_rate × I_n / I_c``, to :data:`FACTOR_PLACES` places.

    RULES 1.3: a position's entitlement before its cap is ``points × factor``; the same
    factor applies to every position of the cohort, so SQL can apply it in one UPDATE.
    """
    _check_index("index", index)
    _check_index("start_index", start_index)
    if index < start_index:
        raise ValueError(
            f"the index {index} is below the cohort's start index {start_index}; "
            "the index never decreases"
        )
    ratio = _RATIO.divide(index, start_index)
    return _RATIO.multiply(rules.base_rate, ratio).quantize(_FACTOR_QUANTUM, context=_RATIO)


# --- per position and per cohort money ---------------------------------------------------


def lifetime_cap(points: Decimal, rules: ReleaseRules = DEFAULT_RELEASE_RULES) -> Decimal:
    """RULES 1.3: a position never receives more than ``multiplier × points`` in all."""
    return _EXACT.multiply(rules.multiplier, points)


def position_entitlement(
    points: Decimal,
    released: Decimal,
    factor: Decimal,
    rules: ReleaseRules = DEFAULT_RELEASE_RULES,
) -> Decimal:
    """``round_down(min(points × factor, cap_left))``, ``cap_left = max(0, cap − released)``.

    RULES 1.3: the entitlement never exceeds what is left of the lifetime cap. The floor
    at zero covers a position whose points a refund reduced after it was paid.
    """
    cap_left = max(ZERO, _EXACT.subtract(lifetime_cap(points, rules), released))
    return round_down(min(_EXACT.multiply(points, factor), cap_left))


def cohort_budget(fund_balance: Decimal, rules: ReleaseRules = DEFAULT_RELEASE_RULES) -> Decimal:
    """RULES 1.3: each eligible cohort's budget is ``cohort_share × B``.

    ``B`` is the fund balance at the start of the settlement, the same for all cohorts.
    The budget is exact (``0.01 × 123.45 = 1.2345``, not rounded to the cent); only
    member shares are rounded, and what a cohort does not use stays in the fund.
    """
    return _EXACT.multiply(rules.cohort_share, fund_balance)


def pro_rata_share(entitlement: Decimal, budget: Decimal, total_entitlement: Decimal) -> Decimal:
    """``entitlement × budget / total_entitlement``, rounded down to the cent.

    RULES 1.3: when a cohort's total entitlement exceeds its budget, the budget is split
    pro rata to entitlement. The quotient is rounded toward minus infinity and is exact
    whenever it is representable, so a share lying exactly on a cent keeps that cent;
    since no share exceeds its exact value, the shares never sum to more than the budget.
    """
    if total_entitlement <= 0:
        raise ValueError(f"total_entitlement must be positive, got {total_entitlement}")
    quotient = _FLOOR.divide(_EXACT.multiply(entitlement, budget), total_entitlement)
    return round_down(quotient)


# --- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionState:
    """The points one member received in one period of a pool (RULES 1.3)."""

    position_id: Hashable
    points: Decimal
    #: Vouchers released to this position so far, over all its settlements.
    released: Decimal = ZERO

    def __post_init__(self) -> None:
        for name in ("points", "released"):
            value = exact(getattr(self, name))
            if value < 0:
                raise ValueError(f"position {self.position_id!r}: {name} cannot be negative")
            object.__setattr__(self, name, value)

    def is_capped(self, rules: ReleaseRules = DEFAULT_RELEASE_RULES) -> bool:
        return self.released >= lifetime_cap(self.points, rules)


@dataclass(frozen=True)
class CohortState:
    """Cohort k: the positions earned in period k of a pool (RULES 1.3)."""

    #: k, the period the points were earned in; settlement k is the cohort's first.
    cohort: int
    positions: tuple[PositionState, ...] = ()
    #: ``I_c``, the index at the cohort's first settlement; None before it.
    start_index: Decimal | None = None
    #: How many settlements the cohort has taken part in so far.
    settlements: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(self.positions))
        if self.cohort < 1:
            raise ValueError(f"cohorts are numbered from 1, got {self.cohort}")
        if self.settlements < 0:
            raise ValueError(f"cohort {self.cohort}: settlements cannot be negative")
        if (self.start_index is None) != (self.settlements == 0):
            raise ValueError(
                f"cohort {self.cohort}: start_index is set exactly when the cohort has had "
                f"a settlement (settlements={self.settlements}, start_index={self.start_index})"
            )
        if self.start_index is not None:
            _check_index("start_index", self.start_index)
        ids = [p.position_id for p in self.positions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"cohort {self.cohort}: position ids must be unique")

    def is_closed(self, rules: ReleaseRules = DEFAULT_RELEASE_RULES) -> bool:
        """RULES 1.3: closed after ``max_settlements`` settlements or when every position
        has received its cap (a cohort without positions has nothing left to receive)."""
        if self.settlements >= rules.max_settlements:
            return True
        return all(p.is_capped(rules) for p in self.positions)


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionPayout:
    """What one position receives at one settlement (RULES 1.3: vouchers from the fund)."""

    cohort: int
    position_id: Hashable
    entitlement: Decimal
    paid: Decimal
    #: The position's released total after this settlement.
    released: Decimal
    #: True when the position takes part in no further settlement.
    closed: bool


@dataclass(frozen=True)
class CohortSettlement:
    """One cohort's part of a settlement."""

    cohort: int
    #: 1 at the cohort's first settlement, up to ``max_settlements``.
    settlement_of_cohort: int
    start_index: Decimal
    factor: Decimal
    budget: Decimal
    total_entitlement: Decimal
    #: True when the budget did not cover the total entitlement and was split pro rata.
    pro_rata: bool
    paid: Decimal
    closed: bool


@dataclass(frozen=True)
class SettlementResult:
    """A whole pool's settlement; ``states`` replace the cohorts passed in, same order."""

    index: Decimal
    fund_before: Decimal
    total_paid: Decimal
    fund_after: Decimal
    cohorts: tuple[CohortSettlement, ...]
    payouts: tuple[PositionPayout, ...]
    states: tuple[CohortState, ...]


# --- settling ------------------------------------------------------------------------------


def settle_cohort(
    cohort: CohortState,
    fund_balance: Decimal,
    index: Decimal,
    rules: ReleaseRules = DEFAULT_RELEASE_RULES,
) -> tuple[CohortSettlement, tuple[PositionPayout, ...], CohortState]:
    """Settle one open cohort against ``B = fund_balance`` at release index ``index``.

    RULES 1.3. Returns the cohort's figures, one payout per position that was open, and
    the cohort's new state. The caller debits the payouts from the fund.
    """
    if cohort.is_closed(rules):
        raise ValueError(f"cohort {cohort.cohort} is closed and takes part in no settlement")
    _check_index("index", index)
    fund = _check_fund(fund_balance)
    # The cohort's first settlement fixes I_c at the current index.
    start_index = index if cohort.start_index is None else cohort.start_index
    factor = release_factor(index, start_index, rules)
    budget = cohort_budget(fund, rules)
    open_positions = [p for p in cohort.positions if not p.is_capped(rules)]
    entitlements = [
        position_entitlement(p.points, p.released, factor, rules) for p in open_positions
    ]
    total_entitlement = _sum(entitlements)
    pro_rata = total_entitlement > budget
    if pro_rata:
        paid_list = [pro_rata_share(e, budget, total_entitlement) for e in entitlements]
    else:
        paid_list = entitlements
    settlements = cohort.settlements + 1
    last = settlements >= rules.max_settlements

    payouts: list[PositionPayout] = []
    new_released: dict[Hashable, Decimal] = {}
    for position, entitlement, paid in zip(open_positions, entitlements, paid_list, strict=True):
        released = _EXACT.add(position.released, paid)
        new_released[position.position_id] = released
        capped = released >= lifetime_cap(position.points, rules)
        payouts.append(
            PositionPayout(
                cohort=cohort.cohort,
                position_id=position.position_id,
                entitlement=entitlement,
                paid=paid,
                released=released,
                closed=last or capped,
            )
        )
    positions = tuple(
        replace(p, released=new_released[p.position_id]) if p.position_id in new_released else p
        for p in cohort.positions
    )
    state = replace(cohort, positions=positions, start_index=start_index, settlements=settlements)
    paid_total = _sum(paid_list)
    summary = CohortSettlement(
        cohort=cohort.cohort,
        settlement_of_cohort=settlements,
        start_index=start_index,
        factor=factor,
        budget=budget,
        total_entitlement=total_entitlement,
        pro_rata=pro_rata,
        paid=paid_total,
        closed=state.is_closed(rules),
    )
    return summary, tuple(payouts), state


def settle_pool(
    fund_balance: Decimal,
    index: Decimal,
    cohorts: Sequence[CohortState],
    rules: ReleaseRules = DEFAULT_RELEASE_RULES,
) -> SettlementResult:
    """Settle every open cohort of a pool (RULES 1.3).

    *fund_balance* is ``B``, the pool fund's balance at the start of the settlement, and
    *index* is ``I_n`` (:func:`next_release_index`). *cohorts* holds the pool's cohorts
    including the new cohort n (``start_index=None``); closed cohorts are passed through
    unchanged. Every open cohort's budget is ``cohort_share × B`` of the same ``B``;
    rounding remainders and unused budgets stay in the fund.
    """
    fund = _check_fund(fund_balance)
    _check_index("index", index)
    numbers = [c.cohort for c in cohorts]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"each cohort may be passed once, got {sorted(numbers)}")
    open_count = sum(1 for c in cohorts if not c.is_closed(rules))
    # RULES 1.3: a cohort takes part in at most max_settlements settlements, so no more
    # than that many are open at once; more means the caller's state is wrong.
    if open_count > rules.max_settlements:
        raise ValueError(
            f"{open_count} open cohorts, but at most max_settlements={rules.max_settlements} "
            "can take part in one settlement"
        )

    summaries: list[CohortSettlement] = []
    payouts: list[PositionPayout] = []
    states: list[CohortState] = []
    for cohort in cohorts:
        if cohort.is_closed(rules):
            states.append(cohort)
            continue
        summary, cohort_payouts, state = settle_cohort(cohort, fund, index, rules)
        summaries.append(summary)
        payouts.extend(cohort_payouts)
        states.append(state)

    total_paid = _sum(s.paid for s in summaries)
    if total_paid > fund:  # pragma: no cover - excluded by ReleaseRules and the check above
        raise RuntimeError(f"settlement would pay {total_paid} from a fund of {fund}")
    return SettlementResult(
        index=index,
        fund_before=fund,
        total_paid=total_paid,
        fund_after=_EXACT.subtract(fund, total_paid),
        cohorts=tuple(summaries),
        payouts=tuple(payouts),
        states=tuple(states),
    )


# --- helpers -------------------------------------------------------------------------------


def _check_index(name: str, value: Decimal) -> None:
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{name} must be a positive release index, got {value}")


def _check_fund(fund_balance: Decimal) -> Decimal:
    fund = exact(fund_balance)
    if fund < 0:
        raise ValueError(f"a fund balance cannot be negative, got {fund}")
    return fund


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total
