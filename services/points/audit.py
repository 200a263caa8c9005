"""The audit (RULES 1.7): proves the invariants from the books, across the services.

Each check states the figures it compared, so an operator sees *why* it holds or not:

1. ``fund_ledger_balanced``: every fund-ledger transaction sums to zero;
2. ``pool_funds``: no pool fund (nor the fee account, nor held G) is negative, and each
   pool row equals its ledger account;
3. ``positions``: no position released more than ``multiplier × points`` or took part in
   more than ``max_settlements`` settlements; positions equal the points ledger;
4. ``giveback``: ``Σ G == Σ allocated (fee + rewards + pools) + Σ still pending +
   Σ pending G given back by refunds``, and the ledger accounts agree;
5. ``vouchers_released``: Σ vouchers released (rewards + settlements) ≤ Σ give-back
   allocated to rewards and pools, net of what refunds took back from the pools;
6. ``payouts_credited``: the payouts points emitted are the credits vouchers booked
   (``payouts.credited`` per batch, and vouchers' own totals); batches still in flight are
   reported, a failure only once older than ``audit_max_in_flight_seconds``;
7. ``orders_tie_out``: the orders and refunds points has seen are the orders service's;
8. ``refunds_unrecovered``: what refunds could not take back, points and money, and the
   ``platform:unrecovered`` account agrees with it.

Another service that cannot be reached fails its check with a clear detail; the audit
itself still answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from services.points import audit_repository
from services.points.refunds import FEES_ACCOUNT, UNRECOVERED_ACCOUNT
from services.points.schemas import AuditCheck, AuditReport, Figure
from services.points.settings import PointsSettings
from shared.events import Envelope, PayoutsCredited
from shared.money import ZERO

#: How many failing ids a check names at most.
SAMPLE = 20

POOL_ACCOUNTS = {"consumer": "fund:consumer_pool", "merchant": "fund:merchant_pool"}
PENDING_ACCOUNT = "giveback:pending"


def _amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _check(name: str, ok: bool, detail: str, **figures: Figure | Decimal) -> AuditCheck:
    return AuditCheck(
        name=name,
        ok=ok,
        detail=detail,
        figures={k: _amount(v) if isinstance(v, Decimal) else v for k, v in figures.items()},
    )


# --- payouts.credited (vouchers.events) ------------------------------------------------------


async def record_payouts_credited(
    session: AsyncSession, event: PayoutsCredited, envelope: Envelope
) -> None:
    """Vouchers booked a payout batch into wallets: mark it credited (for check 6)."""
    await audit_repository.record_payout_credit(
        session, event.batch_id, event.count, event.total, envelope.occurred_at
    )


# --- the other services' totals --------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """Another service's ``/v1/admin/totals``, or why it could not be read."""

    body: dict[str, Any] | None
    error: str | None = None


async def fetch_totals(
    http: httpx.AsyncClient, service: str, base_url: str, admin_token: str
) -> Remote:
    url = f"{base_url.rstrip('/')}/v1/admin/totals"
    try:
        response = await http.get(url, headers={"Authorization": f"Bearer {admin_token}"})
    except httpx.HTTPError as exc:
        return Remote(None, f"the {service} service is unreachable at {url}: "
                            f"{type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return Remote(None, f"the {service} service answered {response.status_code} at {url}: "
                            f"{response.text[:200]}")
    try:
        body = response.json()
    except ValueError:
        return Remote(None, f"the {service} service answered {url} with something not JSON")
    if not isinstance(body, dict):
        return Remote(None, f"the {service} service answered {url} with no JSON object")
    return Remote(body)


class _Malformed(ValueError):
    pass


def _figure(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise _Malformed(f"its totals have no {'.'.join(path)}")
        value = value[key]
    return value


def _money_figure(body: dict[str, Any], *path: str) -> Decimal:
    value = _figure(body, *path)
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise _Malformed(f"{'.'.join(path)} = {value!r} is not an amount") from exc
    if not amount.is_finite():
        raise _Malformed(f"{'.'.join(path)} = {value!r} is not an amount")
    return amount.quantize(Decimal("0.01"))


def _count_figure(body: dict[str, Any], *path: str) -> int:
    value = _figure(body, *path)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed(f"{'.'.join(path)} = {value!r} is not a count")
    return value


# --- the checks ------------------------------------------------------------------------------


async def _ledger_balanced(session: AsyncSession) -> AuditCheck:
    count, ids = await audit_repository.unbalanced_transactions(session, limit=SAMPLE)
    transactions = await audit_repository.transaction_count(session)
    if count:
        detail = (f"{count} fund-ledger transaction(s) do not sum to zero: "
                  + ", ".join(str(i) for i in ids))
    else:
        detail = f"all {transactions} fund-ledger transactions sum to zero"
    return _check("fund_ledger_balanced", count == 0, detail,
                  transactions=transactions, unbalanced=count)


async def _pool_funds(session: AsyncSession) -> AuditCheck:
    rows = await audit_repository.pool_funds(session)
    ledger = await audit_repository.account_balances(
        session, [*POOL_ACCOUNTS.values(), FEES_ACCOUNT, PENDING_ACCOUNT]
    )
    problems: list[str] = []
    figures: dict[str, Decimal] = {}
    for pool, account in POOL_ACCOUNTS.items():
        row, booked = rows.get(pool, ZERO), ledger[account]
        figures[f"{pool}_fund"] = row
        figures[f"{pool}_fund_ledger"] = booked
        if row < 0:
            problems.append(f"the {pool} pool fund is negative ({row})")
        if row != booked:
            problems.append(f"the {pool} pool fund holds {row} but its ledger account "
                            f"{account} holds {booked}")
    for account, name in ((FEES_ACCOUNT, "platform_fees"), (PENDING_ACCOUNT, "giveback_pending")):
        figures[name] = ledger[account]
        if ledger[account] < 0:
            problems.append(f"{account} is negative ({ledger[account]})")
    detail = "; ".join(problems) or (
        "no fund is negative and each pool fund equals its ledger account"
    )
    return _check("pool_funds", not problems, detail, **figures)


async def _positions(session: AsyncSession, settings: PointsSettings) -> AuditCheck:
    found = await audit_repository.position_figures(
        session, settings.multiplier, settings.max_settlements
    )
    problems: list[str] = []
    if found.over_cap:
        problems.append(f"{found.over_cap} position(s) released more than "
                        f"{settings.multiplier} × their points")
    if found.over_settlements:
        problems.append(f"{found.over_settlements} position(s) took part in more than "
                        f"{settings.max_settlements} settlements")
    if found.negative:
        problems.append(f"{found.negative} position(s) have negative points or releases")
    if found.points != found.entries_points:
        problems.append(f"positions hold {found.points} points but the points ledger "
                        f"sums to {found.entries_points}")
    detail = "; ".join(problems) or (
        f"every position's released total is within {settings.multiplier} × its points, "
        f"none past {settings.max_settlements} settlements, and positions equal the ledger"
    )
    return _check(
        "positions", not problems, detail,
        positions=found.positions, points=found.points, released=found.released,
        points_ledger=found.entries_points, over_cap=found.over_cap,
        over_max_settlements=found.over_settlements, negative=found.negative,
    )


async def _giveback(session: AsyncSession) -> AuditCheck:
    g = await audit_repository.giveback_figures(session)
    refunds = await audit_repository.refund_figures(session)
    ledger = await audit_repository.account_balances(session, [PENDING_ACCOUNT])
    merchants = await audit_repository.merchant_giveback_balance(session)
    allocated = (g.allocated_fee + g.allocated_rewards + g.allocated_consumer_pool
                 + g.allocated_merchant_pool)
    pending = g.pending_giveback - g.pending_returned_of_pending
    accounted = allocated + pending + g.pending_returned
    # What left the merchants and stayed gone: G, less what refunds gave back to them.
    kept_from_merchants = g.giveback - g.pending_returned - refunds.taken_back_due
    problems: list[str] = []
    if g.giveback != accounted:
        problems.append(
            f"Σ G {g.giveback} != allocated {allocated} + pending {pending} + given back "
            f"before allocation {g.pending_returned} (= {accounted})"
        )
    if ledger[PENDING_ACCOUNT] != pending:
        problems.append(f"{PENDING_ACCOUNT} holds {ledger[PENDING_ACCOUNT]}, the pending "
                        f"orders {pending}")
    if -merchants != kept_from_merchants:
        problems.append(
            f"the merchants' give-back accounts sum to {merchants}, expected "
            f"-{kept_from_merchants} (G less what refunds gave back)"
        )
    detail = "; ".join(problems) or (
        "Σ G == Σ allocated (fee + rewards + pools) + Σ still pending + Σ pending G given "
        "back by refunds; refunds after the allocation gave back "
        f"{refunds.taken_back_due} (recovered {refunds.recovered}, unrecovered "
        f"{refunds.unrecovered}); the ledger agrees"
    )
    return _check(
        "giveback", not problems, detail,
        orders=g.orders, giveback=g.giveback, allocated=allocated,
        allocated_platform_fee=g.allocated_fee, allocated_rewards=g.allocated_rewards,
        allocated_consumer_pool=g.allocated_consumer_pool,
        allocated_merchant_pool=g.allocated_merchant_pool,
        pending=pending, reversed_before_allocation=g.pending_returned,
        reversed_after_allocation=refunds.taken_back_due,
        reversed_recovered=refunds.recovered, reversed_unrecovered=refunds.unrecovered,
        rewards_kept=refunds.rewards_kept,
        ledger_pending=ledger[PENDING_ACCOUNT], ledger_merchants=merchants,
    )


async def _vouchers_released(session: AsyncSession) -> AuditCheck:
    released = await audit_repository.vouchers_released(session)
    g = await audit_repository.giveback_figures(session)
    refunds = await audit_repository.refund_figures(session)
    funded = (g.allocated_rewards + g.allocated_consumer_pool + g.allocated_merchant_pool
              - refunds.pool_recovered)
    ok = released <= funded
    detail = (
        f"Σ vouchers released {released} <= Σ give-back allocated to rewards and pools "
        f"{funded}" if ok else
        f"Σ vouchers released {released} exceeds Σ give-back allocated to rewards and pools "
        f"{funded}"
    )
    return _check(
        "vouchers_released", ok, detail,
        vouchers_released=released, allocated_rewards=g.allocated_rewards,
        allocated_pools=g.allocated_consumer_pool + g.allocated_merchant_pool,
        taken_back_from_pools=refunds.pool_recovered, funded=funded,
    )


def _payouts_credited(
    p: audit_repository.PayoutFigures, settings: PointsSettings, vouchers: Remote,
    now: datetime,
) -> AuditCheck:
    age = None if p.oldest_in_flight is None else int(
        (now - p.oldest_in_flight).total_seconds()
    )
    stuck = age is not None and age > settings.audit_max_in_flight_seconds
    figures: dict[str, Figure | Decimal] = {
        "emitted_batches": p.emitted_batches, "emitted_payouts": p.emitted_payouts,
        "emitted_total": p.emitted_total, "credited_batches": p.credited_batches,
        "credited_payouts": p.credited_payouts, "credited_total": p.credited_total,
        "in_flight_batches": p.in_flight_batches, "in_flight_payouts": p.in_flight_payouts,
        "in_flight_total": p.in_flight_total, "oldest_in_flight_seconds": age,
        "max_in_flight_seconds": settings.audit_max_in_flight_seconds,
        "mismatched_batches": len(p.mismatched), "unknown_batches": len(p.unknown),
    }
    problems: list[str] = []
    notes: list[str] = []
    if p.mismatched:
        problems.append("vouchers credited other amounts than points emitted for batch(es) "
                        + ", ".join(str(b) for b in p.mismatched))
    if p.unknown:
        problems.append("vouchers credited batch(es) points never emitted: "
                        + ", ".join(str(b) for b in p.unknown))
    if stuck:
        problems.append(f"{p.in_flight_batches} payout batch(es) not credited yet, the oldest "
                        f"for {age} s (more than {settings.audit_max_in_flight_seconds} s)")
    elif p.in_flight_batches:
        notes.append(f"{p.in_flight_batches} batch(es) ({p.in_flight_total}) still in flight, "
                     f"the oldest for {age} s")
    if vouchers.body is None:
        problems.append(f"cannot compare with the vouchers' books: {vouchers.error}")
    else:
        try:
            booked_count = _count_figure(vouchers.body, "payouts", "count")
            booked_total = _money_figure(vouchers.body, "payouts", "total")
            unrecovered = {
                asset: _money_figure(vouchers.body, "unrecovered", asset)
                for asset in ("vouchers", "coins", "cash")
            }
        except _Malformed as exc:
            problems.append(f"the vouchers service's totals are not readable: {exc}")
        else:
            figures["vouchers_booked_payouts"] = booked_count
            figures["vouchers_booked_total"] = booked_total
            for asset, amount in unrecovered.items():
                figures[f"vouchers_unrecovered_{asset}"] = amount
            same = (booked_count, booked_total) == (p.credited_payouts, p.credited_total)
            # Vouchers books a batch before its payouts.credited reaches points: while
            # batches are in flight it may be ahead by some of them, never behind.
            ahead_in_flight = (
                p.in_flight_batches > 0 and not stuck
                and p.credited_payouts < booked_count
                <= p.credited_payouts + p.in_flight_payouts
            )
            if ahead_in_flight:
                notes.append(f"vouchers booked {booked_count - p.credited_payouts} payout(s) "
                             "whose acknowledgement is still in flight")
            elif not same:
                problems.append(
                    f"vouchers booked {booked_count} payouts for {booked_total}; the batches "
                    f"it acknowledged to points hold {p.credited_payouts} for "
                    f"{p.credited_total}"
                )
    detail = "; ".join(problems + notes) or (
        f"all {p.emitted_batches} payout batches ({p.emitted_total}) emitted by points are "
        "credited by vouchers, and vouchers' own totals agree"
    )
    return _check("payouts_credited", not problems, detail, **figures)


def _orders_tie_out(seen: audit_repository.OrdersSeen, orders: Remote) -> AuditCheck:
    ours: dict[str, Decimal | int] = {
        "orders": seen.orders, "amount": seen.amount, "voucher_amount": seen.voucher_amount,
        "cash_amount": seen.cash_amount, "refunds": seen.refunds,
        "refunded_amount": seen.refunded_amount,
        "refunded_voucher_amount": seen.refunded_voucher_amount,
        "refunded_cash_amount": seen.refunded_cash_amount,
    }
    figures: dict[str, Figure | Decimal] = {f"points_{k}": v for k, v in ours.items()}
    if orders.body is None:
        return _check("orders_tie_out", False,
                      f"cannot compare with the orders' books: {orders.error}", **figures)
    theirs: dict[str, Decimal | int] = {}
    try:
        for key, value in ours.items():
            theirs[key] = (_count_figure(orders.body, key) if isinstance(value, int)
                           else _money_figure(orders.body, key))
    except _Malformed as exc:
        return _check("orders_tie_out", False,
                      f"the orders service's totals are not readable: {exc}", **figures)
    figures.update({f"orders_{k}": v for k, v in theirs.items()})
    differ = [k for k in ours if ours[k] != theirs[k]]
    detail = (
        "points has seen exactly the orders and refunds the orders service recorded"
        if not differ else
        "points and orders disagree on " + ", ".join(
            f"{k} (points {ours[k]}, orders {theirs[k]})" for k in differ
        ) + "; order events still in flight or refused by points explain a difference"
    )
    return _check("orders_tie_out", not differ, detail, **figures)


async def _refunds_unrecovered(session: AsyncSession) -> AuditCheck:
    refunds = await audit_repository.refund_figures(session)
    ledger = await audit_repository.account_balances(session, [UNRECOVERED_ACCOUNT])
    points_unrecovered = (
        refunds.consumer_points_due - refunds.consumer_points_reversed
        + refunds.merchant_points_due - refunds.merchant_points_reversed
    )
    booked = -ledger[UNRECOVERED_ACCOUNT]
    ok = booked == refunds.unrecovered and refunds.recovered + refunds.unrecovered == (
        refunds.taken_back_due
    )
    detail = (
        f"refunds could not recover {points_unrecovered} points (already released against) "
        f"and {refunds.unrecovered} of give-back (already paid out of the funds), booked "
        f"to {UNRECOVERED_ACCOUNT}" if ok else
        f"{UNRECOVERED_ACCOUNT} holds {ledger[UNRECOVERED_ACCOUNT]}, but refunds recorded "
        f"{refunds.unrecovered} unrecovered"
    )
    return _check(
        "refunds_unrecovered", ok, detail,
        refunds=refunds.refunds, refunded_amount=refunds.amount,
        points_due=refunds.consumer_points_due + refunds.merchant_points_due,
        points_reversed=refunds.consumer_points_reversed + refunds.merchant_points_reversed,
        points_unrecovered=points_unrecovered, coins_reversed=refunds.coins,
        pending_giveback_returned=refunds.pending_giveback,
        giveback_taken_back=refunds.taken_back_due, giveback_recovered=refunds.recovered,
        money_unrecovered=refunds.unrecovered, ledger_unrecovered=booked,
        rewards_kept=refunds.rewards_kept,
    )


async def run_audit(
    session: AsyncSession,
    settings: PointsSettings,
    http: httpx.AsyncClient,
    now: datetime,
) -> AuditReport:
    """RULES 1.7: every check, with its figures; ok only if all hold."""
    # Our books first, then theirs: vouchers and orders can only be ahead of what
    # points has seen, which the checks allow for while events are in flight.
    checks = [
        await _ledger_balanced(session),
        await _pool_funds(session),
        await _positions(session, settings),
        await _giveback(session),
        await _vouchers_released(session),
        await _refunds_unrecovered(session),
    ]
    payouts = await audit_repository.payout_figures(session, limit=SAMPLE)
    seen = await audit_repository.orders_seen(session)
    vouchers, orders = await asyncio.gather(
        fetch_totals(http, "vouchers", settings.vouchers_url, settings.admin_token),
        fetch_totals(http, "orders", settings.orders_url, settings.admin_token),
    )
    checks[5:5] = [
        _payouts_credited(payouts, settings, vouchers, now),
        _orders_tie_out(seen, orders),
    ]
    return AuditReport(
        ok=all(c.ok for c in checks), as_of=now.astimezone(settings.zone), checks=checks
    )
