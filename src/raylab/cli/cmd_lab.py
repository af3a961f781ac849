"""`raylab lab`, `raylab up`, `raylab stage N`, `raylab down`: run stages in order."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import typer

from raylab.cli.cmd_preflight import RegionOpt
from raylab.cli.options import Shared, takes_shared
from raylab.context import Context
from raylab.errors import RaylabError, StageFailed
from raylab.phases import breakdown, table_lines
from raylab.stages import BY_NAME, LAB_STAGES, STAGES, UP_STAGES, StageInfo, find
from raylab.stages.runner import run_stages


def _confirm_spend(ctx: Context, what: str) -> None:
    if ctx.target.spends_money and not ctx.ui.confirm(
        f"This creates billable AWS resources ({what}) for lab {ctx.lab!r}. Continue?", ctx.yes
    ):
        raise RaylabError("not confirmed: nothing was created", "re-run with --yes to skip the question")


AllowSshOpt = Annotated[
    str | None,
    typer.Option("--allow-ssh-from", metavar="CIDR",
                 help="Who may SSH to the bastion (AWS). Default: your public IP as a /32. A classroom "
                      "behind one NAT gives that NAT's address, e.g. 198.51.100.7/32 (never 0.0.0.0/0)."),
]


def _set_region(ctx: Context, region: str | None, allow_ssh_from: str | None = None) -> None:
    """--region (as `raylab preflight` takes it) and --allow-ssh-from, checked before anything is
    created; the AWS target reads ctx.options.region, stage 1 ctx.options.allow_ssh_from."""
    if region:
        if ctx.target.fixed_region is not None:
            raise RaylabError("--region applies to --target aws only", "drop --region on the local target")
        ctx.options = replace(ctx.options, region=region)
    if allow_ssh_from:
        from raylab.stages.stage1_network import check_cidr

        if ctx.target.fixed_operator_cidr is not None:
            raise RaylabError("--allow-ssh-from applies to --target aws only",
                              "the local bastion takes SSH from 127.0.0.1 only; drop the option")
        ctx.options = replace(ctx.options, allow_ssh_from=check_cidr(allow_ssh_from))


NodePythonOpt = Annotated[
    str | None,
    typer.Option("--node-python", metavar="3.X",
                 help="AWS: the Python minor version every node gets (3.10-3.13, Ray 2.60's wheels). "
                      "Default: this machine's, so a driver here matches the cluster. The rehearsal "
                      "offers only the image's own Python (Debian 12: 3.11, Ubuntu 22.04: 3.10)."),
]


def _set_node_python(ctx: Context, choice: str | None) -> None:
    """--node-python, checked before anything is created; stage 3 reads ctx.options.node_python."""
    if not choice:
        return
    from raylab.cluster.bootstrap import node_python, operator_python

    py = node_python(choice)
    if not ctx.target.picks_node_python and py != operator_python():
        raise RaylabError(f"--node-python {py}: the {ctx.target_name} target's nodes run raylab's own "
                          f"Python {operator_python()}",
                          "drop --node-python, or run raylab itself on that Python")
    ctx.options = replace(ctx.options, node_python=py)


RehearsalOpt = Annotated[
    bool,
    typer.Option("--rehearsal",
                 help="AWS without an account: the same AWS target code, rendered YAML and `ray up` "
                      "through the bastion, against a twin account in private network namespaces where "
                      "every instance is a real sshd machine (needs root; nothing leaves this machine)."),
]
BootDelayOpt = Annotated[
    float,
    typer.Option("--boot-delay", min=0, max=600, metavar="SECONDS",
                 help="With --rehearsal: how long a machine boots before SSH answers."),
]
ThroughOpt = Annotated[
    int | None,
    typer.Option("--through", min=1, max=7, metavar="N",
                 help="Run stages 1..N only, then tear down (e.g. --through 3 for network, identity, "
                      "cluster)."),
]


SkipOpt = Annotated[
    list[int] | None,
    typer.Option("--skip", min=4, max=7, metavar="N",
                 help="Leave out stage N (4-7; repeat for more), e.g. --skip 4 --skip 5 --skip 6 to rehearse "
                      "the data stage right after the cluster. Stages 1-3 are what the others stand on."),
]
ScaleOpt = Annotated[
    int | None,
    typer.Option("--scale", min=1, max=64, metavar="S",
                 help="Lab scale: stage 4's 480 x 300 s tasks become 480/S x 30 s (local: nodes shrink "
                      "too; default 8). On AWS and in the rehearsal the nodes keep their size; default 1. "
                      "Above 1, the rehearsal's FIS drills also run 4x faster (notice PT2M -> 30 s)."),
]


TtlOpt = Annotated[
    str | None,
    typer.Option("--ttl", metavar="DURATION",
                 help="How long the lab may live, tagged on its stack when stage 1 creates it (default 10h; "
                      "e.g. 90m, 1h30m; 1m to 7d). After it, `raylab room sweep --expired` removes it."),
]


def _set_ttl(ctx: Context, ttl: str | None) -> None:
    """--ttl, checked before anything is created; stage 1 reads ctx.options.ttl_s."""
    if ttl is not None:
        from raylab.room.expiry import parse_ttl

        ctx.options = replace(ctx.options, ttl_s=parse_ttl(ttl))


def _lease(ctx: Context, command: str) -> Any:
    """The lab's busy lease while this command runs (``raylab.room.busy``): `room sweep` reads it."""
    from raylab.room.busy import lab_lease

    return lab_lease(ctx, command)


def _rehearse(ctx: Context, rehearsal: bool, boot_delay: float) -> None:
    """--rehearsal: check, then run this very command again inside the rehearsal's world, and exit
    with its code (see raylab.rehearsal.enter). Inside the world it is a plain AWS run."""
    import sys

    from raylab.rehearsal import enter

    if not rehearsal or enter.inside():
        return
    if not ctx.target.rehearsable:
        raise RaylabError("--rehearsal applies to --target aws only",
                          "the local target needs no rehearsal: drop --rehearsal, or add --target aws")
    enter.check_can_enter()
    from raylab.rehearsal.internet import WHEELHOUSE

    if not WHEELHOUSE.is_dir() or not any(WHEELHOUSE.glob("ray-2.60.0-*.whl")):
        raise RaylabError(f"the rehearsal's package mirror is missing ({WHEELHOUSE})",
                          "run `make wheelhouse` (once, with the package index reachable)")
    region = ctx.options.region or "us-west-2"
    args = enter.without_rehearsal_flags(sys.argv[1:])
    if "--region" not in args:
        args += ["--region", region]
    root = ctx.workdir / "rehearsal"
    cmd = enter.world_command(root, WHEELHOUSE.parent, region, boot_delay, args,
                              fis_time_x=enter.fis_time(ctx.options.scale))
    raise typer.Exit(enter.run_world(cmd))


def _preflight(ctx: Context) -> None:
    for c in ctx.target.preflight(ctx):
        if not c.ok:
            raise RaylabError(f"preflight: {c.name}: {c.detail}", c.hint)
        if ctx.target.preflight_shown:
            ctx.ui.success(f"preflight · {c.name}: {c.detail}")  # e.g. where the quota wall stands


def _teardown_after_failure(ctx: Context) -> dict[str, Any]:
    """What `raylab down` does (teardown, then the leftover check), run because a stage failed.
    Never raises: the caller reports the stage's failure, with what teardown left behind."""
    from raylab.stages import load

    ctx.ui.step("teardown: a stage failed, so everything the lab created is removed now (--keep skips this)")
    out: dict[str, Any] = {"ran": True, "errors": [], "leftovers": []}
    try:
        out["errors"] = (load(BY_NAME["teardown"]).apply(ctx) or {}).get("errors", [])
    except Exception as e:  # noqa: BLE001 - still check what is left
        out["errors"] = [f"teardown: {type(e).__name__}: {e}"]
    try:
        out["leftovers"] = ctx.target.leftovers(ctx)
    except Exception as e:  # noqa: BLE001 - a check that cannot run is not a pass
        out["leftovers"] = [f"could not list what is left: {type(e).__name__}: {e}"]
    for item in out["leftovers"]:
        ctx.ui.error(f"left behind: {item}")
    if not out["leftovers"]:
        ctx.ui.success("nothing left: no instance, stack, profile or process of this lab")
    return out


def failure_error(label: str, err: BaseException, teardown: dict[str, Any] | None) -> RaylabError:
    """One line naming the failed stage and what teardown did (pure)."""
    what = err.message if isinstance(err, RaylabError) else f"{type(err).__name__}: {err}"
    if isinstance(err, KeyboardInterrupt):
        what = "interrupted"
    what = what if what.startswith(f"{label}") else f"{label} failed: {what}"
    if teardown is None:
        hint = err.hint if isinstance(err, RaylabError) and err.hint else "see the logs under .raylab/"
        hint += "; the lab is still up (`raylab down` removes it)"
    elif teardown["leftovers"]:
        hint = f"torn down, but {len(teardown['leftovers'])} resource(s) are left: re-run `raylab down`"
    else:
        hint = "torn down: nothing of the lab is left"
        if isinstance(err, RaylabError) and err.hint:
            hint = f"{err.hint}; {hint}"
    return RaylabError(what, hint, exit_code=130 if isinstance(err, KeyboardInterrupt) else 1)


def _run(ctx: Context, infos: list[StageInfo], command: str, verify_only: bool = False,
         teardown_on_failure: bool = False) -> None:
    """Run the stages in order. With ``teardown_on_failure`` (`raylab lab` without --keep), a stage
    that fails (a failed check, an error, Ctrl-C) is followed by teardown and the leftover check,
    and the command still fails, naming that stage."""
    results = []
    readiness: dict[str, Any] | None = None
    with ctx.state.lock(command):
        if not verify_only:
            _preflight(ctx)  # refuses before anything is created: nothing to tear down
        failed, label = "start", f"starting the {ctx.target_name} target"
        lease = _lease(ctx, command)
        try:
            if not verify_only:
                with ctx.clock.in_stage("start"), ctx.clock.phase(f"{ctx.target_name} target up"):
                    ctx.target.start(ctx)
                lease.__enter__()
            for info in infos:
                failed = f"{info.number} {info.name}" if info.number else info.name
                label = f"stage {failed}" if info.number else failed
                if info.number and not verify_only:  # its result tagged on the lab for `room status`
                    results += lease.stage(failed, lambda i=info: run_stages(ctx, [i]))
                else:
                    results += run_stages(ctx, [info], verify_only=verify_only)
                if info.name == "cluster":  # time to ready per node, while the cluster is up
                    from raylab.observe.readiness import show

                    try:
                        with ctx.clock.in_stage("readiness"), ctx.clock.phase("time to ready per node"):
                            readiness = ctx.target.readiness(ctx)
                    except Exception as e:  # noqa: BLE001 - a measurement never fails the stage
                        readiness = {"nodes": [], "summary": {}, "error": f"{type(e).__name__}: {e}"}
                    show(ctx.ui, readiness)
        except (Exception, KeyboardInterrupt) as e:
            td = None
            if teardown_on_failure and failed != "teardown":
                ctx.ui.error(f"{label} failed: {e.one_line() if isinstance(e, RaylabError) else repr(e)}")
                td = _teardown_after_failure(ctx)
            err = failure_error(label, e, td)
            out = {"ok": False, "failed_stage": failed, "error": err.one_line(), "teardown": td}
            if isinstance(e, StageFailed):
                out["failed_check"] = e.check
            ctx.ui.result(out)
            if td is None:
                raise  # as before: a RaylabError's own line, or Ctrl-C's resume hint
            raise err from e
        finally:
            lease.__exit__(None, None, None)
    phases = breakdown(ctx.clock.rows, {r.name: r.seconds for r in results})
    if results:
        ctx.ui.info("time per stage: " + ", ".join(f"{r.name} {r.seconds:.1f} s" for r in results))
        if len(results) > 1:
            ctx.ui.info("where the time went (stage, phase):\n" + "\n".join(table_lines(phases)))
    done: dict[str, Any] = {"ok": True, "lab": ctx.lab, "target": ctx.target_name,
                            "stages": [r.as_dict() for r in results],
                            "phases": [p.as_dict() for p in phases]}
    if readiness is not None:
        done["readiness"] = readiness
    ctx.ui.result(done)


def lab_stages(through: int | None = None, skip: list[int] | None = None) -> list[StageInfo]:
    """The numbered stages `raylab lab` runs, in order: 1..through, without the skipped (pure)."""
    return [BY_NAME[n] for n in LAB_STAGES
            if (through is None or BY_NAME[n].number <= through) and BY_NAME[n].number not in set(skip or [])]


@takes_shared("target", "lab", "scenario", ..., "yes", "json_mode", "quiet", "workdir")
def lab(
    shared: Shared,
    keep: Annotated[bool, typer.Option("--keep", help="Do not tear down at the end.")] = False,
    region: RegionOpt = None,
    allow_ssh_from: AllowSshOpt = None,
    rehearsal: RehearsalOpt = False,
    boot_delay: BootDelayOpt = 6.0,
    through: ThroughOpt = None,
    skip: SkipOpt = None,
    scale: ScaleOpt = None,
    node_python: NodePythonOpt = None,
    ttl: TtlOpt = None,
) -> None:
    """Run the whole lab in order (stages 1-7), stopping at the first stage that fails; then tear
    everything down (unless --keep) and prove nothing is left. A failed stage is named, still ends
    in teardown and the leftover check, and the exit code is non-zero."""
    ctx = shared.context()
    _set_region(ctx, region, allow_ssh_from)
    _set_node_python(ctx, node_python)
    _set_ttl(ctx, ttl)
    if scale is not None:
        ctx.options = replace(ctx.options, scale=scale)
    _rehearse(ctx, rehearsal, boot_delay)
    _confirm_spend(ctx, "VPC, NAT gateway, EC2 instances")
    infos = lab_stages(through, skip)
    if not keep:
        infos.append(BY_NAME["teardown"])
    _run(ctx, infos, "lab", teardown_on_failure=not keep)


@takes_shared("target", "lab", "scenario", ..., "yes", "json_mode", "quiet", "workdir")
def up(
    shared: Shared,
    region: RegionOpt = None,
    allow_ssh_from: AllowSshOpt = None,
    node_python: NodePythonOpt = None,
    ttl: TtlOpt = None,
) -> None:
    """Stages 1-3: network, identity, cluster. Re-running converges (nothing is created twice)."""
    ctx = shared.context()
    _set_region(ctx, region, allow_ssh_from)
    _set_node_python(ctx, node_python)
    _set_ttl(ctx, ttl)
    _confirm_spend(ctx, "VPC, NAT gateway, the Ray head")
    _run(ctx, [BY_NAME[n] for n in UP_STAGES], "up")


@takes_shared(..., "target", "lab", "scenario", "yes", "json_mode", "quiet", "workdir")
def stage(
    shared: Shared,
    number: Annotated[str, typer.Argument(help="Stage number or name, e.g. 3 or cluster.")],
    verify_only: Annotated[bool, typer.Option("--verify-only", help="Only check; change nothing.")] = False,
    allow_ssh_from: AllowSshOpt = None,
    ttl: TtlOpt = None,
) -> None:
    """Run one numbered stage (apply, then verify), as the trainee guide's chapter N does."""
    ctx = shared.context()
    _set_region(ctx, None, allow_ssh_from)
    _set_ttl(ctx, ttl)
    info = find(number)
    if not verify_only:
        _confirm_spend(ctx, f"stage {info.number} {info.name}")
    _run(ctx, [info], f"stage {info.number}", verify_only=verify_only)


@takes_shared("target", "lab", "yes", "json_mode", "quiet", "workdir")
def down(shared: Shared) -> None:
    """Tear down: ray down, terraform destroy, delete the stack, stop raylab's processes,
    then list what is left (nothing, or a non-zero exit)."""
    ctx = shared.context()
    if ctx.target.spends_money and not ctx.ui.confirm(f"Destroy every resource of lab {ctx.lab!r}?", ctx.yes):
        raise RaylabError("not confirmed: nothing was deleted", "re-run with --yes")
    from raylab.cli.cost_report import down_cost, measure
    from raylab.stages import load

    with ctx.state.lock("down"), _lease(ctx, "down"):
        used = measure(ctx)  # before the teardown: terminated instances vanish from EC2 (and the twin stops)
        td = load(BY_NAME["teardown"])
        td.apply(ctx)
        left = ctx.target.leftovers(ctx)
        cost = down_cost(ctx, used)
    ctx.ui.result({"ok": not left, "leftovers": left, "cost": cost})
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
