"""The shipped Mosquitto configuration, started for real with generated certificates.

deploy/mosquitto/reinforce-edge.conf is copied with only its paths and listener port rewritten;
make-certs.sh and add-device.sh make the certificates and accounts. Checked: anonymous and
wrong-password clients are refused, and the ACL matrix (every device x every foreign topic x
publish/subscribe) lets nothing escape while the allowed traffic flows.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from export.push import push_main
from tests.conftest import Broker, free_port, start_broker
from tests.ota_support import new_key, signed_policy

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
UNIT = ROOT / "deploy" / "reinforce-edge.service"
PREFIX = "reinforce-edge"
DEVICES = ("dev-a", "dev-b", "dev-c")
OPERATOR = "operator"
pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="the openssl command is not installed (apt-get install -y openssl): make-certs.sh needs it",
)
SETTLE_S = 0.5  # after the last expected message, how long a forbidden one gets to show up
PATIENCE_S = 20.0  # upper bound for anything expected (the machine may be busy); rarely reached


def sh(*args: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def broker_config(workdir: Path, port: int) -> str:
    """Debian's mosquitto.conf including the shipped file, both with paths under workdir.

    The shipped file goes in conf.d/ exactly as on a broker host, with only its file paths and
    its listener (127.0.0.1:port) rewritten; the main file mirrors Debian's
    /etc/mosquitto/mosquitto.conf (pid file, persistence location, log, include_dir).
    """
    text = (MOSQUITTO_DIR / "reinforce-edge.conf").read_text()
    rewrites = {
        "/etc/mosquitto/certs/": f"{workdir}/certs/",
        "/etc/mosquitto/reinforce-edge.passwd": f"{workdir}/passwd",
        "/etc/mosquitto/reinforce-edge.acl": f"{workdir}/acl",
        "\nlistener 8883\n": f"\nlistener {port} 127.0.0.1\n",
    }
    for old, new in rewrites.items():
        assert old in text, f"reinforce-edge.conf no longer contains {old!r}"
        text = text.replace(old, new)
    (workdir / "conf.d").mkdir(exist_ok=True)
    (workdir / "conf.d/reinforce-edge.conf").write_text(text)
    main = [
        f"pid_file {workdir}/mosquitto.pid",
        "persistence true",
        f"persistence_location {workdir}/data/",
        f"log_dest file {workdir}/mosquitto.log",
        f"include_dir {workdir}/conf.d",
    ]
    if os.geteuid() == 0:  # else mosquitto drops to its own user, who cannot read tmp_path
        main.insert(0, "user root")
    return "\n".join(main) + "\n"


@dataclass
class Fleet:
    """A broker running the shipped config, and the credentials of every account."""

    workdir: Path
    broker: Broker
    passwords: dict[str, str] = field(default_factory=dict)

    def certs(self, user: str) -> tuple[str, str]:
        return str(self.workdir / f"certs/clients/{user}.crt"), str(
            self.workdir / f"certs/clients/{user}.key"
        )


def make_fleet(workdir: Path, accounts: tuple[str, ...]) -> Fleet:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir()
    sh(MOSQUITTO_DIR / "make-certs.sh", "--dir", workdir / "certs", *accounts)
    passwords = {}
    for user in accounts:
        flag = ["--operator"] if user == OPERATOR else [user]
        sh(MOSQUITTO_DIR / "add-device.sh", "--passwd", workdir / "passwd", "--out",
           workdir / "credentials", "--no-reload", *flag)  # fmt: skip
        passwords[user] = (workdir / "credentials" / f"{user}.password").read_text().strip()
    shutil.copy(MOSQUITTO_DIR / "acl", workdir / "acl")
    port = free_port()
    broker = start_broker(workdir, broker_config(workdir, port), port)
    return Fleet(workdir, broker, passwords)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    running = make_fleet(tmp_path_factory.mktemp("fleet"), (*DEVICES, OPERATOR))
    yield running
    running.broker.stop()


class Client:
    """A paho-mqtt (callback API 2) client over TLS that records what it receives."""

    def __init__(self, fleet: Fleet, user: str | None, password: str | None, cert_of: str | None):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{user}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        certfile, keyfile = fleet.certs(cert_of) if cert_of else (None, None)
        self.client.tls_set(
            ca_certs=str(fleet.workdir / "certs/ca.crt"), certfile=certfile, keyfile=keyfile
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.dropped: str | None = None
        self.port = fleet.broker.port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.reason = reason_code
        self.connack.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.connack.is_set():  # dropped before CONNACK: e.g. no client certificate
            self.dropped = f"dropped: {reason_code}"
            self.connack.set()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.received.append((message.topic, message.payload))

    def connect(self) -> str:
        """'connected', or why not ('refused: ...', 'dropped: ...' or 'tls: ...')."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (ssl.SSLError, OSError) as error:
            return f"tls: {error}"
        # Run the network loop by hand until the answer: a refused client never reconnects.
        deadline = time.monotonic() + PATIENCE_S
        while not self.connack.is_set() and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)
        if not self.connack.is_set():
            outcome = "no answer"
        elif self.dropped:
            outcome = self.dropped
        elif self.reason is not None and self.reason.is_failure:
            outcome = f"refused: {self.reason}"
        else:
            self.client.loop_start()
            return "connected"
        self.client.disconnect()
        return outcome

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(PATIENCE_S)  # PUBACK: the broker has handled (or dropped) it

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(PATIENCE_S)

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connected(fleet: Fleet, user: str) -> Client:
    client = Client(fleet, user, fleet.passwords[user], user)
    assert client.connect() == "connected"
    return client


def topic(device: str, kind: str) -> str:
    return f"{PREFIX}/devices/{device}/{kind}"


FLEET_POLICY = f"{PREFIX}/fleet/policy"


def wait_until(condition, timeout: float = PATIENCE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# --- authentication ------------------------------------------------------------------


def test_operator_and_devices_connect_with_certificate_and_password(fleet):
    for user in (*DEVICES, OPERATOR):
        connected(fleet, user).close()


def test_anonymous_client_is_refused(fleet):
    # With a valid certificate but no user name: CONNACK "not authorized".
    outcome = Client(fleet, None, None, DEVICES[0]).connect()
    assert outcome.startswith("refused"), outcome
    # Without a certificate: the TLS handshake itself fails.
    outcome = Client(fleet, None, None, None).connect()
    assert outcome != "connected", outcome


@pytest.mark.parametrize("user", [DEVICES[0], OPERATOR])
def test_wrong_password_is_refused(fleet, user):
    outcome = Client(fleet, user, fleet.passwords[user] + "x", user).connect()
    assert outcome.startswith("refused"), outcome
    outcome = Client(fleet, user, fleet.passwords[DEVICES[1]], user).connect()
    assert outcome.startswith("refused"), outcome


def test_password_without_client_certificate_is_refused(fleet):
    outcome = Client(fleet, DEVICES[0], fleet.passwords[DEVICES[0]], None).connect()
    assert outcome != "connected", outcome


def test_unknown_user_is_refused(fleet):
    outcome = Client(fleet, "dev-z", fleet.passwords[DEVICES[0]], DEVICES[0]).connect()
    assert outcome.startswith("refused"), outcome


# --- authorisation: the full matrix ------------------------------------------------------------


def forbidden_publications(device: str) -> list[str]:
    """Every topic `device` must not publish to: all of other devices', policies."""
    topics = [topic(other, kind) for other in DEVICES if other != device
              for kind in ("policy", "status", "telemetry")]  # fmt: skip
    others = [f"{PREFIX}/push/marker", f"{PREFIX}/other", "elsewhere"]
    return [*topics, topic(device, "policy"), FLEET_POLICY, *others]


def test_devices_cannot_publish_to_foreign_or_policy_topics_the_operator_can(fleet):
    observer = connected(fleet, OPERATOR)
    observer.subscribe(f"{PREFIX}/#", "elsewhere")
    devices = {device: connected(fleet, device) for device in DEVICES}
    attempts = 0
    for device, client in devices.items():
        for target in forbidden_publications(device):
            client.publish(target, f"escape from {device}".encode())
            attempts += 1
        # Positive controls: what a device may publish does arrive.
        client.publish(topic(device, "status"), f"allowed from {device}".encode())
        client.publish(topic(device, "telemetry"), f"allowed from {device}".encode())
    operator = connected(fleet, OPERATOR)
    for device in DEVICES:
        operator.publish(topic(device, "policy"), b"operator policy")
    operator.publish(FLEET_POLICY, b"operator fleet policy")

    expected = 2 * len(DEVICES) + len(DEVICES) + 1
    assert wait_until(lambda: len(observer.topics()) >= expected), observer.topics()
    time.sleep(SETTLE_S)
    escapes = [(t, p) for t, p in observer.received if p.startswith(b"escape")]
    print(f"publish matrix: {attempts} forbidden publications, {len(escapes)} escapes")
    assert escapes == []
    assert sorted(observer.topics()) == sorted(
        [topic(d, k) for d in DEVICES for k in ("status", "telemetry", "policy")] + [FLEET_POLICY]
    )
    for client in (observer, operator, *devices.values()):
        client.close()


def test_devices_read_only_their_own_policy_and_status_and_the_fleet_policy(fleet):
    operator = connected(fleet, OPERATOR)
    # Retained messages first: a later subscriber must not get foreign ones either.
    for device in DEVICES:
        operator.publish(topic(device, "policy"), f"retained policy {device}".encode(), True)
    operator.publish(FLEET_POLICY, b"retained fleet policy", True)
    publishers = {device: connected(fleet, device) for device in DEVICES}
    for device, client in publishers.items():
        client.publish(topic(device, "status"), f"retained status {device}".encode(), True)

    filters = ["#", f"{PREFIX}/#", f"{PREFIX}/devices/+/policy", f"{PREFIX}/devices/+/status",
               f"{PREFIX}/devices/+/telemetry", f"{PREFIX}/+/+/+", "$SYS/#"]  # fmt: skip
    filters += [topic(d, k) for d in DEVICES for k in ("policy", "status", "telemetry")]
    filters.append(FLEET_POLICY)
    readers = {}
    for device in DEVICES:
        readers[device] = connected(fleet, device)
        readers[device].subscribe(*filters)

    # Live traffic on every topic.
    for device, client in publishers.items():
        client.publish(topic(device, "status"), f"live status {device}".encode())
        client.publish(topic(device, "telemetry"), f"live telemetry {device}".encode())
    for device in DEVICES:
        operator.publish(topic(device, "policy"), f"live policy {device}".encode())
    operator.publish(FLEET_POLICY, b"live fleet policy")

    # Each reader gets its own policy and status (a second runtime with its id shows there) and
    # the fleet policy, retained and live, at least once.
    allowed = {d: {topic(d, "policy"), topic(d, "status"), FLEET_POLICY} for d in DEVICES}
    for device, reader in readers.items():
        assert wait_until(lambda r=reader, d=device: allowed[d] <= set(r.topics())), reader.topics()
    time.sleep(SETTLE_S)
    cases = escapes = 0
    for device, reader in readers.items():
        received = reader.topics()
        foreign = [t for t in received if t not in allowed[device]]
        cases += len(filters)
        escapes += len(foreign)
        assert foreign == [], f"{device} read {foreign}"
    print(f"subscribe matrix: {cases} subscriptions, {escapes} escapes")
    for client in (operator, *publishers.values(), *readers.values()):
        client.close()


def test_the_operator_reads_every_device(fleet):
    operator = connected(fleet, OPERATOR)
    operator.subscribe(f"{PREFIX}/devices/+/telemetry")
    for device in DEVICES:
        client = connected(fleet, device)
        client.publish(topic(device, "telemetry"), b"{}")
        client.close()
    expected = {topic(d, "telemetry") for d in DEVICES}
    assert wait_until(lambda: expected <= set(operator.topics())), operator.topics()
    operator.close()


# --- the configuration itself, and persistence -------------------------------------------


def test_config_has_the_promised_settings():
    settings = {}
    for line in (MOSQUITTO_DIR / "reinforce-edge.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            settings.setdefault(name, []).append(value)
    assert settings["listener"] == ["8883"]  # the only way in
    assert settings["allow_anonymous"] == ["false"]
    assert settings["require_certificate"] == ["true"]
    assert settings["set_tcp_nodelay"] == ["true"]
    assert settings["persistence"] == ["true"]
    assert "password_file" in settings and "acl_file" in settings
    policy_limit = 1024 * 1024  # runtime/constants.py DEFAULT_MAX_POLICY_BYTES
    assert policy_limit < int(settings["max_packet_size"][0]) <= 4 * policy_limit


def test_retained_fleet_policy_survives_a_broker_restart(tmp_path):
    fleet = make_fleet(tmp_path / "restart", ("dev-x", OPERATOR))
    try:
        operator = connected(fleet, OPERATOR)
        operator.publish(FLEET_POLICY, b"fleet policy v7", retain=True)
        operator.close()
        fleet.broker.stop()  # SIGTERM: mosquitto saves its database
        config = broker_config(fleet.workdir, fleet.broker.port)
        fleet.broker = start_broker(fleet.workdir, config, fleet.broker.port)
        device = connected(fleet, "dev-x")
        device.subscribe(FLEET_POLICY)
        assert wait_until(lambda: device.received), "the retained fleet policy was lost"
        assert device.received == [(FLEET_POLICY, b"fleet policy v7")]
        device.close()
    finally:
        fleet.broker.stop()


# --- revocation --------------------------------------------------------------------------------


def test_removed_device_is_locked_out_after_a_reload(tmp_path):
    fleet = make_fleet(tmp_path / "revoke", ("dev-x", OPERATOR))
    try:
        connected(fleet, "dev-x").close()
        sh(MOSQUITTO_DIR / "add-device.sh", "--passwd", fleet.workdir / "passwd", "--no-reload",
           "--remove", "dev-x")  # fmt: skip
        os.kill(fleet.broker.process.pid, signal.SIGHUP)  # what `systemctl reload mosquitto` sends
        assert wait_until(
            lambda: (
                Client(fleet, "dev-x", fleet.passwords["dev-x"], "dev-x").connect() != "connected"
            )
        )
        connected(fleet, OPERATOR).close()
    finally:
        fleet.broker.stop()


def test_scripts_refuse_bad_ids_with_exit_2(tmp_path):
    for script, args in (
        ("add-device.sh", ["--passwd", tmp_path / "p", "--no-reload", "a/b"]),
        ("add-device.sh", ["--passwd", tmp_path / "p", "--no-reload", "pi:1"]),
        ("add-device.sh", ["--passwd", tmp_path / "p", "--no-reload", "pi.1"]),  # NATS
        # a board named "operator" would get the operator's right to publish policies
        (
            "add-device.sh",
            ["--passwd", tmp_path / "p", "--out", tmp_path / "o", "--no-reload", "operator"],
        ),
        ("add-device.sh", ["--bogus", "x"]),
        ("make-certs.sh", ["--dir", tmp_path / "c", "dev+1"]),
        ("make-certs.sh", ["--dir", tmp_path / "c", "pi.local"]),
        ("make-certs.sh", ["--days", "soon"]),
        ("make-certs.sh", ["--dir", tmp_path / "c", "--days", "0"]),  # openssl failed half-way
        ("make-certs.sh", ["--dir", tmp_path / "c", "--days", "99999999"]),
        # the name goes into subjectAltName, comma-separated: no smuggled entries
        ("make-certs.sh", ["--dir", tmp_path / "c", "--broker-name", "b.lan,IP:10.9.9.9"]),
        ("make-certs.sh", ["--dir", tmp_path / "c", "--broker-name", "a/b"]),
    ):
        result = subprocess.run(
            ["bash", str(MOSQUITTO_DIR / script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (script, args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / name).exists() for name in ("p", "c", "o"))


def test_make_certs_keeps_what_exists(tmp_path):
    certs = tmp_path / "certs"
    sh(MOSQUITTO_DIR / "make-certs.sh", "--dir", certs, "dev-a")
    before = {p.name: p.read_bytes() for p in certs.rglob("*.crt")}
    result = sh(MOSQUITTO_DIR / "make-certs.sh", "--dir", certs, "dev-a", "dev-b")
    assert "kept" in result.stdout
    after = {p.name: p.read_bytes() for p in certs.rglob("*.crt")}
    assert {k: after[k] for k in before} == before and "dev-b.crt" in after
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", certs / "ca.crt", certs / "clients/dev-b.crt"],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


# --- end to end: install.sh's configuration, a runtime over mutual TLS, a pushed policy ------


def notifications(sock: socket.socket) -> list[str]:
    """Every sd_notify datagram waiting on the test's socket, as lines."""
    lines = []
    while True:
        try:
            lines += sock.recv(4096).decode().splitlines()
        except BlockingIOError:
            return lines


def seccomp_python() -> str | None:
    """An interpreter with libseccomp's binding (Debian: python3-seccomp), for unit_sandbox.py."""
    if shutil.which("systemd-analyze") is None:
        return None
    for candidate in (sys.executable, "/usr/bin/python3"):
        if shutil.which(candidate) and subprocess.run(
            [candidate, "-c", "import seccomp"], capture_output=True
        ).returncode == 0:  # fmt: skip
            return candidate
    return None


@pytest.mark.parametrize("sandbox", [False, True], ids=["plain", "unit-sandbox"])
def test_installed_runtime_connects_over_tls_and_applies_a_pushed_policy(
    fleet, tmp_path, capsys, sandbox
):
    """install.sh's files -> runtime over mutual TLS -> `export push` -> applied and persisted.

    With `unit-sandbox` the runtime runs inside the unit's own system-call filter, socket
    families and W^X (tests/deploy/unit_sandbox.py), as systemd would start it.
    """
    wrapper: list[str | Path] = []
    if sandbox:
        interpreter = seccomp_python()
        if interpreter is None:
            pytest.skip(
                "needs systemd-analyze and python3-seccomp (apt-get install python3-seccomp)"
            )
        wrapper = [interpreter, Path(__file__).with_name("unit_sandbox.py"), UNIT]
    device = DEVICES[0]
    key, public = new_key(tmp_path)
    (tmp_path / "v1.npz").write_bytes(signed_policy(1, key))
    (tmp_path / "v2.npz").write_bytes(signed_policy(2, key))
    (tmp_path / "device.password").write_text(fleet.passwords[device] + "\n")
    certfile, keyfile = fleet.certs(device)
    url = f"mqtts://127.0.0.1:{fleet.broker.port}"
    root = tmp_path / "root"
    sh(ROOT / "deploy/install.sh", "--prefix", root, "--skip-venv", "--python", sys.executable,
       "--policy", tmp_path / "v1.npz", "--public-key", public, "--broker", url,
       "--device-id", device, "--ca-file", fleet.workdir / "certs/ca.crt", "--cert", certfile,
       "--key", keyfile, "--password-file", tmp_path / "device.password")  # fmt: skip

    # Start it as the unit does: the installed runtime.toml, the password from mqtt.env (read
    # by systemd), NOTIFY_SOCKET and WATCHDOG_USEC; only the board's absolute paths are
    # redirected under the prefix (flags override the file).
    etc = root / "etc/reinforce-edge"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")}
    name, value = (etc / "mqtt.env").read_text().strip().split("=", 1)
    env[name] = value
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="1000000")
    command = [*wrapper, sys.executable, "-m", "runtime", "--config", etc / "runtime.toml",
               "--policy", etc / "policy.npz", "--public-key", etc / "fleet.pub",
               "--ca-file", etc / "tls/ca.crt", "--cert", etc / "tls/device.crt",
               "--key", etc / "tls/device.key", "--state-dir", root / "var/lib/reinforce-edge",
               "--telemetry-interval", "0.2"]  # fmt: skip
    with open(tmp_path / "runtime.log", "wb") as log:  # the child keeps its own descriptor
        runtime = subprocess.Popen(
            list(map(str, command)), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    operator = connected(fleet, OPERATOR)
    try:
        operator.subscribe(topic(device, "status"), topic(device, "telemetry"))
        assert wait_until(lambda: "READY=1" in notifications(notify) or runtime.poll() is not None)
        assert runtime.poll() is None, (tmp_path / "runtime.log").read_text()
        assert wait_until(lambda: topic(device, "telemetry") in operator.topics())

        exit_code = push_main([str(tmp_path / "v2.npz"), "--device", device, "--broker", url,
                               "--ca-file", str(fleet.workdir / "certs/ca.crt"),
                               "--cert", fleet.certs(OPERATOR)[0], "--key", fleet.certs(OPERATOR)[1],
                               "--username", OPERATOR, "--password-file",
                               str(fleet.workdir / f"credentials/{OPERATOR}.password"),
                               "--timeout", "30"])  # fmt: skip
        table = capsys.readouterr().out
        assert exit_code == 0, table + (tmp_path / "runtime.log").read_text()
        assert device in table and "applied" in table
        current = root / "var/lib/reinforce-edge/current.npz"
        assert current.read_bytes() == (tmp_path / "v2.npz").read_bytes()
        assert wait_until(lambda: "WATCHDOG=1" in notifications(notify))
    finally:
        if runtime.poll() is None:
            os.kill(runtime.pid, signal.SIGTERM)
        try:
            runtime.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(runtime.pid, signal.SIGKILL)
            runtime.wait()
        notify.close()
        operator.close()
    log = (tmp_path / "runtime.log").read_text()
    assert runtime.returncode == 0, log
    assert ("unit sandbox:" in log) == sandbox
