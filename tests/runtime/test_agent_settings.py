"""Broker settings from odd input: every bad URL or password file is one clear ValueError."""

from __future__ import annotations

import pytest

from runtime.cli import main
from runtime.mqtt import BrokerSettings, broker_settings, parse_broker_url
from tests.ota_support import new_key, signed_policy


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://", "no host"),
        ("http://x", "scheme"),
        ("mqtt://host:99999", "port"),
        ("mqtt://h x:1883", "spaces"),
        (" mqtt://host", "spaces"),
        ("mqtt://host\t", "spaces"),
        ("mqtt://h,x", "not a host name"),
        ("mqtt://h%20x", "not a host name"),
    ],
)
def test_junk_broker_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        parse_broker_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.lan", (False, "broker.lan", 1883)),
        ("mqtts://my_host-1.example:8884", (True, "my_host-1.example", 8884)),
        ("mqtt://10.0.0.7:1", (False, "10.0.0.7", 1)),
        ("mqtt://[fe80::1%eth0]:1884", (False, "fe80::1%eth0", 1884)),
    ],
)
def test_good_broker_urls_parse(url, expected):
    assert parse_broker_url(url) == expected


def test_an_ipv6_broker_url_prints_with_brackets():
    assert BrokerSettings(host="::1", port=1884).url == "mqtt://[::1]:1884"


def test_a_password_file_that_is_not_text_names_the_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_bytes(b"\xa2\xff\x00junk")
    with pytest.raises(ValueError, match=f"--password-file {secret}: not UTF-8 text"):
        broker_settings("mqtt://h", username="u", password_file=str(secret))


def test_the_runtime_refuses_a_binary_password_file_in_one_line(tmp_path, capsys):
    key, pub = new_key(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(5, key))
    secret = tmp_path / "password"
    secret.write_bytes(b"\xa2\xff")
    argv = ["--policy", str(policy), "--public-key", str(pub), "--episodes", "1", "--hz", "0"]
    argv += ["--broker", "mqtt://127.0.0.1:1883", "--device-id", "d", "--username", "u"]
    argv += ["--password-file", str(secret), "--state-dir", str(tmp_path / "state")]
    assert main(argv, environ={}) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "not UTF-8 text" in lines[0], err
