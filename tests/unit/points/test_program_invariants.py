"""RULES 1.7 over random sequences of orders, refunds and settlements (hypothesis).

The pure rules of points (earning 1.1, release 1.3, refunds) are played together on a
small in-memory program of both pools, and after every step the invariants the audit
must prove hold:
- every pool fund >= 0, and each fund equals what was put in minus what left it;
- every position's released total <= multiplier x its points;
- Σ vouchers ever released (rewards + settlements) <= Σ give-back allocated to the
  pools and rewards (net of what refunds took back from the funds);
- every order's G is exactly fee + rewards + pools (money conserved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain.earning import allocate_giveback, earn
from services.points.domain.refunds import (
    Allocated,
    OrderEffects,
    RefundDue,
    Share,
    recover,
    refund_due,
    reverse_position,
    within_cap,
)
from services.points.domain.release import (
    DEFAULT_RELEASE_RULES,
    CohortState,
    PositionState,
    next_release_index,
    settle_pool,
)
from shared.events import RewardClaim
from shared.money import ZERO

RULES = DEFAULT_RELEASE_RULES
MEMBERS = 4
INVITER = "inviter"


@dataclass
class Pool:
    fund: Decimal = ZERO
    index: Decimal | None = None
    current: int = 1
    cohorts: dict[int, CohortState] = field(default_factory=dict)

    def add_points(self, member: str, points: Decimal) -> int:
        cohort = self.cohorts.get(self.current, CohortState(cohort=self.current))
        positions = {p.position_id: p for p in cohort.positions}
        old = positions.get(member, PositionState(member, ZERO))
        positions[member] = PositionState(member, old.points + points, old.released)
        self.cohorts[self.current] = CohortState(
            cohort.cohort, tuple(positions.values()), cohort.start_index, cohort.settlements
        )
        return self.current

    def position(self, cohort: int, member: str) -> PositionState:
        return next(p for p in self.cohorts[cohort].positions if p.position_id == member)

    def replace(self, cohort: int, new: PositionState) -> None:
        state = self.cohorts[cohort]
        positions = tuple(new if p.position_id == new.position_id else p
                          for p in state.positions)
        self.cohorts[cohort] = CohortState(
            state.cohort, positions, state.start_index, state.settlements
        )


@dataclass
class Order:
    consumer: str
    merchant: str
    effects: OrderEffects
    cohorts: tuple[int, int]
    base: Decimal  # the earning base G was computed on (all cash here)
    refunded: RefundDue = field(default_factory=RefundDue)
    refunded_part: Decimal = ZERO


@dataclass
class Program:
    pools: dict[str, Pool] = field(default_factory=lambda: {"consumer": Pool(),
                                                            "merchant": Pool()})
    orders: list[Order] = field(default_factory=list)
    funded: Decimal = ZERO  # Σ allocated to the pools
    taken_back: Decimal = ZERO  # Σ refunds took back from the pools
    rewards_released: Decimal = ZERO
    settlements_released: Decimal = ZERO
    unrecovered: Decimal = ZERO

    def order(self, consumer: int, amount: Decimal, rate: Decimal, invited: bool) -> None:
        earning = earn(amount, ZERO, rate)
        claims = (
            [RewardClaim(kind="invite", beneficiary_id=_uuid(INVITER), rate=Decimal("0.05"),
                         basis="cash_amount")]
            if invited else []
        )
        allocation = allocate_giveback(
            earning.giveback, earning.consumer_points, earning.cash_amount, claims
        )
        # RULES 1.1: G is exactly fee + rewards + both pools, to the fen.
        assert (allocation.platform_fee + allocation.rewards_total + allocation.consumer_pool
                + allocation.merchant_pool) == earning.giveback
        self.rewards_released += allocation.rewards_total
        self.pools["consumer"].fund += allocation.consumer_pool
        self.pools["merchant"].fund += allocation.merchant_pool
        self.funded += allocation.consumer_pool + allocation.merchant_pool
        member = f"c{consumer}"
        cohorts = (
            self.pools["consumer"].add_points(member, earning.consumer_points),
            self.pools["merchant"].add_points("m", earning.merchant_points),
        )
        effects = OrderEffects(
            consumer_points=earning.consumer_points, merchant_points=earning.merchant_points,
            coins=earning.coins, giveback=earning.giveback,
            allocated=Allocated(
                platform_fee=allocation.platform_fee, rewards=allocation.rewards_total,
                consumer_pool=allocation.consumer_pool, merchant_pool=allocation.merchant_pool,
            ),
        )
        self.orders.append(Order(member, "m", effects, cohorts, base=amount))

    def refund(self, which: int, part_of_rest: Decimal) -> None:
        if not self.orders:
            return
        k = which % len(self.orders)
        order = self.orders[k]
        base = order.base
        rest = base - order.refunded_part
        if rest <= 0:
            return
        part = max((rest * part_of_rest).quantize(Decimal("0.01")), Decimal("0.01"))
        part = min(part, rest)
        final = part == rest
        share = Share(part=part, whole=base, final=final)
        due = refund_due(order.effects, order.refunded, share, share)
        order.refunded = order.refunded.plus(due)
        order.refunded_part += part
        for pool_name, points, cohort, member in (
            ("consumer", due.consumer_points, order.cohorts[0], order.consumer),
            ("merchant", due.merchant_points, order.cohorts[1], order.merchant),
        ):
            pool = self.pools[pool_name]
            pos = pool.position(cohort, member)
            reversed_ = reverse_position(points, pos.points, pos.released, RULES.multiplier)
            pool.replace(cohort, PositionState(member, pos.points - reversed_.recovered,
                                               pos.released))
        for pool_name, amount in (("consumer", due.consumer_pool),
                                  ("merchant", due.merchant_pool)):
            pool = self.pools[pool_name]
            got = recover(amount, pool.fund)
            pool.fund -= got.recovered
            self.taken_back += got.recovered
            self.unrecovered += got.unrecovered

    def settle(self, pool_name: str, growth: Decimal) -> None:
        pool = self.pools[pool_name]
        pool.index = next_release_index(pool.index, growth, RULES)
        cohorts = [pool.cohorts[c] for c in sorted(pool.cohorts)]
        result = settle_pool(pool.fund, pool.index, cohorts, RULES)
        assert result.fund_after == pool.fund - result.total_paid
        # RULES 1.3: one settlement pays at most 40% of the fund.
        assert result.total_paid <= pool.fund * RULES.cohort_share * RULES.max_settlements
        pool.fund = result.fund_after
        self.settlements_released += result.total_paid
        pool.cohorts = {state.cohort: state for state in result.states}
        pool.current += 1

    def check(self) -> None:
        for pool in self.pools.values():
            assert pool.fund >= 0
            for cohort in pool.cohorts.values():
                assert cohort.settlements <= RULES.max_settlements
                for p in cohort.positions:
                    assert within_cap(p.points, p.released, RULES.multiplier), p
        funds = sum(p.fund for p in self.pools.values())
        assert funds == self.funded - self.taken_back - self.settlements_released
        released = self.rewards_released + self.settlements_released
        assert released <= self.funded - self.taken_back + self.rewards_released


def _uuid(name: str) -> object:
    import uuid

    return uuid.uuid5(uuid.NAMESPACE_OID, name)


amounts = st.integers(1, 5_000_000).map(lambda fen: Decimal(fen) / 100)
rates = st.sampled_from([Decimal("0.10"), Decimal("0.15"), Decimal("0.20")])
growths = st.integers(0, 30).map(lambda pct: Decimal(pct) / 100)
steps = st.one_of(
    st.tuples(st.just("order"), st.integers(0, MEMBERS - 1), amounts, rates, st.booleans()),
    st.tuples(st.just("refund"), st.integers(0, 50),
              st.sampled_from([Decimal("0.25"), Decimal("0.5"), Decimal("1")])),
    st.tuples(st.just("settle"), st.sampled_from(["consumer", "merchant"]), growths),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, min_size=1, max_size=40))
def test_invariants_hold_after_every_order_refund_and_settlement(
    sequence: list[tuple[object, ...]],
) -> None:
    program = Program()
    for step in sequence:
        kind = step[0]
        if kind == "order":
            _, consumer, amount, rate, invited = step
            program.order(consumer, amount, rate, invited)  # type: ignore[arg-type]
        elif kind == "refund":
            _, which, part = step
            program.refund(which, part)  # type: ignore[arg-type]
        else:
            _, pool, growth = step
            program.settle(pool, growth)  # type: ignore[arg-type]
        program.check()


def test_a_refund_after_settlements_leaves_paid_vouchers_paid_and_records_the_rest() -> None:
    program = Program()
    program.order(0, Decimal("1000.00"), Decimal("0.20"), invited=False)
    for _ in range(3):
        program.settle("consumer", Decimal("0.15"))
    paid = program.settlements_released
    assert paid > 0

    program.refund(0, Decimal("1"))

    program.check()
    assert program.settlements_released == paid  # what was paid out stays paid
    pos = program.pools["consumer"].position(1, "c0")
    # The points released against cannot be reversed: the position keeps enough of them.
    assert pos.points > 0
    assert within_cap(pos.points, pos.released, RULES.multiplier)
