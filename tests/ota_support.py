"""Helpers for the MQTT tests: signed policies, an MQTT watcher, agents on a real broker."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runtime.agent import Agent, AgentConfig
from runtime.mqtt import broker_settings
from runtime.policy import action_probability, make_meta, parse_policy, policy_bytes, signed_bytes
from runtime.signing import load_public_key
from runtime.slot import ActivePolicy, PolicySlot
from runtime.state import StateStore, Stored

# h = relu(W1 obs) with rows v and -v, logit = W2 . h = GAIN * (v . obs): a linear controller
# that balances CartPole-v1 to 500; with W2 = (GAIN, GAIN) the logit is GAIN * |v . obs| >= 0,
# so the pole gets pushed right every step and falls in about ten steps (-GAIN: left).
BALANCE_DIRECTION = (0.1, 0.5, 1.0, 1.0)
GAIN = 50.0


def new_key(directory: Path, name: str = "signing") -> tuple[Ed25519PrivateKey, Path]:
    """A fresh Ed25519 private key and its public key written as PEM."""
    key = Ed25519PrivateKey.generate()
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, public


def weights(kind: str = "balance", hidden: int = 8, obs_dim: int = 4) -> dict[str, np.ndarray]:
    direction = np.zeros(obs_dim, dtype=np.float32)
    direction[:4] = BALANCE_DIRECTION[:obs_dim]
    rows = [direction if i % 2 == 0 else -direction for i in range(hidden)]
    w2 = [GAIN if i % 2 == 0 else -GAIN for i in range(hidden)]
    if kind in ("push_right", "push_left"):
        w2 = [GAIN if kind == "push_right" else -GAIN] * hidden
    elif kind != "balance":
        raise ValueError(kind)
    return {"W1": np.array(rows, dtype=np.float32), "W2": np.array(w2, dtype=np.float32)}


def signed_policy(
    version: int,
    key: Ed25519PrivateKey | None,
    *,
    kind: str = "balance",
    hidden: int = 8,
    meta_extra: dict[str, Any] | None = None,
    params: dict[str, np.ndarray] | None = None,
) -> bytes:
    """The bytes of a policy.npz as export writes it, signed with `key` (None: unsigned)."""
    params = params or weights(kind, hidden)
    meta = make_meta(
        hidden=params["W1"].shape[0],
        version=version,
        created="2026-01-01T00:00:00+00:00",
        **(meta_extra or {}),
    )
    from runtime.policy import meta_to_json

    signature = None
    if key is not None:
        signature = key.sign(signed_bytes(meta_to_json(meta), params["W1"], params["W2"]))
    return policy_bytes(params, meta, signature)


PREFIX = "test-edge"


def activate(policy) -> ActivePolicy:
    return ActivePolicy(policy, lambda obs: float(action_probability(policy.params, obs)))


def agent_log_lines(agent: Agent, broker: Any, caplog: Any, seconds: float) -> list[str]:
    """Run `agent` for `seconds` against `broker`, stop both, return the agent's warning lines."""
    caplog.set_level(logging.WARNING, logger="runtime.agent")
    agent.start()
    try:
        time.sleep(seconds)
    finally:
        agent.stop()
        broker.stop()
    return [r.getMessage() for r in caplog.records if r.name == "runtime.agent"]


class Device:
    """An agent with its slot and state directory, without a control loop."""

    def __init__(
        self,
        tmp_path: Path,
        port: int,
        key: Ed25519PrivateKey,
        pub: Path,
        device_id: str = "dev-1",
        **config: Any,
    ) -> None:
        self.state_dir = tmp_path / f"state-{device_id}"
        self.store = StateStore(self.state_dir, public_key=load_public_key(pub))
        self.store.load()
        initial = signed_policy(5, key)
        chosen = self.store.startup_choice(Stored(parse_policy(initial), initial))
        self.slot = PolicySlot(activate(chosen.policy))
        self.agent = Agent(
            AgentConfig(device_id=device_id, **{"topic_prefix": PREFIX, **config}),
            broker_settings(f"mqtt://127.0.0.1:{port}"),
            self.slot,
            activate,
            self.store,
            public_key=load_public_key(pub),
        )
        self.agent.start()
        assert self.agent.ready.wait(5)

    def stop(self) -> None:
        self.agent.stop()


ROOT = Path(__file__).resolve().parents[1]


class RuntimeProcess:
    """`python -m runtime` on the sim plant with the agent (files in `workdir`), stopped by pid."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        pub: Path,
        policy: Path,
        *extra: str,
        device_id: str = "pi-1",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout = workdir / "runtime.out"
        self.stderr = workdir / "runtime.err"
        argv = [
            sys.executable,
            "-m",
            "runtime",
            "--policy",
            str(policy),
            "--plant",
            "sim",
            "--seed",
            "1",
            "--json",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--device-id",
            device_id,
            "--topic-prefix",
            PREFIX,
            "--public-key",
            str(pub),
            "--state-dir",
            str(workdir / "state"),
            *extra,
        ]
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def episodes(self) -> list[dict]:
        lines = self.stdout.read_text().splitlines()
        return [json.loads(line) for line in lines if '"type": "episode"' in line]

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


class Watcher:
    """A plain paho subscriber that collects JSON messages per topic, for assertions."""

    def __init__(self, port: int, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[tuple[str, dict[str, Any], bool]] = queue.Queue()
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self._subscribed.wait(5), "watcher could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        try:
            body = json.loads(message.payload) if message.payload else {}
        except (ValueError, RecursionError):  # RecursionError: deeply nested junk
            body = {"raw": message.payload}
        with self._lock:
            self.latest[message.topic] = body
        self.messages.put((message.topic, body, bool(message.retain)))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def wait_for(
        self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first message (from now on, in arrival order) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching message within {timeout} s; latest {self.latest}"
                )
            try:
                topic, body, _ = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(topic, body):
                return body

    def drain(self, quiet: float = 0.05) -> list[tuple[str, dict[str, Any]]]:
        """Every queued message, until none arrives for `quiet` seconds."""
        drained = []
        while True:
            try:
                topic, body, _ = self.messages.get(timeout=quiet)
            except queue.Empty:
                return drained
            drained.append((topic, body))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def update_result(sha256: str) -> Callable[[str, dict[str, Any]], bool]:
    """Matches a status whose last update is the payload with this sha256."""

    def match(topic: str, body: dict[str, Any]) -> bool:
        last = body.get("last_update") or {}
        return topic.endswith("/status") and last.get("sha256") == sha256

    return match


# --- a catalogue of hostile payloads ------------------------------------------------------


def npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def raw_npz(entries: list[tuple[str, bytes]], compression: int | None = None) -> bytes:
    """A zip of raw entries, written as given (no validation at all)."""
    import io
    import warnings
    import zipfile

    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        with zipfile.ZipFile(out, "w", compression=compression or zipfile.ZIP_STORED) as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compression or zipfile.ZIP_STORED
                archive.writestr(info, data)
    return out.getvalue()


def _entries(version: int, **override: Any) -> list[tuple[str, bytes]]:
    params = weights()
    meta = make_meta(hidden=8, version=version, created="2026-01-01T00:00:00+00:00")
    from runtime.policy import meta_to_json

    entries = {
        "W1.npy": npy(params["W1"]),
        "W2.npy": npy(params["W2"]),
        "meta.npy": npy(np.array(meta_to_json(meta))),
    }
    for name, value in override.items():
        if value is None:
            entries.pop(f"{name}.npy", None)
        else:
            entries[f"{name}.npy"] = value
    return list(entries.items())


def _meta(new_version: int, **changes: Any) -> bytes:
    meta = make_meta(hidden=8, version=new_version, created="2026-01-01T00:00:00+00:00")
    meta.update(changes)
    for key, value in list(meta.items()):
        if value is ...:
            del meta[key]
    return npy(np.array(json.dumps(meta)))


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def bad_payloads(
    key: Ed25519PrivateKey, other_key: Ed25519PrivateKey, current: int, max_bytes: int
) -> list[tuple[str, bytes, str]]:
    """(name, payload, a fragment of the expected rejection reason): each must be refused by a
    device running version `current`, signed by `key`, with a payload limit of `max_bytes`."""
    import zipfile

    rng = np.random.default_rng(7)
    new = current + 1
    good = signed_policy(new, key)
    good_policy = parse_policy(good)
    signature = np.frombuffer(good_policy.signature or b"", dtype=np.uint8)
    bomb = raw_npz(
        [("W1.npy", b"\0" * 50_000_000), ("W2.npy", b""), ("meta.npy", b"")],
        zipfile.ZIP_DEFLATED,
    )
    pickled = npy(np.array([{"__reduce__": "os.system"}, 1], dtype=object))
    weights_nan = weights()
    weights_nan["W1"][0, 0] = np.nan
    weights_inf = weights()
    weights_inf["W2"][1] = np.inf
    w1_offset = good.index(b"W1.npy") + 200  # inside W1's float data, past its npy header
    return [
        ("empty", b"", "empty policy"),
        ("random bytes", rng.bytes(3000), "not a readable zip"),
        ("text", b"hello, device\n", "not a readable zip"),
        ("truncated", good[: len(good) // 2], "zip"),
        ("truncated tail", good[:-10], "zip"),
        ("oversize", b"PK" + b"\0" * max_bytes, "more than the limit"),
        ("zip bomb", bomb, "stored uncompressed"),
        ("compressed entries", raw_npz(_entries(new), zipfile.ZIP_DEFLATED), "uncompressed"),
        ("pickled object array", raw_npz(_entries(new, W1=pickled)), "Python objects"),
        ("NaN weight", signed_policy(new, key, params=weights_nan), "non-finite"),
        ("inf weight", signed_policy(new, key, params=weights_inf), "non-finite"),
        (
            "W1 wrong shape",
            raw_npz(_entries(new, W1=npy(np.zeros((8, 3), np.float32)))),
            "W1 has shape",
        ),
        (
            "W2 wrong shape",
            raw_npz(_entries(new, W2=npy(np.zeros(7, np.float32)))),
            "W2 has shape",
        ),
        (
            "3-d weights",
            raw_npz(_entries(new, W1=npy(np.zeros((2, 8, 4), np.float32)))),
            "unexpected shape",
        ),
        (
            "float64 weights",
            raw_npz(_entries(new, W1=npy(weights()["W1"].astype(np.float64)))),
            "dtype float64",
        ),
        ("int32 weights", raw_npz(_entries(new, W2=npy(np.ones(8, np.int32)))), "dtype int32"),
        ("extra key", raw_npz(_entries(new, extra=npy(np.zeros(1)))), "archive entries"),
        ("missing key", raw_npz(_entries(new, W2=None)), "archive entries"),
        ("not npy entry", raw_npz([("W1.txt", b"1 2 3"), *_entries(new)[1:]]), "archive entries"),
        (
            "duplicate entry",
            raw_npz([*_entries(new), ("W1.npy", npy(weights()["W1"]))]),
            "duplicate",
        ),
        ("bad npy magic", raw_npz(_entries(new, W1=b"NOTNUMPY" + b"\0" * 150)), "not a valid .npy"),
        (
            "npy shape larger than data",
            raw_npz(_entries(new, W1=npy(weights()["W1"])[:-16])),
            "declares shape",
        ),
        (
            "huge meta",
            raw_npz(_entries(new, meta=_meta(new, notes="x" * 70_000))),
            "meta is larger",
        ),
        (
            "non-JSON meta",
            raw_npz(_entries(new, meta=npy(np.array("{not json")))),
            "not valid JSON",
        ),
        ("meta not an object", raw_npz(_entries(new, meta=npy(np.array("[1, 2]")))), "JSON object"),
        ("meta bytes dtype", raw_npz(_entries(new, meta=npy(np.array(b"{}")))), "0-d unicode"),
        (
            "meta without version",
            raw_npz(_entries(new, meta=_meta(new, version=...))),
            "missing version",
        ),
        ("version zero", raw_npz(_entries(new, meta=_meta(new, version=0))), "positive integer"),
        (
            "version as text",
            raw_npz(_entries(new, meta=_meta(new, version="9"))),
            "positive integer",
        ),
        ("wrong format", raw_npz(_entries(new, meta=_meta(new, format="other"))), "meta.format"),
        (
            "format version 2",
            raw_npz(_entries(new, meta=_meta(new, format_version=2))),
            "format_version",
        ),
        ("meta hidden mismatch", raw_npz(_entries(new, meta=_meta(new, hidden=9))), "meta.hidden"),
        (
            "bad created time",
            raw_npz(_entries(new, meta=_meta(new, created="yesterday"))),
            "ISO 8601",
        ),
        (
            "NaN score in meta",
            raw_npz(_entries(new, meta=_meta(new, eval_mean_return=float("nan")))),
            "eval_mean_return",
        ),
        (
            "wrong obs_dim",
            raw_npz(
                _entries(
                    new,
                    W1=npy(np.ones((8, 5), np.float32)),
                    meta=_meta(new, obs_dim=5),
                )
            ),
            "W1 has shape",
        ),
        (
            "short signature",
            raw_npz([*_entries(new), ("signature.npy", npy(signature[:32]))]),
            "signature has dtype",
        ),
        ("unsigned", signed_policy(new, None), "unsigned"),
        ("forged key", signed_policy(new, other_key), "signature"),
        ("flipped weight byte", _flip(good, w1_offset), "Bad CRC"),
        (
            "flipped signature byte",
            _flip(good, good.rindex(signature.tobytes()) + 5),
            "signature.npy is corrupt",
        ),
        ("flipped header byte", _flip(good, 10), "canonical encoding"),
        (
            "transplanted signature",
            raw_npz([*_entries(new + 5), ("signature.npy", npy(signature))]),
            "signature",
        ),
        ("older version", signed_policy(current - 1, key), "not newer"),
        ("same version, other weights", signed_policy(current, key, hidden=6), "already running"),
    ]
