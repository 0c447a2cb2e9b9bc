"""mqtts:// with a private CA and a password from the environment, on a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from export.push import push_main
from runtime.agent import Agent, AgentConfig
from runtime.constants import ENV_MQTT_PASSWORD
from runtime.mqtt import broker_settings
from runtime.policy import parse_policy
from runtime.signing import load_public_key
from runtime.slot import PolicySlot
from runtime.state import StateStore, Stored
from tests.conftest import free_port, start_broker
from tests.ota_support import PREFIX, activate, agent_log_lines, new_key, signed_policy


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, signed by it (EC P-256, one day)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(server_key))
    return paths


@pytest.fixture
def tls_broker(tmp_path):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    ca, cert, key = make_tls_files(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "pi", "s3cret pass"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = (
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwd}\npersistence false\n"
        "set_tcp_nodelay true\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # as root it would drop to `mosquitto`
    )
    broker = start_broker(tmp_path / "broker", config_text=config, port=port)
    yield broker, ca
    broker.stop()


def test_mqtts_with_a_password_from_the_environment(tmp_path, tls_broker, monkeypatch, capsys):
    broker, ca = tls_broker
    key, pub = new_key(tmp_path)
    url = f"mqtts://127.0.0.1:{broker.port}"
    monkeypatch.setenv(ENV_MQTT_PASSWORD, "s3cret pass")
    settings = broker_settings(url, ca_file=str(ca), username="pi")
    store = StateStore(tmp_path / "state", public_key=load_public_key(pub))
    store.load()
    data = signed_policy(5, key)
    store.startup_choice(Stored(parse_policy(data), data))
    slot = PolicySlot(activate(parse_policy(data)))
    agent = Agent(
        AgentConfig(device_id="tls-1", topic_prefix=PREFIX),
        settings,
        slot,
        activate,
        store,
        public_key=load_public_key(pub),
    )
    agent.start()
    try:
        assert agent.ready.wait(10), "the agent did not connect over TLS"
        update = tmp_path / "update.npz"
        update.write_bytes(signed_policy(6, key))
        argv = [str(update), "--device", "tls-1", "--broker", url, "--ca-file", str(ca)]
        argv += ["--username", "pi", "--topic-prefix", PREFIX]
        assert push_main(argv) == 0, capsys.readouterr()
        assert slot.active.policy.version == 6
        # a wrong password is refused by the broker: exit 1 with one line, at once (no retries
        # until the 10 s timeout)
        monkeypatch.setenv(ENV_MQTT_PASSWORD, "wrong")
        capsys.readouterr()
        started = time.monotonic()
        assert push_main(argv) == 1
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert "refused the connection: Not authorized" in err and len(err.splitlines()) == 1
        # and without the CA the server certificate is not trusted
        monkeypatch.setenv(ENV_MQTT_PASSWORD, "s3cret pass")
        no_ca = [str(update), "--fleet", "--broker", url, "--username", "pi", "--timeout", "1"]
        assert push_main(no_ca) == 1
        assert "certificate" in capsys.readouterr().err.lower()
    finally:
        agent.stop()


def test_a_broker_that_wants_a_client_certificate_is_logged_once(tmp_path, caplog):
    """Without `--cert` the TLS handshake passes and the broker then drops the socket, before
    any CONNACK: the journal must say so (troubleshooting in docs/deploying.md), once."""

    ca, cert, key = make_tls_files(tmp_path)
    port = free_port()
    config = (
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nallow_anonymous true\npersistence false\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    broker = start_broker(tmp_path / "broker", config_text=config, port=port)
    signing, pub = new_key(tmp_path)
    data = signed_policy(5, signing)
    agent = Agent(
        AgentConfig(device_id="no-cert", topic_prefix=PREFIX),
        broker_settings(f"mqtts://127.0.0.1:{port}", ca_file=str(ca)),
        PolicySlot(activate(parse_policy(data))),
        activate,
        StateStore(tmp_path / "state"),
        public_key=load_public_key(pub),
    )
    lines = agent_log_lines(agent, broker, caplog, 3.5)  # attempts at 0, 1 and 3 s
    assert len(lines) == 1 and "before the broker accepted the connection" in lines[0], lines
