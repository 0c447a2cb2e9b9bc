"""Two runtimes with one --device-id are reported (one ERROR line), and keep controlling."""

from __future__ import annotations

import logging
import os
import signal
import time

from tests.conftest import free_port, start_broker
from tests.ota_support import PREFIX, Device, RuntimeProcess, Watcher, new_key, signed_policy

TWIN_LINE = "another runtime is connected with device id"


def twin_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "runtime.agent" and TWIN_LINE in r.getMessage()]


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_two_agents_with_one_device_id_are_reported_once(tmp_path, broker, caplog):
    caplog.set_level(logging.INFO, logger="runtime.agent")
    key, pub = new_key(tmp_path)
    first = Device(tmp_path / "a", broker.port, key, pub)
    second = Device(tmp_path / "b", broker.port, key, pub)
    try:
        assert first.agent.instance != second.agent.instance
        agents = (first.agent, second.agent)
        assert wait_until(lambda: all(a.duplicate_reported for a in agents), 8)
        time.sleep(1.5)  # the two keep taking the connection from each other
    finally:
        second.stop()
        first.stop()
    lines = twin_lines(caplog)
    assert len(lines) == 2 and all(r.levelno == logging.ERROR for r in lines)  # one each
    message = lines[0].getMessage()
    assert "'dev-1'" in message and "give each device its own --device-id" in message
    assert "\n" not in message
    # once reported, the fight's reconnects are not a warning line every second each
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(noisy) <= 2 + 2 * 4, [r.getMessage() for r in noisy]


def test_a_restart_or_a_power_cut_is_not_a_twin(tmp_path, broker, caplog):
    caplog.set_level(logging.INFO, logger="runtime.agent")
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    before = Device(tmp_path, broker.port, key, pub)
    before.stop()  # a clean restart: "offline" of the old instance is retained
    after = Device(tmp_path, broker.port, key, pub)
    # a power cut: the network thread dies, the broker still holds the connection open
    after.agent.client.loop_stop()
    rebooted = Device(tmp_path, broker.port, key, pub)  # takes the connection over
    try:
        online = watcher.wait_for(
            lambda t, b: b.get("state") == "online" and b["instance"] == rebooted.agent.instance
        )
        assert online["device_id"] == "dev-1"
        update = signed_policy(6, key)  # a round trip on the device's topics, then look
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
        assert wait_until(lambda: rebooted.slot.active.policy.version == 6, 5)
        time.sleep(1.5)
    finally:
        rebooted.stop()
        after.agent.connected.clear()  # its connection is gone: no goodbye to send
        after.stop()
        watcher.close()
    assert not rebooted.agent.duplicate_reported and not twin_lines(caplog)


def test_without_read_access_to_its_status_the_dropped_connections_tell(
    tmp_path, caplog, monkeypatch
):
    """The deployed ACL lets a device write its status, not read it: the fallback signal."""
    import runtime.agent

    monkeypatch.setattr(runtime.agent, "SHORT_CONNECTIONS_FOR_TWIN", 2)  # 4 take 4-6 s more
    caplog.set_level(logging.INFO, logger="runtime.agent")
    acl = tmp_path / "acl"
    acl.write_text(
        f"topic write {PREFIX}/devices/+/status\n"
        f"topic write {PREFIX}/devices/+/telemetry\n"
        f"topic read {PREFIX}/devices/+/policy\n"
        f"topic read {PREFIX}/fleet/policy\n"
    )
    port = free_port()
    root = "user root\n" if os.geteuid() == 0 else ""  # else mosquitto cannot read tmp_path
    broker = start_broker(
        tmp_path / "broker",
        f"{root}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"acl_file {acl}\n",
        port=port,
    )
    key, pub = new_key(tmp_path)
    try:
        first = Device(tmp_path / "a", port, key, pub)
        second = Device(tmp_path / "b", port, key, pub)
        try:
            agents = (first.agent, second.agent)
            assert wait_until(lambda: any(a.duplicate_reported for a in agents), 15)
        finally:
            second.stop()
            first.stop()
    finally:
        broker.stop()
    messages = [r.getMessage() for r in twin_lines(caplog)]
    assert messages and "probably" in messages[0] and "--device-id" in messages[0]
    assert "last 2 connections within 10 s" in messages[0]


def test_two_runtime_processes_with_one_id_log_it_and_keep_balancing(tmp_path, broker):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    first = RuntimeProcess(tmp_path / "a", broker.port, pub, policy, "--hz", "1000")
    try:
        watcher.wait_for(lambda t, b: b.get("state") == "online", timeout=15)
        second = RuntimeProcess(tmp_path / "b", broker.port, pub, policy, "--hz", "1000")
        try:
            processes = (first, second)
            started = time.monotonic()
            assert wait_until(lambda: any(TWIN_LINE in p.log() for p in processes), 15), [
                p.log()[-1500:] for p in processes
            ]
            detected_after = time.monotonic() - started
            counts = [len(p.episodes()) for p in processes]
            time.sleep(1.5)  # 1000 Hz, 500 steps: an episode every 0.5 s
            assert all(len(p.episodes()) > n for p, n in zip(processes, counts, strict=True))
        finally:
            second.kill(signal.SIGTERM)
    finally:
        first.kill(signal.SIGTERM)
        watcher.close()
    for process in (first, second):
        assert process.process.returncode == 0, process.log()[-2000:]
        assert all(e["return"] == 500 for e in process.episodes())
    log = next(p.log() for p in (first, second) if TWIN_LINE in p.log())
    [line] = [line for line in log.splitlines() if TWIN_LINE in line]
    assert "ERROR" in line and "'pi-1'" in line and "its own --device-id" in line
    assert detected_after < 10


class FakeClient:
    """Stands in for paho in the callbacks: records what the agent asks of it."""

    def __init__(self) -> None:
        self.delays: list[tuple[int, int]] = []

    def subscribe(self, *args, **kwargs):
        return 0, 1

    def publish(self, *args, **kwargs):
        return None

    def will_set(self, *args, **kwargs):
        return None

    def reconnect_delay_set(self, min_delay: int, max_delay: int) -> None:
        self.delays.append((min_delay, max_delay))


def flapping_agent(tmp_path):
    from types import SimpleNamespace

    from runtime.agent import Agent, AgentConfig
    from runtime.mqtt import broker_settings
    from runtime.policy import parse_policy
    from runtime.slot import PolicySlot
    from runtime.state import StateStore
    from tests.ota_support import activate

    key, pub = new_key(tmp_path)
    policy = parse_policy(signed_policy(5, key))
    agent = Agent(
        AgentConfig(device_id="dev-9", topic_prefix=PREFIX),
        broker_settings("mqtt://127.0.0.1:1"),
        PolicySlot(activate(policy)),
        activate,
        StateStore(tmp_path / "state"),
        public_key=key.public_key(),
    )
    agent.client = FakeClient()
    accepted = SimpleNamespace(is_failure=False)

    def connect() -> None:
        agent._on_connect(agent.client, None, None, accepted, None)

    def drop() -> None:
        agent._on_disconnect(agent.client, None, None, "Unspecified error", None)

    return agent, connect, drop


def test_four_quick_drops_in_a_row_are_a_probable_twin_but_not_with_failed_reconnects(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="runtime.agent")
    agent, connect, drop = flapping_agent(tmp_path)
    for _ in range(10):  # a crash-looping broker: each reconnect is refused at least once
        connect()
        drop()
        agent._on_connect_fail(agent.client, None)
    assert not agent.duplicate_reported and not twin_lines(caplog)
    for _ in range(3):
        connect()
        drop()
    assert not agent.duplicate_reported
    connect()
    drop()
    assert agent.duplicate_reported and agent.client.delays == [(10, 30)]
    [line] = twin_lines(caplog)
    assert "probably" in line.getMessage() and "last 4 connections" in line.getMessage()
    for _ in range(5):  # reported once; later drops are debug lines
        connect()
        drop()
    assert len(twin_lines(caplog)) == 1
    after = caplog.records[caplog.records.index(line) + 1 :]
    assert not [r.getMessage() for r in after if r.levelno >= logging.INFO]


def test_a_long_connection_resets_the_count(tmp_path, monkeypatch):
    agent, connect, drop = flapping_agent(tmp_path)
    for _ in range(3):
        connect()
        drop()
    connect()
    agent._connected_at -= 60  # it held the connection for a minute
    drop()
    for _ in range(3):
        connect()
        drop()
    assert not agent.duplicate_reported


def test_junk_on_the_own_status_topic_is_ignored(tmp_path, broker, caplog):
    caplog.set_level(logging.INFO, logger="runtime.agent")
    key, pub = new_key(tmp_path)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = Device(tmp_path, broker.port, key, pub)
    try:
        status = f"{PREFIX}/devices/dev-1/status"
        junk = [b"", b"not json", b"\xff\xfe", b"[" * 60_000, b"[1, 2]", b'{"state": "online"}']
        junk += [b'{"instance": 7}', b"{" + b" " * 70_000 + b"}"]
        for payload in junk:
            watcher.publish(status, payload)
        update = signed_policy(6, key)  # the network thread is alive: an update goes through
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", update)
        assert wait_until(lambda: device.slot.active.policy.version == 6, 5)
    finally:
        device.stop()
        watcher.close()
    assert not device.agent.duplicate_reported and not twin_lines(caplog)
