"""A user's own plant through `--plant module:Class`, as the README shows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from runtime.cli import main

PLANT_MODULE = '''
import numpy as np
from runtime.plants import CartPoleSim


class ShakyCart:
    """Stands in for a motor driver: the sim, with its own reward and a close() to call."""

    obs_dim = 4
    closed = 0

    def __init__(self):
        self.sim = CartPoleSim()

    def reset(self, seed=None):
        return self.sim.reset(seed)

    def step(self, action):
        obs, _, done = self.sim.step(action)
        return obs, 2.0, done

    def close(self):
        type(self).closed += 1


class NotAPlant:
    obs_dim = 4


class NeedsAPort:
    def __init__(self, port):
        self.port = port


class NoDevice:
    def __init__(self):
        open("/dev/no-such-motor-driver")


VALUE = 3
'''


@pytest.fixture
def plant_module(tmp_path: Path, monkeypatch) -> str:
    name = f"user_plant_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLANT_MODULE)
    (tmp_path / f"broken_{name}.py").write_text("class Plant(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_custom_plant_runs(policy_path: Path, plant_module: str, capsys) -> None:
    args = ["--policy", str(policy_path), "--plant", f"{plant_module}:ShakyCart"]
    assert main([*args, "--hz", "0", "--episodes", "2", "--json"], environ={}) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["return"] for line in lines[:2]] == [1000.0, 1000.0]
    import sys

    assert sys.modules[plant_module].ShakyCart.closed == 1


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{m}:NotAPlant", "is not a plant: no reset or step method"),
        ("{m}:Missing", "has no class Missing"),
        ("{m}:VALUE", "has no class VALUE"),
        ("{m}:NeedsAPort", "NeedsAPort() failed: TypeError:"),
        ("{m}:NoDevice", "NoDevice() failed: FileNotFoundError:"),
        ("broken_{m}:Plant", "cannot import broken_{m}: SyntaxError:"),
        ("no_such_module_here:Plant", "cannot import no_such_module_here"),
        ("{m}:", "plant = "),
        ("../etc:Plant", "plant = '../etc:Plant' is not allowed"),
    ],
)
def test_bad_custom_plants(policy_path, plant_module, capsys, reference, message) -> None:
    reference, message = reference.format(m=plant_module), message.format(m=plant_module)
    assert main(["--policy", str(policy_path), "--plant", reference], environ={}) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
