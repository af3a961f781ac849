"""Options every command shares, and the one place that turns them into a Context."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raylab.context import SCENARIOS, TARGETS, Context
from raylab.errors import RaylabError
from raylab.labid import check_lab_id, default_lab_id
from raylab.options import LabOptions
from raylab.ui import UI

TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="Where the lab runs: local (default, no AWS) or aws.")
]
LabOpt = Annotated[
    str | None,
    typer.Option("--lab", help="Lab id carried by every resource (default: from your OS user)."),
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
) -> Context:
    t = target.lower()
    if t not in TARGETS:
        raise RaylabError(f"unknown target {target!r}", "use --target local (default) or --target aws")
    s = scenario.lower()
    if s not in SCENARIOS:
        raise RaylabError(f"unknown scenario {scenario!r}", f"use one of: {', '.join(SCENARIOS)}")
    ui = UI(json_mode=json_mode, quiet=quiet)
    lab_id = check_lab_id(lab) if lab else default_lab_id()
    wd = (workdir or Path.cwd() / ".raylab").resolve()
    from raylab.targets import get_target  # light: the chosen target is imported when first used

    return Context(target_name=t, lab=lab_id, ui=ui, workdir=wd, yes=yes, scenario=s,
                   options=options or LabOptions(), make_target=get_target)

