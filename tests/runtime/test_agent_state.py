"""The state directory under damage: anti-rollback after a damaged current.npz, junk in the
directory, and a rollback the disk refuses (real Mosquitto)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import time
from pathlib import Path

from tests.ota_support import (
    PREFIX,
    Device,
    Watcher,
    _entries,
    raw_npz,
    signed_policy,
    update_result,
)
from tests.runtime.test_agent_payloads import meta_entry


def push(watcher: Watcher, payload: bytes, device: str = "dev-1") -> dict:
    watcher.publish(f"{PREFIX}/devices/{device}/policy", payload)
    return watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))["last_update"]


def highest_recorded(state_dir: Path, version: int, timeout: float = 5.0) -> bool:
    """state.json names `version` (written just after the applied status goes out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((state_dir / "state.json").read_text())["highest_version"] == version:
                return True
        time.sleep(0.01)
    return False


def test_anti_rollback_survives_a_damaged_current_npz(tmp_path, broker, keys, watcher):
    key, pub = keys
    device = Device(tmp_path, broker.port, key, pub)
    try:
        for version in (7, 9):
            assert push(watcher, signed_policy(version, key))["result"] == "applied"
    finally:
        device.stop()
    assert highest_recorded(device.state_dir, 9)
    current = device.state_dir / "current.npz"
    current.write_bytes(current.read_bytes()[:100])  # bit rot, a bad SD card
    again = Device(tmp_path, broker.port, key, pub)  # falls back to previous.npz (version 7)
    try:
        assert again.slot.active.policy.version == 7
        last = push(watcher, signed_policy(8, key))  # older than the 9 accepted before
        assert last["result"] == "rejected" and "not newer than version 9" in last["reason"]
        # the lost version itself may be restored: not older than anything accepted here
        assert push(watcher, signed_policy(9, key))["result"] == "applied"
        last = push(watcher, signed_policy(8, key))
        assert last["result"] == "rejected" and "not newer than version 9" in last["reason"]
    finally:
        again.stop()


def test_a_state_directory_with_junk_in_it_still_starts_and_persists(
    tmp_path, broker, keys, watcher
):
    key, pub = keys
    state_dir = tmp_path / "state-dev-1"
    state_dir.mkdir()
    (state_dir / "current.npz").mkdir()  # a directory where a file belongs
    (state_dir / "state.json").mkdir()
    (state_dir / ".left-by-someone.tmp").mkdir()  # looks like a stale temporary
    (state_dir / "previous.npz").write_bytes(raw_npz(_entries(8, meta=meta_entry(x="\ud800"))))
    device = Device(tmp_path, broker.port, key, pub)  # used to refuse to start (exit 2)
    try:
        assert device.slot.active.policy.version == 5
        assert push(watcher, signed_policy(6, key))["result"] == "applied"
        assert (state_dir / "current.npz").read_bytes() == signed_policy(6, key)
        assert highest_recorded(state_dir, 6)
        moved = sorted(p.name.split("-")[0] for p in state_dir.glob("*.unusable-*"))
        assert moved == ["current.npz.unusable", "state.json.unusable"]
        assert (state_dir / ".left-by-someone.tmp").is_dir()  # not ours to delete
    finally:
        device.stop()


def test_a_rollback_the_disk_refuses_still_takes_the_bad_policy_off(
    tmp_path, broker, keys, watcher, monkeypatch
):
    key, pub = keys
    device = Device(tmp_path, broker.port, key, pub, probation_episodes=1, rollback_below=100.0)
    try:
        bad = signed_policy(6, key, kind="push_left")
        assert push(watcher, bad)["result"] == "applied"

        def disk_full() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(device.store, "_write_state_file", disk_full)
        device.agent.on_episode({"return": 9.0})  # straddles the swap: not judged
        device.agent.on_episode({"return": 9.0})
        status = watcher.wait_for(
            lambda t, b: (b.get("last_update") or {}).get("result") == "rolled_back"
        )
        assert status["policy_version"] == 5 and device.slot.active.policy.version == 5
        assert "not persisted" in status["last_update"]["reason"]
        assert "No space left on device" in status["last_update"]["reason"]
    finally:
        device.stop()


def test_an_inline_agent_records_the_highest_version_in_poll(tmp_path, broker, keys):
    """Inline agents (many per thread: bench/mqtt.py's fleet) leave the state.json write to
    poll(), so one device's extra fsyncs do not delay the next device's update."""
    from runtime.agent import Agent, AgentConfig
    from runtime.mqtt import broker_settings
    from runtime.policy import parse_policy
    from runtime.signing import load_public_key
    from runtime.slot import PolicySlot
    from runtime.state import StateStore, Stored
    from tests.ota_support import activate

    key, pub = keys
    store = StateStore(tmp_path / "state", public_key=load_public_key(pub))
    store.load()
    initial = signed_policy(5, key)
    store.startup_choice(Stored(parse_policy(initial), initial))
    agent = Agent(
        AgentConfig(device_id="inline-1", topic_prefix=PREFIX, telemetry_interval=3600),
        broker_settings(broker.url),
        PolicySlot(activate(parse_policy(initial))),
        activate,
        store,
        public_key=load_public_key(pub),
        inline=True,
    )
    agent._handle_payload(f"{PREFIX}/devices/inline-1/policy", signed_policy(7, key), False)
    assert agent.slot.active.policy.version == 7
    assert json.loads(store.state_path.read_text())["highest_version"] == 5
    agent.poll()
    assert json.loads(store.state_path.read_text())["highest_version"] == 7


def test_a_start_on_a_full_disk_still_runs_when_nothing_else_must_be_written(
    tmp_path, keys, monkeypatch
):
    """The start-up copy of the highest version into state.json is a backup: ENOSPC there is a
    warning, not a refusal to start (current.npz already holds the policy)."""
    from runtime.policy import parse_policy
    from runtime.signing import load_public_key
    from runtime.state import StateStore, Stored

    key, pub = keys
    initial = signed_policy(5, key)
    first = StateStore(tmp_path / "state", public_key=load_public_key(pub))
    first.load()
    first.startup_choice(Stored(parse_policy(initial), initial))
    (tmp_path / "state" / "state.json").unlink()  # no state.json: as an older runtime left it

    def disk_full(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StateStore, "_write_state_file", disk_full)
    again = StateStore(tmp_path / "state", public_key=load_public_key(pub))
    again.load()
    chosen = again.startup_choice(Stored(parse_policy(initial), initial))
    assert chosen.policy.version == 5 and again.highest_version == 5
