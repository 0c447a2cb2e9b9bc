"""A 3-node NATS 2.9 cluster with its MQTT gateway on loopback ports, for benches and tests.

    cluster = start_nats_cluster(Path("/tmp/nats"))   # every node's MQTT URL: cluster.urls
    ...
    cluster.stop()                                    # each node by its pid

NATS keeps MQTT retained messages and persistent sessions in JetStream streams, so they are
cluster-wide: a retained fleet policy published on one node reaches a device that connects to
another. The cluster counts as up once JetStream has a meta leader on every node and a retained
message published on the first node is delivered by the last (docs/deploying.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

NATS_CANDIDATES = ("nats-server", "/usr/sbin/nats-server")
CLUSTER_NAME = "reinforce-edge"
# A 1,000-device push on 2 shared cores: the MQTT consumers (one per subscription) stay on the
# node the client is on and in memory, and an unacknowledged QoS 1 message is redelivered after
# 5 s (NATS's default is 30 s); the largest policy is far below 8 MB.
MQTT_BLOCK = """mqtt {{
  listen: 127.0.0.1:{mqtt_port}
  ack_wait: "5s"
  consumer_replicas: 1
  consumer_memory_storage: true
}}"""


def nats_server_path() -> str | None:
    return executable(NATS_CANDIDATES)


def executable(candidates: tuple[str, ...]) -> str | None:
    """The first of `candidates` found on PATH (Debian puts the brokers in /usr/sbin)."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a child by its pid: SIGTERM, then SIGKILL after `timeout` s; reaped either way."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class NatsNode:
    """One nats-server: its name, ports, process and files."""

    name: str
    client_port: int
    mqtt_port: int
    cluster_port: int
    http_port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def log(self) -> Path:
        return self.directory / "nats.log"

    def config(self, routes: list[int]) -> str:
        route_urls = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
        return "\n".join(
            [
                f"server_name: {self.name}",
                f"listen: 127.0.0.1:{self.client_port}",
                f"http: 127.0.0.1:{self.http_port}",
                "max_payload: 8MB",
                f'jetstream {{ store_dir: "{self.directory / "js"}" }}',
                f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{self.cluster_port},"
                f" routes: [{route_urls}] }}",
                MQTT_BLOCK.format(mqtt_port=self.mqtt_port),
                "",
            ]
        )

    def start(self, exe: str, routes: list[int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats.conf"
        config.write_text(self.config(routes))
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [exe, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def jetstream_meta(self) -> dict:
        """JetStream's meta group as this node sees it (its monitoring /jsz), or {}."""
        try:
            url = f"http://127.0.0.1:{self.http_port}/jsz"
            with urllib.request.urlopen(url, timeout=1) as answer:
                return json.loads(answer.read()).get("meta_cluster") or {}
        except (OSError, ValueError):
            return {}


def meta_settled(metas: dict[str, dict], size: int) -> bool:
    """Every node (name -> its view) agrees on one leader and counts `size` peers, and the
    leader sees each of the others current."""
    leaders = {meta.get("leader") for meta in metas.values()}
    if len(leaders) != 1 or None in leaders:
        return False
    if any(meta.get("cluster_size") != size for meta in metas.values()):
        return False
    followers = (metas.get(str(leaders.pop())) or {}).get("replicas") or []
    return len(followers) == size - 1 and all(peer.get("current") for peer in followers)


@dataclass
class NatsCluster:
    """Running nodes; `urls` is one MQTT URL per node."""

    nodes: list[NatsNode]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.mqtt_port for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self, tail: int = 1500) -> str:
        return "\n".join(
            f"--- {node.name}:\n{node.log.read_text(errors='replace')[-tail:]}"
            for node in self.nodes
            if node.log.exists()
        )


def start_nats_cluster(workdir: Path, size: int = 3, timeout: float = 60.0) -> NatsCluster:
    """Start `size` nats-server nodes routed to each other; return once the cluster carries
    retained MQTT messages between nodes. RuntimeError (with the logs) when it does not."""
    exe = nats_server_path()
    if exe is None:
        raise FileNotFoundError("nats-server is not installed: run scripts/setup.sh")
    nodes = [
        NatsNode(
            f"n{i + 1}", free_port(), free_port(), free_port(), free_port(), workdir / f"n{i + 1}"
        )
        for i in range(size)
    ]
    cluster = NatsCluster(nodes)
    for node in nodes:
        node.start(exe, [other.cluster_port for other in nodes])
    try:
        wait_until_clustered(cluster, time.monotonic() + timeout)
    except Exception:
        cluster.stop()
        raise
    return cluster


def wait_until_clustered(cluster: NatsCluster, deadline: float) -> None:
    """JetStream's meta group settled, then each node's MQTT streams set up one node at a time
    (nodes creating them at once race), then a retained message crossing the cluster."""
    while not meta_settled(
        {node.name: node.jetstream_meta() for node in cluster.nodes}, len(cluster.nodes)
    ):
        if any(
            node.process is not None and node.process.poll() is not None for node in cluster.nodes
        ):
            raise RuntimeError(f"a nats-server exited:\n{cluster.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"JetStream did not form a cluster in time:\n{cluster.logs()}")
        time.sleep(0.1)
    for port in cluster.ports:
        while not mqtt_accepts(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"MQTT on port {port} did not answer in time:\n{cluster.logs()}")
            time.sleep(0.2)
    while not retained_crosses(cluster.ports[0], cluster.ports[-1]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"a retained message did not cross the cluster:\n{cluster.logs()}")
        time.sleep(0.5)


def connected_client(port: int, timeout: float = 10.0):
    """A paho client (its network thread running) once the node accepted it, else None. The
    first connection per account sets up the account's MQTT streams, which takes a while."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return None
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    if client.is_connected():
        return client
    close(client)
    return None


def close(client) -> None:
    client.disconnect()
    client.loop_stop()


def mqtt_accepts(port: int) -> bool:
    client = connected_client(port)
    if client is not None:
        close(client)
    return client is not None


def retained_crosses(from_port: int, to_port: int, timeout: float = 5.0) -> bool:
    """Publish a retained message on one node; True once a new subscription on another gets it
    (the other node learns of it from the retained-messages stream, a moment later)."""
    topic = f"probe/{uuid.uuid4().hex}"
    sender, receiver = connected_client(from_port), connected_client(to_port)
    try:
        if sender is None or receiver is None:
            return False
        received = []
        receiver.on_message = lambda c, u, message: received.append(message.payload)
        sender.publish(topic, b"probe", qos=1, retain=True).wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            receiver.subscribe(topic, qos=1)  # the retained copy comes with each subscription
            time.sleep(0.25)
            receiver.unsubscribe(topic)
        sender.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)
        return b"probe" in received
    except (RuntimeError, ValueError):  # a publish refused or not acknowledged in time
        return False
    finally:
        for client in (sender, receiver):
            if client is not None:
                close(client)
