"""examples/servo on the device, as docs/controller.md walks it: the plant class steps exactly
the Gymnasium environment's motor; a servo policy trained with `--env servo_env:...` exports to
npz/ONNX/C (parity proven, real gcc and onnxruntime), runs under `python -m runtime` on
`servo_plant:ServoPlant` connected to a real Mosquitto, takes a newer signed policy from
`python -m export push` and refuses the discrete servo's and CartPole's with the reason; and
`--plant stdio` talks to servo_bridge.py with the decisions the policy makes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# training the example needs the trainer's extra: the runtime-only venv (bookworm pins) skips
pytest.importorskip("gymnasium")

from runtime.backends import make_active
from runtime.policy import greedy_action, load_policy
from tests.ota_support import PREFIX, RuntimeProcess, Watcher, signed_policy, update_result
from tests.runtime.test_agent_format2 import wait_for_episode, wait_online

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "servo"
TRAIN = ["--max-episodes", "16", "--batch", "8", "--quiet", "--eval-episodes", "2"]


def run_cli(main, argv: list[str]) -> tuple[int, str]:
    """An in-process CLI's exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def servo(tmp_path_factory) -> Iterator[Path]:
    """The example's folder on sys.path, three tiny trained runs in a directory (servo seeds 1
    and 2, the discrete servo) and a key pair in its keys/."""
    from trainer.cli import main as train

    sys.path.insert(0, str(EXAMPLE))
    work = tmp_path_factory.mktemp("servo")
    try:
        for name, env, extra in (
            ("servo", "ServoPosition-v0", ["--seed", "1"]),
            ("servo-2", "ServoPosition-v0", ["--seed", "2"]),
            ("servo-discrete", "ServoPositionDiscrete-v0", ["--target-return", "-40"]),
        ):
            argv = ["--env", f"servo_env:{env}", *extra, *TRAIN, "--out", str(work / name)]
            assert run_cli(train, argv)[0] == 0, name
        from export.cli import main as export

        assert run_cli(export, ["keygen", "--out", str(work / "keys")])[0] == 0
        yield work
    finally:
        sys.path.remove(str(EXAMPLE))


def export_signed(servo: Path, run: str, version: int, *formats: str) -> Path:
    """`python -m export RUN FORMATS --sign keys/signing.key --version N`: dist/policy.npz."""
    from export.cli import main as export

    argv = [str(servo / run), *formats, "--sign", str(servo / "keys/signing.key")]
    code, printed = run_cli(export, [*argv, "--version", str(version)])
    assert code == 0, printed
    return servo / run / "dist" / "policy.npz"


@pytest.mark.parametrize("discrete", [False, True])
def test_the_plant_steps_the_environments_motor_bit_for_bit(servo, discrete) -> None:
    import gymnasium as gym
    import servo_plant

    env = gym.make(
        "servo_env:ServoPositionDiscrete-v0" if discrete else "servo_env:ServoPosition-v0"
    )
    plant = servo_plant.ServoDiscretePlant() if discrete else servo_plant.ServoPlant()
    rng = np.random.default_rng(5)
    for episode in range(6):
        seed = 11 + episode if episode % 3 == 0 else None  # re-seeded, then continuing
        obs, _ = env.reset(seed=seed)
        assert plant.reset(seed).tobytes() == obs.tobytes()
        steps, done = 0, False
        while not done:
            action = rng.integers(3) if discrete else rng.uniform(-1.5, 1.5, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            plant_obs, plant_reward, done = plant.step(action)
            assert (plant_obs.tobytes(), plant_reward) == (obs.tobytes(), reward)
            assert done == (terminated or truncated)
            steps += 1
        assert steps == 200
    env.close()


def test_the_servo_exports_runs_on_its_plant_and_takes_a_signed_update(
    servo, tmp_path, broker, monkeypatch
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from export.cli import main as export

    first = export_signed(servo, "servo", 1, "--onnx", "--c")
    manifest = json.loads((first.parent / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["policy.npz", "policy.onnx", "policy.h"]
    parity = manifest["parity"]
    assert parity["c_skipped"] is None and parity["c_action_mismatches"] == 0  # gcc ran it
    assert parity["c_max_scaled_error"] <= parity["c_tolerance"]
    assert max(parity["onnx_outputs"]["onnxruntime"].values()) <= parity["onnx_tolerance"]
    newer = export_signed(servo, "servo-2", 2, "--onnx", "--c")
    discrete = export_signed(servo, "servo-discrete", 3)
    key = load_pem_private_key((servo / "keys/signing.key").read_bytes(), password=None)
    cartpole = tmp_path / "cartpole.npz"
    cartpole.write_bytes(signed_policy(4, key))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLE), str(ROOT)]))
    watcher = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    device = RuntimeProcess(
        tmp_path / "device", broker.port, servo / "keys/signing.pub", first,
        "--plant", "servo_plant:ServoPlant", "--hz", "500", "--rollback-below=-1e9",
        device_id="servo-1",
    )  # fmt: skip
    push = ["--device", "servo-1", "--broker", broker.url, "--topic-prefix", PREFIX, "--json"]
    try:
        status = wait_online(watcher, "servo-1")["servo-1"]
        assert (status["obs_dim"], status["action_kind"], status["action_dim"]) == (
            3,
            "continuous",
            1,
        )
        assert (status["policy_head"], status["policy_version"]) == ("gaussian", 1)
        assert wait_for_episode(device, 1)["steps"] == 200

        code, printed = run_cli(export, ["push", str(newer), *push])
        assert code == 0 and json.loads(printed)[0]["result"] == "applied", printed
        code, printed = run_cli(export, ["status", "--broker", broker.url, "--topic-prefix", PREFIX, "--json"])  # fmt: skip
        status = json.loads(printed)["servo-1"]
        assert code == 0 and status["policy_version"] == 2, status
        assert status["last_update"]["result"] == "applied"
        assert wait_for_episode(device, 2)["steps"] == 200

        code, printed = run_cli(export, ["push", str(discrete), *push])
        assert code == 1 and json.loads(printed)[0]["reason"] == (
            "policy version 3 does not match the plant (obs 3, 1 continuous action in [-1, 1]):"
            " its categorical head chooses one of 3 discrete actions, the plant takes 1"
            " continuous action(s)"
        ), printed
        code, printed = run_cli(export, ["push", str(cartpole), *push])
        outcome = json.loads(printed)[0]
        assert code == 1 and outcome["result"] == "rejected", printed
        assert outcome["reason"] == (  # format 1 observes 4 values
            "W1 has shape (8, 4), expected (hidden, 3) with hidden in 1..4096"
        )
        status = watcher.wait_for(update_result(device_sha(cartpole)), timeout=10)
        assert status["policy_version"] == 2
        count = len(device.episodes())
        later = wait_for_episodes(device, count + 2)[count:]  # still controlling, on the update
        assert all(e["policy_version"] == 2 and e["steps"] == 200 for e in later)
        state = tmp_path / "device" / "state"
        assert (state / "current.npz").read_bytes() == newer.read_bytes()
    finally:
        device.kill()
        watcher.close()
    assert device.process.returncode is not None


def wait_for_episodes(device: RuntimeProcess, count: int, timeout: float = 20.0) -> list[dict]:
    """The device's episodes once it has reported `count` of them."""
    deadline = time.monotonic() + timeout
    while len(device.episodes()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    episodes = device.episodes()
    assert len(episodes) >= count, device.log()[-2000:]
    return episodes


def device_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_stdio_bridge_is_the_plant_and_the_runtime_decides_as_the_policy(
    servo, tmp_path
) -> None:
    import servo_plant

    policy_path = export_signed(servo, "servo", 1)
    trace = tmp_path / "trace.tsv"
    to_bridge_read, to_bridge_write = os.pipe()
    to_runtime_read, to_runtime_write = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(ROOT)])
    runtime = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant", "stdio",
         "--public-key", str(servo / "keys/signing.pub"), "--hz", "0", "--episodes", "2",
         "--json"],
        cwd=ROOT, stdin=to_runtime_read, stdout=to_bridge_write, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    bridge = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "servo_bridge.py"), "--seed", "4", "--trace", str(trace)],
        cwd=ROOT, stdin=to_bridge_read, stdout=to_runtime_write, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    for fd in (to_bridge_read, to_bridge_write, to_runtime_read, to_runtime_write):
        os.close(fd)  # the children hold them: each side sees the other's end of input
    try:
        reports = runtime.communicate(timeout=60)[1].decode()
        bridge_log = bridge.communicate(timeout=60)[1].decode()
    finally:
        for process in (runtime, bridge):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert runtime.returncode == 0 and bridge.returncode == 0, (reports, bridge_log)
    episodes = [
        json.loads(line) for line in reports.splitlines() if line.startswith('{"type": "ep')
    ]
    assert [e["steps"] for e in episodes] == [200, 200]

    policy = load_policy(policy_path)
    fused = make_active(policy, "numpy").action
    exchanges = [line.split("\t") for line in trace.read_text().splitlines()]
    assert len(exchanges) == 400
    obs = np.array([[float(v) for v in sent.split()[:3]] for sent, _ in exchanges], np.float32)
    actions = np.array([[float(action)] for _, action in exchanges], np.float32)
    assert np.array_equal(actions, np.array([fused(row) for row in obs]))  # what the device runs
    np.testing.assert_allclose(
        actions, greedy_action(policy.params, obs.astype(np.float64), policy.spec), atol=1e-5
    )
    # the bridge is the plant: the same actions on servo_plant replay its observations and returns
    plant, returns = servo_plant.ServoPlant(), []
    for episode in range(2):
        steps = exchanges[200 * episode : 200 * (episode + 1)]
        assert plant.reset(4 if episode == 0 else None).tobytes() == obs[200 * episode].tobytes()
        total = 0.0
        for step, (_, action) in enumerate(steps):
            plant_obs, reward, done = plant.step(np.array([float(action)], np.float32))
            total += reward
            if step + 1 < len(steps):
                assert plant_obs.tobytes() == obs[200 * episode + step + 1].tobytes()
        assert done
        returns.append(total)
    assert [e["return"] for e in episodes] == returns  # `done REWARD` carried the last reward
    assert bridge_log.startswith("servo bridge: 2 episodes")
