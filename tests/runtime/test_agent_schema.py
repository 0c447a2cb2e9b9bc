"""The JSON schemas of docs/ota.md for status and telemetry hold for real messages from an agent."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ota_support import PREFIX, Device, Watcher, new_key, signed_policy, update_result

OTA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "ota.md"
JSON_TYPES = {
    "object": dict,
    "string": str,
    "integer": int,
    "number": (int, float),
    "null": type(None),
    "array": list,
    "boolean": bool,
}


def documented_schemas() -> dict[str, dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", OTA_PAGE.read_text(encoding="utf-8"), re.S)
    schemas = [json.loads(block) for block in blocks if '"$schema"' in block]
    return {schema["title"]: schema for schema in schemas}


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in `value` breaks `schema` (the keywords the documented schemas use), and undocumented keys."""
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not problems(value, s, where)]
        return [] if len(matching) == 1 else [f"{where}: matches {len(matching)} of oneOf"]
    found = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        kinds = tuple(JSON_TYPES[name] for name in names)
        is_bool = isinstance(value, bool) and "boolean" not in names
        if not isinstance(value, kinds) or is_bool:
            return [f"{where}: {value!r} is not {names}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{where}: {value!r} < {schema['minimum']}")
    if isinstance(value, dict) and "properties" in schema:
        missing = set(schema.get("required", ())) - set(value)
        extra = set(value) - set(schema["properties"])
        found += [f"{where}: missing {sorted(missing)}"] if missing else []
        found += [f"{where}: undocumented {sorted(extra)}"] if extra else []
        for key, sub in schema["properties"].items():
            if key in value:
                found += problems(value[key], sub, f"{where}.{key}")
    return found


def test_the_validator_catches_drift():
    status = documented_schemas()["reinforce-edge device status"]
    assert problems({"state": "asleep"}, status)
    assert problems({"state": "online", "surprise": 1}, status)


def test_real_status_and_telemetry_match_the_documented_schemas(tmp_path, broker):
    schemas = documented_schemas()
    status_schema = schemas["reinforce-edge device status"]
    telemetry_schema = schemas["reinforce-edge device telemetry"]
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status", f"{PREFIX}/devices/+/telemetry")
    device = Device(tmp_path, broker.port, key, pub, telemetry_interval=0.1)
    try:
        messages = [watcher.wait_for(lambda topic, body: body.get("state") == "online")]
        for payload in (signed_policy(6, key), b"junk", signed_policy(3, key)):
            watcher.publish(f"{PREFIX}/devices/dev-1/policy", payload)
            messages.append(watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest())))
        messages.append(watcher.wait_for(lambda topic, body: topic.endswith("/telemetry")))
    finally:
        device.stop()
    messages.append(watcher.wait_for(lambda topic, body: body.get("state") == "offline"))
    watcher.close()
    results = [m["last_update"]["result"] for m in messages[1:4]]
    assert results == ["applied", "rejected", "rejected"]
    for body in messages:
        schema = telemetry_schema if "uptime_s" in body else status_schema
        assert problems(body, schema) == [], body


@pytest.mark.parametrize(
    "title", ["reinforce-edge device status", "reinforce-edge device telemetry"]
)
def test_every_documented_field_is_required(title):
    schema = documented_schemas()[title]
    assert set(schema["required"]) == set(schema["properties"])


def test_the_status_says_when_the_probation_passes_or_fails(tmp_path, broker):
    """`probation` is pending after the update, then passed (published again) or failed."""
    status_schema = documented_schemas()["reinforce-edge device status"]
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = Device(tmp_path, broker.port, key, pub, probation_episodes=2, rollback_below=100.0)
    try:
        online = watcher.wait_for(lambda topic, body: body.get("state") == "online")
        assert online["probation"] is None  # nothing applied in this process
        seen = [online]
        for version, episode_return, verdict in ((6, 500.0, "passed"), (7, 9.0, "failed")):
            update = signed_policy(version, key)
            watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
            applied = watcher.wait_for(update_result(hashlib.sha256(update).hexdigest()))
            assert applied["probation"] == {"version": version, "state": "pending"}
            for _ in range(3):  # the first straddles the swap
                device.agent.on_episode({"return": episode_return})
            judged = watcher.wait_for(
                lambda topic, body, v=version: (
                    (body.get("probation") or {}).get("state") not in (None, "pending")
                    and body["probation"]["version"] == v
                )
            )
            assert judged["probation"] == {"version": version, "state": verdict}
            seen += [applied, judged]
    finally:
        device.stop()
        watcher.close()
    assert seen[-1]["last_update"]["result"] == "rolled_back" and seen[-1]["policy_version"] == 6
    assert seen[2]["policy_version"] == 6 and seen[2]["last_update"]["result"] == "applied"
    for body in seen:
        assert problems(body, status_schema) == [], body
