"""Payloads that trip the parser in rarer ways (lone surrogates, long and control-character
reasons, two threads reporting at once), on a real Mosquitto (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.policy import make_meta
from tests.ota_support import (
    PREFIX,
    Device,
    _entries,
    npy,
    raw_npz,
    update_result,
)


@pytest.fixture
def device(tmp_path, broker, keys, watcher):
    key, pub = keys
    running = Device(tmp_path, broker.port, key, pub)
    yield running
    running.stop()


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def rejection_lines(caplog, expected: int, timeout: float = 5.0) -> list[str]:
    """The agent's rejection log lines (logged just after the status goes out)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [r.getMessage() for r in caplog.records if "rejected update" in r.getMessage()]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def meta_entry(**changes) -> bytes:
    meta = make_meta(hidden=8, version=6, created="2026-01-01T00:00:00+00:00")
    meta.update(changes)
    return npy(np.array(json.dumps(meta, ensure_ascii=False)))


def test_a_lone_surrogate_in_meta_is_a_rejection_not_a_worker_crash(device, watcher, caplog):
    # the parser's UTF-8 size check raised UnicodeEncodeError: a traceback, no status at all
    caplog.set_level(logging.WARNING, logger="runtime.agent")
    before = files(device.state_dir)
    payload = raw_npz(_entries(6, meta=meta_entry(notes="\ud800")))
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", payload)
    status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
    last = status["last_update"]
    assert last["result"] == "rejected" and "lone surrogate" in last["reason"]
    assert device.slot.active.policy.version == 5 and files(device.state_dir) == before
    assert device.agent.rejected_updates == 1
    assert not any(record.exc_info for record in caplog.records)


def test_whatever_else_the_parser_trips_on_is_a_rejection(device, watcher, caplog, monkeypatch):
    def trips(*args, **kwargs):
        raise KeyError("a parser bug")

    monkeypatch.setattr("runtime.updates.parse_policy", trips)
    caplog.set_level(logging.WARNING, logger="runtime.agent")
    payload = raw_npz(_entries(6))
    watcher.publish(f"{PREFIX}/devices/dev-1/policy", payload)
    status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
    last = status["last_update"]
    assert last["result"] == "rejected" and "not a readable policy.npz: KeyError" in last["reason"]
    assert device.slot.active.policy.version == 5
    assert not any(record.exc_info for record in caplog.records)


def test_a_reason_quoting_the_payload_is_one_short_line(device, watcher, caplog):
    caplog.set_level(logging.WARNING, logger="runtime.agent")
    long_format = raw_npz(_entries(6, meta=meta_entry(format="x" * 60_000)))
    forged_line = raw_npz(_entries(6, meta=meta_entry(format="a\n\rERROR forged log line\x1b[2J")))
    for payload in (long_format, forged_line):
        watcher.publish(f"{PREFIX}/devices/dev-1/policy", payload)
        status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
        reason = status["last_update"]["reason"]
        assert reason.startswith("meta.format is") and len(reason) <= 300
        assert reason.isprintable()
    lines = rejection_lines(caplog, expected=2)
    assert len(lines) == 2 and all(line.isprintable() and len(line) < 400 for line in lines)


def test_two_threads_reporting_at_once_each_get_their_status_out(device, watcher, monkeypatch):
    """The network thread (busy, oversize) and the worker both report; a report must not
    overwrite the other's last_update before it was published (its pusher would time out)."""
    publish = device.agent._publish_status

    def slow_publish() -> None:  # widens the window between setting and publishing
        time.sleep(0.2)
        publish()

    monkeypatch.setattr(device.agent, "_publish_status", slow_publish)
    first, second = b"first junk payload", b"second junk payload"
    threads = [
        threading.Thread(target=device.agent._reject, args=(payload, reason, "test"))
        for payload, reason in ((first, "reason one"), (second, "reason two"))
    ]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    for thread in threads:
        thread.join(5)
    for payload, reason in ((first, "reason one"), (second, "reason two")):
        status = watcher.wait_for(update_result(hashlib.sha256(payload).hexdigest()))
        assert status["last_update"]["reason"] == reason
