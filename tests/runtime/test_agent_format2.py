"""Format 2 over the air, end to end: `python -m runtime` processes on a real Mosquitto, a signed
gaussian policy pushed to a runtime on a matching plant (Pendulum-v1) and applied, and to one on
CartPole (two discrete actions), which rejects it with the reason and keeps running its policy."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from tests.ota_support import PREFIX, RuntimeProcess, Watcher, new_key, signed_policy, update_result
from tests.runtime.test_runtime_format2 import random_policy


def online(device_id: str):
    return lambda topic, body: (
        topic.endswith(f"/{device_id}/status") and body.get("state") == "online"
    )


def wait_online(watcher: Watcher, *device_ids: str) -> dict[str, dict]:
    """The first online status of each device, in whatever order they arrive."""
    seen: dict[str, dict] = {}

    def all_seen(topic: str, body: dict) -> bool:
        for device_id in device_ids:
            if online(device_id)(topic, body):
                seen[device_id] = body
        return len(seen) == len(device_ids)

    watcher.wait_for(all_seen, timeout=30)
    return seen


def wait_for_episode(runtime: RuntimeProcess, version: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in runtime.episodes() if e["policy_version"] == version]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no episode of version {version}: {runtime.log()[-2000:]}")


def test_a_gaussian_update_is_applied_on_its_plant_and_refused_on_cartpole(
    tmp_path, broker
) -> None:
    pytest.importorskip("gymnasium")
    key, pub = new_key(tmp_path)
    rng = np.random.default_rng(21)
    start = random_policy(rng, "gaussian", obs_dim=3, actions=1, version=5, key=key)
    update = random_policy(rng, "gaussian", obs_dim=3, actions=1, version=6, key=key)
    (tmp_path / "pendulum.npz").write_bytes(start.data)
    (tmp_path / "cartpole.npz").write_bytes(signed_policy(5, key))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    common = ("--hz", "500", "--rollback-below=-1e9")  # Pendulum's returns are negative
    pendulum = RuntimeProcess(
        tmp_path / "pendulum", broker.port, pub, tmp_path / "pendulum.npz",
        "--plant", "gym", "--env", "Pendulum-v1", *common, device_id="pi-pendulum",
    )  # fmt: skip
    cartpole = RuntimeProcess(
        tmp_path / "cartpole", broker.port, pub, tmp_path / "cartpole.npz", *common,
        device_id="pi-cartpole",
    )  # fmt: skip
    try:
        statuses = wait_online(watcher, "pi-pendulum", "pi-cartpole")
        status = statuses["pi-pendulum"]
        assert (status["obs_dim"], status["action_kind"], status["action_dim"]) == (
            3,
            "continuous",
            1,
        )
        assert status["policy_head"] == "gaussian" and status["policy_version"] == 5
        status = statuses["pi-cartpole"]
        assert (status["action_kind"], status["action_dim"], status["policy_head"]) == (
            "discrete",
            2,
            "bernoulli",
        )
        wait_for_episode(cartpole, 5)
        files = {p.name: p.read_bytes() for p in (tmp_path / "cartpole" / "state").iterdir()}
        sha = hashlib.sha256(update.data).hexdigest()

        watcher.publish(f"{PREFIX}/devices/pi-pendulum/policy", update.data)
        applied = watcher.wait_for(update_result(sha), timeout=10)
        assert applied["last_update"]["result"] == "applied", applied
        assert applied["policy_version"] == 6 and applied["policy_sha256"] == sha
        assert wait_for_episode(pendulum, 6)["steps"] == 200  # Pendulum-v1's time limit
        state = tmp_path / "pendulum" / "state"
        assert (state / "current.npz").read_bytes() == update.data

        watcher.publish(f"{PREFIX}/devices/pi-cartpole/policy", update.data)
        rejected = watcher.wait_for(update_result(sha), timeout=10)
        last = rejected["last_update"]
        assert last["result"] == "rejected", last  # version null: refused while parsing
        assert last["reason"] == (
            "meta.obs_dim is 3, the plant needs 4"  # the observation is checked first
        )
        assert rejected["policy_version"] == 5 and rejected["policy_head"] == "bernoulli"
        count = len(cartpole.episodes())
        deadline = time.monotonic() + 20
        while len(cartpole.episodes()) < count + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        later = cartpole.episodes()[count:]
        assert len(later) >= 2 and all(e["policy_version"] == 5 for e in later)
        assert {
            p.name: p.read_bytes() for p in (tmp_path / "cartpole" / "state").iterdir()
        } == files
    finally:
        pendulum.kill()
        cartpole.kill()
        watcher.close()
    assert pendulum.process.returncode is not None and cartpole.process.returncode is not None


def test_an_update_with_the_plants_obs_but_other_actions_is_rejected(tmp_path, broker) -> None:
    """A categorical policy observing 4 values, pushed to CartPole (2 actions): the reason
    names the action counts; nothing is applied."""
    key, pub = new_key(tmp_path)
    (tmp_path / "cartpole.npz").write_bytes(signed_policy(5, key))
    update = random_policy(
        np.random.default_rng(3), "categorical", obs_dim=4, actions=3, version=6, key=key
    )
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    cartpole = RuntimeProcess(
        tmp_path / "cartpole", broker.port, pub, tmp_path / "cartpole.npz", "--hz", "500",
        device_id="pi-cartpole",
    )  # fmt: skip
    try:
        wait_online(watcher, "pi-cartpole")
        watcher.publish(f"{PREFIX}/devices/pi-cartpole/policy", update.data)
        rejected = watcher.wait_for(update_result(hashlib.sha256(update.data).hexdigest()))
        assert rejected["last_update"]["reason"] == (
            "policy version 6 does not match the plant (obs 4, 2 discrete actions): its"
            " categorical head chooses one of 3 actions, the plant takes one of 2"
        )
        assert rejected["policy_version"] == 5
        assert (tmp_path / "cartpole" / "state" / "current.npz").read_bytes() == (
            tmp_path / "cartpole.npz"
        ).read_bytes()
    finally:
        cartpole.kill()
        watcher.close()
