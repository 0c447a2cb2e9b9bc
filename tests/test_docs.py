"""The documentation against the code: every command it shows parses with the real parser, and
the generated CLI reference names every flag.

A command is any line of a fenced shell block in docs/**/*.md or README.md that runs one of the
CLIs (`python -m trainer|export|runtime`, also through `.venv/bin/python`, `python3` or `sudo`,
or a console script). A full command line is given to the parser itself; a synopsis written
with `[--flag VALUE]` or `a|b` cannot be parsed literally, so each of its flags must be one the
command knows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCES = {"", "sh", "bash", "shell", "console", "text"}
PACKAGES = ("trainer", "export", "runtime")
SUBCOMMANDS = {
    "trainer": ("eval",),
    "export": ("keygen", "verify", "push", "status", "rollout", "keys sign", "keys push"),
}
SCRIPTS = {
    "reinforce-train": "trainer",
    "reinforce-export": "export",
    "reinforce-runtime": "runtime",
}
ASSIGNMENT = re.compile(r"([A-Z_][A-Z0-9_]*)=(.*)")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>&1", ")", "("}


def load_hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts/mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = load_hooks()


@dataclass(frozen=True)
class Command:
    """One CLI invocation shown in the docs: where, which command, its arguments."""

    where: str  # file:line
    text: str
    command: str  # a key of the hooks' COMMANDS
    args: tuple[str, ...]
    synopsis: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of the shell-like fenced blocks, continuations joined."""
    lines, fence, pending, start = [], None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((start, pending + stripped))
        pending = ""
    return lines


def parse_command(where: str, line: str) -> Command | None:
    """The CLI invocation on `line`, or None when the line runs none of ours."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for index, token in enumerate(tokens):
        name = Path(token).name
        if name in SCRIPTS:
            package, rest = SCRIPTS[name], tokens[index + 1 :]
            break
        flag, module = (tokens[index + 1 : index + 3] + [None, None])[:2]
        if name.startswith("python") and flag == "-m" and module in PACKAGES:
            package, rest = module, tokens[index + 3 :]
            break
    else:
        return None
    rest = _until_shell_operator(rest)
    command = f"python -m {package}"
    for words in (2, 1):  # `export keys sign` before `export keygen`
        if len(rest) >= words and " ".join(rest[:words]) in SUBCOMMANDS.get(package, ()):
            command, rest = f"{command} {' '.join(rest[:words])}", rest[words:]
            break
    synopsis = any(re.search(r"[\[\]]|\w\|\w", token) for token in rest)
    return Command(where, line, command, tuple(rest), synopsis)


def _until_shell_operator(tokens: list[str]) -> list[str]:
    for index, token in enumerate(tokens):
        if token in SHELL_OPERATORS or token.startswith((">", "2>", "|")):
            return tokens[:index]
    return tokens


def expand(line: str, variables: dict[str, str]) -> str:
    """$NAME replaced by its value where the page set it; other variables stay as written."""
    return re.sub(r"\$(\w+)", lambda match: variables.get(match[1], match[0]), line)


def documented_commands() -> list[Command]:
    found = []
    for path in documents():
        variables: dict[str, str] = {}  # NAME="..." set earlier on the page, as a reader would
        for number, line in shell_lines(path):
            assignment = ASSIGNMENT.fullmatch(line)
            if assignment:
                variables[assignment[1]] = " ".join(shlex.split(assignment[2], comments=True))
                continue
            line = expand(line, variables)
            command = parse_command(f"{path.relative_to(ROOT)}:{number}", line)
            if command is not None:
                found.append(command)
    return found


COMMANDS = documented_commands()


def synopsis_flags(args: tuple[str, ...]) -> list[str]:
    """The flags of a synopsis: `[--plant sim|stdio]` -> --plant; `[--a|--b]` -> both."""
    flags = []
    for token in args:
        for part in token.strip("[]").split("|"):
            part = part.strip("[]")
            if part.startswith("--"):
                flags.append(part.split("=", 1)[0])
    return flags


def test_the_docs_show_commands_of_every_cli():
    shown = {command.command for command in COMMANDS}
    assert {"python -m trainer", "python -m export", "python -m runtime"} <= shown
    assert len(COMMANDS) >= 30, [str(command) for command in COMMANDS]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_documented_command_parses(command: Command):
    parser = HOOKS.build_parser(command.command)
    if command.synopsis:
        known = set(HOOKS.option_strings(parser))
        unknown = [flag for flag in synopsis_flags(command.args) if flag not in known]
        assert not unknown, f"{command}: {command.command} has no {', '.join(unknown)}"
        return
    parser.allow_abbrev = False  # the docs spell flags out: --max-ep could turn ambiguous
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints, then exits 0
            parser.parse_args(list(command.args))
    except SystemExit as done:
        assert done.code == 0, f"{command}: {command.command} exits {done.code}"
    except Exception as error:
        pytest.fail(f"{command}: {command.command} refuses it: {error}")


def test_a_bad_flag_in_the_docs_would_fail():
    """The check can fail: an unknown flag and a bad choice, full and in a synopsis."""
    parser = HOOKS.build_parser("python -m runtime")
    for line in (
        "python -m runtime --policy p.npz --plnat sim",
        "python -m runtime --policy p.npz --plant sim --backend tensorflow",
    ):
        command = parse_command("test", line)
        with pytest.raises((Exception, SystemExit)):
            parser.parse_args(list(command.args))
    command = parse_command("test", "python -m runtime --policy p.npz [--hzz 50] [--plant a|b]")
    assert command.synopsis
    assert "--hzz" not in HOOKS.option_strings(parser)
    assert synopsis_flags(command.args) == ["--policy", "--hzz", "--plant"]


def test_commands_are_found_behind_venvs_sudo_and_console_scripts():
    cases = {
        ".venv/bin/python -m trainer eval runs/r1 --episodes 5": "python -m trainer eval",
        "sudo -u svc /opt/x/bin/python3 -m export push f.npz --fleet": "python -m export push",
        "/opt/reinforce-edge/bin/reinforce-runtime --config c.toml | head -1": "python -m runtime",
    }
    for line, expected in cases.items():
        command = parse_command("test", line)
        assert command is not None and command.command == expected, line
    assert parse_command("test", "python -m runtime --policy p --hz 50 | head -1").args == (
        "--policy",
        "p",
        "--hz",
        "50",
    )
    assert parse_command("test", "python -m runtime: error: bad configuration") is None


def test_the_cli_reference_names_every_flag_of_every_parser():
    page = HOOKS.cli_reference_markdown()
    for command in HOOKS.COMMANDS:
        assert f"## {command}\n" in page, command
        section = page.split(f"## {command}\n", 1)[1].split("\n## ", 1)[0]
        for flag in HOOKS.option_strings(HOOKS.build_parser(command)):
            assert f"`{flag}`" in section, (command, flag)
