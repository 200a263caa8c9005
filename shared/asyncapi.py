"""The event catalogue as an AsyncAPI 3 document, for outside subscribers.

    python -m shared.asyncapi > docs/asyncapi.json   (or: make asyncapi)

A test keeps the committed document equal to what the models say.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.events import ALL_TOPICS, EVENT_MODELS, Envelope

PRODUCERS = {topic: topic.split(".")[0] for topic in ALL_TOPICS}


def build() -> dict[str, Any]:
    mode: Literal["serialization"] = "serialization"
    models: list[tuple[type[BaseModel], Literal["serialization"]]] = [
        (m, mode) for m in EVENT_MODELS.values()
    ]
    models.append((Envelope, mode))
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schemas.get("$defs", {}))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {
        topic: {"address": topic, "description": f"Events produced by the {PRODUCERS[topic]} "
                "service, keyed so that one member's events stay in order.", "messages": {}}
        for topic in ALL_TOPICS
    }
    for (event_type, version), model in EVENT_MODELS.items():
        name = f"{event_type}.v{version}"
        messages[name] = {
            "name": event_type,
            "title": f"{event_type} (version {version})",
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "version": {"const": version},
                            "data": {"$ref": f"#/components/schemas/{model.__name__}"},
                        },
                    },
                ]
            },
        }
        channels[model.TOPIC]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    operations = {
        f"receive-{topic}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"Subscribe to {topic}. Delivery is at least once: de-duplicate on "
            "event_id (our own consumers keep an inbox of processed event ids).",
        }
        for topic in ALL_TOPICS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Green points platform events",
            "version": "1.0.0",
            "description": "Every event is an envelope {event_id, type, version, occurred_at, "
            "producer, key, data}. Money is a string with 2 decimals. A new field is an "
            "additive change; a breaking change is a new version of the type.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
