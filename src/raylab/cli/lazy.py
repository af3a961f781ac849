"""Lazy subcommands: `raylab --help` lists the commands from a static table; only the command a
user runs (or asks help for) is imported and built.

Typer turns every command function's signature into click parameters when it builds a group,
and building all of raylab's (42 functions, importing every command module) cost more than
importing typer itself. Here the top-level group's ``commands`` is a mapping whose keys come from
the table and whose values are built on first access, one command module at a time, by the same
typer machinery and settings as before: options, help text and behaviour are the command's own.
``tests/unit/test_cli_lazy.py`` fails if the table and the real commands drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main


@dataclass(frozen=True)
class Entry:
    """One top-level command: its name, the module whose ``register(app)`` adds it, and the first
    paragraph of its help (whitespace collapsed), from which click cuts the short help."""

    name: str
    module: str
    summary: str


def build(entry: Entry, new_app: Callable[[], typer.Typer]) -> Any:
    """The click command for ``entry``, built only from its own registration in its module."""
    sub = new_app()
    importlib.import_module(entry.module).register(sub)
    sub.registered_commands = [c for c in sub.registered_commands if _command_name(c) == entry.name]
    sub.registered_groups = [g for g in sub.registered_groups if g.name == entry.name]
    if not sub.registered_commands and not sub.registered_groups:
        raise LookupError(f"{entry.module}.register adds no command {entry.name!r}")
    sub.callback()(_no_op)  # a group even with one command, so the command is found by its name
    group = typer.main.get_command(sub)
    return group.commands[entry.name]  # type: ignore[attr-defined]  # typed Command; a group (the callback)


def _command_name(info: Any) -> str:
    return str(info.name or typer.main.get_command_name(info.callback.__name__))


def _no_op() -> None:
    pass


class LazyCommands(MutableMapping[str, Any]):
    """Name -> click command, built on first access; the names (and their order) are the table's."""

    def __init__(self, table: tuple[Entry, ...], make: Callable[[Entry], Any]) -> None:
        self._table = {e.name: e for e in table}
        self._make = make
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in self._table:
                raise KeyError(name)
            self._built[name] = self._make(self._table[name])
        return self._built[name]

    def __setitem__(self, name: str, cmd: Any) -> None:  # click's add_command
        self._built[name] = cmd

    def __delitem__(self, name: str) -> None:
        if name not in self._table and name not in self._built:
            raise KeyError(name)
        self._table.pop(name, None)
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:  # without building it
        return name in self._table or name in self._built

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (n for n in self._built if n not in self._table)

    def __len__(self) -> int:
        return len(self._table) + sum(n not in self._table for n in self._built)

    @property
    def built(self) -> tuple[str, ...]:
        """The names built so far (the help builds none)."""
        return tuple(self._built)

    def summary(self, name: str) -> str | None:
        """The table's summary, or None for a command added at run time (then ask the command)."""
        entry = self._table.get(name)
        return entry.summary if entry is not None else None


class LazyGroup(typer.core.TyperGroup):
    """A TyperGroup whose commands are built on demand; its help's command list never builds one.

    Subclass it with ``table`` and ``new_app`` (a Typer with the top-level app's settings)."""

    table: tuple[Entry, ...] = ()

    @staticmethod
    def new_app() -> typer.Typer:
        return typer.Typer()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        given = dict(self.commands)  # any command added the eager way stays
        self.commands = LazyCommands(self.table, lambda e: build(e, self.new_app))
        self.commands.update(given)

    def get_help_option(self, ctx: Any) -> Any:
        """The group's -h/--help, unset = False (a bool). Typer >= 0.29 coerces an unset flag's None
        through a pydantic TypeAdapter, so every `raylab CMD --help` imported pydantic for this option
        alone (more than the rest of the startup); a bool is passed through as it is."""
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """click's command list (name, short help cut to the width), from the table's summaries."""
        commands = self.commands
        rows: list[tuple[str, str]] = []
        names = list(commands)  # list_commands, named apart from the boto3 method the IAM scan looks for
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            summary = commands.summary(name) if isinstance(commands, LazyCommands) else None
            if summary is None:
                cmd = self.get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, short_help(summary, limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def short_help(text: str, limit: int) -> str:
    """click's own cut of a help text to ``limit`` characters (typer's vendored click, or click)."""
    try:
        from typer._click.utils import make_default_short_help
    except ImportError:  # older typer on upstream click
        from click.utils import make_default_short_help  # type: ignore[no-redef]  # same function, upstream
    return make_default_short_help(text, limit).strip()
