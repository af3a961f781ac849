"""`raylab lab`, `raylab up`, `raylab stage N`, `raylab down`: run stages in order."""

from __future__ import annotations

from typing import Annotated

import typer

from raylab.cli.options import (
    JsonOpt,
    LabOpt,
    QuietOpt,
    ScenarioOpt,
    TargetOpt,
    WorkdirOpt,
    YesOpt,
    make_context,
)
from raylab.context import Context
from raylab.errors import RaylabError, StageFailed
from raylab.stages import BY_NAME, LAB_STAGES, STAGES, UP_STAGES, StageInfo, find
from raylab.stages.runner import run_stages


def _confirm_spend(ctx: Context, what: str) -> None:
    if ctx.target_name == "aws" and not ctx.ui.confirm(
        f"This creates billable AWS resources ({what}) for lab {ctx.lab!r}. Continue?", ctx.yes
    ):
        raise RaylabError("not confirmed: nothing was created", "re-run with --yes to skip the question")


def _run(ctx: Context, infos: list[StageInfo], command: str, verify_only: bool = False) -> None:
    results = []
    try:
        with ctx.state.lock(command):
            if not verify_only:
                for c in ctx.target.preflight(ctx):
                    if not c.ok:
                        raise RaylabError(f"preflight: {c.name}: {c.detail}", c.hint)
                ctx.target.start(ctx)
            results = run_stages(ctx, infos, verify_only=verify_only)
    except StageFailed as e:
        ctx.ui.result({"ok": False, "failed_stage": e.stage, "failed_check": e.check, "error": e.one_line()})
        raise
    ctx.ui.result({"ok": True, "lab": ctx.lab, "target": ctx.target_name,
                   "stages": [r.as_dict() for r in results]})


def lab(
    target: TargetOpt = "local",
    lab: LabOpt = None,
    scenario: ScenarioOpt = "autoscale",
    keep: Annotated[bool, typer.Option("--keep", help="Do not tear down at the end.")] = False,
    yes: YesOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Run the whole lab in order (stages 1-7), stopping at the first stage whose check fails,
    then tear everything down (unless --keep) and prove nothing is left."""
    ctx = make_context(target, lab, json_mode, yes, scenario, workdir, quiet)
    _confirm_spend(ctx, "VPC, NAT gateway, EC2 instances")
    infos = [BY_NAME[n] for n in LAB_STAGES]
    if not keep:
        infos.append(BY_NAME["teardown"])
    _run(ctx, infos, "lab")


def up(
    target: TargetOpt = "local",
    lab: LabOpt = None,
    scenario: ScenarioOpt = "autoscale",
    yes: YesOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Stages 1-3: network, identity, cluster. Re-running converges (nothing is created twice)."""
    ctx = make_context(target, lab, json_mode, yes, scenario, workdir, quiet)
    _confirm_spend(ctx, "VPC, NAT gateway, the Ray head")
    _run(ctx, [BY_NAME[n] for n in UP_STAGES], "up")


def stage(
    number: Annotated[str, typer.Argument(help="Stage number or name, e.g. 3 or cluster.")],
    verify_only: Annotated[bool, typer.Option("--verify-only", help="Only check; change nothing.")] = False,
    target: TargetOpt = "local",
    lab: LabOpt = None,
    scenario: ScenarioOpt = "autoscale",
    yes: YesOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Run one numbered stage (apply, then verify), as the trainee guide's chapter N does."""
    ctx = make_context(target, lab, json_mode, yes, scenario, workdir, quiet)
    info = find(number)
    if not verify_only:
        _confirm_spend(ctx, f"stage {info.number} {info.name}")
    _run(ctx, [info], f"stage {info.number}", verify_only=verify_only)


def down(
    target: TargetOpt = "local",
    lab: LabOpt = None,
    yes: YesOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Tear down: ray down, terraform destroy, delete the stack, stop raylab's processes,
    then list what is left (nothing, or a non-zero exit)."""
    ctx = make_context(target, lab, json_mode, yes, "autoscale", workdir, quiet)
    if ctx.target_name == "aws" and not ctx.ui.confirm(f"Destroy every resource of lab {ctx.lab!r}?", yes):
        raise RaylabError("not confirmed: nothing was deleted", "re-run with --yes")
    from raylab.stages import load

    with ctx.state.lock("down"):
        td = load(BY_NAME["teardown"])
        td.apply(ctx)
        left = ctx.target.leftovers(ctx)
    ctx.ui.result({"ok": not left, "leftovers": left})
    if left:
        for item in left:
            ctx.ui.error(f"left behind: {item}")
        raise RaylabError(f"{len(left)} resource(s) left after teardown", "re-run `raylab down`")
    ctx.ui.success("nothing left: no instance, stack, profile or process of this lab")


def register(app: typer.Typer) -> None:
    app.command("lab")(lab)
    app.command("up")(up)
    app.command("stage")(stage)
    app.command("down")(down)


__all__ = ["register", "STAGES"]
