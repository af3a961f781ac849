"""`raylab stress`: run stage 4's job on the running cluster, watch it, chart it, verify it."""

from __future__ import annotations

from typing import Annotated

import typer

from raylab.cli.options import Shared, takes_shared
from raylab.errors import RaylabError, StageFailed
from raylab.options import LabOptions


def check_workload(tasks: int | None, duration: float | None, scale: int | None) -> None:
    """Refuse impossible values before anything is submitted (pure)."""
    if tasks is not None and tasks < 1:
        raise RaylabError(f"--tasks must be at least 1, got {tasks}", "e.g. --tasks 120")
    if duration is not None and not duration > 0:
        raise RaylabError(f"--duration must be > 0 seconds, got {duration:g}", "e.g. --duration 30")
    if scale is not None and scale < 1:
        raise RaylabError(f"--scale must be at least 1, got {scale}",
                          "1 = the plan's sizes, 8 = local default")


@takes_shared(..., "target", "lab", "json_mode", "quiet", "workdir")
def stress(
    shared: Shared,
    tasks: Annotated[int | None, typer.Option("--tasks", help="1-CPU tasks (default: 480 / scale).")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Seconds per task (default: 300, or 30 on a scaled local lab).")] = None,
    scale: Annotated[int | None, typer.Option(
        "--scale", help="Lab scale (default: the cluster's; 1 = plan sizes).")] = None,
) -> None:
    """Stage 4: submit the stress job (the plan's 480 x 1-CPU tasks, scaled) as a Ray Job, show a
    live view, record a timeline and a chart, and verify: all tasks done, workers capped by the
    vCPU quota, the VcpuLimitExceeded errors recorded."""
    check_workload(tasks, duration, scale)
    ctx = shared.context(LabOptions(tasks=tasks, duration=duration, scale=scale))
    from raylab.stages import BY_NAME
    from raylab.stages.runner import run_stages
    from raylab.stages.stage4_stress import recorded

    # --json: stage 4's record (StressRecord.as_json(), the `applied` of `raylab stage 4 --json`) at
    # the top level, beside ok and checks (or failed_check and error)
    try:
        from raylab.room.busy import lab_lease

        with ctx.state.lock("stress"), lab_lease(ctx, "stress") as lease:  # `room sweep` refuses meanwhile
            results = lease.stage("4 stress", lambda: run_stages(ctx, [BY_NAME["stress"]]))
    except StageFailed as e:
        rec = recorded(ctx)
        ctx.ui.result({"ok": False, **(rec.as_json() if rec else {}), "failed_check": e.check,
                       "error": e.one_line()})
        raise
    ctx.ui.result({"ok": True, **results[0].applied, "checks": [c.as_dict() for c in results[0].checks]})


def register(app: typer.Typer) -> None:
    app.command("stress")(stress)
