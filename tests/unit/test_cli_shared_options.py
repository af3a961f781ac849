"""Shared options are declared once (cli/options.py) and reach a command as one ``Shared`` record;
the command's own options keep their place in --help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.testing import CliRunner

from raylab.cli.options import Shared, takes_shared


def _app() -> tuple[typer.Typer, list[Any]]:
    seen: list[Any] = []
    app = typer.Typer()

    @app.command()
    @takes_shared("target", "lab", ..., "json_mode", "workdir")
    def cmd(shared: Shared, count: Annotated[int, typer.Option("--count", help="How many.")] = 1) -> None:
        seen.append((shared, count))

    @app.command()
    def other() -> None:  # two commands, so typer keeps the command name
        pass

    return app, seen


def test_shared_and_own_options_reach_the_command() -> None:
    app, seen = _app()
    r = CliRunner().invoke(app, ["cmd", "--count", "3", "--target", "aws", "--json", "--workdir", "/x"])
    assert r.exit_code == 0, r.output
    assert seen == [(Shared(target="aws", json_mode=True, workdir=Path("/x")), 3)]


def test_help_lists_them_in_the_layouts_order_and_only_those_named() -> None:
    app, _ = _app()
    out = CliRunner().invoke(app, ["cmd", "--help"], env={"COLUMNS": "200"}).output
    flags = [w for w in out.split() if w.startswith("--") and w != "--help"]
    assert flags == ["--target", "--lab", "--count", "--json", "--workdir"]


def test_a_direct_call_takes_keywords_with_the_flags_defaults() -> None:
    app, seen = _app()
    cmd = app.registered_commands[0].callback
    assert cmd is not None
    cmd(lab="kim", count=2)
    assert seen == [(Shared(lab="kim"), 2)]
