"""A child process holding part of a test fleet: COUNT device agents on one broker node.

    python tests/fleet_host.py PORT PREFIX FIRST COUNT PUBLIC_KEY STATE_ROOT

Each agent (device id `dev-FIRST` ... `dev-FIRST+COUNT-1`) starts from STATE_ROOT/initial.npz
with its own state directory, as `python -m runtime` would. Prints "ready" once every agent is
online, then runs until stdin closes or it is terminated (its agents' wills then fire).
A process of its own because one paho client cannot select() on a descriptor above 1023, and so
the fleet's validation runs beside the test, not under its GIL.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.agent import Agent, AgentConfig  # noqa: E402
from runtime.mqtt import broker_settings  # noqa: E402
from runtime.policy import parse_policy  # noqa: E402
from runtime.signing import load_public_key  # noqa: E402
from runtime.slot import PolicySlot  # noqa: E402
from runtime.state import StateStore, Stored  # noqa: E402
from tests.ota_support import activate  # noqa: E402

READY_TIMEOUT_S = 60.0


def start_agents(
    port: int, prefix: str, first: int, count: int, pub: Path, root: Path
) -> list[Agent]:
    public_key = load_public_key(pub)
    data = (root / "initial.npz").read_bytes()
    settings = broker_settings(f"mqtt://127.0.0.1:{port}")
    agents = []
    for index in range(first, first + count):
        store = StateStore(root / f"dev-{index}", public_key=public_key)
        store.load()
        chosen = store.startup_choice(Stored(parse_policy(data), data))
        agent = Agent(
            AgentConfig(device_id=f"dev-{index}", topic_prefix=prefix, telemetry_interval=3600),
            settings,
            PolicySlot(activate(chosen.policy)),
            activate,
            store,
            public_key=public_key,
        )
        agent.start()
        agents.append(agent)
    return agents


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(name)s %(message)s")
    port, prefix, first, count, pub, root = argv
    agents = start_agents(int(port), prefix, int(first), int(count), Path(pub), Path(root))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + READY_TIMEOUT_S
    for agent in agents:
        if not agent.ready.wait(max(0.0, deadline - time.monotonic())):
            print(f"{agent.config.device_id} not online after {READY_TIMEOUT_S:g} s", flush=True)
            return 1
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    for agent in agents:
        agent.stop(timeout=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
