"""`python -m export push` and `python -m export status`: updates and the fleet's state over MQTT.

    python -m export push dist/policy.npz --device pi-1 --device pi-2 --broker mqtt://host
    python -m export push dist/policy.npz --fleet --broker mqtts://host --ca-file ca.pem
    python -m export status --broker mqtt://host

`push` publishes the exact bytes of the file (QoS 1; retained on the fleet topic, so a device
that connects later still gets it), then waits for each targeted device's retained status to
report that file (by sha256): applied, rejected (with the device's reason) or rolled back. With
`--fleet` the targets are the devices whose retained status says online. Exit 0 only when every
target applied it, 1 otherwise (or when the broker is unreachable), 2 for bad input.

Both commands learn when the broker has delivered every retained status by publishing a marker
on a private topic after subscribing: a broker delivers one client's messages in order, so the
marker arrives after the last retained status. Statuses are read at QoS 0: a broker bounds what
it queues per client at QoS 1 (`max_queued_messages 32` in deploy/mosquitto, above the 20 in
flight), so a QoS 1 subscription would get only the first 52 of a fleet's retained statuses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from runtime.constants import (
    DEFAULT_TOPIC_PREFIX,
    DEVICE_ID_PATTERN,
    DEVICE_ID_RULE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    SUBSCRIBE_RETRY_DELAYS_S,
    TOPIC_ALL_STATUS,
    TOPIC_DEVICE_KEYS,
    TOPIC_DEVICE_POLICY,
    TOPIC_FLEET_KEYS,
    TOPIC_FLEET_POLICY,
    TOPIC_PREFIX_PATTERN,
    TOPIC_PREFIX_RULE,
)
from runtime.mqtt import BrokerSettings, add_broker_arguments, make_client, settings_from
from runtime.policy import Policy, PolicyError, parse_policy

logger = logging.getLogger(__name__)

STATUS_QOS = 0  # never queued (and dropped) by the broker: see the module docstring
MAX_FILE_BYTES = 64 * 1024 * 1024  # the devices enforce their own (smaller) limit


class UsageError(Exception):
    """Bad usage or input: one line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


@dataclass(frozen=True)
class Topics:
    """Where `push` publishes and the status field that says a device already has it."""

    device: str = TOPIC_DEVICE_POLICY
    fleet: str = TOPIC_FLEET_POLICY
    running: str = "policy_sha256"


POLICY_TOPICS = Topics()
KEYS_TOPICS = Topics(TOPIC_DEVICE_KEYS, TOPIC_FLEET_KEYS, "keys_sha256")


@dataclass
class Outcome:
    """One target's answer: applied / rejected / rolled_back / timeout / skipped."""

    device: str
    result: str = "timeout"
    reason: str = ""
    seconds: float | None = None


class StatusBoard:
    """Subscribes to every device's retained status and keeps the newest per device.

    paho reconnects by itself after the connection drops; each connection subscribes again
    (the session is clean), so the retained statuses come in again and `connected` says when
    the board is live."""

    def __init__(
        self,
        settings: BrokerSettings,
        prefix: str,
        connect_timeout: float,
        *,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.prefix = prefix
        self.status: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self.connected = threading.Event()
        self._marker_topic = f"{prefix}/push/{uuid.uuid4().hex}"
        self._marker_seen = threading.Event()
        self._answered = threading.Event()  # the broker accepted or refused the connection
        self._subscribed = threading.Event()  # ... and answered the subscription: with these
        self._granted: list[Any] = []
        self._refused: str | None = None
        self._listeners: list[Any] = []
        self.client = make_client(
            settings,
            f"reinforce-edge-push-{uuid.uuid4().hex[:12]}",
            reconnect_max_s=reconnect_max_s,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.settings = settings
        self.connect_timeout = connect_timeout

    def open(self) -> None:
        """Connect, subscribe, and return once every retained status has been received."""
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=30)
        except (OSError, ValueError) as error:
            raise ConnectionError(f"cannot connect to {self.settings.url}: {error}") from None
        self.client.loop_start()
        if not self._answered.wait(self.connect_timeout) or self._refused is not None:
            self.close()
            why = f"refused the connection: {self._refused}" if self._refused else "did not answer"
            raise ConnectionError(f"broker {self.settings.url} {why}")
        try:
            self._await_subscription()
        except ConnectionError:
            self.close()
            raise
        self.client.publish(self._marker_topic, b"", qos=1)  # after the subscription
        if not self._marker_seen.wait(self.connect_timeout):
            self.close()
            raise ConnectionError(f"broker {self.settings.url} did not deliver the statuses")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def resubscribe(self) -> None:
        """Subscribe again: the broker then sends every retained status once more (a status
        it dropped on its way here, at QoS 0, comes back)."""
        self.client.subscribe(TOPIC_ALL_STATUS.format(prefix=self.prefix), STATUS_QOS)

    def _subscriptions(self) -> list[tuple[str, int]]:
        """Every status, and the marker that says they have all been delivered."""
        return [
            (TOPIC_ALL_STATUS.format(prefix=self.prefix), STATUS_QOS),
            (self._marker_topic, STATUS_QOS),
        ]

    def _await_subscription(self) -> None:
        """Wait for the answer to on_connect's subscription, asking again after each of
        SUBSCRIBE_RETRY_DELAYS_S while the broker refuses (NATS does while JetStream
        settles), within the connect timeout."""
        wanted = self._subscriptions()
        deadline = time.monotonic() + self.connect_timeout
        refused: list[str] = []
        for attempt, delay in enumerate((0.0, *SUBSCRIBE_RETRY_DELAYS_S)):
            if attempt:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                self._subscribed.clear()
                self.client.subscribe(wanted)
            if not self._subscribed.wait(max(0.0, deadline - time.monotonic())):
                raise ConnectionError(f"broker {self.settings.url} did not answer the subscription")
            refused = [str(code) for code in self._granted if code.is_failure]
            if not refused or time.monotonic() >= deadline:
                break
            logger.debug("broker %s refused the subscription (%s)", self.settings.url, refused)
        if refused:
            raise ConnectionError(
                f"broker {self.settings.url} refused the subscription to"
                f" {wanted[0][0]}: {', '.join(sorted(set(refused)))}"
            )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._granted = list(reason_codes)
        self._subscribed.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # wrong password, not authorised: retrying cannot help
            self._refused = str(reason_code)
            client.disconnect()
        else:
            client.subscribe(self._subscriptions())
            with self.changed:
                self.connected.set()
                self.changed.notify_all()
        self._answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.changed:
            self.connected.clear()
            self.changed.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self._marker_topic:
            self._marker_seen.set()
            return
        device = message.topic[len(self.prefix) + len("/devices/") :].rsplit("/", 1)[0]
        try:
            body = _parse_json(message.payload) if message.payload else None
        except (ValueError, RecursionError):  # a UnicodeDecodeError, nesting too deep
            body = "malformed"
        if body is None:  # a cleared retained status
            return
        if not _looks_like_status(body):
            logger.warning("ignoring a malformed status on %s", message.topic)
            return
        with self.changed:
            self.status[device] = body
            for listener in self._listeners:
                listener(device, body, bool(message.retain))
            self.changed.notify_all()

    def listen(self, listener: Any) -> None:
        with self.changed:
            self._listeners.append(listener)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(payload: bytes) -> Any:
    """Strict JSON: no NaN, Infinity or out-of-range numbers (they could not be printed back)."""
    return json.loads(payload, parse_float=_finite, parse_constant=_no_constant)


def _looks_like_status(body: Any) -> bool:
    """A JSON object whose fields have the types of the status schema in docs/ota.md."""
    if not isinstance(body, dict):
        return False
    version = body.get("policy_version")
    last = body.get("last_update")
    return (
        isinstance(body.get("state"), str)
        and (version is None or (isinstance(version, int) and not isinstance(version, bool)))
        and isinstance(body.get("policy_sha256"), (str, type(None)))
        and isinstance(last, (dict, type(None)))
        and all(isinstance(v, (str, int, float, type(None))) for v in (last or {}).values())
    )


def _verdict(
    body: dict[str, Any], sha256: str, retained: bool, running: str = "policy_sha256"
) -> tuple[str, str] | None:
    """(result, reason) when this status answers for the file with `sha256`, else None;
    `running` is the status field naming what the device runs (its keys: keys_sha256)."""
    last = body.get("last_update") or {}
    if not retained and last.get("sha256") == sha256:
        return str(last.get("result")), str(last.get("reason") or "")
    if body.get(running) == sha256 and body.get("state") == "online":
        return "applied", "" if not retained else "already running this version"
    return None


def push(
    data: bytes,
    settings: BrokerSettings,
    *,
    devices: Sequence[str] = (),
    fleet: bool = False,
    prefix: str = DEFAULT_TOPIC_PREFIX,
    timeout: float = 10.0,
    where: Topics = POLICY_TOPICS,
) -> list[Outcome]:
    """Publish `data` and wait (up to `timeout` s) for each target's answer."""
    sha256 = hashlib.sha256(data).hexdigest()
    board = StatusBoard(settings, prefix, connect_timeout=min(timeout, 10.0))
    board.open()
    try:
        with board.changed:
            known = dict(board.status)
        if fleet:
            online = sorted(d for d, s in known.items() if s.get("state") == "online")
            skipped = [
                Outcome(d, "skipped", "offline: gets the retained fleet policy on reconnect")
                for d in sorted(set(known) - set(online))
            ]
            targets = online
        else:
            targets, skipped = list(dict.fromkeys(devices)), []
        outcomes = {device: Outcome(device) for device in targets}
        started = time.monotonic()

        def on_status(device: str, body: dict[str, Any], retained: bool) -> None:
            outcome = outcomes.get(device)
            if outcome is None or outcome.seconds is not None:
                return
            verdict = _verdict(body, sha256, retained, where.running)
            if verdict is not None:
                outcome.result, outcome.reason = verdict
                outcome.seconds = time.monotonic() - started

        board.listen(on_status)
        with board.changed:  # a target that already runs this exact file has answered
            for device in targets:
                if device in known:
                    on_status(device, known[device], True)
        if fleet:
            topic = where.fleet.format(prefix=prefix)
            board.client.publish(topic, data, qos=1, retain=True)
        else:
            for device in targets:
                topic = where.device.format(prefix=prefix, device_id=device)
                board.client.publish(topic, data, qos=1)
        deadline = started + timeout
        with board.changed:
            while any(o.seconds is None for o in outcomes.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                board.changed.wait(remaining)
            for outcome in outcomes.values():
                if outcome.seconds is None:
                    state = (known.get(outcome.device) or {}).get("state")
                    outcome.reason = f"no answer within {timeout:g} s" + (
                        f" (device {state})" if state else " (no status: unknown device?)"
                    )
        return [*outcomes.values(), *skipped]
    finally:
        board.close()


def read_statuses(settings: BrokerSettings, prefix: str, timeout: float) -> dict[str, dict]:
    board = StatusBoard(settings, prefix, connect_timeout=timeout)
    board.open()
    try:
        with board.changed:
            return dict(board.status)
    finally:
        board.close()


# --- output -------------------------------------------------------------------------------


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def outcome_table(outcomes: Sequence[Outcome]) -> str:
    rows = [
        (
            o.device,
            o.result,
            o.reason or "-",
            "-" if o.seconds is None else f"{o.seconds:.3f}",
        )
        for o in outcomes
    ]
    return format_table(("device", "result", "reason", "seconds"), rows)


def status_table(statuses: dict[str, dict[str, Any]]) -> str:
    rows = []
    for device, body in sorted(statuses.items()):
        last = body.get("last_update") or {}
        rows.append(
            (
                device,
                str(body.get("state", "?")),
                str(body.get("policy_version", "-")),
                str(body.get("policy_sha256") or "-")[:12],
                str(last.get("result") or "-"),
                str(last.get("version") or "-"),
                str(last.get("reason") or "-"),
                str(body.get("at") or "-"),
            )
        )
    header = ("device", "state", "version", "sha256", "last update", "of version", "reason", "at")
    return format_table(header, rows)


# --- command lines ----------------------------------------------------------------------------


def build_push_parser(prog: str = "python -m export push") -> Parser:
    parser = Parser(prog=prog, description="Publish a signed policy.npz to devices over MQTT.")
    parser.add_argument("file", help="policy.npz to publish (as `python -m export` wrote it)")
    add_target_arguments(parser)
    return parser


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--device/--fleet, --timeout, --json and the broker's flags: push and keys push."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--device", action="append", metavar="ID", help="a target device (repeat for more)"
    )
    target.add_argument("--fleet", action="store_true", help="every device (retained)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the answers"
    )
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    add_broker_arguments(parser, required=True)


def build_status_parser(prog: str = "python -m export status") -> Parser:
    parser = Parser(prog=prog, description="List devices and their state from retained status.")
    parser.add_argument("--timeout", type=float, default=5.0, help="connect timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    add_broker_arguments(parser, required=True)
    return parser


def _settings(args: argparse.Namespace) -> BrokerSettings:
    try:
        return settings_from(args)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _prefix(args: argparse.Namespace) -> str:
    prefix = args.topic_prefix or DEFAULT_TOPIC_PREFIX
    if not re.fullmatch(TOPIC_PREFIX_PATTERN, prefix):
        raise UsageError(f"--topic-prefix {prefix!r}: use {TOPIC_PREFIX_RULE}")
    return prefix


def _check_devices(devices: Sequence[str]) -> None:
    for device in devices:
        if not re.fullmatch(DEVICE_ID_PATTERN, device):
            raise UsageError(f"--device {device!r}: a device id is {DEVICE_ID_RULE}")


def _run(body: Any) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return body()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def checked_target(args: argparse.Namespace) -> tuple[BrokerSettings, str]:
    """The broker settings and topic prefix of push-like arguments; UsageError when bad."""
    if not 0 < args.timeout <= 3600:
        raise UsageError(f"--timeout must be in (0, 3600] seconds, got {args.timeout}")
    settings = _settings(args)
    prefix = _prefix(args)
    _check_devices(args.device or ())
    return settings, prefix


def publish_and_report(
    args: argparse.Namespace, data: bytes, headline: str, where: Topics = POLICY_TOPICS
) -> int:
    """Push `data` as `args` say, print the outcomes; exit 0 when every target applied it."""
    settings, prefix = checked_target(args)
    outcomes = push(
        data,
        settings,
        devices=args.device or (),
        fleet=args.fleet,
        prefix=prefix,
        timeout=args.timeout,
        where=where,
    )
    if args.json:
        print(json.dumps([o.__dict__ for o in outcomes], indent=1))
    else:
        print(headline)
        print(outcome_table(outcomes) if outcomes else "no online devices")
    counted = [o for o in outcomes if o.result != "skipped"]
    ok = bool(counted) and all(o.result == "applied" for o in counted)
    return EXIT_OK if ok else EXIT_FAILURE


def push_main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_push_parser().parse_args(argv)
        checked_target(args)  # bad flags before the file is read
        path = Path(args.file)
        data, policy = read_policy(path)
        if policy.signature is None:
            logger.warning("%s is unsigned: devices with a public key will reject it", path)
        headline = f"pushed {path} version {policy.version} sha256 {policy.sha256[:12]}..."
        return publish_and_report(args, data, headline)

    return _run(body)


def read_policy(path: Path, what: str = "") -> tuple[bytes, Policy]:
    """The file's bytes and policy; UsageError naming `what` (a flag) and the path otherwise."""
    name = f"{what} {path}" if what else str(path)
    try:
        data = path.read_bytes()
        return data, parse_policy(data, max_bytes=MAX_FILE_BYTES)
    except OSError as error:
        raise UsageError(f"{name}: cannot read: {error.strerror or error}") from None
    except PolicyError as error:
        raise UsageError(f"{name}: {error}") from None
    except ValueError as error:  # what the parser trips on outside PolicyError (a lone
        # surrogate in meta: UnicodeEncodeError) is still a bad file, not a traceback
        raise UsageError(f"{name}: not a readable policy.npz: {error}") from None


def status_main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_status_parser().parse_args(argv)
        if not 0 < args.timeout <= 3600:
            raise UsageError(f"--timeout must be in (0, 3600] seconds, got {args.timeout}")
        settings = _settings(args)
        statuses = read_statuses(settings, _prefix(args), args.timeout)
        if args.json:
            print(json.dumps(statuses, indent=1, sort_keys=True))
        else:
            print(status_table(statuses) if statuses else "no devices have reported a status")
        return EXIT_OK

    return _run(body)
