"""Synchronous calls to other services, made only while a POS is waiting for the answer:
"is this consumer a member?" (referrals) and "hold these vouchers" (vouchers, RULES 1.6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx

from services.orders.settings import OrdersSettings
from shared.errors import Conflict, ServiceUnavailable

log = logging.getLogger(__name__)


class VoucherHoldRefused(Conflict):
    """Vouchers refused the hold: not enough vouchers, or the hold id is taken."""

    error = "insufficient_vouchers"


def _admin_headers(settings: OrdersSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    """The (error code, detail) of another service's `{"error", "detail"}` answer."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, response.text[:500]
    if not isinstance(body, dict):
        return None, str(body)[:500]
    code = body.get("error")
    detail = body.get("detail")
    return (code if isinstance(code, str) else None), str(detail if detail else body)[:500]


@dataclass(frozen=True)
class MemberLookup:
    member_id: UUID
    kind: str


async def lookup_member(
    http: httpx.AsyncClient, settings: OrdersSettings, member_id: UUID
) -> MemberLookup | None:
    """Ask referrals whether *member_id* is a member: None if not, 503 if it cannot say."""
    url = f"{settings.referrals_url.rstrip('/')}/v1/members/{member_id}"
    try:
        response = await http.get(url, headers=_admin_headers(settings))
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot check consumer {member_id} with the referrals service ({exc!r}); "
            "retry the same order later, it is idempotent"
        ) from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ServiceUnavailable(
            f"the referrals service answered {response.status_code} when checking consumer "
            f"{member_id}; retry the same order later, it is idempotent"
        )
    kind: Any = None
    try:
        body = response.json()
        kind = body.get("kind") if isinstance(body, dict) else None
    except ValueError:
        pass
    return MemberLookup(member_id, kind if kind in ("consumer", "merchant") else "consumer")


async def hold_vouchers(
    http: httpx.AsyncClient,
    settings: OrdersSettings,
    *,
    hold_id: UUID,
    member_id: UUID,
    amount: Decimal,
    merchant_id: UUID,
    pos_order_id: str,
) -> None:
    """RULES 1.6: hold *amount* of the consumer's vouchers before the order is created."""
    url = f"{settings.vouchers_url.rstrip('/')}/v1/holds"
    body = {
        "hold_id": str(hold_id),
        "member_id": str(member_id),
        "amount": str(amount),
        "merchant_id": str(merchant_id),
        "pos_order_id": pos_order_id,
    }
    try:
        response = await http.post(url, json=body, headers=_admin_headers(settings))
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot hold vouchers with the vouchers service ({exc!r}); nothing was recorded, "
            "retry the same order later"
        ) from exc
    if response.is_success:
        _ensure_hold_is_open(response, hold_id, pos_order_id)
        return
    code, detail = _error_of(response)
    if response.status_code in (404, 409, 422):
        refused = VoucherHoldRefused(
            f"the vouchers service refused to hold {amount} vouchers of consumer {member_id}: "
            f"{detail}; no order was recorded (pay more in cash or lower voucher_amount)"
        )
        if code and response.status_code == 409:
            refused.error = code
        raise refused
    raise ServiceUnavailable(
        f"the vouchers service answered {response.status_code} to the voucher hold ({detail}); "
        "nothing was recorded, retry the same order later"
    )


def _ensure_hold_is_open(response: httpx.Response, hold_id: UUID, pos_order_id: str) -> None:
    """A replayed hold id may find its hold already released or expired: unusable."""
    try:
        body: Any = response.json()
    except ValueError:
        return
    state = body.get("status") if isinstance(body, dict) else None
    # "captured" only happens when a concurrent copy of this order was recorded first;
    # the insert then finds that order and answers it.
    if state in ("released", "expired"):
        refused = VoucherHoldRefused(
            f"the voucher hold {hold_id} of order {pos_order_id} was {state} before the order "
            "could be recorded; send the sale again under a new order_id"
        )
        refused.error = "voucher_hold_closed"
        raise refused


async def release_voucher_hold(
    http: httpx.AsyncClient, settings: OrdersSettings, hold_id: UUID
) -> None:
    """Best effort: a hold nobody releases expires by itself in the vouchers service."""
    url = f"{settings.vouchers_url.rstrip('/')}/v1/holds/{hold_id}/release"
    try:
        response = await http.post(url, headers=_admin_headers(settings))
    except httpx.HTTPError as exc:
        log.warning("could not release voucher hold %s: %r (it will expire)", hold_id, exc)
        return
    if not response.is_success:
        log.warning(
            "releasing voucher hold %s answered %s (it will expire)", hold_id, response.status_code
        )
