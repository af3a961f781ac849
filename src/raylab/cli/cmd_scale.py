"""`raylab scale`: stage 5 with the knobs you give, on the running cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raylab.cli.options import Shared, takes_shared
from raylab.errors import StageFailed


@takes_shared(..., "target", "lab", "json_mode", "quiet", "workdir")
def scale(
    shared: Shared,
    upscaling_speed: Annotated[
        float | None,
        typer.Option(
            "--upscaling-speed", help="Launches per loop = max(1, ceil(speed x running nodes of the type))."
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout", help="idle_timeout_minutes: an idle worker is removed after this (0.5 = 30 s)."
        ),
    ] = None,
    min_workers: Annotated[int | None, typer.Option("--min-workers", help="Workers always kept.")] = None,
    max_workers: Annotated[
        int | None, typer.Option("--max-workers", help="Most workers the cluster may have.")
    ] = None,
    quota: Annotated[
        int | None,
        typer.Option(
            "--quota", help="Local target only: the twin's vCPU quota (as an approved increase would)."
        ),
    ] = None,
    node_type: Annotated[
        str | None,
        typer.Option(
            "--node-type", help="Worker node type for min/max (default: the scenario's main worker type)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Cluster YAML to edit (default: the working copy .raylab/config/ray-cluster.yaml).",
        ),
    ] = None,
    tasks: Annotated[
        int | None, typer.Option("--tasks", help="Tasks of the second run (default: stage 4's).")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds per task of the second run (default: stage 4's)."),
    ] = None,
    no_run: Annotated[bool, typer.Option("--no-run", help="Only edit and re-apply; no second run.")] = False,
) -> None:
    """Stage 5: edit the cluster YAML's autoscaling knobs (comments kept), re-apply it to the
    running cluster, run a second stress job, and measure: idle workers removed after the idle
    timeout down to min_workers, and peak workers / makespan against stage 4's run."""
    from raylab.cli.cmd_stress import check_workload
    from raylab.options import LabOptions, Scaling
    from raylab.stages.stage5_scaling import check_scaling

    s = Scaling(upscaling_speed, idle_timeout, min_workers, max_workers, quota, node_type)
    check_scaling(s, _quota_settable(shared.target))
    check_workload(tasks, duration, None)
    opts = LabOptions(scaling=s, config=config, tasks=tasks, duration=duration, no_run=no_run)
    ctx = shared.context(opts)
    from raylab.stages import BY_NAME
    from raylab.stages.runner import run_stages

    try:
        from raylab.room.busy import lab_lease

        with ctx.state.lock("scale"), lab_lease(ctx, "scale") as lease:  # `room sweep` refuses meanwhile
            results = lease.stage("5 scaling", lambda: run_stages(ctx, [BY_NAME["scaling"]]))
    except StageFailed as e:
        ctx.ui.result(
            {"ok": False, **ctx.state.get("scaling"), "failed_check": e.check, "error": e.one_line()}
        )
        raise
    ctx.ui.result(
        {"ok": True, **ctx.state.get("scaling"), "checks": [c.as_dict() for c in results[0].checks]}
    )


def _quota_settable(target: str) -> bool:
    """``Target.quota_settable`` of --target, before the context is made (bad values are refused
    first); an unknown target sets no quota (``make_context`` then names it)."""
    from raylab.context import TARGETS
    from raylab.targets import get_target

    t = target.lower()
    return t in TARGETS and get_target(t).quota_settable


def register(app: typer.Typer) -> None:
    app.command("scale")(scale)
