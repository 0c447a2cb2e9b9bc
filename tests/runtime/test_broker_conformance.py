"""What the device and fleet paths need of a broker, checked on one Mosquitto and on a 3-node
NATS cluster (tests/brokers.py): each check puts its clients on different nodes, so on the
cluster a message, a retained copy, a will or a session has to cross between servers.

Every test uses a topic prefix of its own: the cluster lives for the whole module and keeps
what each test retained.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from export.push import push_main, read_statuses
from runtime.agent import Agent
from runtime.mqtt import broker_settings
from tests.brokers import BROKER_KINDS, Brokers, running
from tests.ota_support import (
    ROOT,
    Device,
    RuntimeProcess,
    Watcher,
    new_key,
    signed_policy,
)

FLEET_PER_NODE = 40  # 120 agents in three processes; bench/mqtt.py pushes to 1,000


@pytest.fixture(scope="module", params=BROKER_KINDS)
def brokers(request, tmp_path_factory) -> Iterator[Brokers]:
    with running(request.param, tmp_path_factory.mktemp(request.param)) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    return f"conf-{uuid.uuid4().hex[:8]}"


def paho_client(client_id: str, *, clean_session: bool = True):
    import paho.mqtt.client as mqtt

    return mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def json_out(capsys) -> list[dict]:
    out, err = capsys.readouterr()
    assert out.strip(), f"no output; stderr: {err}"
    return json.loads(out)


def wait_retained(port: int, prefix: str, device_id: str, expected: tuple, timeout: float = 5):
    """Until a new subscriber on `port` gets a retained status whose (state, instance) is
    `expected`: a node learns of a message retained through another a moment later."""
    started = time.monotonic()
    while True:
        status = retained_status(port, prefix, device_id)
        if (status["state"], status["instance"]) == expected:
            return
        assert time.monotonic() - started < timeout, f"retained {status} after {timeout} s"
        time.sleep(0.05)


def retained_status(port: int, prefix: str, device_id: str) -> dict:
    """The retained status of `device_id` as a new subscriber on `port` receives it."""
    watcher = Watcher(port, f"{prefix}/devices/{device_id}/status")
    try:
        return watcher.wait_for(lambda topic, body: True, timeout=10)
    finally:
        watcher.close()


# --- retained messages, wills, sessions, client ids --------------------------------------------


def test_a_retained_fleet_policy_reaches_a_device_connecting_to_another_node(
    tmp_path, brokers, prefix
):
    key, pub = new_key(tmp_path)
    device = Device(tmp_path, brokers.node(0), key, pub, device_id="pi-1", topic_prefix=prefix)
    device.stop()  # offline while the fleet policy is published
    publisher = Watcher(brokers.node(1), f"{prefix}/devices/+/status")
    try:
        publisher.publish(f"{prefix}/fleet/policy", signed_policy(6, key), retain=True)
    finally:
        publisher.close()
    again = Device(tmp_path, brokers.node(2), key, pub, device_id="pi-1", topic_prefix=prefix)
    try:
        wait_until(lambda: again.slot.active.policy.version == 6, 10, "fleet policy applied")
        assert again.store.current is not None and again.store.current.policy.version == 6
    finally:
        again.stop()


def test_the_will_of_a_killed_runtime_is_seen_on_another_node(tmp_path, brokers, prefix):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    watcher = Watcher(brokers.node(1), f"{prefix}/devices/+/status")
    device = RuntimeProcess(
        tmp_path / "device", brokers.node(0), pub, policy, "--topic-prefix", prefix
    )
    try:
        online = watcher.wait_for(lambda t, body: body.get("state") == "online", timeout=20)
        device.kill()  # SIGKILL: no offline status of its own, only the broker's will
        will = watcher.wait_for(lambda t, body: body.get("state") == "offline", timeout=10)
        assert will["instance"] == online["instance"] and will["policy_version"] == 5
        wait_retained(brokers.node(2), prefix, "pi-1", ("offline", online["instance"]))
    finally:
        device.kill()
        watcher.close()


def test_qos1_waits_for_a_persistent_session_and_unacked_is_redelivered(brokers, prefix):
    topic = f"{prefix}/queue"
    client_id = f"{prefix}-persistent"
    received: list[tuple[bytes, bool, int]] = []

    def session(node: int, *, subscribe: bool = False):
        client = paho_client(client_id, clean_session=False)
        client.manual_ack_set(True)  # nothing is acknowledged unless the test says so
        client.on_message = lambda c, u, m: received.append((m.payload, bool(m.dup), m.mid))
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.connect("127.0.0.1", brokers.node(node))
        client.loop_start()
        if subscribe:
            client.subscribe(topic, qos=1)
            assert subscribed.wait(10), "no SUBACK"
        return client

    def close(client) -> None:
        client.disconnect()
        client.loop_stop()

    close(session(0, subscribe=True))
    publisher = Watcher(brokers.node(1), f"{prefix}/unused")
    try:
        publisher.publish(topic, b"while offline")
    finally:
        publisher.close()
    client = session(2)  # the session resumed on another node: the queued message arrives
    wait_until(lambda: received, 10, "the message queued for the offline session")
    close(client)  # ... not acknowledged
    assert received[0][0] == b"while offline"
    received.clear()
    client = session(0)
    wait_until(lambda: received, 15, "the unacknowledged message redelivered")
    payload, dup, mid = received[0]
    assert payload == b"while offline"
    client.ack(mid, 1)
    time.sleep(0.5)  # the PUBACK on its way
    close(client)
    received.clear()
    close_after = session(1)
    time.sleep(2.0 if brokers.kind == "mosquitto" else 7.0)  # past NATS's ack_wait (5 s)
    close(close_after)
    assert received == [], "an acknowledged message came back"


def test_a_device_restarted_on_another_node_takes_over_its_connection(tmp_path, brokers, prefix):
    """The stale connection of a device that froze (power cut, the TCP still open) gives way
    to its restart at once, and the retained status ends as the new run's "online"."""
    key, pub = new_key(tmp_path)
    stale = Device(tmp_path, brokers.node(0), key, pub, device_id="pi-1", topic_prefix=prefix)
    stale.agent.client.loop_stop()  # frozen: no more pings, the socket stays open
    restarted = Device(tmp_path, brokers.node(2), key, pub, device_id="pi-1", topic_prefix=prefix)
    try:
        wait_until(lambda: _closed_by_broker(stale.agent), 10, "the stale connection closed")
        expected = ("online", restarted.agent.instance)
        wait_retained(brokers.node(1), prefix, "pi-1", expected)
        time.sleep(1.0)  # a will of the stale connection published late would replace it
        status = retained_status(brokers.node(1), prefix, "pi-1")
        assert (status["state"], status["instance"]) == expected
        assert restarted.agent.connected.is_set() and not restarted.agent.duplicate_reported
    finally:
        restarted.stop()


def _closed_by_broker(agent: Agent) -> bool:
    """Run one round of the frozen client's loop: False while its connection stays open."""
    import paho.mqtt.client as mqtt

    return agent.client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS


# --- the fleet path ----------------------------------------------------------------------------


def test_a_signed_update_reaches_a_runtime_on_another_node(tmp_path, brokers, prefix, capsys):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    update = tmp_path / "update.npz"
    update.write_bytes(signed_policy(7, key))
    watcher = Watcher(brokers.node(2), f"{prefix}/devices/+/status")
    device = RuntimeProcess(
        tmp_path / "device", brokers.node(0), pub, policy, "--topic-prefix", prefix
    )
    try:
        watcher.wait_for(lambda t, body: body.get("state") == "online", timeout=20)
        argv = [str(update), "--device", "pi-1", "--broker", brokers.url(1), "--json"]
        code = push_main([*argv, "--topic-prefix", prefix, "--timeout", "20"])
        outcomes = json_out(capsys)
        assert code == 0, outcomes
        assert [(o["device"], o["result"]) for o in outcomes] == [("pi-1", "applied")]
        applied = watcher.wait_for(lambda t, body: body.get("policy_version") == 7, timeout=10)
        assert applied["state"] == "online"
    finally:
        device.kill()
        watcher.close()
    assert (tmp_path / "device" / "state" / "current.npz").read_bytes() == update.read_bytes()


def wait_all_online(url: str, prefix: str, count: int, timeout: float = 30.0) -> float:
    """Seconds until the node at `url` holds `count` retained "online" statuses."""
    started = time.monotonic()
    while True:
        statuses = read_statuses(broker_settings(url), prefix, timeout=10)
        online = sum(body.get("state") == "online" for body in statuses.values())
        if online == count:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{online}/{count} online on {url}"
        time.sleep(0.1)


def test_a_fleet_push_reaches_devices_spread_over_the_nodes(tmp_path, brokers, prefix, capsys):
    key, pub = new_key(tmp_path)
    (tmp_path / "initial.npz").write_bytes(signed_policy(5, key))
    update = tmp_path / "update.npz"
    update.write_bytes(signed_policy(6, key))
    hosts = []
    try:
        for node in range(3):
            argv = [sys.executable, str(ROOT / "tests" / "fleet_host.py"), str(brokers.node(node))]
            argv += [prefix, str(node * FLEET_PER_NODE), str(FLEET_PER_NODE), str(pub)]
            argv += [str(tmp_path)]
            hosts.append(
                subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True
                )
            )
        for host in hosts:
            assert host.stdout.readline().strip() == "ready"
        # a node learns of a status retained on another a moment later (the retained-message
        # stream): `push --fleet` targets the devices its node has seen online
        seen = wait_all_online(brokers.url(0), prefix, 3 * FLEET_PER_NODE)
        argv = [str(update), "--fleet", "--broker", brokers.url(0), "--topic-prefix", prefix]
        code = push_main([*argv, "--timeout", "30", "--json"])
        outcomes = json_out(capsys)
    finally:
        for host in hosts:
            host.stdin.close()
        for host in hosts:
            try:
                host.wait(timeout=20)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
    devices = 3 * FLEET_PER_NODE
    assert seen < (10 if brokers.kind == "nats-cluster" else 1), f"all online after {seen} s"
    assert sorted(o["device"] for o in outcomes) == sorted(f"dev-{i}" for i in range(devices))
    assert {o["result"] for o in outcomes} == {"applied"}, [
        o for o in outcomes if o["result"] != "applied"
    ]
    assert code == 0
    for index in range(devices):
        stored = Path(tmp_path / f"dev-{index}" / "current.npz").read_bytes()
        assert stored == update.read_bytes()


def test_a_staged_rollout_aborts_and_undoes_across_the_nodes(tmp_path, brokers, prefix, capsys):
    """`export rollout` through node 0 to devices on all three nodes: wave 1 applies, two of
    wave 2's three devices trust another key and reject it, the rollout aborts before wave 3,
    and the undo re-signs version 5's weights at a newer version for the devices it updated."""
    from export.keys import generate_keypair, load_private_key
    from export.rollout import main as rollout_main

    private, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)
    _, stranger_pub = new_key(tmp_path, "stranger")
    strangers = {"r-3", "r-4"}  # wave 2 (33%,66%,100% of 9 sorted ids: r-0..2, r-3..5, r-6..8)
    previous = tmp_path / "v5.npz"
    previous.write_bytes(signed_policy(5, key))
    devices = {
        f"r-{i}": Device(
            tmp_path,
            brokers.node(i % 3),
            key,
            stranger_pub if f"r-{i}" in strangers else pub,
            device_id=f"r-{i}",
            topic_prefix=prefix,
        )
        for i in range(9)
    }
    try:
        wait_all_online(brokers.url(0), prefix, len(devices))
        update = tmp_path / "v6.npz"
        update.write_bytes(signed_policy(6, key))
        argv = [str(update), "--broker", brokers.url(0), "--topic-prefix", prefix, "--all-online"]
        argv += ["--state", str(tmp_path / "state.json"), "--waves", "33%,66%,100%", "--json"]
        argv += ["--abort-above", "34%", "--min-devices", "3", "--wave-timeout", "20"]
        argv += ["--undo", "--previous", str(previous), "--sign-key", str(private)]
        code = rollout_main(argv)
        report = json.loads(capsys.readouterr().out)
        versions = {name: d.slot.active.policy.version for name, d in devices.items()}
    finally:
        for device in devices.values():
            device.stop()
    assert code == 1 and report["outcome"] == "aborted", report
    assert [wave["sent"] for wave in report["waves"]] == [3, 3, 0], report["waves"]
    undo_version = report["undo"]["version"]
    assert undo_version > 6
    assert all(versions[f"r-{i}"] == 5 for i in range(6, 9)), versions  # wave 3 never sent
    assert {versions[name] for name in strangers} == {5}, versions  # rejected v6 and the undo
    assert {versions[f"r-{i}"] for i in (0, 1, 2, 5)} == {undo_version}, versions
