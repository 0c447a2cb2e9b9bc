"""The motor-controller side of the runtime's stdio plant, simulated: what a servo's firmware
would say over a serial link, here with the model of servo_model.py standing in for the motor.

    mkfifo servo-link
    python -m runtime --policy policy.npz --plant stdio < servo-link \\
        | python servo_bridge.py --seed 1 > servo-link

The runtime writes `reset` or an action on its stdout and reads observations on its stdin
(docs/runtime.md, "The stdio protocol"); the fifo closes the loop. This side answers `reset`
with the first observation (`error speed command`, each '%.9g' of a float32, as firmware would
printf it), every action line with the next observation and the reward of that step, and the
last step of an episode with `done REWARD`. On a board, the runtime's streams would go to the
microcontroller's serial port instead (socat, or a bridge like this one that opens the port),
and the firmware would do what `answer` does, reading the encoder instead of the model.
End of input (the runtime stopped) ends the bridge, which prints its episodes' returns on
stderr. `--trace FILE` records every exchange, one line each: the observation sent, a tab, the
action received.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import IO, Any

import numpy as np
from servo_plant import ServoDiscretePlant, ServoPlant


def observation_line(obs: np.ndarray, reward: float | None = None) -> str:
    """`e v c` (float32 values, '%.9g': they read back exactly) and the reward (float64, repr:
    exact) after a step."""
    fields = [f"{value:.9g}" for value in obs.tolist()]
    if reward is not None:
        fields.append(repr(float(reward)))
    return " ".join(fields)


def parse_action(line: str, discrete: bool) -> Any:
    """An action line: `0`, `1` or `2` (discrete), one float (continuous); ValueError otherwise."""
    fields = line.split()
    if len(fields) != 1:
        raise ValueError(f"action line {line!r}: expected one value")
    if discrete:
        return int(fields[0])
    return np.array([float(fields[0])], dtype=np.float32)


class Bridge:
    """The servo behind the protocol: one plant, the returns of the episodes it finished."""

    def __init__(self, seed: int | None, discrete: bool) -> None:
        self.plant = ServoDiscretePlant() if discrete else ServoPlant()
        self.seed = seed  # for the first episode only: later ones continue its random stream
        self.returns: list[float] = []
        self.episode_return = 0.0
        self.observation = ""  # the line sent last, for the trace

    def answer(self, line: str) -> str:
        """The line to send back for a line from the runtime."""
        if line == "reset":
            obs = self.plant.reset(self.seed)
            self.seed, self.episode_return = None, 0.0
            self.observation = observation_line(obs)
            return self.observation
        obs, reward, done = self.plant.step(parse_action(line, self.plant.discrete))
        self.episode_return += reward
        if done:
            self.returns.append(self.episode_return)
            return f"done {reward!r}"
        self.observation = observation_line(obs, reward)
        return self.observation


def serve(lines: Iterable[str], out: IO[str], bridge: Bridge, trace: IO[str] | None) -> None:
    """Answer every line until the input ends."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        sent = bridge.observation
        reply = bridge.answer(line)
        if trace is not None and line != "reset":
            trace.write(f"{sent}\t{line}\n")
        out.write(reply + "\n")
        out.flush()  # one line per period: the runtime is waiting for it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="seed of the first target (default: random)")
    parser.add_argument("--discrete", action="store_true", help="ServoPositionDiscrete-v0")
    parser.add_argument("--trace", metavar="FILE", help="record each observation and action")
    args = parser.parse_args(argv)
    bridge = Bridge(args.seed, args.discrete)
    trace = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    try:
        serve(sys.stdin, sys.stdout, bridge, trace)
    except ValueError as error:
        print(f"servo bridge: {error}", file=sys.stderr)
        return 1
    finally:
        if trace is not None:
            trace.close()
    returns = " ".join(f"{value:.2f}" for value in bridge.returns)
    print(f"servo bridge: {len(bridge.returns)} episodes, returns {returns}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
