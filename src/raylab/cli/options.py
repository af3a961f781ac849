"""Options every command shares, and the one place that turns them into a Context.

Each shared option is declared once (``SHARED``); a command names the ones it takes with
``@takes_shared(...)`` and receives them as one ``Shared`` record, its first parameter.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from raylab.context import SCENARIOS, TARGETS, Context
from raylab.errors import RaylabError
from raylab.labid import check_lab_id, default_lab_id, lab_for_workdir
from raylab.options import LabOptions
from raylab.state import State
from raylab.ui import UI

TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="Where the lab runs: local (default, no AWS) or aws.")
]
LabOpt = Annotated[
    str | None,
    typer.Option("--lab", help="Lab id carried by every resource (default: the lab this working "
                               "directory still holds, else from your OS user)."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout; human text on stderr.")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before creating or destroying.")]
ScenarioOpt = Annotated[
    str, typer.Option("--scenario", "-s", help="Cluster scenario: static | autoscale | spot | mixed.")
]
WorkdirOpt = Annotated[
    Path | None, typer.Option("--workdir", help="Where raylab keeps its state.", envvar="RAYLAB_WORKDIR")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]


def make_context(
    target: str = "local",
    lab: str | None = None,
    json_mode: bool = False,
    yes: bool = False,
    scenario: str = "autoscale",
    workdir: Path | None = None,
    quiet: bool = False,
    options: LabOptions | None = None,
    one_lab: bool = True,
) -> Context:
    """``one_lab``: the command acts on the lab its working directory holds (``lab_for_workdir``);
    the room's commands, which act on every lab of the account, pass False (and their state writes
    then claim no ownership of the directory)."""
    t = target.lower()
    if t not in TARGETS:
        raise RaylabError(f"unknown target {target!r}", "use --target local (default) or --target aws")
    s = scenario.lower()
    if s not in SCENARIOS:
        raise RaylabError(f"unknown scenario {scenario!r}", f"use one of: {', '.join(SCENARIOS)}")
    ui = UI(json_mode=json_mode, quiet=quiet)
    given = check_lab_id(lab) if lab else None
    wd = (workdir or Path.cwd() / ".raylab").resolve()
    lab_id = lab_for_workdir(State(wd).load(), given, t, default_lab_id()) if one_lab else (
        given or default_lab_id())
    from raylab.targets import get_target  # light: the chosen target is imported when first used

    return Context(target_name=t, lab=lab_id, ui=ui, workdir=wd, yes=yes, scenario=s,
                   options=options or LabOptions(), make_target=get_target, owns_workdir=one_lab)


@dataclass(frozen=True)
class Shared:
    """The shared options a command was given (the defaults are the flags' defaults)."""

    target: str = "local"
    lab: str | None = None
    scenario: str = "autoscale"
    yes: bool = False
    json_mode: bool = False
    quiet: bool = False
    workdir: Path | None = None

    def context(self, options: LabOptions | None = None, yes: bool | None = None) -> Context:
        return make_context(self.target, self.lab, self.json_mode, self.yes if yes is None else yes,
                            self.scenario, self.workdir, self.quiet, options=options)


SHARED: dict[str, Any] = {"target": TargetOpt, "lab": LabOpt, "scenario": ScenarioOpt, "yes": YesOpt,
                          "json_mode": JsonOpt, "quiet": QuietOpt, "workdir": WorkdirOpt}
_DEFAULTS = {f.name: f.default for f in fields(Shared)}


def takes_shared(*layout: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared options named in ``layout``, in that order, with the command's own
    options where ``...`` stands (default: after them). The command's first parameter receives them
    as one ``Shared``; Typer (and a caller) sees every option as a keyword parameter."""
    names = [n for n in layout if n is not ...]
    cut = layout.index(...) if ... in layout else len(layout)

    def shared_param(name: str) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS[name],
                                 annotation=SHARED[name])

    def wrap(func: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
               for p in list(inspect.signature(func).parameters.values())[1:]]
        params = ([shared_param(n) for n in names[:cut]] + own
                  + [shared_param(n) for n in names[cut:]])
        sig = inspect.Signature(params, return_annotation=None)

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            bound = sig.bind(**kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            func(Shared(**{n: given.pop(n) for n in names}), **given)

        command.__signature__ = sig  # type: ignore[attr-defined]  # what Typer reads (inspect.signature)
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return command

    return wrap
