"""End to end: `python -m export rollout` against `python -m runtime` devices (sim plant, real
control loops and health checks) on a real Mosquitto: a device rolls the update back, the
rollout aborts, the undo re-signs the previous policy, and anti-rollback still holds."""

from __future__ import annotations

import json
import signal

import pytest

from export.keys import generate_keypair, load_private_key
from export.push import push_main
from export.rollout import main
from tests.export.rollout_support import rollout_argv
from tests.ota_support import PREFIX, RuntimeProcess, Watcher, signed_policy

# 500 Hz: a balanced episode (500 steps) takes 1 s, a push-left one about 20 ms; two judged
# episodes per update. pi-0 lets any policy that lasts 5 steps pass, the others want 100.
FLOORS = {"pi-0": "5", "pi-1": "100", "pi-2": "100"}


@pytest.fixture
def devices(tmp_path, broker):
    private, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)
    policy = tmp_path / "v5.npz"
    policy.write_bytes(signed_policy(5, key))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    processes = {
        device: RuntimeProcess(
            tmp_path / device,
            broker.port,
            pub,
            policy,
            "--hz",
            "500",
            "--probation-episodes",
            "2",
            "--rollback-below",
            floor,
            device_id=device,
        )
        for device, floor in FLOORS.items()
    }
    online = set()
    while online != set(FLOORS):
        body = watcher.wait_for(lambda t, b: b.get("state") == "online", timeout=30)
        online.add(body["device_id"])
    yield key, private, policy, watcher, processes
    for process in processes.values():
        process.kill(signal.SIGTERM)
    watcher.close()
    for process in processes.values():
        assert "Traceback" not in process.log(), process.log()[-3000:]


def running(watcher: Watcher) -> dict[str, int]:
    watcher.drain()
    return {
        topic.split("/")[-2]: body["policy_version"]
        for topic, body in watcher.latest.items()
        if "policy_version" in body
    }


def test_a_rolled_back_canary_aborts_and_the_undo_restores_the_updated_device(
    tmp_path, broker, devices, capsys
):
    key, private, v5, watcher, _ = devices
    bad = tmp_path / "v6.npz"
    bad.write_bytes(signed_policy(6, key, kind="push_left"))
    argv = rollout_argv(bad, broker.port, tmp_path / "state.json", "--all-online", "--json")
    argv += ["--waves", "50%,100%", "--abort-above", "10%", "--min-devices", "2"]
    argv += ["--wave-timeout", "30", "--undo", "--previous", str(v5), "--sign-key", str(private)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, out + err
    report = json.loads(out)
    assert report["outcome"] == "aborted"
    assert report["results"]["pi-0"] == {"result": "succeeded", "reason": "", "wave": 0}
    assert report["results"]["pi-1"]["reason"].startswith("rolled_back: mean return")
    assert [(w["sent"], w["succeeded"], w["failed"]) for w in report["waves"]] == [
        (2, 1, 1),
        (0, 0, 0),
    ]
    undo = report["undo"]
    assert (undo["version"], undo["devices"], undo["succeeded"]) == (7, 1, 1)
    assert running(watcher) == {"pi-0": 7, "pi-1": 5, "pi-2": 5}
    # the undo is the old weights at a new version: the old files stay refused
    for replay, fragment in ((v5, "not newer than version 7"), (bad, "not newer than version 7")):
        code = push_main([str(replay), "--device", "pi-0", "--broker", broker.url,
                          "--topic-prefix", PREFIX, "--json", "--timeout", "5"])  # fmt: skip
        outcome = json.loads(capsys.readouterr().out)[0]
        assert code == 1 and outcome["result"] == "rejected", outcome
        assert fragment in outcome["reason"]
    assert running(watcher)["pi-0"] == 7

    # a good policy then goes out to everyone, each judged by its own control loop
    good = tmp_path / "v8.npz"
    good.write_bytes(signed_policy(8, key))
    argv = rollout_argv(good, broker.port, tmp_path / "state-8.json", "--all-online")
    argv += ["--waves", "34%,100%", "--abort-above", "10%", "--wave-timeout", "30"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "completed" in out.splitlines()[0]
    assert running(watcher) == {"pi-0": 8, "pi-1": 8, "pi-2": 8}
