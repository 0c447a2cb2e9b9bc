"""`python -m export rollout`: waves, the success rule, the abort rule, on real agents."""

from __future__ import annotations

import hashlib
import json

import pytest

from export.rollout import main
from export.waves import Plan, crossed, judge, parse_waves
from tests.export.rollout_support import Fleet, PushCounter, rollout_argv
from tests.ota_support import PREFIX, Watcher, new_key, signed_policy

SHA = "ab" * 32


def devices(count: int) -> tuple[str, ...]:
    return tuple(f"d-{i:04d}" for i in range(count))


@pytest.mark.parametrize(
    ("count", "waves", "sizes"),
    [
        (20, "5%,25%,100%", [1, 4, 15]),
        (1000, "5%,25%,100%", [50, 200, 750]),
        (3, "5%,25%,100%", [1, 0, 2]),  # a small fleet: an empty wave is passed over
        (7, "50,100", [4, 3]),
        (1, "100%", [1]),
        (10, "33.3%,100%", [4, 6]),
    ],
)
def test_waves_are_cumulative_shares_of_the_sorted_devices(count, waves, sizes):
    plan = Plan(devices(count), parse_waves(waves), 10.0)
    members = plan.members()
    assert [len(m) for m in members] == sizes
    assert [d for wave in members for d in wave] == list(devices(count))


def status(sha=SHA, version=6, probation="passed", last=None, state="online"):
    return {
        "state": state,
        "policy_sha256": sha,
        "policy_version": version,
        "probation": None if probation is None else {"version": version, "state": probation},
        "last_update": last,
    }


def test_a_device_succeeds_when_it_runs_the_file_and_its_health_check_passed():
    assert judge(status(), SHA, 6, sent=True) == ("succeeded", "")
    assert judge(status(probation="skipped"), SHA, 6, sent=True)[0] == "succeeded"
    assert judge(status(probation="pending"), SHA, 6, sent=True) is None
    assert judge(status(probation=None), SHA, 6, sent=True) is None  # restarted: not seen
    assert judge(None, SHA, 6, sent=True) is None
    old = status(sha="cd" * 32, version=5, probation=None)
    assert judge(old, SHA, 6, sent=True) is None  # not there yet
    rejected = {"sha256": SHA, "result": "rejected", "reason": "signature check failed"}
    assert judge({**old, "last_update": rejected}, SHA, 6, sent=True) == (
        "failed",
        "rejected: signature check failed",
    )
    back = {"sha256": SHA, "result": "rolled_back", "reason": "mean return 9.5"}
    assert judge({**old, "last_update": back}, SHA, 6, sent=True)[0] == "failed"
    # before it was sent: an old rejection is old news, running it already is a success
    assert judge({**old, "last_update": rejected}, SHA, 6, sent=False) is None
    assert judge(status(probation=None), SHA, 6, sent=False) == (
        "succeeded",
        "already running this version",
    )


@pytest.mark.parametrize(
    ("failed", "results", "size", "abort"),
    [
        (1, 4, 50, False),  # fewer than --min-devices 5 results
        (1, 5, 50, True),  # 20% > 10%
        (1, 10, 50, False),  # exactly 10% is not above it
        (2, 10, 50, True),
        (1, 3, 3, True),  # a wave smaller than --min-devices decides on all of its results
        (0, 0, 0, False),
    ],
)
def test_the_threshold_is_crossed_above_the_share_after_enough_results(
    failed, results, size, abort
):
    plan = Plan(("a",), (100.0,), 10.0, min_devices=5)
    assert crossed(failed, results, size, plan) is abort


@pytest.fixture
def keyed(tmp_path):
    key, pub = new_key(tmp_path)
    other_key, other_pub = new_key(tmp_path, "other")
    return key, pub, other_pub


def test_a_rollout_goes_wave_by_wave_and_succeeds(tmp_path, broker, keyed, capsys):
    key, pub, _ = keyed
    fleet = Fleet(tmp_path, broker.port, key, pub, 6)
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(6, key))
    sha = hashlib.sha256(policy.read_bytes()).hexdigest()
    device_file = tmp_path / "fleet.txt"
    device_file.write_text("# the test fleet\n" + "\n".join(reversed(fleet.devices)) + "\n")
    state = tmp_path / "state.json"
    argv = rollout_argv(policy, broker.port, state, "--devices", str(device_file))
    argv += ["--waves", "20%,50%,100%", "--abort-above", "10%", "--wave-timeout", "30"]
    try:
        code = main(argv)
        out, err = capsys.readouterr()
        statuses = watcher.drain()
    finally:
        watcher.close()
        fleet.stop()
    assert code == 0, out + err
    assert set(fleet.versions().values()) == {6}
    lines = out.splitlines()
    assert "completed" in lines[0] and f"sha256 {sha[:12]}" in lines[0]
    rows = [line.split() for line in lines[2:5]]
    assert [row[:7] for row in rows] == [
        ["1", "20%", "2", "2", "2", "0", "0"],
        ["2", "50%", "1", "1", "1", "0", "0"],
        ["3", "100%", "3", "3", "3", "0", "0"],
    ]
    # wave k+1 got the file only after every device of wave k had passed its health check
    order = {}
    for index, (topic, body) in enumerate(statuses):
        device = topic.split("/")[-2]
        if body.get("policy_sha256") == sha:
            order.setdefault((device, "applied"), index)
            if (body.get("probation") or {}).get("state") == "passed":
                order.setdefault((device, "passed"), index)
    waves = [["pi-00", "pi-01"], ["pi-02"], ["pi-03", "pi-04", "pi-05"]]
    for done, following in zip(waves, waves[1:], strict=False):
        assert max(order[(d, "passed")] for d in done) < min(
            order[(d, "applied")] for d in following
        )
    saved = json.loads(state.read_text())
    assert saved["phase"] == "completed" and len(saved["sent"]) == 6


def test_a_wave_over_the_threshold_stops_the_rollout(tmp_path, broker, keyed, capsys):
    key, pub, other_pub = keyed
    strangers = {"pi-02": other_pub, "pi-03": other_pub}  # they reject what `key` signed
    fleet = Fleet(tmp_path, broker.port, key, pub, 10, strangers=strangers)
    counter = PushCounter(broker.port)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(signed_policy(6, key))
    argv = rollout_argv(policy, broker.port, tmp_path / "state.json", "--all-online", "--json")
    argv += ["--waves", "20%,60%,100%", "--abort-above", "10%", "--min-devices", "2"]
    try:
        code = main(argv)
        out, err = capsys.readouterr()
    finally:
        counter.close()
        fleet.stop()
    assert code == 1, out + err
    report = json.loads(out)
    assert report["outcome"] == "aborted" and report["abort"]["wave"] == 1
    assert "in wave 2 failed, more than 10%" in report["abort"]["reason"]
    assert [(w["devices"], w["sent"]) for w in report["waves"]] == [(2, 2), (4, 4), (4, 0)]
    assert report["waves"][1]["failed"] >= 1  # the abort needs only enough results
    assert report["results"]["pi-02"]["reason"].startswith("rejected: signature check failed")
    untouched = [f"pi-{i:02d}" for i in range(6, 10)]
    assert all(counter.counts[d] == 0 for d in untouched), counter.counts
    assert {d: v for d, v in fleet.versions().items() if d in untouched} == dict.fromkeys(
        untouched, 5
    )
    assert all(counter.counts[f"pi-{i:02d}"] == 1 for i in range(6)), counter.counts


def test_an_undo_succeeds_when_the_device_is_off_the_aborted_version():
    from export.rollout import undo_verdict
    from export.waves import Undo

    undo = Undo(sha256="ee" * 32, version=7, targets=["a"])
    refused = {"sha256": "ee" * 32, "result": "rejected", "reason": "signature check failed"}
    assert undo_verdict(status(sha="ee" * 32, version=7), undo, True, SHA) == ("succeeded", "")
    assert undo_verdict(status(), undo, True, SHA) is None  # still on it, no answer yet
    on_aborted = status(last=refused)
    assert undo_verdict(on_aborted, undo, True, SHA) == (
        "failed",
        "rejected: signature check failed",
    )
    went_back = status(sha="cd" * 32, version=5, last=refused)
    result, reason = undo_verdict(went_back, undo, True, SHA)
    assert result == "succeeded" and reason.startswith("not on the aborted version")
