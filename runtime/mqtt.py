"""Broker settings shared by the device agent and `python -m export push`.

A broker is named by a URL, `mqtt://HOST[:PORT]` (plain TCP, default port 1883) or
`mqtts://HOST[:PORT]` (TLS, default port 8883). TLS files and the user name come from flags;
the password only from the `REINFORCE_EDGE_MQTT_PASSWORD` environment variable or a file, so it
never shows in a process list or a shell history. paho-mqtt is imported only by `make_client`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.config import RefusePassword
from runtime.constants import DEFAULT_TOPIC_PREFIX, ENV_MQTT_PASSWORD, MQTT_KEEPALIVE_S

SCHEME_PORTS = {"mqtt": 1883, "mqtts": 8883}
# a DNS name or IPv4 address, or an IPv6 address (written in brackets in the URL)
HOST_PATTERN = r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9_.-]+)?"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to authenticate; validated where it is built."""

    host: str
    port: int
    tls: bool = False
    ca_file: str | None = None  # PEM CA bundle for mqtts (default: the system's)
    cert: str | None = None  # client certificate (PEM) for mutual TLS
    key: str | None = None  # client private key (PEM) for mutual TLS
    username: str | None = None
    password: str | None = None  # from the environment or a file, never a flag

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("broker host is empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"broker port must be in 1..65535, got {self.port}")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together (client certificate and its key)")
        if (self.ca_file or self.cert) and not self.tls:
            raise ValueError("--ca-file/--cert/--key need an mqtts:// broker URL")
        for name in ("ca_file", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"--{name.replace('_', '-')} {path}: no such file")
        if self.password is not None and self.username is None:
            raise ValueError("a broker password was given without --username")
        check_tls_files(self.ca_file, self.cert, self.key)

    def __repr__(self) -> str:  # never print the password
        secret = "***" if self.password is not None else None
        return (
            f"BrokerSettings(host={self.host!r}, port={self.port}, tls={self.tls},"
            f" username={self.username!r}, password={secret!r})"
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def _encrypted_key() -> bytes:
    raise ValueError("encrypted private keys are not supported")


def check_tls_files(ca_file: str | None, cert: str | None, key: str | None) -> None:
    """Load the PEM files once now, so a wrong one is one line naming it, not a TLS traceback."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise ValueError(f"--ca-file {ca_file}: not a PEM CA certificate ({reason})") from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key, password=_encrypted_key)
        except (ssl.SSLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise ValueError(
                f"--cert {cert} / --key {key}: not a PEM certificate and its unencrypted"
                f" private key ({reason})"
            ) from None


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """(tls, host, port) from `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`."""
    if any(char.isspace() for char in url):
        raise ValueError(f"broker URL {url!r}: must not contain spaces")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # "Invalid IPv6 URL": an unclosed or bad bracket
        raise ValueError(f"broker URL {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEME_PORTS:
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if parts.password is not None:
        raise ValueError(
            f"broker URL must not carry a password: use {ENV_MQTT_PASSWORD} or --password-file"
        )
    if parts.username is not None:
        raise ValueError("broker URL must not carry a user name: use --username")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: expected mqtt[s]://HOST[:PORT] and nothing more")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r}: port must be an integer in 1..65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"broker URL {url!r}: port must be an integer in 1..65535")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r}: no host")
    if not re.fullmatch(HOST_PATTERN, parts.hostname):
        raise ValueError(f"broker URL {url!r}: {parts.hostname!r} is not a host name or address")
    return scheme == "mqtts", parts.hostname, port or SCHEME_PORTS[scheme]


def read_password(password_file: str | None) -> str | None:
    """The broker password: the environment variable wins, else the first line of the file."""
    if os.environ.get(ENV_MQTT_PASSWORD):
        return os.environ[ENV_MQTT_PASSWORD]
    if password_file is None:
        return None
    try:
        lines = Path(password_file).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(
            f"--password-file {password_file}: cannot read: {error.strerror or error}"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"--password-file {password_file}: not UTF-8 text") from None
    return lines[0] if lines else ""


def broker_settings(
    url: str,
    *,
    ca_file: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    username: str | None = None,
    password_file: str | None = None,
) -> BrokerSettings:
    tls, host, port = parse_broker_url(url)
    return BrokerSettings(
        host=host,
        port=port,
        tls=tls,
        ca_file=ca_file,
        cert=cert,
        key=key,
        username=username,
        password=read_password(password_file),
    )


def add_broker_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The broker flags, identical for the device and for `export push/status`."""
    group = parser.add_argument_group("MQTT broker")
    group.add_argument("--password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    group.add_argument(
        "--broker",
        required=required,
        default=None,
        metavar="URL",
        help="broker URL: mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
    )
    group.add_argument(
        "--topic-prefix",
        default=None,
        metavar="P",
        help=f"topic prefix (default {DEFAULT_TOPIC_PREFIX})",
    )
    group.add_argument("--ca-file", default=None, help="CA bundle (PEM) for mqtts://")
    group.add_argument("--cert", default=None, help="client certificate (PEM) for mutual TLS")
    group.add_argument("--key", default=None, help="client private key (PEM) for mutual TLS")
    group.add_argument("--username", default=None, help="broker user name")
    group.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help=f"file holding the broker password ({ENV_MQTT_PASSWORD} takes precedence)",
    )


def settings_from(source: Any) -> BrokerSettings:
    """Broker settings from anything with the broker flags as attributes: the parsed arguments
    of `export push/status` or the runtime's configuration."""
    return broker_settings(
        source.broker,
        ca_file=source.ca_file,
        cert=source.cert,
        key=source.key,
        username=source.username,
        password_file=source.password_file,
    )


def _set_nodelay(client: Any, userdata: Any, sock: Any) -> None:
    """Small messages go out at once instead of waiting on Nagle (15 ms -> 0.15 ms one-way)."""
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (unix transport)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(settings: BrokerSettings, client_id: str, *, reconnect_max_s: float = 30.0) -> Any:
    """A paho-mqtt 2 client (callback API 2) with TLS, credentials, TCP_NODELAY and backoff."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert, keyfile=settings.key)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    client.on_socket_open = _set_nodelay
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(reconnect_max_s)))
    client.max_queued_messages_set(1000)  # outgoing QoS>0 backlog while offline is bounded
    return client


def connect_async(client: Any, settings: BrokerSettings) -> None:
    client.connect_async(settings.host, settings.port, keepalive=MQTT_KEEPALIVE_S)


def json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def topics(prefix: str, device_id: str) -> dict[str, str]:
    from runtime.constants import (
        TOPIC_DEVICE_KEYS,
        TOPIC_DEVICE_POLICY,
        TOPIC_FLEET_KEYS,
        TOPIC_FLEET_POLICY,
        TOPIC_STATUS,
        TOPIC_TELEMETRY,
    )

    return {
        "policy": TOPIC_DEVICE_POLICY.format(prefix=prefix, device_id=device_id),
        "fleet": TOPIC_FLEET_POLICY.format(prefix=prefix),
        "status": TOPIC_STATUS.format(prefix=prefix, device_id=device_id),
        "telemetry": TOPIC_TELEMETRY.format(prefix=prefix, device_id=device_id),
        "keys": TOPIC_DEVICE_KEYS.format(prefix=prefix, device_id=device_id),
        "fleet_keys": TOPIC_FLEET_KEYS.format(prefix=prefix),
    }
