"""The orders service against a real database, with fake referrals and vouchers services
served through `httpx.MockTransport` (their real behaviour is tested in their own suites
and end to end)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import SQLModel, col, func, select

from services.orders.app import create_app
from services.orders.models import KnownMember, Merchant, Order, Refund
from services.orders.settings import OrdersSettings
from shared.auth import issue_member_token
from shared.clock import FixedClock
from shared.db import Database
from shared.events import Envelope
from shared.outbox import OutboxMessage

T0 = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
REFERRALS = "http://referrals.test"
VOUCHERS = "http://vouchers.test"


@dataclass
class FakePeers:
    """Referrals (who is a member) and vouchers (balances and holds), in memory."""

    admin_token: str
    members: set[UUID] = field(default_factory=set)
    balances: dict[UUID, Decimal] = field(default_factory=dict)
    holds: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    hold_calls: list[dict[str, Any]] = field(default_factory=list)
    release_calls: list[UUID] = field(default_factory=list)
    member_lookups: list[UUID] = field(default_factory=list)
    referrals_down: bool = False
    vouchers_down: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.admin_token}":
            return httpx.Response(401, json={"error": "unauthorized", "detail": "admin only"})
        url = str(request.url)
        if url.startswith(REFERRALS):
            if self.referrals_down:
                raise httpx.ConnectError("referrals is down", request=request)
            return self._referrals(request)
        if url.startswith(VOUCHERS):
            if self.vouchers_down:
                raise httpx.ConnectError("vouchers is down", request=request)
            return self._vouchers(request)
        return httpx.Response(404)

    def _referrals(self, request: httpx.Request) -> httpx.Response:
        member_id = UUID(request.url.path.rsplit("/", 1)[-1])
        self.member_lookups.append(member_id)
        if member_id not in self.members:
            return httpx.Response(404, json={"error": "not_found", "detail": "no such member"})
        return httpx.Response(200, json={"member_id": str(member_id), "kind": "consumer"})

    def _vouchers(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/holds" and request.method == "POST":
            body = json.loads(request.content)
            self.hold_calls.append(body)
            hold_id, amount = UUID(body["hold_id"]), Decimal(body["amount"])
            if hold_id in self.holds:
                if Decimal(self.holds[hold_id]["amount"]) != amount:
                    return httpx.Response(
                        409, json={"error": "conflict", "detail": "hold id taken"}
                    )
                return httpx.Response(200, json=self.holds[hold_id])
            member = UUID(body["member_id"])
            balance = self.balances.get(member, Decimal("0"))
            if balance < amount:
                return httpx.Response(
                    409,
                    json={
                        "error": "insufficient_vouchers",
                        "detail": f"balance {balance} is less than {amount}",
                    },
                )
            self.balances[member] = balance - amount
            self.holds[hold_id] = {**body, "status": "held"}
            return httpx.Response(201, json=self.holds[hold_id])
        if path.endswith("/release") and request.method == "POST":
            hold_id = UUID(path.split("/")[-2])
            self.release_calls.append(hold_id)
            hold = self.holds[hold_id]
            if hold["status"] == "held":
                hold["status"] = "released"
                member = UUID(hold["member_id"])
                self.balances[member] += Decimal(hold["amount"])
            return httpx.Response(200, json=hold)
        return httpx.Response(404)


@dataclass
class MerchantHandle:
    merchant_id: UUID
    api_key: str
    member_token: str

    @property
    def pos(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    peers: FakePeers
    clock: FixedClock
    settings: OrdersSettings

    @property
    def db(self) -> Database:
        db: Database = self.app.state.db
        return db

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.admin_token}"}

    def member_auth(self, member_id: UUID) -> dict[str, str]:
        token = issue_member_token(self.settings, member_id)
        return {"Authorization": f"Bearer {token}"}

    async def merchant(self, name: str = "Green Grocer", rate: str = "0.20") -> MerchantHandle:
        response = await self.client.post(
            "/v1/merchants", json={"name": name, "giveback_rate": rate}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return MerchantHandle(UUID(body["merchant_id"]), body["api_key"], body["member_token"])

    def consumer(self, vouchers: str = "0") -> UUID:
        """A member that referrals knows (and, with vouchers, a voucher balance)."""
        member_id = uuid.uuid4()
        self.peers.members.add(member_id)
        self.peers.balances[member_id] = Decimal(vouchers)
        return member_id

    async def order(
        self,
        merchant: MerchantHandle,
        consumer_id: UUID,
        amount: str = "1000.00",
        *,
        order_id: str = "T1-0001",
        voucher_amount: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "order_id": order_id,
            "consumer_id": str(consumer_id),
            "amount": amount,
        }
        if voucher_amount is not None:
            body["voucher_amount"] = voucher_amount
        return await self.client.post("/v1/orders", json=body, headers=merchant.pos)

    async def refund(
        self, merchant: MerchantHandle, order_id: str, refund_id: str, amount: str
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/orders/{order_id}/refunds",
            json={"refund_id": refund_id, "amount": amount},
            headers=merchant.pos,
        )

    async def count(self, model: type[SQLModel]) -> int:
        async with self.db.read() as session:
            return (await session.exec(select(func.count()).select_from(model))).one()

    async def events(self, event_type: str | None = None) -> list[Envelope]:
        async with self.db.read() as session:
            rows = (await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))).all()
        envelopes = [Envelope.model_validate_json(r.payload) for r in rows]
        return [e for e in envelopes if event_type is None or e.type == event_type]

    async def snapshot(self) -> tuple[int, int, int, int, int]:
        """Counts of everything a bad request must leave untouched."""
        return (
            await self.count(Merchant),
            await self.count(Order),
            await self.count(Refund),
            await self.count(KnownMember),
            await self.count(OutboxMessage),
        )


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    settings = OrdersSettings(
        database_url=database_url,
        kafka_enabled=False,
        referrals_url=REFERRALS,
        vouchers_url=VOUCHERS,
    )
    peers = FakePeers(admin_token=settings.admin_token)
    clock = FixedClock(T0)
    app = create_app(
        settings, schema="create", clock=clock, http_transport=httpx.MockTransport(peers.handle)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield Harness(app, client, peers, clock, settings)
