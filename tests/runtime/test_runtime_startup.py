"""A plain start (numpy backend, stdio plant, no broker, no key) loads only what it uses.

Every module imported on the way to the first action is start-up time on a board (README,
Performance): those that only some paths need are imported inside the functions of those paths.
Measured against what `import numpy` loads by itself, which differs between NumPy 1.24 and 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import numpy  # what NumPy loads by itself is not the runtime's doing
before = set(sys.modules)
from runtime.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "loaded": sorted(set(sys.modules) - before)}, out)
"""

# needed only by: a policy's sha256 (updates), atomic_write (updates), writing a policy.npz
# (reading one needs no zipfile), TLS and MQTT (--broker), signatures (--public-key), systemd
# (NOTIFY_SOCKET), the heavy optional backends and plants; pathlib (with urllib.parse and
# ipaddress) only for --config or the onnxruntime backend; shutil (with bz2, lzma) never;
# numpy.random (with secrets and hashlib) never: the sim draws its resets with runtime.rng
NOT_ON_A_PLAIN_START = (
    "numpy.random",
    "secrets",
    "pathlib",
    "shutil",
    "bz2",
    "lzma",
    "tomllib",
    "hashlib",
    "tempfile",
    "zipfile",
    "ssl",
    "socket",
    "runtime.mqtt",
    "runtime.agent",
    "runtime.updates",
    "runtime.state",
    "runtime.signing",
    "paho",
    "cryptography",
    "gymnasium",
    "onnx",
    "onnxruntime",
)


PLAIN_STARTS = {
    "stdio": (["--plant", "stdio"], b"0.01 0.02 0.03 0.04\n", (b"reset\n0\n", b"reset\n1\n")),
    "sim": (["--plant", "sim", "--episodes", "1", "--seed", "5"], b"", (b"episode 1: return",)),
}


@pytest.mark.parametrize("plant", sorted(PLAIN_STARTS))
def test_a_plain_start_loads_no_module_of_other_paths(
    policy_path: Path, tmp_path: Path, plant: str
) -> None:
    arguments, stdin, stdout_starts = PLAIN_STARTS[plant]
    out = tmp_path / "modules.json"
    # -S as on a device: an editable install's path hook would load pathlib before the probe
    command = [sys.executable, "-S", "-c", PROBE, str(out), "--policy", str(policy_path)]
    command += [*arguments, "--hz", "0", "--log-level", "error"]
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}  # no NOTIFY_SOCKET, no config
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    result = subprocess.run(
        command, input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=60
    )
    assert result.stdout.startswith(stdout_starts), result.stderr
    report = json.loads(out.read_text())
    assert report["code"] == 0
    loaded = set(report["loaded"])
    assert "runtime.loop" in loaded  # the probe saw the run
    unexpected = {
        name
        for name in loaded
        for other in NOT_ON_A_PLAIN_START
        if name == other or name.startswith(other + ".")
    }
    assert not unexpected, f"a plain start imported {sorted(unexpected)}"
