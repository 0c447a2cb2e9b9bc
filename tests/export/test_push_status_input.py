"""`export status` and `export push` with junk retained statuses on the broker: no traceback."""

from __future__ import annotations

import json

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from export.push import push_main, status_main
from runtime.policy import make_meta
from tests.ota_support import _entries, npy, raw_npz, signed_policy

JUNK = {
    "g1": b"garbage",
    "g2": b"[1, 2]",
    "g3": b'{"state": 5, "policy_version": "x", "last_update": "zz"}',
    "g4": b'{"state": "online", "policy_version": 1e400, "last_update": {"result": []}}',
    "g5": b"\xff\xfe",
    "g6": b'{"state": "online", "policy_version": 3, "extra": NaN}',
    "g7": b"[" * 100_000 + b"]" * 100_000,  # json raises RecursionError, not ValueError
}


@pytest.fixture
def junk_broker(broker):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="junk-writer")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for device, payload in JUNK.items():
        topic = f"reinforce-edge/devices/{device}/status"
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    good = {"state": "online", "device_id": "ok", "policy_version": 2, "policy_sha256": "ab"}
    good["last_update"] = None
    client.publish("reinforce-edge/devices/ok/status", json.dumps(good), qos=1, retain=True)
    client.disconnect()
    client.loop_stop()
    return broker


def test_status_skips_malformed_statuses(junk_broker, capsys, caplog):
    assert status_main(["--broker", junk_broker.url]) == 0
    out, err = capsys.readouterr()
    rows = out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["ok"], out
    assert "Traceback" not in err and "malformed status" in caplog.text
    assert status_main(["--broker", junk_broker.url, "--json"]) == 0
    out = capsys.readouterr().out
    assert list(json.loads(out)) == ["ok"] and "Infinity" not in out and "NaN" not in out


def test_push_to_a_device_with_a_malformed_status_times_out_cleanly(junk_broker, tmp_path, capsys):
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, None))
    argv = [str(policy), "--device", "g3", "--device", "g4", "--broker", junk_broker.url]
    assert push_main([*argv, "--timeout", "0.5"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert [row.split()[1] for row in out.splitlines()[2:]] == ["timeout", "timeout"], out


@pytest.mark.parametrize(
    "url", ["mqtt://[::1", "mqtt://[zz::1]:1883", "mqtts://[::1:1883", "mqtt://[]:1883"]
)
def test_a_broken_ipv6_url_is_one_line_naming_the_url(url, capsys):
    assert status_main(["--broker", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"broker URL {url!r}" in err


def test_push_of_a_file_with_a_lone_surrogate_in_meta_is_exit_2(tmp_path, capsys):
    meta = make_meta(hidden=8, version=6, created="2026-01-01T00:00:00+00:00", notes="\ud800")
    path = tmp_path / "policy.npz"
    path.write_bytes(raw_npz(_entries(6, meta=npy(np.array(json.dumps(meta, ensure_ascii=False))))))
    # the broker is never contacted: the file is refused first
    assert push_main([str(path), "--device", "d1", "--broker", "mqtt://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lone surrogate" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag", [["--password", "hunter2"], ["--password=hunter2"], ["--password"]]
)
def test_a_password_flag_is_refused_without_echoing_it(flag, tmp_path, capsys):
    """argparse took --password as an abbreviation of --password-file and printed the password
    in 'cannot read' errors."""
    assert status_main(["--broker", "mqtt://127.0.0.1:9", *flag]) == 2
    policy = tmp_path / "policy.npz"
    policy.write_bytes(b"never read")
    assert push_main([str(policy), "--fleet", "--broker", "mqtt://127.0.0.1:9", *flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "hunter2" not in err
    assert "--password is not accepted" in err and "REINFORCE_EDGE_MQTT_PASSWORD" in err
