"""`python -m runtime`: run a policy on a plant at a fixed rate.

    python -m runtime --policy policy.npz [--plant sim|stdio|gym|module:Class] [--hz 50] ...

The flow of `run(config)`: build the plant, load and check the policy (signature when a
public key is given), make its decision function, put it in a `PolicySlot`, start the optional
services (`start_services`: the MQTT agent hooks in there), run the loop until a bound or a
signal, stop the services, report. Exit codes: 0 done, 1 failure, 2 bad input, 130 SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from runtime.config import (
    BACKENDS,
    LOG_LEVELS,
    PLANTS,
    ConfigError,
    RefusePassword,
    RuntimeConfig,
    allowed,
    build_config,
    field_names,
    unknown_environment,
)
from runtime.constants import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:  # NumPy loads only in main(), after the BLAS thread count is set
    from runtime.loop import ControlLoop, EpisodeResult, LoopSummary
    from runtime.plants import Plant
    from runtime.slot import PolicySlot

log = logging.getLogger("runtime")

PROG = "python -m runtime"


class UsageError(Exception):
    """Bad input: printed as one line, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil (which imports bz2 and lzma) for the terminal width at
        # every add_argument: 4-6 ms of each start (docs/performance.md); os alone knows it
        return self.formatter_class(prog=self.prog, width=terminal_width())


def terminal_width() -> int:
    """What shutil.get_terminal_size() gives argparse: $COLUMNS, the terminal, else 80; -2."""
    try:
        return int(os.environ["COLUMNS"]) - 2
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns - 2
    except (AttributeError, ValueError, OSError):
        return 78


def number(key: str, convert: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type for the config key `key`: a value that does not parse is reported as
    every bad value is, with what the key allows (argparse's own says only "invalid float")."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{key} = {text!r} is not allowed: expected {allowed(key)}"
            ) from None

    return parse


def build_parser() -> ArgumentParser:
    """The parser; flags default to None so that only flags given override env and file."""
    parser = ArgumentParser(
        prog=PROG,
        description="Run a policy on a plant at a fixed rate (NumPy only).",
        epilog="Every option can also come from REINFORCE_EDGE_<NAME> or the --config file;"
        " precedence: flags > environment > file > defaults.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file with any of the keys below")
    add_runtime_arguments(parser)
    return parser


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The runtime's own flags; each `dest` is a `RuntimeConfig` field."""
    group = parser.add_argument_group("policy and plant")
    group.add_argument("--policy", metavar="FILE", help="policy.npz to run")
    group.add_argument(
        "--plant",
        metavar="NAME",
        help=f"what to control: {', '.join(PLANTS)}, or module:Class (your own); default sim",
    )
    group.add_argument("--env", metavar="ID", help="Gymnasium id for --plant gym (CartPole-v1)")
    group.add_argument(
        "--seed", type=number("seed", int), help="seed of the plant's reset distribution"
    )
    group.add_argument("--backend", choices=BACKENDS, help="forward pass (default: numpy)")
    group.add_argument(
        "--public-key", metavar="PUB", help="refuse a policy not signed by this Ed25519 key"
    )
    group.add_argument(
        "--trusted-keys-dir",
        metavar="DIR",
        help="also trust the Ed25519 public keys (*.pub, *.pem) in DIR (at most 16 in all)",
    )
    group.add_argument(
        "--max-policy-bytes",
        type=number("max_policy_bytes", int),
        metavar="N",
        help=argparse.SUPPRESS,
    )
    group = parser.add_argument_group("loop")
    group.add_argument(
        "--hz", type=number("hz"), help="decisions per second, 0 = flat out (default 50)"
    )
    group.add_argument(
        "--episodes", type=number("episodes", int), metavar="N", help="stop after N episodes"
    )
    group.add_argument(
        "--duration", type=number("duration"), metavar="S", help="stop after S seconds"
    )
    group.add_argument(
        "--warm-up-us",
        type=number("warm_up_us"),
        metavar="US",
        help="wake this early before each step: one throwaway decision, then spin (300; 0 = off)",
    )
    group = parser.add_argument_group("output")
    group.add_argument(
        "--json", action="store_const", const=True, help="one JSON object per episode + summary"
    )
    group.add_argument("--log-level", choices=LOG_LEVELS, help="default: info")
    add_mqtt_arguments(parser)


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """Over-the-air updates and telemetry (runtime/agent.py); each `dest` is a config field."""
    group = parser.add_argument_group("MQTT updates and telemetry")
    group.add_argument("--broker", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    group.add_argument(
        "--device-id", metavar="ID", help="id in the topics (default: the host name's first label)"
    )
    group.add_argument("--topic-prefix", metavar="P", help="topic prefix (reinforce-edge)")
    group.add_argument("--state-dir", metavar="DIR", help="where accepted updates persist")
    group.add_argument(
        "--telemetry-interval",
        type=number("telemetry_interval"),
        metavar="S",
        help="seconds between samples (5)",
    )
    group.add_argument("--ca-file", metavar="PEM", help="CA bundle for mqtts://")
    group.add_argument("--cert", metavar="PEM", help="client certificate for mqtts://")
    group.add_argument("--key", metavar="PEM", help="client private key for mqtts://")
    group.add_argument("--username", help="broker user name (password: env or --password-file)")
    group.add_argument("--password-file", metavar="FILE", help="file holding the password")
    group.add_argument("--password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    group.add_argument(
        "--probation-episodes",
        type=number("probation_episodes", int),
        metavar="N",
        help="episodes watched after an update (5)",
    )
    group.add_argument(
        "--rollback-below",
        type=number("rollback_below"),
        metavar="R",
        help="roll back when the probation mean return is below R (default: half the old mean)",
    )
    group.add_argument(
        "--insecure-allow-unsigned",
        action="store_const",
        const=True,
        help="accept unsigned updates (warns on every update)",
    )


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> RuntimeConfig:
    flags = {name: getattr(args, name, None) for name in field_names()}
    return build_config(flags, environ, args.config)


# --- the run -----------------------------------------------------------------------------


@dataclass(eq=False)
class Runtime:
    """What the services started beside the loop can use (the MQTT agent: slot, stats, ...)."""

    config: RuntimeConfig
    policy_path: str
    plant: Plant
    slot: PolicySlot
    loop: ControlLoop
    listeners: list = field(default_factory=list)  # the loop's episode listeners, appendable


def start_services(runtime: Runtime) -> list[Any]:
    """Start what runs beside the loop; each returned object has `stop()`."""
    if runtime.config.broker is None and runtime.config.state_dir is None:
        return []
    from runtime.agent import start_agent  # MQTT code is loaded only when asked for

    agent = start_agent(runtime)
    return [agent] if agent is not None else []


class Reporter:
    """Prints a line (or a JSON object) per episode and the summary."""

    def __init__(self, stream: TextIO | None, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json
        self.closed = False  # the reader went away (`| head`): reporting stops, control goes on
        if stream is None:  # started with the stream closed (`>&-`)
            self.closed = True
            log.warning("the report's stream is closed: no episode reports")

    def on_episode(self, result: EpisodeResult) -> None:
        if self.as_json:
            self._write(json.dumps(result.to_json()))
        else:
            self._write(
                f"episode {result.episode}: return {result.episode_return:g} in {result.steps}"
                f" steps, decision p50 {us(result.decision_us_p50)} p99"
                f" {us(result.decision_us_p99)}, {result.overruns} overruns"
                f" (policy v{result.policy_version})"
            )

    def summary(self, summary: LoopSummary) -> None:
        if self.as_json:
            self._write(json.dumps(summary.to_json()))
        else:
            mean = "-" if summary.mean_return is None else f"{summary.mean_return:g}"
            self._write(
                f"done ({summary.stopped_by}): {summary.episodes} episodes, mean return {mean},"
                f" {summary.decisions} decisions in {summary.duration_s} s, decision p50"
                f" {us(summary.decision_us_p50)} p99 {us(summary.decision_us_p99)},"
                f" {summary.overruns} overruns"
            )

    def _write(self, line: str) -> None:
        if self.closed:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.closed = True
            log.warning("the report's reader closed its end: no more episode reports")
        except OSError as error:  # a full disk, /dev/full: the controller keeps going
            self.closed = True
            log.warning("cannot write the reports (%s): no more episode reports", error)
            try:  # so that the interpreter's final flush of the stream cannot fail either
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass


def us(value: float | None) -> str:
    """A latency for the readable report; '-' when there was no decision to time."""
    return "-" if value is None else f"{value} us"


def refuse_special_file(name: str, expected: str) -> None:
    """A device or a pipe where a file is expected: /dev/zero never ends, a FIFO blocks."""
    if os.path.exists(name) and not os.path.isfile(name) and not os.path.isdir(name):
        raise UsageError(f"{name}: not a regular file (a device or a pipe), expected {expected}")


def load_checked_policy(config: RuntimeConfig, obs_dim: int):
    """The policy, validated, and verified when a public key is configured."""
    from runtime.policy import PolicyError, load_policy

    if config.policy is None:
        raise UsageError("no policy given: use --policy FILE (or REINFORCE_EDGE_POLICY)")
    refuse_special_file(config.policy, "a policy.npz")
    policy = load_policy(config.policy, max_bytes=config.max_policy_bytes, obs_dim=obs_dim)
    if config.public_key is not None or config.trusted_keys_dir is not None:
        if config.public_key is not None:
            refuse_special_file(config.public_key, "an Ed25519 public key")
        from runtime.keyset import RevokedKey, trusted_keyset
        from runtime.signing import verify_policy

        try:
            keys = trusted_keyset(config)  # its errors name the key file
        except ImportError:  # a board installed without the device extra
            raise UsageError(
                "--public-key needs the cryptography package:"
                " pip install 'reinforce-edge[device]' (or apt install python3-cryptography)"
            ) from None
        try:
            verify_policy(policy, keys)
        except RevokedKey as error:  # the agent runs it only if nothing newer persisted
            log.warning("policy %s: %s", config.policy, error)
        except PolicyError as error:
            raise PolicyError(f"{config.policy}: refused: {error}") from None
        else:
            log.info("policy %s v%d: signature verified", config.policy, policy.version)
    elif policy.signature is None:
        log.warning("policy %s is unsigned; running it without verification", config.policy)
    else:
        log.warning("policy %s is signed but no --public-key given: not verified", config.policy)
    return policy


def run(config: RuntimeConfig, stdin: Any = None, stdout: Any = None) -> int:
    """Build everything from `config`, run the loop, report; returns the exit code."""
    from runtime.backends import make_active
    from runtime.loop import ControlLoop
    from runtime.notify import Notifier
    from runtime.plants import StdioPlant, make_plant
    from runtime.slot import PolicySlot
    from runtime.spaces import check_fits, space_for, space_of

    # None when the process was started with the stream closed (`<&-`, `>&-`)
    stdin = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
    stdout = stdout if stdout is not None else getattr(sys.stdout, "buffer", None)
    if config.plant != "gym" and config.env != RuntimeConfig.env:
        log.warning("env %r is ignored: it names the environment of --plant gym", config.env)
    if config.plant == "stdio":  # the bridge speaks the policy's sizes
        policy = load_checked_policy(config, None)
        plant = make_plant("stdio", stdin=stdin, stdout=stdout, space=space_for(policy.spec))
    else:
        plant = make_plant(config.plant, env_id=config.env, stdin=stdin, stdout=stdout)
    try:
        if config.plant != "stdio":
            policy = load_checked_policy(config, plant.obs_dim)
        check_fits(policy, space_of(plant))  # one line naming what differs: exit 2
        slot = PolicySlot(make_active(policy, config.backend, config.policy))
    except BaseException:
        close_plant(plant, config.plant)
        raise
    # with the stdio plant, stdout carries actions: reports go to stderr
    reporter = Reporter(sys.stderr if config.plant == "stdio" else sys.stdout, config.json)
    notifier = Notifier.from_environment()
    listeners: list = [reporter] + ([notifier] if notifier else [])
    loop = ControlLoop(
        plant,
        slot,
        hz=config.hz,
        episodes=config.episodes,
        duration=config.duration,
        warm_up_us=config.warm_up_us,
        seed=config.seed,
        listeners=listeners,
        notifier=notifier,
    )
    loop.listeners = listeners  # one list: services may append before the loop starts
    if isinstance(plant, StdioPlant):
        plant.should_stop = loop.interrupted  # a signal, or --duration over, while waiting
    runtime = Runtime(config, config.policy, plant, slot, loop, listeners)
    log.info(
        "running policy v%d (hidden %d, %s head) on %s (%s) at %s with the %s backend",
        policy.version,
        policy.hidden,
        policy.spec.head,
        config.plant,
        space_of(plant).describe(),
        f"{config.hz:g} Hz" if config.hz else "full speed",
        config.backend,
    )
    with stop_on_signals(loop):
        services = start_services(runtime)
        try:
            summary = loop.run()
        finally:
            if notifier:
                notifier.stopping()
            for service in reversed(services):
                try:
                    service.stop()
                except Exception as error:
                    log.error("stopping %r failed: %s", service, error)
            closed = close_plant(plant, config.plant)
    reporter.summary(summary)
    if summary.stopped_by == "SIGINT":
        return EXIT_INTERRUPTED
    return EXIT_OK if closed else EXIT_FAILURE


def close_plant(plant: Plant, name: str) -> bool:
    """Call the plant's optional close(); a failure is logged (the summary still comes): False."""
    close = getattr(plant, "close", None)
    if not callable(close):
        return True
    try:
        close()
    except Exception as error:
        log.error("plant %s: close() failed: %s: %s", name, type(error).__name__, error)
        return False
    return True


class stop_on_signals:
    """SIGTERM and SIGINT ask the loop to stop at the end of its step (main thread only);
    a second signal interrupts at once (a plant stuck inside a step cannot hold the process)."""

    def __init__(self, loop: ControlLoop) -> None:
        self.loop = loop
        self.previous: dict[int, Any] = {}
        self.received = 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.received += 1
        if self.received > 1:
            raise KeyboardInterrupt
        self.loop.stop(signal.Signals(signum).name)

    def __enter__(self) -> stop_on_signals:
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: the caller stops the loop itself
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(getattr(logging, level.upper()))
    import warnings

    warnings.showwarning = log_warning


def log_warning(message: Any, category: type, filename: str, lineno: int, *_: Any) -> None:
    """A Python warning as one log line (NumPy's "overflow encountered in dot" on a huge
    observation, a library's deprecation), not two raw lines on stderr; Python's filters
    still show each one once per place."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(message)).split())  # no colour codes
    logging.getLogger("py.warnings").warning(
        "%s: %s (%s:%d)", category.__name__, text, filename, lineno
    )


def single_threaded_blas() -> None:
    """One BLAS thread, unless the user set one: a (hidden x 4) product gains nothing from more,
    and idle BLAS threads cost start-up time, memory and jitter on a small board. Effective only
    before NumPy is imported, so it leaves a process that already has NumPy (tests) alone."""
    if "numpy" not in sys.modules:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    single_threaded_blas()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return int(exit_.code or 0)
    environ = os.environ if environ is None else environ
    try:
        config = config_from_args(args, environ)
    except ConfigError as error:
        return fail(f"bad configuration: {error}", EXIT_USAGE)
    configure_logging(config.log_level)
    for name in unknown_environment(environ):
        warn_unknown_variable(name)
    from runtime.backends import BackendError
    from runtime.plants import PlantError, PlantFailed
    from runtime.policy import PolicyError

    try:
        return run(config)
    except (UsageError, ConfigError, PolicyError, BackendError, PlantError) as error:
        return fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C while starting, or a second signal inside a plant step
        log.warning("interrupted: stopped without finishing the current step")
        return EXIT_INTERRUPTED
    except Exception as error:  # one line for the operator; the traceback at debug level
        log.debug("failure", exc_info=True)
        message = str(error) if isinstance(error, PlantFailed) else None  # names the plant
        return fail(message or f"{type(error).__name__}: {error}", EXIT_FAILURE)


def warn_unknown_variable(name: str) -> None:
    """One warning for a REINFORCE_EDGE_* variable that sets nothing, with the likely intent."""
    import difflib

    from runtime.config import env_name

    key = name.removeprefix(env_name(""))
    close = difflib.get_close_matches(key, [k.upper() for k in field_names()], n=1, cutoff=0.8)
    hint = f"did you mean {env_name(close[0])}?" if close else "REINFORCE_EDGE_ + an option's name"
    log.warning("ignoring %s: no such setting (%s)", name, hint)


def fail(message: str, code: int) -> int:
    """The one error line: control characters (a newline in a file name) shown escaped."""
    line = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return code
