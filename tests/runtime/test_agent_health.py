"""Health rollback on a real broker when the running policy has finished only one episode."""

from __future__ import annotations

import hashlib
import logging
import signal
import time

from tests.ota_support import (
    PREFIX,
    Device,
    RuntimeProcess,
    Watcher,
    new_key,
    signed_policy,
    update_result,
)


def test_a_bad_update_after_one_episode_is_rolled_back_without_rollback_below(tmp_path, broker):
    """The loop's first episode is the baseline: push-left after it is undone (defaults only)."""
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    # 500 Hz: a balanced episode (500 steps) takes 1 s, a push-left one about 20 ms
    device = RuntimeProcess(tmp_path, broker.port, pub, policy, "--hz", "500")
    try:
        watcher.wait_for(lambda t, b: b.get("state") == "online", timeout=15)
        deadline = time.monotonic() + 15
        while not device.episodes() and time.monotonic() < deadline:
            time.sleep(0.005)
        bad = signed_policy(6, key, kind="push_left")
        watcher.publish(f"{PREFIX}/devices/pi-1/policy", bad)
        applied = watcher.wait_for(update_result(hashlib.sha256(bad).hexdigest()))
        assert applied["last_update"]["result"] == "applied"
        assert applied["last_update"]["reason"] is None  # a baseline: it will be judged
        status = watcher.wait_for(
            lambda t, b: (b.get("last_update") or {}).get("result") == "rolled_back", 10
        )
        assert status["policy_version"] == 5 and status["last_update"]["version"] == 6
        assert (
            "below 250.0 (half of the previous policy's mean 500.0)"
            in (status["last_update"]["reason"])
        )
    finally:
        device.kill(signal.SIGTERM)
        watcher.close()
    assert device.process.returncode == 0, device.log()[-2000:]
    episodes = device.episodes()
    before = [e for e in episodes[: [e["policy_version"] for e in episodes].index(6)]]
    assert [e["return"] for e in before] == [500.0]  # exactly one episode before the update
    assert "rolled back policy version 6 to version 5" in device.log()


def test_an_update_with_no_baseline_says_so_in_its_status_and_log(tmp_path, broker, caplog):
    caplog.set_level(logging.WARNING, logger="runtime.updates")
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = Device(tmp_path, broker.port, key, pub)  # no episode has finished
    try:
        update = signed_policy(6, key, kind="push_left")
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
        status = watcher.wait_for(update_result(hashlib.sha256(update).hexdigest()))
    finally:
        device.stop()
        watcher.close()
    last = status["last_update"]
    assert last["result"] == "applied" and status["policy_version"] == 6
    assert last["reason"].startswith("health check skipped: no baseline")
    assert "--rollback-below" in last["reason"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "runtime.updates"]
    assert len(warnings) == 1 and warnings[0].startswith("version 6: health check skipped")
    for _ in range(8):  # and no verdict follows, whatever it scores
        device.agent.on_episode({"return": 9.0})
    assert device.slot.active.policy.version == 6
