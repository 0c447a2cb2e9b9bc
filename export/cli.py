"""Command line of `python -m export`: a dispatcher over subcommands.

    python -m export RUN_DIR_OR_POLICY [flags]   the default: export (export/build.py)
    python -m export keygen --out DIR            export/keys.py
    python -m export verify FILE --public-key P  export/verify.py
    python -m export push FILE --fleet --broker URL   export/push.py
    python -m export status --broker URL         export/push.py
    python -m export rollout FILE --broker URL --all-online --waves 5%,25%,100% --abort-above 10%
                                                 export/rollout.py
    python -m export keys sign|push ...          export/keyset.py

A new subcommand is one line in SUBCOMMANDS ("name": ("module:function", "summary")) and a
module whose function takes the remaining arguments and returns an exit code. A first
argument that is not a subcommand name is the export's source (write `./keygen` for a run
directory named like a subcommand).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from export.console import Failure, InputError, one_line, say

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "keygen": ("export.keys:keygen_main", "make an Ed25519 key pair for signing"),
    "verify": ("export.verify:main", "check the signature of a policy.npz"),
    "push": ("export.push:push_main", "publish a policy to devices or the fleet over MQTT"),
    "status": ("export.push:status_main", "list devices from their retained MQTT status"),
    "rollout": ("export.rollout:main", "roll a policy out to devices in waves, abort on failures"),
    "keys": ("export.keyset:main", "sign (keys sign) or push (keys push) a key-set change"),
}
DEFAULT_COMMAND = "export.build:main"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    if argv and argv[0] in SUBCOMMANDS:
        target, argv = SUBCOMMANDS[argv[0]][0], argv[1:]
    else:
        target = DEFAULT_COMMAND
        if argv[:1] in (["-h"], ["--help"]):
            print_overview()
    try:
        return _resolve(target)(argv)
    except InputError as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except Failure as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 1
    except ImportError as error:  # an optional dependency (extra) is not installed
        print(
            f"error: the Python package {error.name or error} is not installed;"
            " install the project's extras (pip install -e '.[dev]')",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # argparse's --help
        return done.code if isinstance(done.code, int) else 0


def print_overview() -> None:
    say("python -m export: export a trained policy, or one of the subcommands:")
    for name, (_, summary) in SUBCOMMANDS.items():
        say(f"  python -m export {name:<8} {summary} (see {name} --help)")
    say("")


def _resolve(target: str) -> Callable[[list[str]], int]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted: an in-process caller that
    swaps stderr (a test's capture, which is closed afterwards) never leaves a dead stream."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # StreamHandler.__init__ assigns one; the current sys.stderr is always used


def configure_logging() -> None:
    """Warnings as plain lines on the current stderr (re-done per call for in-process use)."""
    logger = logging.getLogger("export")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
