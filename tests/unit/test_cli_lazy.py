"""`raylab --help` lists the commands from a static table (raylab.cli.main.COMMANDS) and builds only
the command that runs. The table cannot drift from the commands: the same names, each from the
module that registers it, and the same short help as the command itself gives at every width."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.core
import typer.main

from raylab.cli.lazy import Entry, LazyCommands, short_help
from raylab.cli.main import COMMANDS, HELP, app
from tests.conftest import run_cli

try:
    from typer._click.core import Context
except ImportError:  # older typer on upstream click
    from click import Context  # type: ignore[assignment]

CLI = Path(__file__).resolve().parents[2] / "src" / "raylab" / "cli"


def registered() -> dict[str, tuple[str, object]]:
    """Every top-level command the cmd_*.py modules register, built eagerly as before:
    name -> (module, command)."""
    found: dict[str, tuple[str, object]] = {}
    for path in sorted(CLI.glob("cmd_*.py")):
        module = f"raylab.cli.{path.stem}"
        eager = typer.Typer(rich_markup_mode=None, add_completion=False)
        eager.callback()(lambda: None)
        importlib.import_module(module).register(eager)
        for name, cmd in typer.main.get_command(eager).commands.items():
            assert name not in found, f"{name} registered by {found[name][0]} and {module}"
            found[name] = (module, cmd)
    return found


REAL = registered()


def test_the_table_names_every_command_and_its_module() -> None:
    assert len({e.name for e in COMMANDS}) == len(COMMANDS), "a name twice in the table"
    assert {e.name: e.module for e in COMMANDS} == {name: module for name, (module, _) in REAL.items()}


@pytest.mark.parametrize("entry", COMMANDS, ids=[e.name for e in COMMANDS])
def test_the_short_help_is_the_commands_at_every_width(entry) -> None:  # noqa: ANN001
    cmd = REAL[entry.name][1]
    assert not cmd.hidden and not cmd.deprecated, f"{entry.name}: the table lists every command, shown"
    for limit in range(10, 200):
        assert short_help(entry.summary, limit) == cmd.get_short_help_str(limit), (entry.name, limit)


@pytest.mark.parametrize("width", [50, 80, 120])
def test_the_help_is_the_eager_groups(width: int) -> None:
    """The whole `raylab --help` page, against a group holding the real commands in the table's order."""
    lazy = typer.main.get_command(app)
    eager = typer.core.TyperGroup(name="raylab", help=HELP, rich_markup_mode=None,
                                  commands={e.name: REAL[e.name][1] for e in COMMANDS})
    assert lazy.commands.built == ()

    def page(group: object) -> str:
        return group.get_help(Context(group, info_name="raylab", terminal_width=width,
                                      max_content_width=width))

    assert page(lazy) == page(eager)
    assert lazy.commands.built == (), "the help built a command"


SHOW_MODULES = """
import atexit, sys
atexit.register(lambda: print("MODULES", *sorted(m for m in sys.modules
                                                 if m.startswith("raylab.cli.cmd_") or m == "pydantic"),
                              file=sys.stderr))
sys.argv = ["raylab", *sys.argv[1:]]
from raylab.cli.main import main
main()
"""


def command_modules(*args: str) -> set[str]:
    """The raylab.cli.cmd_* modules (and pydantic) a real `raylab ARGS` process loaded (importlib's too)."""
    p = subprocess.run([sys.executable, "-c", SHOW_MODULES, *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("MODULES"))
    return set(line.split()[1:])


def test_help_imports_no_command_module_and_a_command_only_its_own() -> None:
    assert command_modules("--help") == set()
    assert command_modules("room", "--help") == {"raylab.cli.cmd_room"}
    # typer >= 0.29 coerced the group's unset --help through pydantic: not for a command's help
    assert command_modules("stage", "--help") == {"raylab.cli.cmd_lab", "raylab.cli.cmd_preflight"}
    assert command_modules("stages", "--json") - {"pydantic"} == {"raylab.cli.cmd_stages"}  # a run coerces


def test_lazy_commands_build_each_name_once_and_only_when_asked() -> None:
    made: list[str] = []
    cmds = LazyCommands((Entry("b", "m", "B."), Entry("a", "m", "A.")),
                        lambda e: made.append(e.name) or e.name)
    assert (list(cmds), len(cmds), "a" in cmds, made) == (["b", "a"], 2, True, [])
    assert (cmds["a"], cmds["a"], made, cmds.built) == ("a", "a", ["a"], ("a",))
    cmds["c"] = "added"
    assert list(cmds) == ["b", "a", "c"] and cmds.summary("b") == "B." and cmds.summary("c") is None
    del cmds["b"]
    assert list(cmds) == ["a", "c"] and made == ["a"]
    with pytest.raises(KeyError):
        cmds["nosuch"]


def test_a_typo_still_gets_a_suggestion() -> None:
    p = run_cli("stag")
    assert p.returncode == 2
    assert "No such command 'stag'. Did you mean 'stage'" in p.stderr
