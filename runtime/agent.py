"""The device's MQTT agent: receives policy updates, publishes status and telemetry.

Three threads, none of them the control loop's:

- paho-mqtt's network thread (`loop_start`): connects, reconnects with backoff, resubscribes
  and republishes the retained status on every (re)connect; its `on_message` only checks the
  size and hands the payload to the worker through a bounded mailbox (a full mailbox drops the
  payload with a "busy" status, so a flood costs neither memory nor time in the loop);
- the update worker: validates (`runtime.updates`), persists (`runtime.state`, fsync'd), swaps
  the policy into the `PolicySlot` (one reference assignment the loop picks up at its next
  decision), publishes the status, runs health rollbacks and sends telemetry every interval;
- the control loop itself only calls `on_episode` once per finished episode (cheap).

A subscription the broker refuses (NATS does while JetStream settles) is asked for again from a
short-lived timer thread after each of SUBSCRIBE_RETRY_DELAYS_S; the status says "online" once
the policy topics are held, or after the last delay without them (one ERROR line says so), and
the agent keeps asking at the last delay, so a broker that recovers reaches it without a
reconnect.

Status is retained with QoS 1 and its "offline" form is the MQTT will, so a device that dies
shows offline; telemetry is QoS 0 (a lost sample is replaced by the next one). The status's
`probation` follows the health check of the version applied last (pending, then passed or
failed; skipped when there is nothing to judge it by): it is published again when it passes.

The MQTT client id is derived from the device id, so the broker holds one connection per device:
a rebooted device takes over its dead run's connection at once. Two runtimes given the same
device id therefore keep disconnecting each other; the agent notices (a status carrying another
run's random `instance` on its own status topic, or the broker closing its connections right
after accepting them) and says so in one ERROR line, and the control loop carries on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import re
import resource
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.constants import (
    DEFAULT_MAX_POLICY_BYTES,
    DEFAULT_PROBATION_EPISODES,
    DEFAULT_TELEMETRY_INTERVAL_S,
    DEFAULT_TOPIC_PREFIX,
    DEVICE_ID_PATTERN,
    DEVICE_ID_RULE,
    MAX_KEYS_MESSAGE_BYTES,
    MQTT_KEEPALIVE_S,
    OBS_DIM,
    SUBSCRIBE_RETRY_DELAYS_S,
    TOPIC_PREFIX_PATTERN,
    TOPIC_PREFIX_RULE,
    UPDATE_QUEUE_MAX,
    UPDATE_QUEUE_MAX_BYTES,
)
from runtime.keyset import KeySet, RevokedKey, apply_keys_message, as_keyset
from runtime.mqtt import BrokerSettings, connect_async, json_bytes, make_client, topics
from runtime.policy import Policy, utc_now_iso
from runtime.slot import ActivePolicy, PolicySlot
from runtime.spaces import PlantSpace
from runtime.state import StateStore, Stored
from runtime.updates import (
    AlreadyRunning,
    HealthMonitor,
    RollbackDecision,
    Stale,
    UpdateRejected,
    UpdateRules,
    one_line,
    validate_update,
)

logger = logging.getLogger(__name__)

STATUS_QOS = 1
POLICY_QOS = 1
TELEMETRY_QOS = 0
STATUS_WATCH_QOS = 0  # the agent reads its own status topic to notice a twin (below)
REJECTION_LOG_BURST = 20  # rejection lines logged per minute before they are summarised
# Two runtimes with one device id share the MQTT client id, so the broker closes the older
# connection each time the other one connects: with paho's 1 s reconnect delay each holds it
# for about a second. A connection the broker closes within SHORT_CONNECTION_S of accepting it
# is short; this many short ones in a row, each reconnect accepted at the first attempt (a
# restarting broker refuses some), are reported as a probable twin (the sure sign, a status
# from another instance, needs read access to the own status topic).
SHORT_CONNECTION_S = 10.0
SHORT_CONNECTIONS_FOR_TWIN = 4
# Once a twin is reported, wait this long before reconnecting (instead of 1 s): the pair then
# trades the connection about every 10 s instead of every second, sparing the broker.
TWIN_RECONNECT_DELAY_S = 10


@dataclass(frozen=True)
class AgentConfig:
    """How the agent behaves; the broker itself is a `BrokerSettings`."""

    device_id: str
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    telemetry_interval: float = DEFAULT_TELEMETRY_INTERVAL_S  # seconds between samples
    max_payload_bytes: int = DEFAULT_MAX_POLICY_BYTES
    probation_episodes: int = DEFAULT_PROBATION_EPISODES
    rollback_below: float | None = None  # None: half the previous policy's recent mean return
    allow_unsigned: bool = False
    obs_dim: int = OBS_DIM
    plant_space: PlantSpace | None = None  # None: CartPole's two actions with obs_dim

    def __post_init__(self) -> None:
        if not re.fullmatch(DEVICE_ID_PATTERN, str(self.device_id)):
            raise ValueError(f"device id {self.device_id!r} is not allowed: {DEVICE_ID_RULE}")
        if not re.fullmatch(TOPIC_PREFIX_PATTERN, str(self.topic_prefix)):
            raise ValueError(
                f"topic prefix {self.topic_prefix!r} is not allowed: {TOPIC_PREFIX_RULE}"
            )
        if not 0.05 <= self.telemetry_interval <= 86400:
            raise ValueError(
                f"telemetry interval must be in 0.05..86400 s, got {self.telemetry_interval}"
            )
        if not 1 <= self.max_payload_bytes <= 64 * 1024 * 1024:
            raise ValueError(
                f"max payload bytes must be in 1..67108864, got {self.max_payload_bytes}"
            )
        if self.probation_episodes < 1:
            raise ValueError(f"probation episodes must be >= 1, got {self.probation_episodes}")


AGENT_NICE = 10  # the agent's threads yield the CPU to the control loop when it is contended


def lower_thread_priority() -> None:
    """Nice the calling thread only (Linux: a thread id is a PRIO_PROCESS target)."""
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), AGENT_NICE)


def rss_mb() -> float:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


class Agent:
    """One device's MQTT client; `start()`, `stop()`, and `on_episode` for the loop."""

    def __init__(
        self,
        config: AgentConfig,
        broker: BrokerSettings,
        slot: PolicySlot,
        activate: Callable[[Policy], ActivePolicy],
        store: StateStore,
        *,
        public_key: Any = None,
        stats: Callable[[], dict[str, Any]] | None = None,
        inline: bool = False,
    ) -> None:
        """`inline=True`: no worker thread; payloads are validated in the MQTT thread and
        telemetry waits for `poll()` (for hosts that drive many agents from one thread)."""
        self.config = config
        self.broker = broker
        self.slot = slot
        self.activate = activate
        self.store = store
        # what the state directory persisted (keys.json) wins over the configured key
        self.keyset: KeySet | None = as_keyset(
            store.public_key if isinstance(store.public_key, KeySet) else public_key
        )
        self.rules = UpdateRules(
            obs_dim=config.obs_dim,
            max_bytes=config.max_payload_bytes,
            public_key=self.keyset,
            allow_unsigned=config.allow_unsigned,
            space=config.plant_space,
        )
        self.stats = stats
        self.inline = inline
        self._next_telemetry = time.monotonic() + config.telemetry_interval
        # the loop's first episode begins under the policy running now: it is the baseline
        self.health = HealthMonitor(
            config.probation_episodes, config.rollback_below, slot.active.policy.version
        )
        # random per start: a status carrying another instance was sent by another process
        # that runs with this device id (a cloned SD card, a copied config file)
        self.instance = secrets.token_hex(8)
        self._own_status_seen = False  # our status came back: any other one is newer
        self.duplicate_reported = False
        self._connected_at = 0.0
        self._short_connections = 0
        self._status_watch_mid: int | None = None
        self._subscribing: dict[int, list[tuple[str, int]]] = {}  # mid -> what it asked for
        self._subscribe_lock = threading.Lock()  # a retry subscribes from a timer thread
        self._subscribe_retries = 0
        self._retry_timer: threading.Timer | None = None
        self.topics = topics(config.topic_prefix, config.device_id)
        self.rejected_updates = 0
        self.applied_updates = 0
        self.last_update: dict[str, Any] | None = None
        self._status_lock = threading.RLock()  # last_update and the status that carries it
        self._started = time.monotonic()
        self._mailbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending = 0  # payloads in the mailbox, and their bytes (bounded)
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self.peak_pending_bytes = 0  # the most payload bytes ever waiting (bounded)
        self._stopping = threading.Event()
        self._log_window = (0.0, 0)  # (window start, rejection lines logged in it)
        self._suppressed = 0
        self._worker = threading.Thread(target=self._work, name="ota-worker", daemon=True)
        # A stable client id: after a power cut the new connection takes over the stale one
        # at once (its will fires before our "online"), instead of the stale one's will
        # arriving a keepalive later and marking a running device offline.
        client_id = f"{config.topic_prefix}-{config.device_id}"
        self.client = make_client(broker, client_id[-128:])
        self.client.will_set(
            self.topics["status"], self._status_bytes("offline"), qos=STATUS_QOS, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect_fail = self._on_connect_fail
        self._unreachable_logged = False
        self._refusal_logged: str | None = None
        self.connected = threading.Event()  # the broker accepted the connection
        self.ready = threading.Event()  # ... and the policy subscriptions: status is online

    # --- life cycle -----------------------------------------------------------------

    def start(self, network_thread: bool = True) -> None:
        """Connect in the background (the broker may be down: it is retried with backoff).

        `network_thread=False` connects now and leaves the network loop to the caller
        (`client.loop_read/loop_write/loop_misc`), for many agents in one thread.
        """
        if not self.inline:
            self._worker.start()
        if network_thread:
            connect_async(self.client, self.broker)
            self.client.loop_start()
        else:
            self.client.connect(self.broker.host, self.broker.port, keepalive=MQTT_KEEPALIVE_S)

    def stop(self, timeout: float = 2.0) -> None:
        """Publish the offline status, disconnect and join the threads."""
        self._stopping.set()
        self._cancel_subscribe_retry()
        if self._worker.is_alive():
            self._mailbox.put(("stop", None))
            self._worker.join(timeout)
        if self.inline:
            self._save_highest()
        if self.connected.is_set():
            info = self.client.publish(
                self.topics["status"],
                self._status_bytes("offline"),
                qos=STATUS_QOS,
                retain=True,
            )
            # if the connection went away meanwhile, the broker sends the will instead
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (network thread) ----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._short_connections = 0  # a twin's reconnects always succeed at once
            if self._refusal_logged != str(reason_code):  # once, not once per retry
                self._refusal_logged = str(reason_code)
                logger.warning(
                    "broker %s refused the connection: %s; retrying with backoff",
                    self.broker.url,
                    reason_code,
                )
            return
        self._refusal_logged = None
        if not self.inline:
            lower_thread_priority()  # paho's network thread (idempotent)
        self.connected.set()
        self._connected_at = time.monotonic()
        self._unreachable_logged = False
        logger.log(
            logging.DEBUG if self.duplicate_reported else logging.INFO,
            "connected to %s as %s",
            self.broker.url,
            self.config.device_id,
        )
        # first, so the retained status arrives before our own "online" goes out
        _, self._status_watch_mid = client.subscribe(self.topics["status"], STATUS_WATCH_QOS)
        self._cancel_subscribe_retry()
        self._subscribe_retries = 0
        with self._subscribe_lock:
            self._subscribing.clear()  # requests of an earlier connection get no answer now
        # the key topics first: a retained key-set change arrives before the retained policy
        # that its new key signed
        self._subscribe(
            client,
            [
                (self.topics["keys"], POLICY_QOS),
                (self.topics["fleet_keys"], POLICY_QOS),
                (self.topics["policy"], POLICY_QOS),
                (self.topics["fleet"], POLICY_QOS),
            ],
        )

    def _subscribe(self, client, wanted: list[tuple[str, int]]) -> None:
        with self._subscribe_lock:  # its SUBACK may arrive before subscribe() returns
            _, mid = client.subscribe(wanted)
            self._subscribing[mid] = wanted

    def _retry_subscribe(self, client, wanted: list[tuple[str, int]]) -> None:
        if self.connected.is_set() and not self._stopping.is_set():
            self._subscribe(client, wanted)

    def _cancel_subscribe_retry(self) -> None:
        timer, self._retry_timer = self._retry_timer, None
        if timer is not None:
            timer.cancel()

    def _on_connect_fail(self, client, userdata) -> None:
        self._short_connections = 0  # a restarting broker, not a twin taking the connection
        if not self._unreachable_logged:  # once per outage, not once per retry
            self._unreachable_logged = True
            logger.warning("cannot reach broker %s; retrying with backoff", self.broker.url)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """Online only once subscribed: whoever sees "online" may publish to this device."""
        if mid == self._status_watch_mid:  # Mosquitto grants it even when its ACL denies
            return  # reading: then nothing arrives, and only dropped connections tell a twin
        with self._subscribe_lock:
            wanted = self._subscribing.pop(mid, [])
        refused = [
            request for request, code in zip(wanted, reason_codes, strict=False) if code.is_failure
        ]
        if not refused:
            if self._subscribe_retries > len(SUBSCRIBE_RETRY_DELAYS_S):  # after the ERROR below
                logger.warning("broker %s granted the refused subscriptions", self.broker.url)
            self._go_online()
            return
        if self._subscribe_retries == len(SUBSCRIBE_RETRY_DELAYS_S):
            logger.error(
                "broker %s refused the subscriptions to %s %d times: going online without"
                " them (updates published there do not arrive); asking again every %g s",
                self.broker.url,
                ", ".join(topic for topic, _ in refused),
                self._subscribe_retries + 1,
                SUBSCRIBE_RETRY_DELAYS_S[-1],
            )
            self._go_online()
        self._schedule_subscribe_retry(client, refused, reason_codes)

    def _go_online(self) -> None:
        if not self.ready.is_set():  # once per connection
            self._publish_status()
            self.ready.set()

    def _schedule_subscribe_retry(
        self, client, refused: list[tuple[str, int]], reason_codes: list[Any]
    ) -> None:
        delay = SUBSCRIBE_RETRY_DELAYS_S[
            min(self._subscribe_retries, len(SUBSCRIBE_RETRY_DELAYS_S) - 1)
        ]
        self._subscribe_retries += 1
        logger.log(
            logging.WARNING if self._subscribe_retries == 1 else logging.DEBUG,
            "broker %s refused the subscriptions to %s (%s); retrying in %g s",
            self.broker.url,
            ", ".join(topic for topic, _ in refused),
            ", ".join(sorted({str(code) for code in reason_codes if code.is_failure})),
            delay,
        )
        self._retry_timer = threading.Timer(delay, self._retry_subscribe, (client, refused))
        self._retry_timer.daemon = True
        self._retry_timer.start()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.ready.clear()
        self._cancel_subscribe_retry()  # the next connect subscribes afresh
        if self._stopping.is_set():
            return
        if not was_connected:  # closed before the broker accepted us: once per outage
            self._short_connections = 0
            if self._refusal_logged is None and not self._unreachable_logged:
                self._unreachable_logged = True
                logger.warning(
                    "disconnected from %s before the broker accepted the connection (%s);"
                    " retrying with backoff (a TLS client certificate missing or refused?)",
                    self.broker.url,
                    reason_code,
                )
            return
        short = time.monotonic() - self._connected_at < SHORT_CONNECTION_S
        self._short_connections = self._short_connections + 1 if short else 0
        if self._short_connections >= SHORT_CONNECTIONS_FOR_TWIN:
            self._report_twin(
                f"probably: the broker closed each of its last {self._short_connections}"
                f" connections within {SHORT_CONNECTION_S:g} s of accepting it"
            )
        logger.log(
            logging.DEBUG if self.duplicate_reported and short else logging.WARNING,
            "disconnected from %s (%s); reconnecting with backoff",
            self.broker.url,
            reason_code,
        )

    def _on_own_status(self, payload: bytes) -> None:
        """Our status topic, as the broker has it: ours, or a twin's (same device id)."""
        if len(payload) > 64 * 1024:  # a status is a few hundred bytes
            return
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):  # cleared (empty), or not a status at all
            return
        instance = body.get("instance") if isinstance(body, dict) else None
        if not isinstance(instance, str):  # cleared, or a runtime too old to say
            return
        if instance == self.instance:
            self._own_status_seen = True
        elif self._own_status_seen:  # published after ours: not a previous run of this device
            self._report_twin(
                f"a status of runtime instance {instance} ({body.get('state')}) replaced"
                f" this one's ({self.instance})"
            )

    def _report_twin(self, evidence: str) -> None:
        """One ERROR line per process; the control loop and the agent carry on."""
        if self.duplicate_reported:
            return
        self.duplicate_reported = True
        self.client.reconnect_delay_set(
            min_delay=TWIN_RECONNECT_DELAY_S, max_delay=max(TWIN_RECONNECT_DELAY_S, 30)
        )
        logger.error(
            "another runtime is connected with device id %r (%s); the broker allows one"
            " connection per id, so the two keep disconnecting each other, miss updates and"
            " overwrite each other's status: give each device its own --device-id (this"
            " controller keeps running)",
            self.config.device_id,
            evidence,
        )

    def _on_message(self, client, userdata, message) -> None:
        data = message.payload
        if message.topic == self.topics["status"]:
            self._on_own_status(data)
            return
        keys = self._is_keys_topic(message.topic)
        if not data and message.topic in (self.topics["fleet"], self.topics["fleet_keys"]):
            # How MQTT clears a retained message (docs/deploying.md, rolling back a policy by hand):
            # the operator removed the fleet policy, nobody sent this device a bad one.
            logger.info("the retained %s was cleared on the broker", message.topic)
            return
        limit = MAX_KEYS_MESSAGE_BYTES if keys else self.config.max_payload_bytes
        if len(data) > limit:  # cheapest check, before any queueing
            self._reject(
                data,
                f"{'keys message' if keys else 'policy'} is {len(data)} bytes, more than the"
                f" limit of {limit}",
                message.topic,
            )
            return
        with self._pending_lock:
            busy = self._pending >= UPDATE_QUEUE_MAX or (
                # an empty mailbox takes any payload within the size limit, which may be set
                # above the mailbox's byte bound (a large custom plant)
                self._pending > 0 and self._pending_bytes + len(data) > UPDATE_QUEUE_MAX_BYTES
            )
            if not busy:
                self._pending += 1
                self._pending_bytes += len(data)
                self.peak_pending_bytes = max(self.peak_pending_bytes, self._pending_bytes)
        if busy:
            self._reject(
                data, f"device busy: {UPDATE_QUEUE_MAX} updates already waiting", message.topic
            )
            return
        if self.inline:
            with self._pending_lock:
                self._pending -= 1
                self._pending_bytes -= len(data)
            self._handle_payload(message.topic, data, bool(message.retain))
            return
        self._mailbox.put(("payload", (message.topic, data, bool(message.retain))))

    # --- the worker ---------------------------------------------------------------------

    def poll(self) -> None:
        """Record the highest accepted version and send telemetry when it is due (inline
        agents; the worker does both itself)."""
        self._save_highest()
        if time.monotonic() >= self._next_telemetry:
            self._publish_telemetry()
            self._next_telemetry = time.monotonic() + self.config.telemetry_interval

    def _save_highest(self) -> None:
        """state.json's copy of the highest accepted version (a no-op when it is current):
        current.npz holds it already, this only guards against a later loss of that file."""
        try:
            self.store.save_highest()
        except OSError as error:
            logger.warning(
                "cannot record version %d in %s: %s",
                self.store.highest_version,
                self.store.state_path,
                error.strerror or error,
            )

    def _work(self) -> None:
        lower_thread_priority()
        next_telemetry = self._next_telemetry
        while True:
            timeout = max(0.0, next_telemetry - time.monotonic())
            try:
                kind, item = self._mailbox.get(timeout=timeout)
            except queue.Empty:
                kind, item = "telemetry", None
            if kind == "stop":
                return
            try:
                if kind == "payload":
                    topic, data, retained = item
                    with self._pending_lock:
                        self._pending -= 1
                        self._pending_bytes -= len(data)
                    self._handle_payload(topic, data, retained)
                elif kind == "rollback":
                    self._roll_back(item)
                elif kind == "passed":
                    self._probation_passed()
            except Exception:  # the worker must survive anything a payload can cause
                logger.exception("update worker error (the running policy is unchanged)")
            if time.monotonic() >= next_telemetry:
                self._publish_telemetry()
                next_telemetry = time.monotonic() + self.config.telemetry_interval

    def _is_keys_topic(self, topic: str) -> bool:
        return topic in (self.topics["keys"], self.topics["fleet_keys"])

    def _refuse(self, data: bytes, topic: str, retained: bool, rejection: UpdateRejected) -> None:
        """A policy or key set refused, in the status; a stale retained copy (the fleet's,
        re-delivered at every (re)connect: old news) only in the debug log."""
        if retained and isinstance(rejection, Stale):
            logger.debug("ignoring retained %s: %s", topic, rejection.reason)
            return
        self._reject(data, rejection.reason, topic, version=rejection.version)

    def _handle_keys(self, topic: str, data: bytes, retained: bool) -> None:
        """A signed key-set change: checked, persisted (keys.json), then trusted."""
        try:
            new = apply_keys_message(data, self.keyset)
        except AlreadyRunning:
            return  # the retained fleet key set again, or a repeated publish
        except UpdateRejected as rejection:
            self._refuse(data, topic, retained, rejection)
            return
        try:
            self.store.commit_keyset(new)  # durable before anyone hears "applied"
        except OSError as error:
            reason = (
                f"cannot persist the key set in {self.store.directory}: {error.strerror or error}"
            )
            self._reject(data, reason, topic, version=new.version)
            return
        self.keyset = new
        self.rules = dataclasses.replace(self.rules, public_key=new)
        warning = self._running_signer_revoked(new)
        self._report(new.version, new.sha256 or "", "applied", warning, topic)
        self._refresh_will()
        logger.info(
            "applied key set version %d from %s: trusting %s%s",
            new.version,
            topic,
            ", ".join(new.ids),
            f"; revoked {', '.join(new.revoked_ids)}" if new.revoked else "",
        )
        if warning:
            logger.warning("%s", warning)

    def _running_signer_revoked(self, keyset: KeySet) -> str | None:
        """One line when the running policy was signed by a key this key set revokes: it
        keeps running, but a restart refuses it."""
        from runtime.signing import verify_policy

        policy = self.slot.active.policy
        try:
            verify_policy(policy, keyset)
        except RevokedKey as error:
            return (
                f"the running policy version {policy.version} is {error}: it runs until a"
                " restart refuses it; push a newer one signed by a trusted key"
            )
        except Exception:  # noqa: BLE001 - unsigned (--insecure-allow-unsigned), or other key
            return None
        return None

    def _handle_payload(self, topic: str, data: bytes, retained: bool) -> None:
        if self._is_keys_topic(topic):
            self._handle_keys(topic, data, retained)
            return
        started = time.perf_counter()
        current = self.slot.active.policy
        try:
            policy = validate_update(
                data,
                self.rules,
                current=current,
                highest_version=self.store.highest_version,
                refused=self.store.refused,
            )
        except AlreadyRunning:
            return  # a retained or repeated publish of what already runs: quiet
        except UpdateRejected as rejection:
            self._refuse(data, topic, retained, rejection)
            return
        try:
            active = self.activate(policy)
        except ValueError as error:  # the backend could not load it
            self._reject(data, f"cannot activate: {error}", topic, version=policy.version)
            return
        try:
            self.store.commit(Stored(policy, data))  # durable before anyone hears "applied"
        except OSError as error:  # a full or read-only state directory: keep running the old
            reason = (
                f"cannot persist the update in {self.store.directory}: {error.strerror or error}"
            )
            self._reject(data, reason, topic, version=policy.version)
            return
        # on probation before its first episode; `skipped` when there is nothing to judge by
        probation = self.health.start_probation(policy.version, current.version)
        old = self.slot.swap(active)
        # before the bookkeeping: the pusher is waiting for it
        self._report(policy.version, policy.sha256, "applied", probation.skipped, topic)
        self.applied_updates += 1
        if not self.inline:  # inline: in poll(), not before the host's next agent's payload
            self._save_highest()
        self._refresh_will()
        logger.info(
            "applied policy version %d (sha256 %s...) from %s in %.1f ms; was version %d",
            policy.version,
            policy.sha256[:12],
            topic,
            (time.perf_counter() - started) * 1e3,
            old.policy.version,
        )

    def _reject(self, data: bytes, reason: str, topic: str, *, version: int | None = None) -> None:
        with self._pending_lock:
            self.rejected_updates += 1
        reason = one_line(reason)
        self._report(version, hashlib.sha256(data).hexdigest(), "rejected", reason, topic)
        self._log_rejection(f"rejected update from {topic}: {reason}")

    def _log_rejection(self, line: str) -> None:
        now = time.monotonic()
        start, count = self._log_window
        if now - start >= 60.0:
            if self._suppressed:
                logger.warning("%d more rejected updates were not logged", self._suppressed)
            start, count, self._suppressed = now, 0, 0
        if count < REJECTION_LOG_BURST:
            logger.warning("%s", line)
            count += 1
        else:
            self._suppressed += 1
        self._log_window = (start, count)

    def _roll_back(self, decision: RollbackDecision) -> None:
        current = self.store.current
        previous = self.store.previous
        if current is None or previous is None or current.policy.version != decision.version:
            return  # another update arrived meanwhile: that one is on probation now
        active = self.activate(previous.policy)
        reason = decision.reason
        try:
            self.store.roll_back()
        except OSError as error:  # a full or read-only state directory: still take it off
            reason += (
                f"; not persisted in {self.store.directory} ({error.strerror or error}):"
                f" a restart may run version {decision.version} again"
            )
        self.slot.swap(active)
        self.health.cancel()
        self._report(decision.version, current.policy.sha256, "rolled_back", reason)
        self._refresh_will()
        logger.warning(
            "rolled back policy version %d to version %d: %s",
            decision.version,
            previous.policy.version,
            reason,
        )

    # --- the control loop's hook ------------------------------------------------------------

    def on_episode(self, result: Any) -> None:
        """Episode listener (control loop thread): record the return, maybe ask for rollback."""
        if isinstance(result, dict):
            episode_return, version = result["return"], self.slot.active.policy.version
        else:  # runtime.loop.EpisodeResult
            episode_return, version = result.episode_return, result.policy_version
        verdict = self.health.verdict
        decision = self.health.record(version, float(episode_return))
        if decision is not None:
            if self.inline:
                self._roll_back(decision)
            else:
                self._mailbox.put(("rollback", decision))
        elif self.health.verdict is not verdict:  # the probation passed: say so
            if self.inline:
                self._probation_passed()
            else:
                self._mailbox.put(("passed", None))

    def _probation_passed(self) -> None:
        """The status (and the will) carry `probation` passed: a rollout waits for it."""
        self._publish_status()
        self._refresh_will()

    # --- what goes out ------------------------------------------------------------------

    def _report(
        self,
        version: int | None,
        sha256: str,
        result: str,
        reason: str | None,
        topic: str = "",
    ) -> None:
        """Set `last_update` and publish the status that carries it, as one step: the network
        thread (busy, oversize) and the worker both report, and without the lock one could
        overwrite the other's `last_update` before it went out (a pusher then never hears of
        its payload and times out)."""
        with self._status_lock:
            self.last_update = {
                "kind": "keys" if self._is_keys_topic(topic) else "policy",
                "version": version,
                "sha256": sha256,
                "result": result,
                "reason": reason,
                "at": utc_now_iso(),
            }
            self._publish_status()

    def status(self, state: str = "online") -> dict[str, Any]:
        policy = self.slot.active.policy
        return {
            "state": state,
            "device_id": self.config.device_id,
            "instance": self.instance,
            "policy_version": policy.version,
            "policy_sha256": policy.sha256,
            "policy_head": policy.spec.head,
            **self.rules.space.to_json(),  # the plant's: what an update must fit
            "keys_version": self.keyset.version if self.keyset else None,
            "keys_sha256": self.keyset.sha256 if self.keyset else None,
            "key_ids": self.keyset.ids if self.keyset else [],
            "last_update": self.last_update,
            "probation": self.health.verdict.to_json() if self.health.verdict else None,
            "at": utc_now_iso(),
        }

    def _status_bytes(self, state: str) -> bytes:
        return json_bytes(self.status(state))

    def _publish_status(self) -> None:
        with self._status_lock:
            self.client.publish(
                self.topics["status"], self._status_bytes("online"), qos=STATUS_QOS, retain=True
            )

    def _refresh_will(self) -> None:
        """The will is sent as registered at connect; keep it current for the next connect."""
        self.client.will_set(
            self.topics["status"], self._status_bytes("offline"), qos=STATUS_QOS, retain=True
        )

    def telemetry(self) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "device_id": self.config.device_id,
            "policy_version": self.slot.active.policy.version,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "episodes": 0,
            "last_return": None,
            "mean_return": None,
            "decisions": 0,
            "decision_us_p50": None,
            "decision_us_p99": None,
            "overruns": 0,
        }
        if self.stats is not None:
            sample.update(self.stats())
        policy = self.slot.active.policy
        sample["policy_version"] = policy.version  # not the last episode's
        sample["policy_head"] = policy.spec.head
        sample.update(self.rules.space.to_json())
        for key, value in sample.items():  # JSON has no NaN or inf
            if isinstance(value, float) and not math.isfinite(value):
                sample[key] = None
        sample["rejected_updates"] = self.rejected_updates
        sample["rss_mb"] = rss_mb()
        sample["at"] = utc_now_iso()
        return sample

    def _publish_telemetry(self) -> None:
        if self.connected.is_set():
            self.client.publish(
                self.topics["telemetry"], json_bytes(self.telemetry()), qos=TELEMETRY_QOS
            )


# --- wiring into `python -m runtime` ---------------------------------------------------------


def device_id_from_hostname(hostname: str) -> str:
    """The host name's first label ('pi.local' -> 'pi'); ValueError when that is no device id."""
    name = hostname.split(".")[0]
    if not re.fullmatch(DEVICE_ID_PATTERN, name):
        raise ValueError(
            f"the host name {hostname!r} gives no valid device id ({DEVICE_ID_RULE}):"
            " give --device-id"
        )
    return name


def default_device_id() -> str:
    import socket

    return device_id_from_hostname(socket.gethostname())


def refuse_revoked(policy: Policy, keyset: Any, path: str | None) -> None:
    """PolicyError (exit 2) when `policy`, about to run, was signed by a key since revoked:
    `runtime.cli.load_checked_policy` lets it through only in case a newer one persisted."""
    if not isinstance(keyset, KeySet) or not keyset.revoked:
        return
    from runtime.policy import PolicyError
    from runtime.signing import verify_policy

    try:
        verify_policy(policy, keyset)
    except RevokedKey as error:
        raise PolicyError(
            f"{path}: refused: {error}; the state directory holds no newer policy: install"
            " one signed by a trusted key"
        ) from None
    except PolicyError:
        return  # not this check's business: the start already said what it verified


def start_agent(runtime: Any) -> Agent | None:
    """Resume the newest persisted policy, then start the agent when a broker is configured.

    `runtime` is `runtime.cli.Runtime` (config, policy_path, plant, slot, loop, listeners);
    this runs before the loop's first decision. Bad settings raise ConfigError (exit 2).
    """
    from runtime.backends import make_active
    from runtime.config import ConfigError
    from runtime.mqtt import settings_from
    from runtime.policy import PolicyError
    from runtime.state import default_state_dir

    config = runtime.config
    if config.backend != "numpy":
        logger.warning("over-the-air updates run on the numpy backend (an update has no ONNX)")

    def activate(policy: Policy) -> ActivePolicy:
        return make_active(policy, "numpy")

    from runtime.spaces import space_of

    space = space_of(runtime.plant)
    try:
        agent_config = settings = None
        if config.broker is not None:  # every setting checked before anything is written
            agent_config = AgentConfig(
                device_id=config.device_id or default_device_id(),
                topic_prefix=config.topic_prefix,
                telemetry_interval=config.telemetry_interval,
                max_payload_bytes=config.max_policy_bytes,
                probation_episodes=config.probation_episodes,
                rollback_below=config.rollback_below,
                allow_unsigned=config.insecure_allow_unsigned,
                obs_dim=space.obs_dim,
                plant_space=space,
            )
            settings = settings_from(config)
        from runtime.keyset import configured_keyset

        public_key = configured_keyset(config.public_key, config.trusted_keys_dir)
        store = StateStore(
            config.state_dir or default_state_dir(),
            obs_dim=space.obs_dim,
            max_bytes=config.max_policy_bytes,
            public_key=public_key,
            space=space,
        )
        store.load()
        running = runtime.slot.active.policy
        public_key = store.public_key  # keys.json's key set, once one was applied
        given = Stored(running, running.data)
        if store.newest(given) is given:
            refuse_revoked(running, public_key, config.policy)
        chosen = store.startup_choice(given)
        if chosen.policy.sha256 != running.sha256:
            runtime.slot.swap(activate(chosen.policy))
            logger.info(
                "resuming policy version %d from %s (newer than --policy version %d)",
                chosen.policy.version,
                store.directory,
                running.version,
            )
        if agent_config is None or settings is None:
            return None
        agent = Agent(
            agent_config,
            settings,
            runtime.slot,
            activate,
            store,
            public_key=public_key,
            stats=runtime.loop.stats.snapshot,
        )
    except (ValueError, OSError) as error:
        if isinstance(error, (ConfigError, PolicyError)):
            raise
        raise ConfigError(str(error)) from None
    if public_key is None:
        logger.warning("--insecure-allow-unsigned: updates are applied WITHOUT signature checks")
    runtime.listeners.append(agent)
    agent.start()
    logger.info(
        "MQTT agent for device %s on %s (state in %s)",
        agent.config.device_id,
        agent.broker.url,
        store.directory,
    )
    return agent
