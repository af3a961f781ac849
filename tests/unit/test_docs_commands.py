"""The docs cannot drift from the code: every `raylab ...` command in the trainee guide, the
runbook and the README must parse against the real CLI (its subcommands and options)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from raylab.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs" / "lab" / "ko").glob("*.md")),
        ROOT / "docs" / "runbook.md", ROOT / "README.md"]
# Typer >= 0.19 vendors click as typer._click; use whichever click the CLI really runs on.
try:
    from typer._click.core import Context
    from typer._click.exceptions import ClickException
except ImportError:  # older typer on upstream click
    from click import ClickException, Context  # type: ignore[assignment]
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        if not path.exists():
            continue
        for block in FENCE.findall(path.read_text()):
            for line in block.splitlines():
                line = line.split("  #")[0].split(" # ")[0].strip().removeprefix("$ ")
                if line.startswith("raylab "):
                    found.append((path.name, line))
    return found


def parse(line: str) -> None:
    """Resolve subcommands, then let click parse the options exactly as a run would."""
    cmd = typer.main.get_command(app)
    args = shlex.split(line)[1:]
    ctx = Context(cmd, info_name="raylab")
    while hasattr(cmd, "get_command") and args and not args[0].startswith("-"):
        sub = cmd.get_command(ctx, args[0])
        if sub is None:
            raise ClickException(f"no command {args[0]!r}")
        cmd, args = sub, args[1:]
        ctx = Context(cmd, info_name=cmd.name, parent=ctx)
    cmd.make_context(cmd.name, list(args), parent=ctx.parent)


COMMANDS = doc_commands()


def test_docs_have_commands() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_doc_command_parses(doc: str, line: str) -> None:
    try:
        parse(line)
    except ClickException as e:
        pytest.fail(f"{doc}: `{line}` does not parse: {e.format_message()}")


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(ClickException):
        parse("raylab stage 3 --no-such-option")
    with pytest.raises(ClickException):
        parse("raylab no-such-command")
