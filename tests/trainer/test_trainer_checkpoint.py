"""--resume from a damaged or foreign checkpoint is one line, exit 2.

Each of these used to be accepted and then fail with a traceback (at the first update, or at
the save after training), or to continue from an impossible history.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trainer.cli import main

Arrays = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("checkpoint") / "run"
    assert main(["--out", str(out), "--max-episodes", "24", "--eval-episodes", "0", "--quiet"]) == 0
    return out


def info_set(key: str, value: object) -> Callable[[Arrays, dict], None]:
    return lambda arrays, info: info.__setitem__(key, value)


def array_set(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable:
    return lambda arrays, info: arrays.__setitem__(key, change(arrays[key]))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (info_set("updates", float("inf")), "updates must be a non-negative integer"),
        (info_set("updates", -1), "updates must be a non-negative integer"),
        (info_set("last_mean_return", float("nan")), "last_mean_return must be in 0..500"),
        (info_set("solved_at", 10**9), "solved_at must be null or an episode"),
        (
            info_set(
                "rng",
                {
                    "bit_generator": "PCG64",
                    "state": {"state": -1, "inc": 3},
                    "has_uint32": 0,
                    "uinteger": 0,
                },
            ),
            "out of bounds",
        ),
        (array_set("W1", lambda w: w * 1e300), "W1 has shape"),  # inf once saved as float32
        (array_set("W2", lambda w: w + 1j), "W2 has dtype complex128"),
        (array_set("cache_W1", lambda c: c - 1.0), "cache holds negative values"),
        (array_set("returns", lambda r: r + 0.5), "returns must be whole numbers in 1..500"),
        (array_set("returns", lambda r: r * 1000), "returns must be whole numbers in 1..500"),
        (array_set("env_steps", lambda s: s[::-1].copy()), "env_steps must not decrease"),
    ],
)
def test_damaged_checkpoint_is_one_line_exit_2(
    damage: Callable,
    fragment: str,
    saved: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "policy.npz"):
        (run / name).write_bytes((saved / name).read_bytes())
    with np.load(io.BytesIO((saved / "checkpoint.npz").read_bytes())) as archive:
        arrays = {name: archive[name] for name in archive.files}
    info = json.loads(str(arrays["info"][()]))
    damage(arrays, info)
    arrays["info"] = np.array(json.dumps(info))
    np.savez(run / "checkpoint.npz", **arrays)
    policy = (run / "policy.npz").read_bytes()
    assert main(["--resume", str(run), "--max-episodes", "40", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad checkpoint.npz" in err and fragment in err, err
    assert (run / "policy.npz").read_bytes() == policy


def test_info_that_is_not_an_object_and_a_deep_config(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((saved / "config.json").read_bytes())
    with np.load(saved / "checkpoint.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["info"] = np.array(
        json.dumps(["format", "rng", "updates", "last_mean_return", "solved_at"])
    )
    np.savez(run / "checkpoint.npz", **arrays)
    assert main(["--resume", str(run), "--quiet"]) == 2  # was AttributeError: list.get
    assert "info is not a JSON object" in capsys.readouterr().err
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["--resume", str(run), "--quiet"]) == 2  # was a RecursionError traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad config.json" in err


@pytest.mark.parametrize("name", ["config.json", "checkpoint.npz"])
def test_a_device_in_place_of_a_run_file_is_refused(
    name: str, saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for other in ("config.json", "checkpoint.npz"):
        (run / other).write_bytes((saved / other).read_bytes())
    (run / name).unlink()
    (run / name).symlink_to("/dev/zero")  # was read until MemoryError
    assert main(["--resume", str(run), "--quiet"]) == 2
    assert f"{name} is not a regular file" in capsys.readouterr().err
