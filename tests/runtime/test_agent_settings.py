"""Broker settings from odd input: every bad URL or password file is one clear ValueError."""

from __future__ import annotations

import pytest

from runtime.cli import main
from runtime.mqtt import BrokerSettings, broker_settings, parse_broker_url
from tests.ota_support import agent_log_lines, new_key, signed_policy


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


def _self_signed(tmp_path, password: bytes | None = None):
    """A self-signed certificate and its EC key (encrypted with `password` when given)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")])
    now = datetime.datetime(2026, 1, 1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    cert_path, key_path = tmp_path / "dev.crt", tmp_path / "dev.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return str(cert_path), str(key_path)


def test_tls_files_that_do_not_load_are_named(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"PK\x03\x04 not a certificate")
    cert, key = _self_signed(tmp_path)
    assert broker_settings("mqtts://h", ca_file=cert, cert=cert, key=key).tls  # the good pair
    with pytest.raises(ValueError, match=f"--ca-file {junk}: not a PEM CA certificate"):
        broker_settings("mqtts://h", ca_file=str(junk))
    with pytest.raises(ValueError, match=f"--cert {junk} / --key {key}"):
        broker_settings("mqtts://h", cert=str(junk), key=key)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_key = _self_signed(other_dir)
    with pytest.raises(ValueError, match="not a PEM certificate and its"):
        broker_settings("mqtts://h", cert=cert, key=other_key)  # a key that does not match


def test_an_encrypted_client_key_is_refused_without_a_prompt(tmp_path):
    cert, key = _self_signed(tmp_path, password=b"secret")
    with pytest.raises(ValueError, match="unencrypted private key"):
        broker_settings("mqtts://h", cert=cert, key=key)


def test_push_and_status_name_a_bad_tls_file_in_one_line(tmp_path, capsys):
    from export.push import push_main, status_main

    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"junk")
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(3, None))
    tls = ["--broker", "mqtts://127.0.0.1:1", "--ca-file", str(junk)]
    assert status_main(tls) == 2
    assert push_main([str(policy), "--fleet", *tls]) == 2
    err = capsys.readouterr().err
    assert err.count("not a PEM CA certificate") == 2 and "Traceback" not in err


def test_a_refused_login_is_logged_once_not_per_retry(tmp_path, caplog):
    """A wrong password makes paho retry with backoff forever: one journal line, not two a try."""
    import os
    import pwd
    import subprocess

    from runtime.agent import Agent, AgentConfig
    from runtime.policy import parse_policy
    from runtime.signing import load_public_key
    from runtime.slot import PolicySlot
    from runtime.state import StateStore
    from tests.conftest import free_port, start_broker
    from tests.ota_support import activate

    passwords = tmp_path / "passwd"
    passwords.write_text("pi:right\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True)
    port = free_port()
    config = f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
    config += f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # as root it would drop to mosquitto
    broker = start_broker(tmp_path / "broker", config, port)
    key, pub = new_key(tmp_path)
    policy = parse_policy(signed_policy(5, key))
    settings = BrokerSettings(host="127.0.0.1", port=port, username="pi", password="wrong")
    agent = Agent(
        AgentConfig(device_id="pi"),
        settings,
        PolicySlot(activate(policy)),
        activate,
        StateStore(tmp_path / "state"),
        public_key=load_public_key(pub),
    )
    # attempts at 0, 1 and 3 s (backoff 1 s, 2 s)
    lines = agent_log_lines(agent, broker, caplog, 3.5)
    assert sum("refused the connection: Not authorized" in line for line in lines) == 1, lines
    assert not any("disconnected" in line for line in lines), lines


def test_a_payload_above_the_mailbox_bound_is_still_checked_when_the_limit_allows_it(tmp_path):
    """--max-policy-bytes may exceed the 8 MiB mailbox bound: such a payload must not be
    refused as "busy" forever; it waits alone."""
    from types import SimpleNamespace

    from runtime.agent import Agent, AgentConfig
    from runtime.constants import UPDATE_QUEUE_MAX_BYTES
    from runtime.policy import parse_policy
    from runtime.signing import load_public_key
    from runtime.slot import PolicySlot
    from runtime.state import StateStore
    from tests.ota_support import activate

    key, pub = new_key(tmp_path)
    limit = 2 * UPDATE_QUEUE_MAX_BYTES
    agent = Agent(
        AgentConfig(device_id="big", max_payload_bytes=limit),
        BrokerSettings(host="127.0.0.1", port=1),  # never started: no connection
        PolicySlot(activate(parse_policy(signed_policy(5, key)))),
        activate,
        StateStore(tmp_path / "state"),
        public_key=load_public_key(pub),
    )
    big = SimpleNamespace(
        topic="reinforce-edge/devices/big/policy", payload=bytes(limit - 1), retain=False
    )
    agent._on_message(None, None, big)
    assert agent.rejected_updates == 0 and agent._mailbox.qsize() == 1
    agent._on_message(None, None, big)  # a second one while the first waits: busy
    assert agent.rejected_updates == 1 and "busy" in agent.last_update["reason"]
