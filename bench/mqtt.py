"""MQTT over-the-air updates, measured on a private Mosquitto (loopback, set_tcp_nodelay true).

    .venv/bin/python bench/mqtt.py [--updates 200] [--devices 1000] [--per-process 125]
    .venv/bin/python bench/mqtt.py --only rollout [--repeats 3] \
        [--operator-broker URL] [--device-brokers URL,URL,...]
    .venv/bin/python bench/mqtt.py --only fleet|rollout --broker-kind mosquitto|nats-cluster|both

1. push-to-applied latency: publish a signed policy.npz to a running `python -m runtime`
   (sim plant, 100 Hz) and time until its retained status says "applied" (validation, Ed25519,
   fsync'd persistence and the status round trip included); one update every 100 ms.
2. control-loop overruns at 100 Hz during (1), against the same run without updates and
   without the MQTT agent at all (the `--json` summary of each run).
3. a fleet: `--devices` agents (no control loop; `--per-process` per process, driven by one
   thread there and validating inline; each with its own state directory, fsync'd) and one
   retained fleet push; seconds from the publish until every device's status said applied.
4. a staged rollout (`export rollout`, waves 5%,25%,100%) to such a fleet: the time to complete
   (median of --repeats), then one where a fifth of wave 2 rejects the file: the time from the
   abort threshold being crossed (replayed over the statuses an independent watcher saw) to
   the abort, the undo, and which versions the devices are left on. The operator and the
   devices may use other brokers (a cluster: the devices round-robin over --device-brokers).

`--broker-kind nats-cluster` (or `both`) runs 3 and 4 on a 3-node NATS 2.9 cluster too
(bench/brokers.py), the devices taking turns over the nodes and the operator on the first.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.brokers import free_port  # noqa: E402
from bench.brokers import stop_process as stop  # noqa: E402
from bench.machine import describe as machine  # noqa: E402
from runtime.policy import make_meta, meta_to_json, policy_bytes, signed_bytes  # noqa: E402

PREFIX = "bench-edge"


# --- a signed policy and a broker ------------------------------------------------------------


def make_key(directory: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = directory / "signing.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def balancing_params(hidden: int = 64) -> dict[str, np.ndarray]:
    """A linear controller spread over `hidden` units: logit = 50 * (0.1, 0.5, 1, 1) . obs."""
    direction = np.array([0.1, 0.5, 1.0, 1.0], dtype=np.float32)
    w1 = np.array([direction if i % 2 == 0 else -direction for i in range(hidden)])
    w2 = np.array([50.0 if i % 2 == 0 else -50.0 for i in range(hidden)], dtype=np.float32)
    return {"W1": w1.astype(np.float32), "W2": w2 * 2 / hidden}


def signed(version: int, key) -> bytes:
    params = balancing_params()
    meta = make_meta(hidden=64, version=version, created="2026-01-01T00:00:00+00:00")
    signature = key.sign(signed_bytes(meta_to_json(meta), params["W1"], params["W2"]))
    return policy_bytes(params, meta, signature)


def start_broker(directory: Path, nodelay: bool = True) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = directory / f"mosquitto-{port}.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"set_tcp_nodelay {'true' if nodelay else 'false'}\nmax_queued_messages 10000\n"
    )
    log = open(directory / "mosquitto.log", "wb")  # noqa: SIM115 - lives as long as the broker
    process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("mosquitto did not start")


class StatusWatcher:
    """Collects (arrival time, status) for every device status, live only.

    No network thread: `publish` sends at once from the caller and `wait` runs the client's
    loop itself, so the measurement holds no thread hand-over of the measuring side.
    """

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list = []
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
        )
        subscribed = []
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.on_subscribe = lambda *args: subscribed.append(True)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (time.perf_counter(), m.topic, m.payload)
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{PREFIX}/devices/+/status", qos=1)
        deadline = time.monotonic() + 5
        while not subscribed and time.monotonic() < deadline:
            self.client.loop(0.05)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)  # written to the socket before returning

    def wait(self, predicate, timeout: float = 10.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.messages:
                arrived, _, payload = self.messages.pop(0)
                body = json.loads(payload) if payload else {}
                if predicate(body):
                    return arrived, body
            self.client.loop(0.05)
        raise TimeoutError("no matching status")

    def idle(self, seconds: float) -> None:
        """Keep the connection serviced (acks, pings) while waiting."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.client.loop(min(remaining, 0.05))

    def close(self) -> None:
        self.client.disconnect()


# --- 0: what TCP_NODELAY buys -------------------------------------------------------------------


def one_way_ms(
    directory: Path, nodelay: bool, messages: int = 200, gap_s: float = 0.002
) -> list[float]:
    """2 KiB from one client to another through the broker, all three with or without
    TCP_NODELAY; messages a few ms apart, each timed publish -> on_message."""
    import paho.mqtt.client as mqtt

    broker, port = start_broker(directory, nodelay=nodelay)
    clients = []
    try:
        for name in ("sender", "receiver"):
            client = mqtt.Client(
                callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=name
            )
            if nodelay:
                client.on_socket_open = lambda c, u, sock: sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
            client.connect("127.0.0.1", port)
            clients.append(client)
        sender, receiver = clients
        arrivals: list[float] = []
        receiver.on_message = lambda c, u, m: arrivals.append(time.perf_counter())
        receiver.subscribe("nodelay/test", qos=1)
        for _ in range(20):
            receiver.loop(0.01)
            sender.loop(0.01)
        payload = b"x" * 2048
        times = []
        for _ in range(messages):
            arrivals.clear()
            sent = time.perf_counter()
            sender.publish("nodelay/test", payload, qos=1)
            deadline = sent + 1.0
            while not arrivals and time.perf_counter() < deadline:
                receiver.loop(0.001)
                sender.loop(0)
            if arrivals:
                times.append((arrivals[0] - sent) * 1e3)
            time.sleep(gap_s)
        return times
    finally:
        for client in clients:
            client.disconnect()
        stop(broker)


# --- 1 and 2: latency and overruns on a running device ------------------------------------------


def run_device(
    workdir: Path,
    port: int | None,
    pub: Path,
    policy: Path,
    seconds: float,
    updates: int,
    key,
    state_root: Path | None = None,
) -> tuple[dict, list[float]]:
    """`python -m runtime` at 100 Hz for `seconds`; `updates` pushes 100 ms apart meanwhile."""
    state_dir = (state_root or workdir) / f"state-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "-m", "runtime", "--policy", str(policy), "--plant", "sim"]
    argv += ["--hz", "100", "--duration", str(seconds), "--json", "--log-level", "warning"]
    if port is not None:
        argv += ["--broker", f"mqtt://127.0.0.1:{port}", "--device-id", "bench-1"]
        argv += ["--topic-prefix", PREFIX, "--public-key", str(pub)]
        argv += ["--state-dir", str(state_dir)]
        argv += ["--telemetry-interval", "1"]
    watcher = StatusWatcher(port) if port is not None else None
    device = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT)
    latencies = []
    try:
        if watcher is not None:
            watcher.wait(lambda body: body.get("state") == "online", timeout=20)
        for version in range(6, 6 + updates):
            data = signed(version, key)
            sha = hashlib.sha256(data).hexdigest()
            sent = time.perf_counter()
            watcher.publish(f"{PREFIX}/devices/bench-1/policy", data)
            arrived, body = watcher.wait(
                lambda body, sha=sha: (body.get("last_update") or {}).get("sha256") == sha
            )
            assert body["last_update"]["result"] == "applied", body
            latencies.append((arrived - sent) * 1e3)
            watcher.idle(0.1 - (time.perf_counter() - sent))
        out, _ = device.communicate(timeout=seconds + 30)
    finally:
        if device.poll() is None:
            stop(device)
        if watcher is not None:
            watcher.close()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    shutil.rmtree(state_dir, ignore_errors=True)
    return summary, latencies


# --- 3: a fleet of agents without control loops ---------------------------------------------------


def fleet_worker(
    urls: str, first: int, count: int, pub: str, state_root: str, spec: str = "{}"
) -> None:
    """`count` agents driven by this one thread (one selector over their sockets), each
    validating inline; prints 'ready' once all are online, then runs until killed.

    `urls`: the brokers, comma-separated; device i connects to the (i mod n)-th. `spec`
    (JSON): "strangers" (device indices that trust "other_pub" instead of `pub`, so they
    reject what the fleet's key signs) and "other_pub"."""
    import logging
    import selectors

    from runtime.agent import Agent, AgentConfig
    from runtime.backends import make_active
    from runtime.mqtt import broker_settings
    from runtime.policy import parse_policy
    from runtime.signing import load_public_key
    from runtime.slot import PolicySlot
    from runtime.state import StateStore, Stored

    # these agents run no control loop, so each update's "health check skipped" warning is noise
    level = logging.INFO if os.environ.get("BENCH_LOG") else logging.ERROR
    logging.basicConfig(level=level, format="%(created).3f %(message)s")
    options = json.loads(spec)
    strangers = set(options.get("strangers", ()))
    public_key = load_public_key(pub)
    other_key = load_public_key(options["other_pub"]) if strangers else None
    initial = Path(state_root) / "initial.npz"
    data = initial.read_bytes()
    policy = parse_policy(data)
    brokers = [broker_settings(url) for url in urls.split(",")]
    selector = selectors.DefaultSelector()
    agents = []
    for index in range(first, first + count):
        trusted = other_key if index in strangers else public_key
        store = StateStore(Path(state_root) / f"dev-{index:04d}", public_key=trusted)
        store.load()
        store.startup_choice(Stored(policy, data))
        agent = Agent(
            AgentConfig(device_id=f"dev-{index:04d}", topic_prefix=PREFIX, telemetry_interval=3600),
            brokers[index % len(brokers)],
            PolicySlot(make_active(policy)),
            make_active,
            store,
            public_key=trusted,
            inline=True,
        )
        agent.start(network_thread=False)
        selector.register(agent.client.socket(), selectors.EVENT_READ, agent)
        agents.append(agent)
    announced = False
    next_misc = time.monotonic()
    while True:
        for key, _ in selector.select(timeout=0.2):
            key.data.client.loop_read()
        for agent in agents:
            if agent.client.want_write():
                agent.client.loop_write()
        if time.monotonic() >= next_misc:  # keepalive pings
            for agent in agents:
                agent.client.loop_misc()
            next_misc = time.monotonic() + 1.0
        if not announced and all(agent.ready.is_set() for agent in agents):
            print("ready", flush=True)
            announced = True


def clear_retained(port: int, topic: str) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def start_fleet(
    workdir: Path, urls: list[str], pub: Path, devices: int, per_process: int, spec: str = "{}"
) -> list[subprocess.Popen]:
    """The worker processes of a fleet, once every device in them is online."""
    workers = []
    for first in range(0, devices, per_process):
        count = min(per_process, devices - first)
        argv = [sys.executable, __file__, "--fleet-worker", ",".join(urls), str(first)]
        argv += [str(count), str(pub), str(workdir), spec]
        workers.append(subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT))
    for worker in workers:
        line = worker.stdout.readline().decode().strip()
        if line != "ready":
            for started in workers:
                stop(started)
            raise RuntimeError(f"a fleet worker failed: {line!r}")
    return workers


def urls_of(ports: list[int]) -> list[str]:
    return [f"mqtt://127.0.0.1:{port}" for port in ports]


def wait_seen_online(port: int, devices: int, timeout: float = 60.0) -> None:
    """Until the node at `port` holds every device's retained "online" (push --fleet and
    rollout --all-online target those it holds; a cluster's node hears of the others' later)."""
    from export.push import read_statuses
    from runtime.mqtt import broker_settings

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = read_statuses(broker_settings(f"mqtt://127.0.0.1:{port}"), PREFIX, 10)
        if sum(status.get("state") == "online" for status in statuses.values()) >= devices:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the broker on port {port} does not hold {devices} online statuses")


def run_fleet(
    workdir: Path, ports: list[int], key, pub: Path, devices: int, per_process: int
) -> dict:
    """The devices take turns over `ports` (a cluster's nodes); the push goes through the
    first."""
    from export.push import push
    from runtime.mqtt import broker_settings

    (workdir / "initial.npz").write_bytes(signed(5, key))
    workers = []
    port = ports[0]
    try:
        started = time.perf_counter()
        workers = start_fleet(workdir, urls_of(ports), pub, devices, per_process)
        wait_seen_online(port, devices)
        connect_s = time.perf_counter() - started
        outcomes = push(
            signed(6, key),
            broker_settings(f"mqtt://127.0.0.1:{port}"),
            fleet=True,
            prefix=PREFIX,
            timeout=60,
        )
    finally:
        for worker in workers:
            stop(worker)
        clear_retained(port, f"{PREFIX}/fleet/policy")  # the next fleet must not find it
    applied = [o for o in outcomes if o.result == "applied"]
    assert all(o.reason != "already running this version" for o in applied)
    seconds = [o.seconds for o in applied]
    return {
        "devices": devices,
        "processes": len(workers),
        "connect_s": connect_s,
        "applied": len(applied),
        "total_s": max(seconds) if seconds else float("nan"),
        "median_s": float(np.median(seconds)) if seconds else float("nan"),
    }


def fsync_ms(directory: Path, rounds: int = 31) -> float:
    """Median time of `atomic_write` (write, fsync, rename, fsync the directory) of 2 KiB."""
    from runtime.policy import atomic_write

    path = directory / f"fsync-probe-{uuid.uuid4().hex[:6]}"
    times = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            atomic_write(path, b"x" * 2048)
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        path.unlink(missing_ok=True)
    return float(np.median(times))


# --- 4: a staged rollout to a fleet --------------------------------------------------------------

ROLLOUT_WAVES = "5%,25%,100%"


class Progress:
    """The rollout's progress lines with the time each was given (perf_counter)."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def __call__(self, text: str, final: bool) -> None:
        self.lines.append((time.perf_counter(), text))

    def first(self, prefix: str) -> float:
        return next(at for at, text in self.lines if text.startswith(prefix))

    def last(self, prefix: str) -> float:
        return [at for at, text in self.lines if text.startswith(prefix)][-1]


class LiveStatuses:
    """Every status as it arrives (its own network thread), timed: the independent view."""

    def __init__(self, url: str) -> None:
        import threading

        from runtime.mqtt import broker_settings, make_client

        self.messages: list[tuple[float, str, bytes]] = []
        subscribed = threading.Event()
        self.client = make_client(broker_settings(url), f"bench-watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.messages.append(
            (time.perf_counter(), m.topic, m.payload)
        )
        self.client.on_subscribe = lambda *args: subscribed.set()
        settings = broker_settings(url)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        self.client.subscribe(f"{PREFIX}/devices/+/status", qos=0)
        subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rollout_once(workdir: Path, policy: Path, operator: str, *extra: str):
    """One `export rollout` in this process: (exit code, seconds, progress, JSON report, plan)."""
    import io

    from export.rollout import build_parser, checked_request, run_request
    from export.waves import load_state

    state = workdir / f"rollout-{uuid.uuid4().hex[:8]}.json"
    argv = [str(policy), "--broker", operator, "--topic-prefix", PREFIX, "--all-online"]
    argv += ["--state", str(state), "--waves", ROLLOUT_WAVES, "--abort-above", "10%"]
    argv += ["--json", *extra]
    request = checked_request(build_parser().parse_args(argv))
    progress = Progress()
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = run_request(request, progress)
    seconds = time.perf_counter() - started
    return code, seconds, progress, json.loads(out.getvalue()), load_state(state).plan


def crossing_time(live: LiveStatuses, plan, wave: int, sha256: str, version: int, since: float):
    """When the abort rule first held for `wave`, replayed over the statuses as the watcher
    saw them arrive (the rollout's own rule: export.rollout.judge and crossed)."""
    from export.waves import FAILED, crossed, judge

    members = set(plan.members()[wave])
    results: dict[str, str] = {}
    for arrived, topic, payload in list(live.messages):
        device = topic.split("/")[-2]
        if arrived < since or device not in members or device in results or not payload:
            continue
        verdict = judge(json.loads(payload), sha256, version, sent=True)
        if verdict is None:
            continue
        results[device] = verdict[0]
        failed = sum(1 for r in results.values() if r == FAILED)
        if crossed(failed, len(results), len(members), plan):
            return arrived
    return None


def run_rollouts(
    workdir: Path,
    operator: str,
    device_urls: list[str],
    key,
    pub: Path,
    devices: int,
    per_process: int,
    repeats: int,
) -> dict:
    """`repeats` complete 3-wave rollouts to one fleet, then one to a fleet where a fifth of
    wave 2 rejects the file (signed by a key they do not trust): abort and undo."""
    from cryptography.hazmat.primitives import serialization

    from runtime.mqtt import broker_settings

    for root in (workdir, workdir / "ok", workdir / "abort"):  # each fleet's devices start on v5
        root.mkdir(exist_ok=True)
        (root / "initial.npz").write_bytes(signed(5, key))
    sign_key = workdir / "signing.key"
    sign_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sign_key.chmod(0o600)
    completes = []
    workers = start_fleet(workdir / "ok", device_urls, pub, devices, per_process)
    try:
        wait_seen_online(broker_settings(operator).port, devices)
        for repeat in range(repeats):
            policy = workdir / f"v{6 + repeat}.npz"
            policy.write_bytes(signed(6 + repeat, key))
            code, seconds, _, report, _ = rollout_once(workdir, policy, operator)
            succeeded = sum(w["succeeded"] for w in report["waves"])
            completes.append({"code": code, "seconds": seconds, "succeeded": succeeded})
    finally:
        for worker in workers:
            stop(worker)
    first_wave, second_wave = math.ceil(devices * 0.05), math.ceil(devices * 0.25)
    strangers = [i for i in range(first_wave, second_wave) if i % 5 == 0]
    spec = json.dumps({"strangers": strangers, "other_pub": str(make_key(workdir / "abort")[1])})
    live = LiveStatuses(operator)
    workers = start_fleet(workdir / "abort", device_urls, pub, devices, per_process, spec)
    try:
        wait_seen_online(broker_settings(operator).port, devices)
        policy = workdir / "v6-abort.npz"
        data = signed(6, key)
        policy.write_bytes(data)
        extra = ["--undo", "--previous", str(workdir / "initial.npz"), "--sign-key", str(sign_key)]
        code, seconds, progress, report, plan = rollout_once(workdir, policy, operator, *extra)
        from export.push import read_statuses

        statuses = read_statuses(broker_settings(operator), PREFIX, 10)
    finally:
        for worker in workers:
            stop(worker)
        live.close()
    wave_start = progress.first("wave 2/3")
    aborted = progress.first("aborted")
    crossed_at = crossing_time(live, plan, 1, hashlib.sha256(data).hexdigest(), 6, wave_start)
    versions = [body.get("policy_version") for body in statuses.values()]
    last_wave = set(plan.members()[2])
    return {
        "completes": completes,
        "abort": {
            "code": code,
            "outcome": report["outcome"],
            "abort_rule": report["abort"],
            "strangers": len(strangers),
            "wave_to_abort_s": aborted - wave_start,
            "crossed_to_abort_s": None if crossed_at is None else aborted - crossed_at,
            "undo_s": progress.last("undo") - aborted,
            "undo": report["undo"],
            "waves": report["waves"],
            "on_aborted_version": versions.count(6),
            "on_undo_version": versions.count((report["undo"] or {}).get("version")),
            "last_wave_untouched": all(statuses[d]["policy_version"] == 5 for d in last_wave),
            "seconds": seconds,
        },
    }


def print_rollouts(result: dict, operator: str, device_urls: list[str]) -> dict[str, bool]:
    completes = result["completes"]
    times = [c["seconds"] for c in completes]
    devices = len(result["abort"]["waves"]) and sum(w["devices"] for w in result["abort"]["waves"])
    print(f"\n4. staged rollout, waves {ROLLOUT_WAVES}, {devices} devices")
    print(f"   operator on {operator}; devices on {', '.join(device_urls)}")
    print(
        f"   complete rollout (connect, read the statuses, 3 waves, each device applied):"
        f" median {np.median(times):.2f} s over {len(times)}"
        f" ({', '.join(f'{t:.2f}' for t in times)}); all succeeded:"
        f" {all(c['code'] == 0 and c['succeeded'] == devices for c in completes)}"
    )
    abort = result["abort"]
    crossed = abort["crossed_to_abort_s"]
    shown = "not seen" if crossed is None else f"{crossed * 1e3:.0f} ms"
    print(
        f"   abort ({abort['strangers']} of wave 2 reject it, --abort-above 10%):"
        f" {abort['outcome']} after {(abort['abort_rule'] or {}).get('results')} results"
        f" ({(abort['abort_rule'] or {}).get('failed')} failed);"
        f" wave 2 start -> abort {abort['wave_to_abort_s'] * 1e3:.0f} ms;"
        f" threshold crossed (as a watcher saw it) -> abort {shown}"
    )
    waves = ", ".join(f"{w['sent']}/{w['devices']} sent" for w in abort["waves"])
    undo = abort["undo"] or {}
    print(
        f"   waves {waves}; undo to {undo.get('devices')} devices (version {undo.get('version')}):"
        f" {undo.get('succeeded')} off the aborted version in {abort['undo_s']:.2f} s"
        f" ({abort['on_undo_version']} on the undo, the others refused it); devices left on the"
        f" aborted version: {abort['on_aborted_version']}; last wave untouched:"
        f" {abort['last_wave_untouched']}"
    )
    return {
        "rollout of 1,000 in 3 waves <= 10 s": bool(times) and float(np.median(times)) <= 10,
        "abort within 2 s of the threshold": crossed is not None and crossed <= 2,
        "no device left on the aborted version": abort["on_aborted_version"] == 0
        and abort["last_wave_untouched"],
    }


# --- the report -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200, help="updates for the latency run")
    parser.add_argument("--devices", type=int, default=1000, help="agents in the fleet runs")
    parser.add_argument("--per-process", type=int, default=125, help="agents per process")
    parser.add_argument(
        "--only", choices=PARTS, help="run one part: updates (0-2), fleet (3), rollout (4)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="complete rollouts timed (4)")
    parser.add_argument(
        "--operator-broker",
        metavar="URL",
        help="4: the broker `export rollout` uses (default: a private Mosquitto)",
    )
    parser.add_argument(
        "--device-brokers",
        metavar="URL,...",
        help="4: the brokers the devices connect to, round-robin (default: the operator's)",
    )
    parser.add_argument(
        "--broker-kind",
        choices=(*BROKER_KINDS, "both"),
        default="mosquitto",
        help="3 and 4: one Mosquitto, a 3-node NATS cluster, or both in turn",
    )
    parser.add_argument("--fleet-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fleet_worker:
        urls, first, count, pub, root, spec = args.fleet_worker
        fleet_worker(urls, int(first), int(count), pub, root, spec)
        return 0
    print(f"machine: {machine()}")
    parts = PARTS if args.only is None else (args.only,)
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-", dir=ROOT) as tmp:
        workdir = Path(tmp)  # on the project's disk, so fsync is a real fsync
        key, pub = make_key(workdir)
        broker, port = start_broker(workdir)
        try:
            if "updates" in parts:
                checks |= updates_part(workdir, port, key, pub, args.updates)
            kinds = BROKER_KINDS if args.broker_kind == "both" else (args.broker_kind,)
            for kind in kinds if {"fleet", "rollout"} & set(parts) else ():
                with broker_nodes(workdir, kind, port) as ports:
                    if "fleet" in parts:
                        checks |= fleet_part(
                            workdir, kind, ports, key, pub, args.devices, args.per_process
                        )
                    if "rollout" in parts:
                        checks |= rollout_part(workdir, kind, ports, key, pub, args)
        finally:
            stop(broker)
    verdicts = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks.items())
    print(f"\ntargets: {verdicts}")
    return 0


PARTS = ("updates", "fleet", "rollout")


def rollout_part(
    workdir: Path, kind: str, ports: list[int], key, pub: Path, args: argparse.Namespace
) -> dict[str, bool]:
    """4 on `kind`: the operator on the first node (or --operator-broker), the devices over
    every node (or --device-brokers)."""
    operator = args.operator_broker or urls_of(ports)[0]
    urls = args.device_brokers.split(",") if args.device_brokers else urls_of(ports)
    with tempfile.TemporaryDirectory(prefix=f"rollout-{kind}-", dir=workdir) as tmp:
        result = run_rollouts(
            Path(tmp), operator, urls, key, pub, args.devices, args.per_process, args.repeats
        )
    checks = print_rollouts(result, operator, urls)
    return {f"{kind} {name}": ok for name, ok in checks.items()}


def updates_part(workdir: Path, port: int, key, pub: Path, updates: int) -> dict[str, bool]:
    """0-2: TCP_NODELAY, push-to-applied latency, overruns; prints them, returns the checks."""
    policy = workdir / "policy.npz"
    policy.write_bytes(signed(5, key))
    nodelay_on = one_way_ms(workdir, nodelay=True)
    nodelay_off = one_way_ms(workdir, nodelay=False)
    seconds = updates * 0.1 + 2
    with_updates, latencies = run_device(workdir, port, pub, policy, seconds, updates, key)
    shm = Path("/dev/shm")
    _, latencies_tmpfs = (
        run_device(workdir, port, pub, policy, seconds, updates, key, shm)
        if shm.is_dir()
        else (None, [])
    )
    fsync = fsync_ms(workdir)
    idle, _ = run_device(workdir, port, pub, policy, seconds, 0, key)
    bare, _ = run_device(workdir, None, pub, policy, seconds, 0, key)
    print("\n0. 2 KiB one way through the broker (publisher -> Mosquitto -> subscriber)")
    for name, times in (("with TCP_NODELAY", nodelay_on), ("without", nodelay_off)):
        q50, q99 = np.percentile(times, [50, 99])
        print(f"   {name:<17} p50 {q50:.2f} ms   p99 {q99:.2f} ms   ({len(times)} messages)")
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"\n1. push-to-applied over {len(latencies)} updates (publish -> 'applied' status)")
    print("   state dir on the project's disk (ext4; write, fsync, rename, fsync the directory):")
    print(f"   p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {max(latencies):.2f} ms")
    if latencies_tmpfs:
        q50, q99 = np.percentile(latencies_tmpfs, [50, 99])
        print("   state dir on tmpfs (/dev/shm: the same code, fsync costs nothing):")
        print(f"   p50 {q50:.2f} ms   p99 {q99:.2f} ms   max {max(latencies_tmpfs):.2f} ms")
    print(f"   one atomic_write of 2 KiB on the project's disk right after: {fsync:.2f} ms median")
    print(f"\n2. control loop at 100 Hz for {seconds:.0f} s")
    print(f"   {'run':<34}{'decisions':>10}{'overruns':>10}{'decision p99 us':>17}")
    for name, summary in (
        ("agent + an update every 100 ms", with_updates),
        ("agent, no updates", idle),
        ("no agent", bare),
    ):
        print(
            f"   {name:<34}{summary['decisions']:>10}{summary['overruns']:>10}"
            f"{summary['decision_us_p99']:>17}"
        )
    return {
        "p50 <= 5 ms": p50 <= 5,
        "p99 <= 20 ms": p99 <= 20,
        "no extra overruns with updates": with_updates["overruns"]
        <= max(idle["overruns"], bare["overruns"]),
    }


def fleet_part(
    workdir: Path, kind: str, ports: list[int], key, pub: Path, devices: int, per_process: int
) -> dict[str, bool]:
    """3: one retained fleet push to `devices` agents, state on disk and on tmpfs."""
    fleet = run_fleet(workdir, ports, key, pub, devices, per_process)
    fleet_tmpfs = None
    shm = Path("/dev/shm")
    if shm.is_dir():
        with tempfile.TemporaryDirectory(prefix="bench-mqtt-", dir=shm) as tmpfs:
            fleet_tmpfs = run_fleet(Path(tmpfs), ports, key, pub, devices, per_process)
    print(
        f"\n3. fleet push to {fleet['devices']} agents in {fleet['processes']} processes, {kind}"
        f" ({len(ports)} node{'s' if len(ports) > 1 else ''})"
    )
    for where, result in (("state on disk", fleet), ("state on tmpfs", fleet_tmpfs)):
        if result is None:
            continue
        print(
            f"   {where}: all connected in {result['connect_s']:.1f} s; applied"
            f" {result['applied']}/{result['devices']}; last applied after"
            f" {result['total_s']:.2f} s (median device {result['median_s']:.2f} s)"
        )
    return {
        f"{kind} fleet all applied <= 3 s": fleet["applied"] == fleet["devices"]
        and fleet["total_s"] <= 3
    }


BROKER_KINDS = ("mosquitto", "nats-cluster")


@contextlib.contextmanager
def broker_nodes(workdir: Path, kind: str, mosquitto_port: int) -> Iterator[list[int]]:
    """The MQTT ports of the broker `kind`: the private Mosquitto's, or a 3-node NATS 2.9
    cluster's (bench/brokers.py), started here and stopped afterwards by its pids."""
    if kind == "mosquitto":
        yield [mosquitto_port]
        return
    from bench.brokers import start_nats_cluster

    cluster = start_nats_cluster(workdir / "nats")
    try:
        yield cluster.ports
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
