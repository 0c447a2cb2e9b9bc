"""`python -m runtime --broker ...` as a process: updates while balancing, kills, wills, restarts."""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time

import pytest

from export.push import push
from runtime.mqtt import broker_settings
from runtime.signing import load_public_key
from runtime.state import StateStore
from tests.conftest import start_broker
from tests.ota_support import (
    PREFIX,
    RuntimeProcess,
    Watcher,
    bad_payloads,
    new_key,
    signed_policy,
    update_result,
)


@pytest.fixture
def signing(tmp_path):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    return key, pub, policy


def online(version: int | None = None):
    def match(topic: str, body: dict) -> bool:
        return body.get("state") == "online" and (
            version is None or body.get("policy_version") == version
        )

    return match


def test_updates_apply_and_bad_payloads_bounce_while_the_loop_balances(tmp_path, broker, signing):
    key, pub, policy = signing
    other, _ = new_key(tmp_path, "other")
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status", f"{PREFIX}/devices/+/telemetry")
    device = RuntimeProcess(
        tmp_path, broker.port, pub, policy, "--hz", "500", "--telemetry-interval", "0.2"
    )
    try:
        watcher.wait_for(online(5), timeout=15)
        settings = broker_settings(broker.url)
        update = signed_policy(6, key, hidden=16)
        [outcome] = push(update, settings, devices=["pi-1"], prefix=PREFIX, timeout=10)
        assert (outcome.result, outcome.device) == ("applied", "pi-1"), outcome
        before = watcher.wait_for(lambda t, b: t.endswith("/telemetry"))["decisions"]
        cases = bad_payloads(key, other, current=6, max_bytes=1024 * 1024)
        for name, data, fragment in cases:
            watcher.publish(f"{PREFIX}/devices/pi-1/policy", data)
            status = watcher.wait_for(update_result(hashlib.sha256(data).hexdigest()))
            assert status["last_update"]["result"] == "rejected", name
            assert fragment in status["last_update"]["reason"], (name, status)
            assert status["policy_version"] == 6
        sample = watcher.wait_for(lambda t, b: t.endswith("/telemetry"))
        assert sample["decisions"] > before and sample["rejected_updates"] == len(cases)
        assert sample["policy_version"] == 6
        # the broker restarts: the device comes back, republishes status, takes updates
        watcher.close()
        broker.stop()
        time.sleep(0.2)
        restarted = start_broker(tmp_path / "broker2", port=broker.port)
        broker.process = restarted.process
        watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
        watcher.wait_for(online(6), timeout=10)
        update = signed_policy(7, key)
        [outcome] = push(update, settings, devices=["pi-1"], prefix=PREFIX, timeout=10)
        assert outcome.result == "applied", outcome
    finally:
        device.kill(signal.SIGTERM)
        watcher.close()
    assert device.process.returncode == 0, device.stderr.read_text()[-2000:]
    episodes = device.episodes()
    assert episodes and all(e["return"] == 500 for e in episodes), episodes
    assert {e["policy_version"] for e in episodes} <= {5, 6, 7}


def test_health_rollback_and_the_will_after_a_kill(tmp_path, broker, signing):
    key, pub, policy = signing
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = RuntimeProcess(
        tmp_path, broker.port, pub, policy, "--hz", "2000", "--probation-episodes", "3"
    )
    try:
        watcher.wait_for(online(5), timeout=15)
        deadline = time.monotonic() + 20
        while len(device.episodes()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # a baseline for the running policy: 500 per episode
        bad = signed_policy(6, key, kind="push_right")
        settings = broker_settings(broker.url)
        [outcome] = push(bad, settings, devices=["pi-1"], prefix=PREFIX, timeout=10)
        assert outcome.result == "applied"
        status = watcher.wait_for(
            lambda t, b: (b.get("last_update") or {}).get("result") == "rolled_back", 10
        )
        assert status["policy_version"] == 5 and status["last_update"]["version"] == 6
        assert "below 250.0" in status["last_update"]["reason"]
        [outcome] = push(bad, settings, devices=["pi-1"], prefix=PREFIX, timeout=10)
        assert outcome.result == "rejected" and "rolled back" in outcome.reason
        device.kill(signal.SIGKILL)
        offline = watcher.wait_for(lambda t, b: b.get("state") == "offline", timeout=10)
        assert offline["device_id"] == "pi-1"
    finally:
        device.kill()
        watcher.close()
    store = StateStore(tmp_path / "state")
    store.load()
    assert store.current is not None and store.current.policy.version == 5
    assert store.refused == {6}


def test_fifty_kills_while_updates_stream_never_lose_or_regress(tmp_path, broker, signing):
    key, pub, policy = signing
    public_key = load_public_key(pub)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    rng = random.Random(5)
    stop = threading.Event()
    acknowledged = [5]  # versions the device reported applied (durable before it says so)

    def stream() -> None:
        version = 6
        while not stop.is_set():
            watcher.client.publish(f"{PREFIX}/devices/pi-1/policy", signed_policy(version, key))
            version += 1
            time.sleep(rng.uniform(0.002, 0.02))

    publisher = threading.Thread(target=stream, daemon=True)
    publisher.start()
    floor = 5
    try:
        for _ in range(50):
            device = RuntimeProcess(tmp_path, broker.port, pub, policy, "--hz", "200")
            try:
                # the restarted process's first status (no update handled yet) names the
                # policy it loaded: the persisted one, never older (--policy is version 5)
                first = watcher.wait_for(
                    lambda t, b: b.get("state") == "online" and b.get("last_update") is None,
                    timeout=15,
                )
                assert first["policy_version"] >= floor, (first, floor)
                time.sleep(rng.uniform(0.0, 0.15))
            finally:
                device.kill(signal.SIGKILL)
            for _, body in watcher.drain():  # what the device acknowledged before dying
                last = body.get("last_update") or {}
                if last.get("result") == "applied":
                    acknowledged.append(last["version"])
            store = StateStore(tmp_path / "state", public_key=public_key)
            store.load()
            assert store.current is not None, "no valid current.npz after a kill"
            version = store.current.policy.version
            assert version >= max(acknowledged), (version, max(acknowledged))
            assert version >= floor
            floor = version
    finally:
        stop.set()
        publisher.join(5)
        watcher.close()
    assert floor > 6  # updates did land between the kills
    # a restart after a SIGKILL takes over the dead run's connection: never taken for a twin
    assert "another runtime is connected" not in device.log()
