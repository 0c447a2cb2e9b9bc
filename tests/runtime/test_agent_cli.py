"""`python -m runtime` with the MQTT flags: bad settings are one line and exit 2, in-process."""

from __future__ import annotations

import pytest

from runtime.cli import main
from tests.ota_support import new_key, signed_policy


@pytest.fixture
def files(tmp_path):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    return str(policy), str(pub), tmp_path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--broker", "mqtt://127.0.0.1:1883", "--no-key"], "public_key"),
        (["--broker", "http://127.0.0.1"], "broker = 'http://127.0.0.1' is not allowed"),
        (["--broker", "mqtt://user:pw@127.0.0.1"], "no user name or password"),
        (["--broker", "mqtt://127.0.0.1:0"], "broker"),
        (["--broker", "mqtt://127.0.0.1", "--device-id", "a/b"], "device_id"),
        (["--broker", "mqtt://127.0.0.1", "--device-id", "#"], "device_id"),
        (["--broker", "mqtt://127.0.0.1", "--device-id", "pi.local"], "'pi.local' is not"),
        (["--broker", "mqtt://127.0.0.1", "--topic-prefix", "fleet.v2"], "no '.'"),
        (["--broker", "mqtt://127.0.0.1", "--topic-prefix", "p/+"], "topic_prefix"),
        (["--broker", "mqtt://127.0.0.1", "--telemetry-interval", "0"], "telemetry_interval"),
        (["--broker", "mqtt://127.0.0.1", "--probation-episodes", "0"], "probation_episodes"),
        (["--broker", "mqtt://127.0.0.1", "--rollback-below", "nan"], "rollback_below"),
        (["--broker", "mqtt://127.0.0.1", "--ca-file", "missing.pem"], "mqtts://"),
        (["--broker", "mqtts://127.0.0.1", "--ca-file", "missing.pem"], "no such file"),
        (["--broker", "mqtts://127.0.0.1", "--cert", "{pub}"], "go together"),
        (["--broker", "mqtt://127.0.0.1", "--password-file", "missing"], "cannot read"),
        (["--broker", "mqtt://127.0.0.1", "--state-dir", "{policy}"], "state directory"),
    ],
)
def test_bad_mqtt_settings_are_one_line_and_exit_2(files, capsys, extra, message):
    policy, pub, tmp_path = files
    argv = ["--policy", policy, "--plant", "sim", "--episodes", "1", "--hz", "0"]
    if "--no-key" in extra:
        extra = [arg for arg in extra if arg != "--no-key"]
    else:
        argv += ["--public-key", pub]
    argv += [arg.format(pub=pub, policy=policy) for arg in extra]
    if "--state-dir" not in argv:  # never the system default from a test
        argv += ["--state-dir", str(tmp_path / "state")]
    assert main(argv, environ={}) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_a_state_dir_alone_resumes_the_persisted_policy(files, capsys):
    policy, pub, tmp_path = files
    from runtime.state import StateStore, Stored

    store = StateStore(tmp_path / "state")
    store.load()
    newer = signed_policy(9, None)
    from runtime.policy import parse_policy

    store.commit(Stored(parse_policy(newer), newer))
    argv = ["--policy", policy, "--plant", "sim", "--episodes", "1", "--hz", "0", "--json"]
    argv += ["--state-dir", str(tmp_path / "state")]
    assert main(argv, environ={}) == 0
    assert '"policy_version": 9' in capsys.readouterr().out
