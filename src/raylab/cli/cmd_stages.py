"""`raylab stages`: the numbered lab stages, what each does and how it is verified."""

from __future__ import annotations

import typer

from raylab.cli.options import JsonOpt
from raylab.stages import STAGES
from raylab.ui import UI


def stages(json_mode: JsonOpt = False) -> None:
    """List the lab's numbered stages: what each does and how raylab proves it worked."""
    ui = UI(json_mode=json_mode)
    rows = [
        {"number": s.number or None, "name": s.name, "does": s.summary, "verified_by": s.verified_by}
        for s in STAGES
    ]
    if json_mode:
        ui.result({"stages": rows})
        return
    ui.table(
        "raylab stages",
        ["#", "stage", "what it does", "how it is verified"],
        [[r["number"] or "-", r["name"], r["does"], r["verified_by"]] for r in rows],
    )
    ui.info("Run one with `raylab stage N`, all with `raylab lab`. Trainee guide: docs/lab/ko/")


def register(app: typer.Typer) -> None:
    app.command("stages")(stages)
