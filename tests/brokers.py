"""The brokers the conformance tests run against, behind one interface: a list of MQTT URLs.

- "mosquitto": one Mosquitto (tests/conftest.py's `start_broker`); every "node" is that one;
- "nats-cluster": three nats-server 2.9 nodes with MQTT and JetStream (bench/brokers.py).

A test names nodes by index (`node(0)`, `node(1)`, ...), so the same check connects its clients
to different nodes of the cluster and to the one Mosquitto.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.brokers import nats_server_path, start_nats_cluster
from tests.conftest import start_broker

BROKER_KINDS = ("mosquitto", "nats-cluster")


@dataclass(frozen=True)
class Brokers:
    """A running broker or cluster: its kind and one MQTT URL (and port) per node."""

    kind: str
    urls: tuple[str, ...]

    def node(self, index: int) -> int:
        """The MQTT port of node `index` (wrapping around: Mosquitto has one node)."""
        return int(self.urls[index % len(self.urls)].rsplit(":", 1)[1])

    def url(self, index: int) -> str:
        return self.urls[index % len(self.urls)]


@contextlib.contextmanager
def running(kind: str, workdir: Path) -> Iterator[Brokers]:
    """Start the broker(s) of `kind` in `workdir`; stop every process by its pid afterwards.
    Skips the test when nats-server is not installed (scripts/setup.sh installs it)."""
    if kind == "mosquitto":
        broker = start_broker(workdir)
        try:
            yield Brokers(kind, (broker.url,))
        finally:
            broker.stop()
        return
    if nats_server_path() is None:
        pytest.skip(
            "nats-server is not installed: run scripts/setup.sh (apt-get install nats-server)"
        )
    cluster = start_nats_cluster(workdir)
    try:
        yield Brokers(kind, tuple(cluster.urls))
    finally:
        cluster.stop()
