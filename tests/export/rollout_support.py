"""A fleet for the rollout tests: real runtime agents (in-process) whose health check is fed by
real CartPole episodes of whatever policy they run, and a counter of the pushes each one got."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from runtime.plants import CartPoleSim
from tests.ota_support import PREFIX, ROOT, Device

EPISODES_PER_SWAP = 3  # the first straddles the swap: two judged ones, probation_episodes=2


def episode_return(active: Any, seed: int) -> float:
    """One CartPole-v1 episode of `active` on the sim (500 at most: a balanced one)."""
    plant = CartPoleSim()
    obs = plant.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, done = plant.step(active.decide(obs))
        total += reward
    return total


class Trial(threading.Thread):
    """Runs episodes of the device's policy after each swap, as its control loop would, and
    hands each return to the agent's health check. `hold` pauses it (a probation left
    pending until the test releases it)."""

    def __init__(self, device: Device) -> None:
        super().__init__(daemon=True, name=f"trial-{device.agent.config.device_id}")
        self.device = device
        self.hold = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        seen = None
        seed = 0
        while not self.stopping.wait(0.02):
            active = self.device.slot.active
            if active is seen or self.hold.is_set():
                continue
            for _ in range(EPISODES_PER_SWAP):
                seed += 1
                self.device.agent.on_episode({"return": episode_return(active, seed)})
            seen = active


class Fleet:
    """`count` devices pi-00.. on one broker, each trusting `pub` (those in `strangers` trust
    `other_pub` instead, so they reject what `key` signed) and judging updates by 2 episodes
    against a floor of `rollback_below`."""

    def __init__(
        self,
        tmp_path: Path,
        port: int,
        key: Any,
        pub: Path,
        count: int,
        *,
        strangers: dict[str, Path] | None = None,
        rollback_below: float = 100.0,
    ) -> None:
        self.devices: dict[str, Device] = {}
        self.trials: dict[str, Trial] = {}
        for index in range(count):
            device_id = f"pi-{index:02d}"
            trusted = (strangers or {}).get(device_id, pub)
            device = Device(
                tmp_path,
                port,
                key,
                trusted,
                device_id=device_id,
                probation_episodes=2,
                rollback_below=rollback_below,
            )
            self.devices[device_id] = device
            self.trials[device_id] = Trial(device)
            self.trials[device_id].start()

    def fast_reconnect(self) -> None:
        """Every agent retries the broker each second (not 1, 2, 4 ... s): a restart test
        then knows when they are back."""
        for device in self.devices.values():
            device.agent.client.reconnect_delay_set(1, 1)

    def versions(self) -> dict[str, int]:
        return {d: device.slot.active.policy.version for d, device in self.devices.items()}

    def hold(self, *device_ids: str) -> None:
        for device_id in device_ids:
            self.trials[device_id].hold.set()

    def release(self) -> None:
        for trial in self.trials.values():
            trial.hold.clear()

    def stop(self) -> None:
        for trial in self.trials.values():
            trial.stopping.set()
        for device in self.devices.values():
            device.stop()


class PushCounter:
    """Counts every policy message each device's topic carries (a second push would show)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *args: client.subscribe(
            f"{PREFIX}/devices/+/policy", 1
        )  # again after a broker restart
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, client, userdata, message) -> None:
        device = message.topic.split("/")[-2]
        with self._lock:
            self.counts[device] += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rollout_argv(policy: Path, port: int, state: Path, *extra: str) -> list[str]:
    return [
        str(policy),
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--topic-prefix",
        PREFIX,
        "--state",
        str(state),
        *extra,
    ]


def start_rollout(argv: list[str], workdir: Path) -> subprocess.Popen:
    """`python -m export rollout ARGV` in a child process (stdout and stderr to files)."""
    out = open(workdir / "rollout.out", "wb")  # noqa: SIM115 - closed by finish()
    err = open(workdir / "rollout.err", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "export", "rollout", *argv], stdout=out, stderr=err, cwd=ROOT
    )
    process.files = (out, err)  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, workdir: Path, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for the child; (exit code, stdout, stderr)."""
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for handle in process.files:  # type: ignore[attr-defined]
            handle.close()
    return (
        code,
        (workdir / "rollout.out").read_text(),
        (workdir / "rollout.err").read_text(),
    )


def report(out: str) -> dict[str, Any]:
    return json.loads(out)
