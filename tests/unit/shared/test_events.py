"""The event contracts: envelopes round-trip, money stays exact, the catalogue is documented."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shared import asyncapi
from shared.events import (
    UPCASTERS,
    Envelope,
    OrderCompleted,
    UnknownEventType,
    parse_event,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"


def order_completed() -> OrderCompleted:
    return OrderCompleted(
        order_id=uuid.uuid4(), pos_order_id="A-1", merchant_id=uuid.uuid4(),
        consumer_id=uuid.uuid4(), amount=Decimal("1000.00"), voucher_amount=Decimal("0"),
        cash_amount=Decimal("1000.00"), giveback_rate=Decimal("0.20"),
        completed_at=datetime(2024, 3, 15, tzinfo=UTC),
    )


def test_envelope_round_trips_through_json_with_exact_money() -> None:
    event = order_completed()
    wire = event.envelope(producer="orders").model_dump_json()

    assert '"amount":"1000.00"' in wire  # money travels as a string, never a float
    parsed = parse_event(Envelope.model_validate_json(wire))
    assert parsed == event
    assert isinstance(parsed, OrderCompleted)
    assert parsed.amount == Decimal("1000.00")


def test_key_keeps_one_consumers_events_on_one_partition() -> None:
    event = order_completed()
    assert event.envelope(producer="orders").key == str(event.consumer_id)


def test_old_versions_are_upcast_and_unknown_ones_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    event = order_completed()
    v0 = event.envelope(producer="orders").model_copy(update={"version": 0})
    with pytest.raises(UnknownEventType):
        parse_event(v0)

    def from_v0(data: dict[str, object]) -> dict[str, object]:
        return {**data, "pos_order_id": "upcast"}

    monkeypatch.setitem(UPCASTERS, ("order.completed", 0), from_v0)
    upcast = parse_event(v0)
    assert isinstance(upcast, OrderCompleted)
    assert upcast.pos_order_id == "upcast"


def test_published_asyncapi_document_matches_the_models() -> None:
    assert DOC.read_text() == asyncapi.render(), "run `make asyncapi` and commit docs/"
