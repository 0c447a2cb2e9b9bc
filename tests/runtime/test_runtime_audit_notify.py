"""Audit regressions for sd_notify: WATCHDOG_USEC values systemd would never send."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.notify import MIN_WATCHDOG_INTERVAL_US, Notifier


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
    # found by the audit: WATCHDOG_USEC=1 fed the watchdog every 500 ns, turning every wait
    # into a busy loop of sendto() calls (16,807 datagrams in 0.5 s); -5 was ignored silently
    caplog.set_level(logging.WARNING, logger="runtime.notify")
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@audit-none", "WATCHDOG_USEC": value})
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
