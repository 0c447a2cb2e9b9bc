"""MkDocs hook: the CLI reference page, generated at build time from the real argparse parsers.

Registered in mkdocs.yml (`hooks:`). Nothing of the page is written by hand, so it cannot drift
from the commands: `tests/test_docs.py` also checks that it names every flag of every parser.
Building a parser imports no heavy package (gymnasium, onnx, onnxruntime, matplotlib).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PAGE = "reference/cli.md"

# command as a user types it -> "module:function" returning its parser
COMMANDS: dict[str, str] = {
    "python -m trainer": "trainer.cli:train_parser",
    "python -m trainer eval": "trainer.cli:eval_parser",
    "python -m export": "export.build:build_parser",
    "python -m export keygen": "export.keys:build_keygen_parser",
    "python -m export verify": "export.verify:build_parser",
    "python -m export push": "export.push:build_push_parser",
    "python -m export status": "export.push:build_status_parser",
    "python -m export rollout": "export.rollout:build_parser",
    "python -m export keys sign": "export.keyset:build_sign_parser",
    "python -m export keys push": "export.keyset:build_push_parser",
    "python -m runtime": "runtime.cli:build_parser",
}
CONSOLE_SCRIPTS = {
    "python -m trainer": "reinforce-train",
    "python -m export": "reinforce-export",
    "python -m runtime": "reinforce-runtime",
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of `command` (a key of COMMANDS), with the project importable."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module_name, function_name = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module_name), function_name)()


def anchor(command: str) -> str:
    """The section's anchor as MkDocs' toc makes it: `python -m export push` -> python-m-export-push."""
    return re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")


def cli_reference_markdown() -> str:
    """The whole reference page."""
    lines = [
        "# CLI reference",
        "",
        "Generated when the site is built, from the argparse parsers the commands themselves use;"
        " `--help` prints the same. Each `python -m` package is also a console script"
        f" ({', '.join(f'`{script}`' for script in CONSOLE_SCRIPTS.values())}).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    parsers = {command: build_parser(command) for command in COMMANDS}
    for command, parser in parsers.items():
        summary = _one_line(parser.description or "")
        lines.append(f"| [`{command}`](#{anchor(command)}) | {_cell(summary)} |")
    for command, parser in parsers.items():
        lines += ["", *command_section(command, parser)]
    return "\n".join(lines) + "\n"


def command_section(command: str, parser: argparse.ArgumentParser) -> list[str]:
    """One command: usage, description, a table of its arguments, its epilog."""
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines = [f"## {command}", "", "```", usage, "```", ""]
    if parser.description:
        lines += [_one_line(parser.description), ""]
    lines += ["| argument | value | default | help |", "|---|---|---|---|"]
    for action in parser._actions:  # argparse has no public iterator over its arguments
        lines.append(_action_row(action))
    if parser.epilog:
        lines += ["", _one_line(parser.epilog)]
    return lines


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag a parser accepts (`--out`, `-h`, ...)."""
    return [flag for action in parser._actions for flag in action.option_strings]


def _action_row(action: argparse.Action) -> str:
    name = (
        ", ".join(f"`{flag}`" for flag in action.option_strings)
        or f"`{action.metavar or action.dest}`"
    )
    if action.required and action.option_strings:
        name += " (required)"
    return f"| {name} | {_value(action)} | {_default(action)} | {_cell(_help(action))} |"


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return " \\| ".join(f"`{choice}`" for choice in action.choices)
    metavar = action.metavar or action.dest.upper()
    return f"`{metavar}`" if action.option_strings else ""


def _default(action: argparse.Action) -> str:
    default: Any = action.default
    if action.nargs == 0 or default in (None, argparse.SUPPRESS):
        return ""
    return f"`{default}`"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    return (
        text % {"default": action.default, "prog": "", "choices": action.choices}
        if "%(" in text
        else text
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return _one_line(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated reference page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, REFERENCE_PAGE, content=cli_reference_markdown()))
    return files
