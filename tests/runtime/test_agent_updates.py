"""The MQTT agent on a real Mosquitto: apply, reject, persist, roll back, survive a broker restart."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from runtime.constants import UPDATE_QUEUE_MAX_BYTES
from runtime.policy import parse_policy
from runtime.state import StateStore
from tests.conftest import start_broker
from tests.ota_support import (
    PREFIX,
    Device,
    Watcher,
    bad_payloads,
    new_key,
    signed_policy,
    update_result,
)


@pytest.fixture
def keys(tmp_path):
    key, pub = new_key(tmp_path)
    other, _ = new_key(tmp_path, "other")
    return key, other, pub


@pytest.fixture
def watcher(broker):
    watching = Watcher(broker.port, f"{PREFIX}/devices/+/status", f"{PREFIX}/devices/+/telemetry")
    yield watching
    watching.close()


@pytest.fixture
def device(tmp_path, broker, keys, watcher):
    key, _, pub = keys
    running = Device(tmp_path, broker.port, key, pub, telemetry_interval=0.2)
    watcher.wait_for(lambda topic, body: body.get("state") == "online")
    yield running
    running.stop()


def file_snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_a_newer_signed_policy_is_applied_persisted_and_reported(device, watcher, keys):
    key = keys[0]
    before = device.store.current_path.read_bytes()
    update = signed_policy(6, key, hidden=16)
    sha = hashlib.sha256(update).hexdigest()
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
    status = watcher.wait_for(update_result(sha))
    assert status["last_update"]["result"] == "applied"
    assert status["last_update"]["version"] == 6
    assert status["policy_version"] == 6 and status["policy_sha256"] == sha
    assert device.slot.active.policy.version == 6 and device.slot.active.policy.hidden == 16
    assert device.store.current_path.read_bytes() == update
    assert device.store.previous_path.read_bytes() == before


def test_fleet_topic_and_telemetry(device, watcher, keys):
    update = signed_policy(7, keys[0])
    watcher.publish(f"{PREFIX}/fleet/policy", update, retain=True)
    status = watcher.wait_for(update_result(hashlib.sha256(update).hexdigest()))
    assert status["last_update"]["result"] == "applied"
    sock = device.agent.client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    sample = watcher.wait_for(lambda topic, body: topic.endswith("/telemetry"), timeout=3)
    assert sample["device_id"] == "dev-1" and sample["policy_version"] == 7
    for field in ("uptime_s", "episodes", "decisions", "overruns", "rejected_updates", "rss_mb"):
        assert field in sample
    # the retained fleet policy is delivered again on reconnect: a quiet no-op, no new status
    watcher.publish(f"{PREFIX}/fleet/policy", update, retain=True)
    time.sleep(0.2)
    assert device.agent.rejected_updates == 0
    watcher.publish(f"{PREFIX}/fleet/policy", b"", retain=True)  # clear the retained message


def test_every_bad_payload_is_rejected_with_its_reason(device, watcher, keys):
    key, other, _ = keys
    cases = bad_payloads(key, other, current=5, max_bytes=device.agent.config.max_payload_bytes)
    assert len(cases) >= 30 and len({data for _, data, _ in cases}) == len(cases)
    files = file_snapshot(device.state_dir)
    running = device.slot.active
    for name, data, fragment in cases:
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", data)
        status = watcher.wait_for(update_result(hashlib.sha256(data).hexdigest()))
        last = status["last_update"]
        assert last["result"] == "rejected", name
        assert fragment in last["reason"], (name, last["reason"])
        assert status["policy_version"] == 5
    assert device.slot.active is running
    assert file_snapshot(device.state_dir) == files
    assert device.agent.rejected_updates == len(cases)
    # and a good one still goes through afterwards
    good = signed_policy(6, key)
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", good)
    status = watcher.wait_for(update_result(hashlib.sha256(good).hexdigest()))
    assert status["last_update"]["result"] == "applied"


def test_a_flood_is_bounded_and_does_not_block(device, watcher, keys):
    junk = [bytes([i]) * (200_000 + i) for i in range(250)]  # 50 MB of garbage
    for data in junk:
        watcher.client.publish(f"{PREFIX}/devices/dev-1/policy", data, qos=0)
    good = signed_policy(9, keys[0])
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", good)
    status = watcher.wait_for(update_result(hashlib.sha256(good).hexdigest()), timeout=10)
    assert status["last_update"]["result"] in ("applied", "rejected")
    deadline = time.monotonic() + 5
    while device.slot.active.policy.version != 9 and time.monotonic() < deadline:
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", good)
        time.sleep(0.05)
    assert device.slot.active.policy.version == 9
    assert device.agent._pending == 0 and device.agent._pending_bytes == 0
    assert 0 < device.agent.peak_pending_bytes <= UPDATE_QUEUE_MAX_BYTES


def test_health_rollback_refuses_the_version_afterwards(tmp_path, broker, keys, watcher):
    key, _, pub = keys
    device = Device(tmp_path, broker.port, key, pub, probation_episodes=3)
    try:
        for _ in range(6):  # the running version's baseline: 500 per episode
            device.agent.on_episode({"return": 500.0})
        bad = signed_policy(6, key, kind="push_right")
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", bad)
        watcher.wait_for(update_result(hashlib.sha256(bad).hexdigest()))
        for episode_return in (300.0, 9.0, 10.0, 11.0):  # the first straddles the swap
            device.agent.on_episode({"return": episode_return})
        status = watcher.wait_for(
            lambda topic, body: (body.get("last_update") or {}).get("result") == "rolled_back"
        )
        assert status["policy_version"] == 5
        assert "mean return 10.0 over 3 episodes" in status["last_update"]["reason"]
        assert "250.0" in status["last_update"]["reason"]
        assert device.slot.active.policy.version == 5
        assert parse_policy(device.store.current_path.read_bytes()).version == 5
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", bad)
        status = watcher.wait_for(update_result(hashlib.sha256(bad).hexdigest()))
        assert "rolled back" in status["last_update"]["reason"]
    finally:
        device.stop()
    # the refusal and the highest version survive a restart
    store = StateStore(tmp_path / "state-dev-1")
    store.load()
    assert 6 in store.refused and store.highest_version == 6
    assert store.current is not None and store.current.policy.version == 5


def test_restart_loads_the_newest_persisted_policy(tmp_path, broker, keys, watcher):
    key, _, pub = keys
    device = Device(tmp_path, broker.port, key, pub)
    update = signed_policy(8, key)
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
    watcher.wait_for(update_result(hashlib.sha256(update).hexdigest()))
    device.stop()
    offline = watcher.wait_for(lambda topic, body: body.get("state") == "offline")
    assert offline["policy_version"] == 8
    again = Device(tmp_path, broker.port, key, pub)  # started with --policy version 5
    try:
        assert again.slot.active.policy.version == 8
        older = signed_policy(7, key)
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", older)
        status = watcher.wait_for(update_result(hashlib.sha256(older).hexdigest()))
        assert "not newer" in status["last_update"]["reason"]
    finally:
        again.stop()


def test_broker_restart_reconnects_resubscribes_and_republishes(tmp_path, keys):
    key, _, pub = keys
    first = start_broker(tmp_path / "broker")
    device = Device(tmp_path, first.port, key, pub)
    try:
        first.stop()
        time.sleep(0.3)
        second = start_broker(tmp_path / "broker2", port=first.port)
        watcher = Watcher(second.port, f"{PREFIX}/devices/+/status")
        try:
            # the new broker has no retained status until the agent republishes it
            online = watcher.wait_for(lambda topic, body: body.get("state") == "online", 10)
            assert online["policy_version"] == 5
            update = signed_policy(6, key)
            watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
            status = watcher.wait_for(update_result(hashlib.sha256(update).hexdigest()))
            assert status["last_update"]["result"] == "applied"
        finally:
            watcher.close()
            device.stop()
            second.stop()
    finally:
        first.stop()


def test_a_state_dir_that_cannot_be_written_rejects_with_a_status(
    device, watcher, keys, monkeypatch
):
    """ENOSPC (a full SD card): the pusher hears why, the old policy keeps running."""
    import errno

    import runtime.state

    key, _, _ = keys

    def full(path, data, mode=0o644):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = file_snapshot(device.state_dir)
    monkeypatch.setattr(runtime.state, "atomic_write", full)
    payload = signed_policy(6, key)
    topic = f"{PREFIX}/devices/dev-1/policy"
    watcher.publish(topic, payload)
    status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
    assert status["last_update"]["result"] == "rejected"
    assert "No space left on device" in status["last_update"]["reason"]
    assert status["policy_version"] == 5 and device.slot.active.policy.version == 5
    assert file_snapshot(device.state_dir)["current.npz"] == before["current.npz"]
    monkeypatch.undo()  # space again: the same update now goes through
    watcher.publish(topic, payload)
    status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
    assert status["last_update"]["result"] == "applied" and status["policy_version"] == 6


def test_clearing_the_retained_fleet_policy_is_not_a_rejection(device, watcher, keys):
    """`mosquitto_pub -r -n -t P/fleet/policy` (deploy guide) reaches online devices as b""."""
    key, _, _ = keys
    watcher.publish(f"{PREFIX}/fleet/policy", b"", retain=True)
    sentinel = signed_policy(6, key)
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", sentinel)  # in order after the clear
    status = watcher.wait_for(update_result(hashlib.sha256(sentinel).hexdigest()))
    assert status["last_update"]["result"] == "applied"
    assert device.agent.rejected_updates == 0
    # an empty payload on the device's own topic is still a bad update
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", b"")
    status = watcher.wait_for(update_result(hashlib.sha256(b"").hexdigest()))
    assert status["last_update"]["result"] == "rejected"
