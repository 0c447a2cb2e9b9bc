"""The run directory: policy.npz, metrics.csv, config.json, curve.png and checkpoint.npz.

Every file is written whole (temporary file, fsync, rename), so an interrupted save leaves
the previous version, never half a file. `checkpoint.npz` holds what `--resume` needs beyond
the policy: float64 parameters, the RMSProp cache, the RNG state and the episode history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from runtime.constants import (
    HEAD_GAUSSIAN,
    KEY_B1,
    KEY_B2,
    KEY_LOG_STD,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_W1,
    KEY_W2,
    POLICY_FILE,
)
from runtime.policy import (
    Params,
    PolicySpec,
    atomic_write,
    make_meta,
    param_shapes,
    save_policy,
)
from trainer.config import MAX_RETURN, TrainConfig, cartpole_flow, from_dict, solve_target
from trainer.reinforce import ObsStats
from trainer.train import TrainState

METRICS_FILE = "metrics.csv"
METRICS_HEADER = "episode,return,avg100,env_steps,wall_s"
CONFIG_FILE = "config.json"
CURVE_FILE = "curve.png"
CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = "reinforce-edge/checkpoint-1"  # CartPole-v1's flow (format-1 params)
CHECKPOINT_FORMAT_2 = "reinforce-edge/checkpoint-2"  # the generic flow (trainer/gym_train.py)
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_CONFIG_BYTES = 1 << 20  # config.json is about 400 bytes
AVERAGE_WINDOW = 100  # episodes in metrics.csv's avg100 column
CHECKPOINT_ENTRIES = {"W1", "W2", "cache_W1", "cache_W2", "returns", "env_steps", "wall_s", "info"}
CHECKPOINT_INFO = {"format", "rng", "updates", "last_mean_return", "solved_at"}
CHECKPOINT_INFO_2 = CHECKPOINT_INFO | {"threshold", "obs_count", "spec"}


class RunDirError(ValueError):
    """A run directory cannot be used; the message names it and says why."""


def prepare_out(path: str | os.PathLike, *, resume: bool = False) -> Path:
    """Create (or check) an output directory we may write, refusing to clobber another run."""
    out = Path(path)
    flag = "--resume" if resume else "--out"
    try:  # stat and listdir raise EACCES in a directory we may not search or read
        if out.exists() and not out.is_dir():
            raise RunDirError(f"{flag} {out}: exists and is not a directory")
        if out.is_dir() and any(out.iterdir()) and not resume:
            raise RunDirError(
                f"--out {out}: directory exists and is not empty"
                f" (use --resume {out} to continue it)"
            )
    except OSError as error:
        raise RunDirError(f"{flag} {out}: not readable: {error.strerror or error}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise RunDirError(f"{flag} {out}: not writable: {error.strerror or error}") from None
    return out


def metrics_csv(state: TrainState, with_wall_clock: bool = True) -> str:
    """One row per finished episode; wall_s is left empty when the clock is not recorded."""
    lines = [METRICS_HEADER]
    window_sum = 0.0
    for index, value in enumerate(state.returns):
        window_sum += value
        if index >= AVERAGE_WINDOW:
            window_sum -= state.returns[index - AVERAGE_WINDOW]
        average = window_sum / min(index + 1, AVERAGE_WINDOW)
        wall = f"{state.wall_s[index]:.4f}" if with_wall_clock else ""
        lines.append(f"{index + 1},{value:g},{average:.2f},{state.env_steps[index]},{wall}")
    return "\n".join(lines) + "\n"


def stamp(reproducible: bool) -> tuple[int, str]:
    """(version, created) of a new policy: now, or SOURCE_DATE_EPOCH when set or reproducible.

    SOURCE_DATE_EPOCH is the reproducible-builds convention for a fixed build time.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            seconds = int(epoch)
        except ValueError:
            raise RunDirError(f"SOURCE_DATE_EPOCH must be an integer, got {epoch!r}") from None
    elif reproducible:
        seconds = 1
    else:
        seconds = int(dt.datetime.now(dt.timezone.utc).timestamp())
    seconds = max(seconds, 1)  # a policy version is a positive integer
    try:
        created = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        raise RunDirError(f"SOURCE_DATE_EPOCH {epoch} is out of the datetime range") from None
    return seconds, created


def save_run(
    out: Path,
    config: TrainConfig,
    state: TrainState,
    eval_mean: float | None,
    *,
    policy: Params | None = None,
    reproducible: bool = False,
    plot: bool = True,
) -> None:
    """Write every file of the run directory: policy.npz holds `policy` (default: the final
    weights), checkpoint.npz the final weights and optimiser state for --resume."""
    version, created = stamp(reproducible)
    target = solve_target(config, state.threshold)
    common = {
        "version": version,
        "created": created,
        "train_seed": config.seed,
        "episodes": state.episodes,
        "eval_mean_return": eval_mean,
        "solved_episode": state.solved_at,
        "target_return": target,
    }
    if state.spec is None:  # CartPole-v1's flow: format 1, byte for byte as ever
        meta = make_meta(hidden=config.hidden, **common)
    else:
        meta = make_meta(spec=state.spec, env_id=config.env, **common)
    save_policy(out / POLICY_FILE, state.params if policy is None else policy, meta)
    atomic_write(out / METRICS_FILE, metrics_csv(state, not reproducible).encode())
    config_json = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(out / CONFIG_FILE, config_json.encode())
    save_checkpoint(out / CHECKPOINT_FILE, state)
    if plot and state.returns:
        from trainer.plot import plot_curve

        atomic_write(out / CURVE_FILE, plot_curve(state.returns, target, config.env))


def save_checkpoint(path: Path, state: TrainState) -> None:
    if state.spec is not None:
        _save_checkpoint_2(path, state)
        return
    info = {
        "format": CHECKPOINT_FORMAT,
        "rng": state.rng.bit_generator.state,
        "updates": state.updates,
        "last_mean_return": state.last_mean_return,
        "solved_at": state.solved_at,
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W1=state.params[KEY_W1],
        W2=state.params[KEY_W2],
        cache_W1=state.cache[KEY_W1],
        cache_W2=state.cache[KEY_W2],
        returns=np.asarray(state.returns, dtype=np.float64),
        env_steps=np.asarray(state.env_steps, dtype=np.int64),
        wall_s=np.asarray(state.wall_s, dtype=np.float64),
        info=np.array(json.dumps(info)),
    )
    atomic_write(path, buffer.getvalue())


def load_run(path: str | os.PathLike) -> tuple[TrainConfig, TrainState]:
    """The config and state saved in a run directory, validated; RunDirError says what is wrong."""
    run = Path(path)
    if not run.is_dir():
        raise RunDirError(f"--resume {run}: no such run directory")
    for name in (CONFIG_FILE, CHECKPOINT_FILE):  # /dev/zero there read until MemoryError
        try:
            status = (run / name).stat()
        except FileNotFoundError:
            continue  # said below, with what it means
        except OSError as error:
            raise RunDirError(f"--resume {run}: {name}: {error.strerror or error}") from None
        if not stat.S_ISREG(status.st_mode):
            raise RunDirError(f"--resume {run}: {name} is not a regular file")
        if name == CONFIG_FILE and status.st_size > MAX_CONFIG_BYTES:
            raise RunDirError(f"--resume {run}: {name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        values = json.loads((run / CONFIG_FILE).read_text(encoding="utf-8"))
        config = from_dict(values)
    except FileNotFoundError:
        raise RunDirError(f"--resume {run}: no {CONFIG_FILE} (not a run directory)") from None
    except (ValueError, TypeError, OSError, RecursionError) as error:  # deep JSON: recursion
        raise RunDirError(f"--resume {run}: bad {CONFIG_FILE}: {error}") from None
    try:
        state = _read_checkpoint(run / CHECKPOINT_FILE, config)
    except FileNotFoundError:
        raise RunDirError(f"--resume {run}: no {CHECKPOINT_FILE} to continue from") from None
    except (
        ValueError,
        KeyError,
        TypeError,
        OSError,
        EOFError,
        OverflowError,
        RecursionError,
    ) as error:
        raise RunDirError(f"--resume {run}: bad {CHECKPOINT_FILE}: {error}") from None
    return config, state


def _read_checkpoint(path: Path, config: TrainConfig) -> TrainState:
    with open(path, "rb"):  # is_zipfile says False for a file we may not read
        pass
    if not zipfile.is_zipfile(path):  # else np.load suggests unpickling it
        raise ValueError("not a NumPy .npz archive")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if not cartpole_flow(config):
        return _read_checkpoint_2(arrays, config)
    missing = sorted(CHECKPOINT_ENTRIES - set(arrays))
    if missing:
        raise ValueError(f"missing entries {missing}")
    info: dict[str, Any] = json.loads(str(arrays["info"][()]))
    if not isinstance(info, dict):
        raise ValueError("info is not a JSON object")
    missing = sorted(CHECKPOINT_INFO - set(info))
    if missing:
        raise ValueError(f"info lacks {missing}")
    if info.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"format {info.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    shapes = {KEY_W1: (config.hidden, 4), KEY_W2: (config.hidden,)}
    params, cache = {}, {}
    for key, shape in shapes.items():
        for target, name in ((params, key), (cache, f"cache_{key}")):
            if arrays[name].dtype.kind != "f":
                raise ValueError(f"{name} has dtype {arrays[name].dtype}, expected floats")
            array = arrays[name].astype(np.float64)
            # the policy is saved as float32: a larger weight would be inf there
            if array.shape != shape or not np.all(np.abs(array) <= FLOAT32_MAX):
                raise ValueError(f"{name} has shape {array.shape} or non-finite values")
            target[key] = array
    if any(np.any(value < 0) for value in cache.values()):
        raise ValueError("the RMSProp cache holds negative values")
    return _history(arrays, info, params, cache, whole_steps=True)


def _history(
    arrays: dict[str, np.ndarray],
    info: dict[str, Any],
    params: Params,
    cache: Params,
    *,
    whole_steps: bool,
) -> TrainState:
    """The validated history and counters of a checkpoint around its params; `whole_steps`:
    CartPole-v1's returns (1..500 steps), else any finite per-episode reward sums."""
    returns = arrays["returns"].astype(np.float64).tolist()
    env_steps = arrays["env_steps"].astype(np.int64).tolist()
    wall_s = arrays["wall_s"].astype(np.float64).tolist()
    if not len(returns) == len(env_steps) == len(wall_s):
        raise ValueError("history columns have different lengths")
    if not all(math.isfinite(value) for value in returns + wall_s):
        raise ValueError("history holds non-finite values")
    # CartPole-v1 returns are whole steps in 1..500; steps and seconds only grow
    if whole_steps and not all(
        value == int(value) and 1 <= value <= MAX_RETURN for value in returns
    ):
        raise ValueError(f"returns must be whole numbers in 1..{MAX_RETURN:g}")
    if np.any(np.diff([0, *env_steps]) < 0) or any(value < 0 for value in wall_s):
        raise ValueError("env_steps must not decrease and wall_s must not be negative")
    updates, last_mean, solved_at = info["updates"], info["last_mean_return"], info["solved_at"]
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        raise ValueError(f"updates must be a non-negative integer, got {updates!r}")
    if isinstance(last_mean, bool) or not isinstance(last_mean, (int, float)):
        raise ValueError(f"last_mean_return must be a number, got {last_mean!r}")
    if whole_steps and not 0 <= last_mean <= MAX_RETURN:  # also refuses NaN (it broke the
        # batch schedule)
        raise ValueError(f"last_mean_return must be in 0..{MAX_RETURN:g}, got {last_mean!r}")
    if not math.isfinite(last_mean):
        raise ValueError(f"last_mean_return must be a finite number, got {last_mean!r}")
    if solved_at is not None and (
        isinstance(solved_at, bool)
        or not isinstance(solved_at, int)
        or not 1 <= solved_at <= len(returns)
    ):
        raise ValueError(
            f"solved_at must be null or an episode 1..{len(returns)}, got {solved_at!r}"
        )
    rng = np.random.default_rng()
    rng.bit_generator.state = info["rng"]
    return TrainState(
        params=params,
        cache=cache,
        rng=rng,
        returns=returns,
        env_steps=env_steps,
        wall_s=wall_s,
        updates=updates,
        last_mean_return=float(last_mean),
        solved_at=solved_at,
    )


# --- the generic flow's checkpoint (format-2 params) ------------------------------------


def _save_checkpoint_2(path: Path, state: TrainState) -> None:
    """Every parameter (float64), the optimiser's state (cache_K, Adam's moment_K), the
    normaliser's statistics (obs_var; obs_mean is the params'), the spec, the history."""
    spec = state.spec
    info = {
        "format": CHECKPOINT_FORMAT_2,
        "rng": state.rng.bit_generator.state,
        "updates": state.updates,
        "last_mean_return": state.last_mean_return,
        "solved_at": state.solved_at,
        "threshold": state.threshold,
        "obs_count": None if state.obs_stats is None else state.obs_stats.count,
        "spec": dataclasses.asdict(spec),
    }
    arrays = dict(state.params)
    arrays.update({f"cache_{k}": v for k, v in state.cache.items()})
    arrays.update({f"moment_{k}": v for k, v in state.moment.items()})
    if state.obs_stats is not None:
        arrays["obs_var"] = state.obs_stats.var
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **arrays,
        returns=np.asarray(state.returns, dtype=np.float64),
        env_steps=np.asarray(state.env_steps, dtype=np.int64),
        wall_s=np.asarray(state.wall_s, dtype=np.float64),
        info=np.array(json.dumps(info)),
    )
    atomic_write(path, buffer.getvalue())


def _finite_floats(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.dtype.kind != "f":
        raise ValueError(f"{name} has dtype {array.dtype}, expected floats")
    array = array.astype(np.float64)
    # the policy is saved as float32: a larger value would be inf there
    if array.shape != shape or not np.all(np.abs(array) <= FLOAT32_MAX):
        raise ValueError(f"{name} has shape {array.shape} or non-finite values")
    return array


def _read_checkpoint_2(arrays: dict[str, np.ndarray], config: TrainConfig) -> TrainState:
    if "info" not in arrays:
        raise ValueError("missing entries ['info']")
    info: dict[str, Any] = json.loads(str(arrays["info"][()]))
    if not isinstance(info, dict):
        raise ValueError("info is not a JSON object")
    if info.get("format") != CHECKPOINT_FORMAT_2:
        raise ValueError(
            f"format {info.get('format')!r}, expected {CHECKPOINT_FORMAT_2!r} (this config"
            f" trains on the generic flow: env {config.env})"
        )
    missing = sorted(CHECKPOINT_INFO_2 - set(info))
    if missing:
        raise ValueError(f"info lacks {missing}")
    if not isinstance(info["spec"], dict):
        raise ValueError("spec is not a JSON object")
    spec = PolicySpec(**info["spec"])  # PolicyError (a ValueError) names a bad field
    if (spec.hidden, spec.activation) != (config.hidden, config.activation):
        raise ValueError(f"spec {spec} does not match hidden and activation of config.json")
    shapes = param_shapes(spec)
    keys = [KEY_W1, KEY_W2]
    keys += [KEY_B1, KEY_B2] if config.biases else []
    trained = keys + ([KEY_LOG_STD] if spec.head == HEAD_GAUSSIAN else [])
    stored = trained + ([KEY_OBS_MEAN, KEY_OBS_STD] if config.normaliser else [])
    names = [*stored, *(f"cache_{k}" for k in trained)]
    names += [f"moment_{k}" for k in trained] if config.optimizer == "adam" else []
    names += ["obs_var"] if config.normaliser else []
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise ValueError(f"missing entries {missing}")
    params = {k: _finite_floats(k, arrays[k], shapes[k]) for k in stored}
    cache = {k: _finite_floats(f"cache_{k}", arrays[f"cache_{k}"], shapes[k]) for k in trained}
    moment = {}
    if config.optimizer == "adam":
        moment = {
            k: _finite_floats(f"moment_{k}", arrays[f"moment_{k}"], shapes[k]) for k in trained
        }
    if any(np.any(value < 0) for value in cache.values()):
        raise ValueError("the optimiser's cache holds negative values")
    stats = None
    if config.normaliser:
        var = _finite_floats("obs_var", arrays["obs_var"], shapes[KEY_OBS_MEAN])
        count = info["obs_count"]
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not count > 0:
            raise ValueError(f"obs_count must be a positive number, got {count!r}")
        if np.any(var < 0) or np.any(params[KEY_OBS_STD] <= 0):
            raise ValueError("obs_var and obs_std must not be negative")
        stats = ObsStats(float(count), params[KEY_OBS_MEAN], var)
    threshold = info["threshold"]
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be null or a number, got {threshold!r}")
    state = _history(arrays, info, params, cache, whole_steps=False)
    state.spec, state.threshold, state.moment, state.obs_stats = spec, threshold, moment, stats
    return state
