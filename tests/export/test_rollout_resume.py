"""A rollout interrupted (Ctrl-C, a crash) continues from its state file, and one whose broker
dies mid-wave pauses and resumes: never a second push to a device, never a device counted twice."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from export.rollout import main
from tests.conftest import start_broker
from tests.export.rollout_support import (
    Fleet,
    PushCounter,
    finish,
    report,
    rollout_argv,
    start_rollout,
)
from tests.ota_support import new_key, signed_policy

WAVES = ["--waves", "34%,100%", "--abort-above", "10%", "--min-devices", "2"]


@pytest.fixture
def setup(tmp_path, broker):
    key, pub = new_key(tmp_path)
    fleet = Fleet(tmp_path, broker.port, key, pub, 6)
    counter = PushCounter(broker.port)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(6, key))
    yield fleet, counter, policy
    counter.close()
    fleet.stop()


def wait_for_state(path, predicate, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = None
        if state is not None and predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"the state never got there: {path.read_text()[:2000]}")


def assert_once_each(counter: PushCounter, result: dict, devices: int = 6) -> None:
    assert sorted(counter.counts) == [f"pi-{i:02d}" for i in range(devices)], counter.counts
    assert set(counter.counts.values()) == {1}, counter.counts  # one push per device
    assert len(result["results"]) == devices
    assert sum(w["succeeded"] for w in result["waves"]) == devices
    assert sum(w["failed"] + w["pending"] for w in result["waves"]) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_an_interrupted_rollout_continues_from_its_state(tmp_path, broker, setup, signum, capsys):
    fleet, counter, policy = setup
    state = tmp_path / "state.json"
    fleet.hold("pi-01", "pi-04")  # wave 1 (pi-00..02) waits for pi-01's health check
    argv = rollout_argv(policy, broker.port, state, "--all-online", "--json", *WAVES)
    process = start_rollout(argv, tmp_path)
    wait_for_state(state, lambda s: len(s["sent"]) == 3 and len(s["results"]) == 2)
    os.kill(process.pid, signum)
    code, out, err = finish(process, tmp_path)
    if signum == signal.SIGINT:
        assert code == 130, err
        assert "interrupted: the state is saved in" in err and "Traceback" not in err
    else:
        assert code == -signal.SIGKILL
    saved = json.loads(state.read_text())
    assert saved["phase"] == "rolling" and sorted(saved["sent"]) == ["pi-00", "pi-01", "pi-02"]
    fleet.release()  # pi-01 passes now, while no rollout runs
    time.sleep(0.5)
    assert counter.counts["pi-01"] == 1 and "pi-03" not in counter.counts
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "completed"
    assert_once_each(counter, result)
    assert set(fleet.versions().values()) == {6}
    # and once more: a finished rollout only reports
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["results"] == result["results"]
    assert set(counter.counts.values()) == {1}


def test_a_broker_that_dies_mid_wave_pauses_the_rollout(tmp_path, broker, setup):
    fleet, counter, policy = setup
    fleet.fast_reconnect()
    state = tmp_path / "state.json"
    fleet.hold("pi-04")  # wave 2 (pi-03..05) waits on pi-04 while the broker is away
    argv = rollout_argv(policy, broker.port, state, "--all-online", "--json", *WAVES)
    argv += ["--wave-timeout", "5"]  # shorter than the outage: the clock must stop
    process = start_rollout(argv, tmp_path)
    restarted = None
    try:
        wait_for_state(state, lambda s: s["wave"] == 1 and len(s["results"]) == 5)
        os.kill(broker.process.pid, signal.SIGKILL)
        broker.process.wait()
        time.sleep(6)
        assert process.poll() is None  # paused, not timed out
        restarted = start_broker(tmp_path / "broker-again", port=broker.port)
        fleet.release()
        code, out, err = finish(process, tmp_path)
    finally:
        if restarted is not None:
            restarted.stop()
    assert code == 0, out + err
    assert "broker unreachable: paused" in err
    result = report(out)
    assert result["outcome"] == "completed"
    assert_once_each(counter, result)
    assert set(fleet.versions().values()) == {6}


def test_an_aborted_rollout_is_undone_by_a_rerun_with_undo(tmp_path, broker, capsys):
    from export.keys import generate_keypair, load_private_key

    private, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)
    _, other_pub = new_key(tmp_path, "other")
    fleet = Fleet(tmp_path, broker.port, key, pub, 4, strangers={"pi-01": other_pub})
    counter = PushCounter(broker.port)
    policy, previous = tmp_path / "v6.npz", tmp_path / "v5.npz"
    policy.write_bytes(signed_policy(6, key))
    previous.write_bytes(signed_policy(5, key))
    state = tmp_path / "state.json"
    argv = rollout_argv(policy, broker.port, state, "--all-online", "--json", *WAVES[:2])
    argv += ["--abort-above", "10%", "--min-devices", "2"]
    undo = ["--undo", "--previous", str(previous), "--sign-key", str(private)]
    try:
        assert main(argv) == 1
        first = json.loads(capsys.readouterr().out)
        versions = fleet.versions()
        assert main([*argv, *undo]) == 1
        second = json.loads(capsys.readouterr().out)
        assert main([*argv, *undo]) == 1  # done: reported again, nothing sent
        third = json.loads(capsys.readouterr().out)
    finally:
        counter.close()
        fleet.stop()
    assert first["outcome"] == "aborted" and first["undo"] is None
    assert versions == {"pi-00": 6, "pi-01": 5, "pi-02": 5, "pi-03": 5}
    assert second["undo"]["devices"] == 1 and second["undo"]["succeeded"] == 1
    assert fleet.versions() == {"pi-00": 7, "pi-01": 5, "pi-02": 5, "pi-03": 5}
    assert dict(counter.counts) == {"pi-00": 2, "pi-01": 1}  # the file, then the undo
    assert third["undo"] == second["undo"]
