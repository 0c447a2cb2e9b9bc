"""`python -m export push/status` against in-process device agents on a real Mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.push import push_main, status_main
from runtime.constants import ENV_MQTT_PASSWORD
from runtime.mqtt import broker_settings, parse_broker_url
from tests.ota_support import PREFIX, Device, new_key, signed_policy


@pytest.fixture
def fleet(tmp_path, broker):
    key, pub = new_key(tmp_path)
    devices = [Device(tmp_path, broker.port, key, pub, device_id=f"pi-{i}") for i in range(4)]
    yield key, devices
    for device in devices:
        device.stop()


def run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_push_to_devices_prints_the_acknowledgement_table(tmp_path, broker, fleet, capsys):
    key, devices = fleet
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(6, key))
    argv = [str(policy), "--device", "pi-0", "--device", "pi-1", "--broker", broker.url]
    code, out, err = run(push_main, [*argv, "--topic-prefix", PREFIX], capsys)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["device", "result"]
    assert {line.split()[0]: line.split()[1] for line in lines[2:]} == {
        "pi-0": "applied",
        "pi-1": "applied",
    }
    assert [d.slot.active.policy.version for d in devices] == [6, 6, 5, 5]
    # the same file again: every target already runs it
    code, out, _ = run(push_main, [*argv, "--topic-prefix", PREFIX, "--json"], capsys)
    assert code == 0
    assert {o["reason"] for o in json.loads(out)} == {"already running this version"}


def test_fleet_push_reaches_every_online_device(tmp_path, broker, fleet, capsys):
    key, devices = fleet
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(9, key))
    argv = [str(policy), "--fleet", "--broker", broker.url, "--topic-prefix", PREFIX, "--json"]
    code, out, err = run(push_main, argv, capsys)
    assert code == 0, out + err
    outcomes = json.loads(out)
    assert sorted(o["device"] for o in outcomes) == ["pi-0", "pi-1", "pi-2", "pi-3"]
    assert all(o["result"] == "applied" and o["seconds"] < 5 for o in outcomes)
    assert all(d.slot.active.policy.version == 9 for d in devices)
    code, out, _ = run(status_main, ["--broker", broker.url, "--topic-prefix", PREFIX], capsys)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
        (f"pi-{i}", "online", "9", "applied") for i in range(4)
    ]


def test_a_rejection_and_a_missing_device_fail_the_push(tmp_path, broker, fleet, capsys):
    key, _ = fleet
    older = tmp_path / "older.npz"
    older.write_bytes(signed_policy(4, key))
    argv = [str(older), "--device", "pi-2", "--device", "ghost", "--broker", broker.url]
    code, out, _ = run(push_main, [*argv, "--topic-prefix", PREFIX, "--timeout", "1"], capsys)
    assert code == 1
    table = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "rejected" in table["pi-2"] and "not newer than version 5" in table["pi-2"]
    assert "timeout" in table["ghost"] and "unknown device" in table["ghost"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.npz", "--fleet", "--broker", "mqtt://127.0.0.1:1"], "cannot read"),
        (["{policy}", "--broker", "mqtt://127.0.0.1:1"], "one of the arguments"),
        (["{policy}", "--fleet", "--broker", "http://host"], "mqtt:// or mqtts://"),
        (["{policy}", "--fleet", "--broker", "mqtt://u:secret@host"], "must not carry a password"),
        (["{policy}", "--fleet", "--broker", "mqtt://host:99999"], "port"),
        (["{policy}", "--fleet", "--broker", "mqtt://host", "--timeout", "0"], "--timeout"),
        (["{policy}", "--fleet", "--broker", "mqtt://host", "--cert", "c.pem"], "go together"),
        (["{garbage}", "--fleet", "--broker", "mqtt://host"], "not a readable zip"),
        (["{policy}", "--device", "a+b", "--broker", "mqtt://host"], "--device 'a+b'"),
        (["{policy}", "--device", "a/b", "--broker", "mqtt://host"], "--device 'a/b'"),
        (["{policy}", "--device", "", "--broker", "mqtt://host"], "--device ''"),
        (["{policy}", "--device", "pi.local", "--broker", "mqtt://host"], "no '.'"),
        (["{policy}", "--fleet", "--broker", "mqtt://h", "--topic-prefix", "a.b"], "'a.b'"),
        (["{policy}", "--fleet", "--broker", "mqtt://host", "--topic-prefix", "p/#"], "prefix"),
    ],
)
def test_bad_push_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, None))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    argv = [a.format(policy=policy, garbage=garbage) for a in argv]
    code, out, err = run(push_main, argv, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreachable_broker_is_exit_1(tmp_path, capsys):
    from tests.conftest import free_port

    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, None))
    url = f"mqtt://127.0.0.1:{free_port()}"
    code, _, err = run(push_main, [str(policy), "--fleet", "--broker", url], capsys)
    assert code == 1 and "cannot connect" in err


def test_password_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    settings = broker_settings("mqtts://broker.example", username="u", password_file=str(secret))
    assert settings.password == "from-file" and settings.port == 8883 and settings.tls
    assert "from-file" not in repr(settings)
    monkeypatch.setenv(ENV_MQTT_PASSWORD, "from-env")
    assert broker_settings("mqtt://h", username="u", password_file=str(secret)).password == (
        "from-env"
    )
    assert parse_broker_url("mqtt://[::1]:1884") == (False, "::1", 1884)


def test_status_refuses_a_wildcard_prefix(capsys):
    code, _, err = run(status_main, ["--broker", "mqtt://host", "--topic-prefix", "+"], capsys)
    assert code == 2 and "--topic-prefix '+'" in err and "Traceback" not in err


def test_status_reads_200_retained_statuses_through_the_deployed_queue_limits(tmp_path, capsys):
    """deploy/mosquitto bounds a client's queue (max_queued_messages 32 above 20 in flight):
    a QoS 1 subscription would get 52 of the retained statuses, the tools read all of them."""
    import paho.mqtt.client as mqtt

    from tests.conftest import free_port, start_broker

    deployed = Path(__file__).resolve().parents[2] / "deploy/mosquitto/reinforce-edge.conf"
    limits = [
        line
        for line in deployed.read_text().splitlines()
        if line.startswith(("max_inflight_messages", "max_queued_messages", "max_queued_bytes"))
    ]
    assert "max_queued_messages 32" in limits, limits
    port = free_port()
    text = f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    broker = start_broker(tmp_path / "broker", text + "\n".join(limits) + "\n", port)
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        body = {"state": "online", "policy_version": 5, "policy_sha256": "ab" * 32}
        for i in range(200):
            topic = f"{PREFIX}/devices/pi-{i:03d}/status"
            payload = json.dumps({**body, "last_update": None, "device_id": f"pi-{i:03d}"})
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        argv = ["--broker", f"mqtt://127.0.0.1:{port}", "--topic-prefix", PREFIX, "--json"]
        code, out, err = run(status_main, argv, capsys)
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()
    assert code == 0, err
    assert sorted(json.loads(out)) == [f"pi-{i:03d}" for i in range(200)]
