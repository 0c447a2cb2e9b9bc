"""Command line: `python -m trainer [flags]` trains, `python -m trainer eval PATH` evaluates.

Exit status: 0 done (solved or at --max-episodes), 1 the run directory could not be written
after training, 2 bad usage or input (one line on stderr, nothing overwritten), 130 interrupted
by Ctrl-C after saving the last completed batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.constants import ENV_ID, POLICY_FILE
from runtime.interrupts import signals_held, terminate_as_interrupt
from runtime.policy import PolicyError, atomic_write, load_policy
from trainer.config import (
    OTHER_ENV_DEFAULTS,
    PRESETS,
    SEED_PRESET,
    TrainConfig,
    cartpole_flow,
    from_dict,
    numpy_vector_env,
    preset,
    solve_target,
)

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_000  # the trainer's own evaluation episodes never reuse training seeds
SELECT_SEED_OFFSET = 2_000_000  # nor do the episodes that screen candidates for the saved policy
CONFIRM_SEED_OFFSET = 3_000_000  # nor those that confirm one
SELECT_EPISODES = 100  # greedy episodes that screen each candidate (`_polish`)
CONFIRM_EPISODES = 300  # greedy episodes that confirm a candidate that passed the screen
BOUND_Z = 2.0  # standard errors of both lower bounds (trainer.evaluate.lower_bound)
PROGRESS_EVERY = 100  # episodes between log lines when no progress bar is shown
MAX_EVAL_EPISODES = 10**6  # as TrainConfig.eval_episodes
MAX_EVAL_SEED = 2**63 - 1  # as TrainConfig.seed
# what a checkpoint's parameters and optimiser state were made for
FIXED_ON_RESUME = ("hidden", "env", "activation", "biases", "normaliser", "optimizer")


class UsageError(Exception):
    """Bad command line or input: main prints the message on one line and exits 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["eval"]:
            return run_eval(eval_parser().parse_args(argv[1:]))
        return run_train(train_parser().parse_args(argv))
    except UsageError as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started or during eval: nothing to save
        print("trainer: interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0


# --- parsers -------------------------------------------------------------------------


def train_parser() -> Parser:
    parser = Parser(
        prog="python -m trainer",
        description="Train a REINFORCE policy in NumPy for CartPole-v1 (default) or any"
        " Gymnasium env (--env); `python -m trainer eval PATH` evaluates one.",
        epilog="Defaults are the default preset's; --preset seed is the article's configuration.",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="configuration to start from (default: default)",
    )
    parser.add_argument(
        "--out", default=None, help="run directory to create (default: runs/<timestamp>)"
    )
    parser.add_argument(
        "--resume", metavar="DIR", default=None, help="continue the run in DIR from its checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")
    parser.add_argument(
        "--reproducible",
        action="store_true",
        help="byte-identical outputs for the same seed and config: wall_s left empty, policy"
        " version/created from SOURCE_DATE_EPOCH (else 1)",
    )
    defaults = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        seed_value = SEED_PRESET.get(item.name)
        other_value = OTHER_ENV_DEFAULTS.get(item.name)
        shown = f"default: {default}"
        shown += "" if other_value is None else f"; on envs other than {ENV_ID}: {other_value}"
        shown += "" if seed_value is None else f"; seed preset: {seed_value}"
        kind = _number(item.type)
        parser.add_argument(
            flag,
            dest=item.name,
            type=kind,
            metavar="{true,false}" if kind is _boolean else None,
            choices=item.metadata.get("choices"),
            default=None,
            help=f"{item.metadata['help']} ({shown})",
        )
    return parser


def _number(type_name: Any) -> Any:
    name = type_name if isinstance(type_name, str) else type_name.__name__
    name = name.removesuffix(" | None")  # target_return: None is the env's threshold
    return {"int": _integer, "float": _real, "bool": _boolean}.get(name, str)


def _integer(text: str) -> int:
    """argparse's message names the flag and says what it allows (was 'invalid int value')."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _boolean(text: str) -> bool:
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")
    return value


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _flag_named(message: str, given: dict[str, Any]) -> str:
    """A config error about a field set by a flag names the flag, as argparse's own do."""
    name = message.split(" ", 1)[0]
    if given.get(name) is None:
        return message
    return f"argument --{name.replace('_', '-')}: {message}"


def eval_parser() -> Parser:
    parser = Parser(
        prog="python -m trainer eval",
        description="Greedy evaluation on Gymnasium's own env of the policy (meta env_id):"
        " CartPole-v1's format 1 pushes right when p > 0.5; format 2 takes p > 0.5, the"
        " argmax or the clipped mean.",
    )
    parser.add_argument("path", metavar="RUN_DIR_OR_POLICY", help="a run directory or a policy.npz")
    parser.add_argument(
        "--episodes", type=_integer, default=100, help="seeded episodes (default: 100)"
    )
    parser.add_argument(
        "--seed", type=_integer, default=0, help="seed of the first episodes (default: 0)"
    )
    parser.add_argument(
        "--record", metavar="GIF", default=None, help="also write an animated GIF of one episode"
    )
    return parser


# --- train ---------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    from trainer.rundir import RunDirError, prepare_out, stamp

    _configure_logging(args.quiet)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        stamp(args.reproducible)  # a bad SOURCE_DATE_EPOCH is refused now, not after training
        if args.resume is not None:
            config, state, out, info = _resume(args, overrides)
        else:
            config = preset(args.preset or "default", **overrides)
            _require(_train_needs(config, args), "a training run")
            info = _env_info(config)
            if args.out == "":  # was taken as "no --out": the run went to runs/<timestamp>
                raise UsageError("--out: the path is empty")
            out = prepare_out(args.out) if args.out else prepare_out(unused(default_out()))
            state = None
    except (ValueError, RunDirError) as error:
        raise UsageError(_flag_named(str(error), overrides)) from None
    return _train_and_save(config, state, out, args, info)


def _env_info(config: TrainConfig) -> Any:
    """None for CartPole-v1's flow; else the checked env (trainer.gym_train.EnvInfo): an env
    id that does not exist, spaces the policy cannot serve or a missing --target-return are
    a ValueError, before any directory is made."""
    if cartpole_flow(config):
        return None
    from trainer.gym_train import inspect_env

    try:
        return inspect_env(config)
    except ValueError as error:
        raise ValueError(" ".join(str(error).split())) from None  # one line


def default_out() -> Path:
    return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def unused(path: Path) -> Path:
    """`path`, made here and now, or `path-2`, `path-3`, ... when a run started in the same
    second already has it (mkdir is atomic, so runs started together get one each)."""
    from trainer.rundir import RunDirError

    candidate, number = path, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}-{number}")
        except OSError as error:
            raise RunDirError(f"{candidate}: not writable: {error.strerror or error}") from None


def _resume(
    args: argparse.Namespace, overrides: dict[str, Any]
) -> tuple[TrainConfig, Any, Path, Any]:
    """The saved config with the flags given now applied, the saved state, the directory and
    the env's info (`_env_info`)."""
    from trainer.rundir import load_run, prepare_out

    if args.preset is not None:
        raise UsageError(
            "--preset cannot be combined with --resume (the run's config.json is used)"
        )
    if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UsageError("--resume continues in its own directory; leave out --out")
    saved, state = load_run(args.resume)
    given = {k: v for k, v in overrides.items() if v is not None}
    for name in FIXED_ON_RESUME:  # the checkpoint's parameters and optimiser are these
        if given.get(name, getattr(saved, name)) != getattr(saved, name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} cannot change when resuming (the run has {getattr(saved, name)})"
            )
    config = from_dict({**saved.to_dict(), **given})
    if cartpole_flow(config) != cartpole_flow(saved):
        raise UsageError(
            f"--backend {config.backend} with --num-envs {config.num_envs} would train on"
            f" another flow than the run's (backend {saved.backend}, num_envs {saved.num_envs})"
        )
    _require(_train_needs(config, args), "a training run")
    info = _env_info(config)
    if info is not None and info.spec != state.spec:
        raise UsageError(
            f"--resume {args.resume}: env {config.env} now has spaces for {info.spec},"
            f" the checkpoint's policy is {state.spec}"
        )
    return config, state, prepare_out(args.resume, resume=True), info


def _train_needs(config: TrainConfig, args: argparse.Namespace) -> dict[str, str]:
    """The optional modules this run will import, and what for."""
    needs = {"matplotlib": "curve.png"}
    if config.eval_episodes > 0 or not cartpole_flow(config) or config.backend == "gymnasium":
        needs["gymnasium"] = "the Gymnasium environment and evaluation"
    if not args.quiet and sys.stderr.isatty():
        needs["tqdm"] = "the progress bar (or use --quiet)"
    return needs


def _require(needs: dict[str, str], task: str) -> None:
    """Refuse before any work when an optional module is missing: it used to be a traceback
    after training (matplotlib, gymnasium: the run was lost) or after evaluating (pygame)."""
    import importlib.util

    for module, purpose in needs.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(
                f"{module} is not installed ({task} needs it for {purpose}):"
                " pip install 'reinforce-edge[train]'"
            )


def _train_and_save(
    config: TrainConfig, state: Any, out: Path, args: argparse.Namespace, info: Any = None
) -> int:
    with terminate_as_interrupt():
        return _train_and_save_interruptible(config, state, out, args, info)


def _train_and_save_interruptible(
    config: TrainConfig, state: Any, out: Path, args: argparse.Namespace, info: Any
) -> int:
    from trainer.rundir import save_run

    if info is None:
        from trainer.train import new_state

        state = state or new_state(config)
        backend = "numpy" if config.backend != "gymnasium" else "gymnasium"
    else:
        from trainer.gym_train import new_env_state

        state = state or new_env_state(config, info)
        backend = "numpy" if numpy_vector_env(config) else "gymnasium.make_vec"
    log.info("training into %s (seed %d, %s on %s)", out, config.seed, config.env, backend)
    progress = _Progress(config, quiet=args.quiet)
    interrupted = False
    policy = None
    try:
        if info is None:
            from trainer.train import train

            train(config, state, on_batch=progress.update)
            policy, _ = finish(config, state, on_batch=progress.update)
        else:
            from trainer.gym_train import train_env

            train_env(config, state, on_batch=progress.update)
            policy, _ = finish_env(config, state, on_batch=progress.update)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close(state)
    if policy is None:  # interrupted: the weights of the last update
        policy = state.params
    eval_mean = None
    if not interrupted and config.eval_episodes > 0:
        try:
            eval_mean = _evaluate(config, state, policy)
        except KeyboardInterrupt:
            interrupted = True
    try:
        with signals_held() as deferred:
            save_run(out, config, state, eval_mean, policy=policy, reproducible=args.reproducible)
    except OSError as error:  # e.g. the disk filled up or the directory went away meanwhile
        print(f"trainer: error: cannot save the run to {out}: {error}", file=sys.stderr)
        return 1
    interrupted = interrupted or bool(deferred)
    _summary(config, state, eval_mean, out, interrupted)
    return 130 if interrupted else 0


def _evaluate(config: TrainConfig, state: Any, policy: Any) -> float:
    """The greedy mean return over eval_episodes of Gymnasium's own env."""
    from trainer import evaluate

    seed = EVAL_SEED_OFFSET + config.seed
    if state.spec is None:
        return evaluate.evaluate(policy, config.eval_episodes, seed).mean
    return evaluate.evaluate_env(policy, state.spec, config.env, config.eval_episodes, seed).mean


def finish(config: TrainConfig, state: Any, on_batch: Any = None) -> tuple[Any, float]:
    """The policy to save for CartPole-v1's flow: `_polish` with greedy episodes of the NumPy
    CartPole (Gymnasium's dynamics bit for bit, all episodes side by side)."""
    from trainer.evaluate import evaluate_numpy
    from trainer.train import train

    return _polish(
        config,
        state,
        lambda saved, episodes, seed: evaluate_numpy(saved, episodes, seed),
        solve_target(config),
        lambda: train(config, state, on_batch, extra_updates=1),
    )


def finish_env(config: TrainConfig, state: Any, on_batch: Any = None) -> tuple[Any, float]:
    """`finish` for any env: `_polish` with greedy episodes of the env through make_vec (on
    Acrobot-v1 the NumPy one, the same episodes: trainer/gym_train.py's `make_vector_env`)."""
    from trainer.evaluate import evaluate_env
    from trainer.gym_train import make_vector_env, train_env

    def score(saved: Any, episodes: int, seed: int) -> Any:
        make_envs = lambda n: make_vector_env(config, n)  # noqa: E731
        return evaluate_env(saved, state.spec, config.env, episodes, seed, make_envs)

    return _polish(
        config,
        state,
        score,
        solve_target(config, state.threshold),
        lambda: train_env(config, state, on_batch, extra_updates=1),
    )


@dataclass(frozen=True, order=True)
class Judgement:
    """A candidate policy's greedy verdict: `lower_bound` of its returns, their mean, and its
    place in training (updates: later is newer); ordered by these, in this order."""

    bound: float
    mean: float
    update: int
    params: Any = dataclasses.field(compare=False)
    confirmed: bool = dataclasses.field(default=False, compare=False)  # confirmation run


def _polish(
    config: TrainConfig,
    state: Any,
    score: Callable[[Any, int, int], Any],
    target: float,
    train_once: Callable[[], Any],
) -> tuple[Any, float]:
    """The policy to save and its greedy mean: the newest candidate (`candidates`) that passes.

    The greedy policy (argmax, p > 0.5, the clipped mean) is not the stochastic one that
    reached the target and can score below it; and a mean over 100 episodes can pass on the
    episodes that chose it and miss on the next 100 (Acrobot-v1: a swing stuck at -500 now and
    then, too rare to show in most samples). A candidate passes when the `lower_bound` of its
    returns reaches the target on SELECT_EPISODES greedy episodes (`score(float32 weights,
    episodes, seed)`, seeds of their own), then again on CONFIRM_EPISODES others with one more
    return as bad as the worst the run has seen (a failure the sample may have missed); each
    confirmation plays seeds no other has played, so that many candidates tried on one set
    cannot pass by fitting it. While none passes, a solved run is polished: trained on one
    update at a time (`train_once`), each new weights a candidate, until one passes or
    max_episodes is reached; then the best bound of every candidate judged (the latest among
    equals) is saved. Each set of weights is judged once.
    """
    judged: dict[bytes, Judgement] = {}
    confirmations = 0
    while True:
        for age, params in enumerate(reversed(candidates(state))):  # newest first
            saved = {name: value.astype(np.float32) for name, value in params.items()}
            key = b"".join(name.encode() + saved[name].tobytes() for name in sorted(saved))
            if key not in judged:  # equal float32 weights as saved: the same policy
                seeds = (
                    SELECT_SEED_OFFSET + config.seed,
                    CONFIRM_SEED_OFFSET + config.seed + confirmations * CONFIRM_EPISODES,
                )
                update = state.updates - age
                judged[key] = _judge(
                    params, saved, update, score, target, seeds, min(state.returns)
                )
                confirmations += judged[key].confirmed
            if judged[key].bound >= target:
                return params, judged[key].mean
        if state.solved_at is None or state.episodes >= config.max_episodes:
            best = max(judged.values())
            return best.params, best.mean
        log.info(
            "greedy policy's bound %.1f < %.1f: one more update", max(judged.values()).bound, target
        )
        train_once()


def _judge(
    params: Any,
    saved: Any,
    update: int,
    score: Callable[[Any, int, int], Any],
    target: float,
    seeds: tuple[int, int],
    worst: float,
) -> Judgement:
    """`_polish`'s verdict on one candidate (`saved`: its float32 weights, as saved): screened
    on SELECT_EPISODES episodes from seeds[0], confirmed on CONFIRM_EPISODES from seeds[1] and
    one episode returning `worst` if the screen passed (the confirmation's verdict is kept)."""
    from trainer.evaluate import lower_bound

    result = score(saved, SELECT_EPISODES, seeds[0])
    bound = lower_bound(result.returns, BOUND_Z)
    if bound < target:
        return Judgement(bound, result.mean, update, params)
    result = score(saved, CONFIRM_EPISODES, seeds[1])
    bound = lower_bound([*result.returns, worst], BOUND_Z)
    return Judgement(bound, result.mean, update, params, confirmed=True)


def candidates(state: Any) -> list:
    """The weights after the last few updates, oldest first, ending with the final weights."""
    recent = list(state.recent)
    if not recent or recent[-1] is not state.params:
        recent.append(state.params)
    return recent


def _summary(
    config: TrainConfig, state: Any, eval_mean: float | None, out: Path, interrupted: bool
) -> None:
    window = state.returns[-config.target_window :]
    average = sum(window) / max(len(window), 1)
    wall = state.wall_s[-1] if state.wall_s else 0.0
    steps = state.env_steps[-1] if state.env_steps else 0
    if interrupted:
        outcome = f"interrupted after {state.episodes} episodes"
    elif state.solved_at is not None:
        outcome = f"solved at episode {state.solved_at}"
    else:
        outcome = f"not solved in {state.episodes} episodes"
    line = f"{outcome}: last-{len(window)} mean {average:.1f}, {steps} env steps, {wall:.2f} s"
    if eval_mean is not None:
        line += f"; greedy eval {eval_mean:.1f} over {config.eval_episodes} episodes"
    print(f"{line}; saved {out}", file=sys.stderr if interrupted else sys.stdout)


class _Progress:
    """A tqdm bar on a terminal, else a log line every PROGRESS_EVERY episodes."""

    def __init__(self, config: TrainConfig, quiet: bool) -> None:
        self.config = config
        self.quiet = quiet
        self.bar = None
        self.next_log = PROGRESS_EVERY
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=config.max_episodes, unit="ep", dynamic_ncols=True)

    def update(self, state: Any) -> None:
        if self.quiet:
            return
        window = state.returns[-100:]
        average = sum(window) / max(len(window), 1)
        if self.bar is not None:
            self.bar.update(state.episodes - self.bar.n)
            self.bar.set_postfix(avg100=f"{average:.1f}", refresh=False)
        elif state.episodes >= self.next_log:
            log.info(
                "episode %d: avg100 %.1f, %d env steps",
                state.episodes,
                average,
                state.env_steps[-1],
            )
            self.next_log = (state.episodes // PROGRESS_EVERY + 1) * PROGRESS_EVERY

    def close(self, state: Any) -> None:
        if self.bar is not None:
            self.update(state)  # the episodes after the last update, and their average
            self.bar.close()


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )


# --- eval ----------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate, evaluate_env, record_gif

    if not 1 <= args.episodes <= MAX_EVAL_EPISODES:  # 10**20 ran for ever
        raise UsageError(f"--episodes must be in 1..{MAX_EVAL_EPISODES}, got {args.episodes}")
    if not 0 <= args.seed <= MAX_EVAL_SEED:
        raise UsageError(f"--seed must be in 0..{MAX_EVAL_SEED}, got {args.seed}")
    path = Path(args.path)
    try:
        if path.is_dir():
            path = path / POLICY_FILE
    except OSError as error:  # a parent directory we may not search: is_dir raises EACCES
        raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        policy = load_policy(path)
    except PolicyError as error:
        raise UsageError(str(error)) from None
    format_1 = policy.format_version == 1
    env_id = str(policy.meta["env_id"])
    needs = {"gymnasium": "the evaluation episodes"}
    if args.record is not None:
        # CartPole-v1 renders with pygame; another env's renderer is its own (checked below)
        needs.update({"pygame": "rendering the GIF"} if format_1 else {})
        needs.update({"PIL": "writing the GIF"})
    _require(needs, "eval")
    spec = None if format_1 else policy.spec
    if not format_1:
        _check_eval_env(env_id, spec, args.record is not None)
    if args.record is not None:
        _check_writable(Path(args.record), path)
    params = {k: v.astype("float64") for k, v in policy.params.items()}
    if format_1:
        result = evaluate(params, args.episodes, args.seed)
    else:
        result = evaluate_env(params, spec, env_id, args.episodes, args.seed)
    where = "" if format_1 else f" of {env_id}"
    print(
        f"{path}: greedy mean {result.mean:.1f}, min {result.min:g}, max {result.max:g}"
        f" over {args.episodes} episodes{where} (seed {args.seed})"
    )
    if args.record is not None:
        score = _record(params, Path(args.record), args.seed, record_gif, env_id, spec)
        print(f"recorded one episode (return {score:g}) to {args.record}")
    return 0


def _check_eval_env(env_id: str, spec: Any, record: bool) -> None:
    """A format-2 policy's env exists, has the spaces the policy was trained for, and renders
    frames when a GIF is asked for: else one line, before any episode."""
    from trainer.gym_train import probe_env, spec_from_spaces

    try:
        probe = probe_env(env_id)
        expected = spec_from_spaces(
            probe.observation_space, probe.action_space, spec.hidden, spec.activation
        )
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from None  # one line
    if expected != spec:
        raise UsageError(f"env {env_id} has spaces for {expected}, the policy is {spec}")
    modes = probe.render_modes
    if record and "rgb_array" not in modes:
        raise UsageError(f"--record: env {env_id} does not render rgb_array frames ({modes})")


GIF_MAGIC = (b"GIF87a", b"GIF89a")


def _check_writable(path: Path, policy: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--record {path}: is a directory")
    # the GIF replaces the file by a rename: that overwrote the evaluated policy.npz (or any
    # file, and as root even /dev/full) with a GIF
    if path.exists() and not path.is_file():
        raise UsageError(f"--record {path}: exists and is not a regular file")
    if path.is_file():
        if policy.exists() and path.samefile(policy):
            raise UsageError(f"--record {path}: is the policy being evaluated")
        with path.open("rb") as existing:
            if existing.read(6) not in GIF_MAGIC:
                raise UsageError(f"--record {path}: exists and is not a GIF; not overwritten")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--record {path}: directory {parent} missing or not writable")
    try:  # os.access says yes to root, also where the file system refuses
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise UsageError(
            f"--record {path}: cannot write there: {error.strerror or error}"
        ) from None


def _record(params: Any, path: Path, seed: int, record_gif: Any, env_id: str, spec: Any) -> float:
    import io

    buffer = io.BytesIO()
    if spec is None:
        score = record_gif(params, buffer, seed)
    else:
        import gymnasium as gym

        try:
            score = record_gif(params, buffer, seed, env_id, spec)
        except gym.error.DependencyNotInstalled as error:  # the env's renderer needs it
            raise UsageError(f"--record: {' '.join(str(error).split())}") from None
    try:
        atomic_write(path, buffer.getvalue())
    except OSError as error:
        raise UsageError(f"--record {path}: cannot write: {error.strerror or error}") from None
    return score
