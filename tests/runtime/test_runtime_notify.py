"""sd_notify: READY after the first decision, WATCHDOG from the loop, STATUS, STOPPING."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.notify import MIN_WATCHDOG_INTERVAL_US, Notifier


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    sock.setblocking(False)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()


@contextlib.contextmanager
def draining(sock: socket.socket) -> Iterator[list[str]]:
    """Read the socket while the body runs, as systemd does: a Unix datagram socket queues
    only net.unix.max_dgram_qlen (10) messages, so a slow run's watchdogs would fill it."""
    messages: list[str] = []
    done = threading.Event()

    def drain() -> None:
        sock.settimeout(0.01)
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield messages
    finally:
        done.set()
        reader.join()
        messages.extend(receive_all(sock))


def test_runtime_notifies_systemd(policy_path: Path, notify_socket, monkeypatch, capsys) -> None:
    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # 40 ms: a WATCHDOG=1 every 20 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    args = ["--policy", str(policy_path), "--hz", "0", "--episodes", "2"]
    with draining(sock) as messages:
        assert main(args, environ={}) == 0
    assert messages[0].startswith("READY=1\nSTATUS=")
    statuses = [m for m in messages if m.startswith("STATUS=episode")]
    assert len(statuses) == 2 and "return 500" in statuses[0]
    assert messages[-1].startswith("STOPPING=1")
    capsys.readouterr()

    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    with draining(sock) as messages:
        assert main(["--policy", str(policy_path), "--hz", "100", "--duration", "0.3"], {}) == 0
    watchdogs = [m for m in messages if m == "WATCHDOG=1"]
    assert 10 <= len(watchdogs) <= 16  # 0.3 s / 20 ms = 15, fed from the loop's own steps


def test_abstract_socket_names(policy_path: Path) -> None:
    name = f"reinforce-edge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None and notifier.watchdog_interval_ns == 0
        assert notifier.ready() and notifier.status("hello") and notifier.stopping()
        assert receive_all(sock) == [
            "READY=1\nSTATUS=running",
            "STATUS=hello",
            "STOPPING=1\nSTATUS=stopping",
        ]
    finally:
        sock.close()


def test_no_socket_no_notifier_and_a_parents_watchdog_is_ignored() -> None:
    assert Notifier.from_environment({}) is None
    theirs = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert theirs is not None and theirs.watchdog_interval_ns == 0
    ours = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours is not None and ours.watchdog_interval_ns == 500_000_000


def test_a_missing_socket_never_breaks_the_runtime(
    policy_path: Path, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "10000")
    assert main(["--policy", str(policy_path), "--hz", "0", "--episodes", "1"], {}) == 0


def test_watchdog_is_fed_while_a_slow_loop_waits(
    policy_path: Path, notify_socket, monkeypatch
) -> None:
    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # every 50 ms, at 2 Hz: 10 feeds per period
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert main(["--policy", str(policy_path), "--hz", "2", "--duration", "0.9"], {}) == 0
    watchdogs = [m for m in receive_all(sock) if m == "WATCHDOG=1"]
    assert len(watchdogs) >= 8  # not just the 2 steps: the wait feeds it too


@pytest.mark.parametrize(
    ("value", "interval_ns", "warning"),
    [
        ("100000", 50_000_000, None),
        (" 100000 ", 50_000_000, None),
        ("1", MIN_WATCHDOG_INTERVAL_US * 1000, "is below 2000: feeding the watchdog every 1000 us"),
        ("1999", MIN_WATCHDOG_INTERVAL_US * 1000, "is below 2000"),
        ("0", 0, "ignoring WATCHDOG_USEC='0': not a positive integer"),
        ("-5", 0, "ignoring WATCHDOG_USEC='-5': not a positive integer"),
        ("abc", 0, "ignoring WATCHDOG_USEC='abc': not a positive integer"),
        ("", 0, None),
    ],
)
def test_watchdog_usec_values(value, interval_ns, warning, caplog) -> None:
    # regression: WATCHDOG_USEC=1 fed the watchdog every 500 ns, turning every wait
    # into a busy loop of sendto() calls (16,807 datagrams in 0.5 s); -5 was ignored silently
    caplog.set_level(logging.WARNING, logger="runtime.notify")
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": "@reinforce-edge-test-none", "WATCHDOG_USEC": value}
    )
    try:
        assert notifier.watchdog_interval_ns == interval_ns
    finally:
        notifier.close()
    messages = [record.getMessage() for record in caplog.records]
    assert (warning is None and messages == []) or (len(messages) == 1 and warning in messages[0])


def test_a_tiny_watchdog_sends_at_most_one_feed_per_millisecond(
    policy_path: Path, tmp_path, monkeypatch
) -> None:
    import socket

    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "1")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert main(["--policy", str(policy_path), "--hz", "20", "--duration", "0.2"], {}) == 0
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        sock.close()
    watchdogs = messages.count("WATCHDOG=1")
    assert 1 <= watchdogs <= 250, watchdogs  # about 200 (one per ms), not tens of thousands
