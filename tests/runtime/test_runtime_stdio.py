"""The stdio plant against a bridge in another process, garbage lines included; signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import make_active
from runtime.loop import ControlLoop
from runtime.plants import CartPoleSim, StdioPlant
from runtime.policy import load_policy
from runtime.slot import PolicySlot

ROOT = Path(__file__).resolve().parents[2]

# A bridge as a user would write one (here around the sim): it answers `reset` and actions with
# observations, says `done` when the episode ends, and sprinkles garbage every 37 messages.
BRIDGE = r"""
import sys
from runtime.plants import CartPoleSim

GARBAGE = [b"hello", b"1 2 3", b"0.1 0.2 nan 0.4", b"inf 0 0 0", b"1 2 3 4 5 6",
           b"\xff\xfe\x00 1 2 3", b"1,2,3,4", b"x" * 10000, b"done done", b"reset"]
seed = int(sys.argv[1])
sim = CartPoleSim()
out = sys.stdout.buffer
messages = garbage = 0
first = True

def send(line):
    out.write(line + b"\n")
    out.flush()

for line in sys.stdin.buffer:
    message = line.strip()
    messages += 1
    if messages % 37 == 0:
        send(GARBAGE[garbage % len(GARBAGE)])
        garbage += 1
    if messages % 11 == 0:
        send(b"")
        send(b"# a comment from the bridge")
    if message == b"reset":
        obs = sim.reset(seed if first else None)
        first = False
    elif message in (b"0", b"1"):
        obs, reward, done = sim.step(int(message))
        if done:
            send(b"done")
            continue
    else:
        sys.stderr.write(f"bridge: unexpected {message!r}\n")
        continue
    send(b" ".join(repr(float(value)).encode() for value in obs))
sys.stderr.write(f"bridge: garbage={garbage}\n")
"""


def start_bridge(seed: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BRIDGE, str(seed)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def sim_returns(policy_path: Path, seed: int, episodes: int) -> list[float]:
    results = []

    class Recorder:
        def on_episode(self, result):
            results.append(result.episode_return)

    active = make_active(load_policy(policy_path), "numpy")
    ControlLoop(CartPoleSim(), PolicySlot(active), hz=0, episodes=episodes, seed=seed,
                listeners=[Recorder()]).run()  # fmt: skip
    return results


def test_stdio_plant_with_a_subprocess_bridge_and_garbage(policy_path: Path, caplog) -> None:
    bridge = start_bridge(seed=5)
    try:
        plant = StdioPlant(bridge.stdout, bridge.stdin)
        returns = []

        class Recorder:
            def on_episode(self, result):
                returns.append(result.episode_return)

        active = make_active(load_policy(policy_path), "numpy")
        loop = ControlLoop(plant, PolicySlot(active), hz=0, episodes=2, listeners=[Recorder()])
        summary = loop.run()
    finally:
        bridge.stdin.close()
        stop(bridge)
    assert returns == [500.0, 500.0] == sim_returns(policy_path, 5, 2)
    assert summary.decisions == 1000
    assert plant.malformed >= 25  # 1002 messages / 37, each garbage line counted
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == plant.malformed
    assert any("expected 4 floats" in e for e in errors)
    assert any("non-finite" in e for e in errors)
    assert any("longer than 4096 bytes" in e for e in errors)


def test_stdio_plant_reports_end_of_input(tmp_path: Path) -> None:
    import io

    lines = b"0.01 0.02 0.03 0.04\r\nbad\n1e39 0 0 0\n0 0 0 0 0.5\n"
    plant = StdioPlant(io.BytesIO(lines), io.BytesIO())
    assert plant.reset().tolist() == pytest.approx([0.01, 0.02, 0.03, 0.04])
    obs, reward, done = plant.step(1)
    assert obs.tolist() == [0, 0, 0, 0] and reward == 0.5 and not done and plant.malformed == 2
    assert plant.outfile.getvalue() == b"reset\n1\n"
    from runtime.plants import PlantClosed

    with pytest.raises(PlantClosed):
        plant.step(0)


def test_cli_stdio_actions_on_stdout_reports_on_stderr(policy_path: Path) -> None:
    """The runtime as a subprocess; this test is the bridge, with garbage."""
    runtime = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant", "stdio",
         "--hz", "0", "--json"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")},
    )  # fmt: skip
    sim = CartPoleSim()
    try:
        actions = 0
        for episode in range(2):
            assert runtime.stdout.readline() == b"reset\n"
            obs = sim.reset(9 if episode == 0 else None)
            runtime.stdin.write(b"garbage line\n")
            while True:
                runtime.stdin.write(" ".join(map(str, obs.tolist())).encode() + b"\n")
                runtime.stdin.flush()
                action = runtime.stdout.readline()
                assert action in (b"0\n", b"1\n")
                actions += 1
                obs, _, done = sim.step(int(action))
                if done:
                    runtime.stdin.write(b"done\n")
                    runtime.stdin.flush()
                    break
        assert runtime.stdout.readline() == b"reset\n"
        runtime.stdin.close()  # end of input: the runtime finishes cleanly
        code = runtime.wait(timeout=20)
        err = runtime.stderr.read().decode()
    finally:
        stop(runtime)
    assert code == 0, err
    assert actions == 1000 and runtime.stdout.read() == b""
    reports = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [r["return"] for r in reports[:2]] == [500.0, 500.0]
    assert reports[-1]["type"] == "summary" and reports[-1]["stopped_by"] == "plant closed"
    assert err.count("garbage line") == 2


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signals_stop_at_the_end_of_the_step(policy_path: Path, signum: int, code: int) -> None:
    runtime = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--hz", "50", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "running policy" not in line and time.monotonic() < deadline:
            line = runtime.stderr.readline()
        time.sleep(0.3)
        runtime.send_signal(signum)
        assert runtime.wait(timeout=10) == code
        summary = json.loads(runtime.stdout.read().splitlines()[-1])
    finally:
        stop(runtime)
    assert summary["type"] == "summary" and summary["stopped_by"] == signal.Signals(signum).name
    assert summary["decisions"] >= 10
    assert np.isfinite(summary["duration_s"])


def test_a_silent_bridge_does_not_block_a_stop(policy_path: Path) -> None:
    runtime = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant", "stdio"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert (
            runtime.stdout.readline() == b"reset\n"
        )  # waiting for an observation that never comes
        runtime.send_signal(signal.SIGTERM)
        assert runtime.wait(timeout=10) == 0
    finally:
        runtime.stdin.close()
        stop(runtime)


STUCK_PLANT = """
import time
from runtime.plants import CartPoleSim


class Stuck(CartPoleSim):
    def step(self, action):
        print("stepping", flush=True)
        time.sleep(600)  # a driver that never returns
"""


def test_a_second_signal_interrupts_a_stuck_step(policy_path: Path, tmp_path: Path) -> None:
    (tmp_path / "stuck_plant.py").write_text(STUCK_PLANT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    runtime = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant",
         "stuck_plant:Stuck"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert runtime.stdout.readline() == b"stepping\n"
        runtime.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert runtime.poll() is None  # waits for the end of the step...
        runtime.send_signal(signal.SIGINT)  # ...until a second signal
        assert runtime.wait(timeout=10) == 130
        assert b"Traceback" not in runtime.stderr.read()
    finally:
        stop(runtime)


def test_done_may_carry_the_reward_of_the_last_step() -> None:
    """`done -0.25` ends the episode with that reward (a plant whose rewards are not CartPole's
    1 per step); plain `done` is 1; anything else after `done` is malformed and skipped."""
    import io

    lines = b"1 2 3 4\ndone done\ndone 1 2\ndone nan\ndone -0.25\n5 6 7 8\ndone\n"
    plant = StdioPlant(io.BytesIO(lines), io.BytesIO())
    assert plant.reset().tolist() == [1, 2, 3, 4]
    obs, reward, done = plant.step(0)
    assert (obs.tolist(), reward, done) == ([1, 2, 3, 4], -0.25, True)
    assert plant.malformed == 3
    assert plant.reset().tolist() == [5, 6, 7, 8]
    assert plant.step(1)[1:] == (1.0, True)
