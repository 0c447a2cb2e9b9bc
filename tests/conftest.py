"""Shared fixtures: a real Mosquitto broker on a free loopback port, stopped by its pid."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.brokers import executable, free_port, stop_process

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")


def mosquitto_path() -> str | None:
    return executable(MOSQUITTO_CANDIDATES)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Broker:
    """A running mosquitto: its port, URL, process and configuration file."""

    port: int
    process: subprocess.Popen
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process, timeout=5)


def start_broker(workdir: Path, config_text: str | None = None, port: int | None = None) -> Broker:
    """Start mosquitto with `config_text` (default: anonymous listener on loopback)."""
    exe = mosquitto_path()
    if exe is None:
        pytest.fail("mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mosquitto.conf"
    log = workdir / "mosquitto.log"
    if config_text is None:
        config_text = (
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\nmax_packet_size 2000000\n"
        )
    config.write_text(config_text)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [exe, "-c", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port)
    except RuntimeError:
        process.kill()
        process.wait()
        raise RuntimeError(f"mosquitto did not start: {log.read_text()[-2000:]}") from None
    return Broker(port=port, process=process, config=config, log=log)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private anonymous Mosquitto on a free loopback port."""
    running = start_broker(tmp_path / "broker")
    yield running
    running.stop()
