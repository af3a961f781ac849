"""Run stages in order: apply, verify, stop at the first failed check and say what to look at."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raylab.errors import StageFailed
from raylab.signals import note_stage
from raylab.stages import StageInfo, load
from raylab.stages.base import StageResult, safe_verify

if TYPE_CHECKING:
    from raylab.context import Context


def run_stage(ctx: Context, info: StageInfo, verify_only: bool = False) -> StageResult:
    stage = load(info)
    label = f"stage {info.number} {info.name}" if info.number else info.name
    note_stage(ctx.workdir, label)  # where an interrupted or killed run stopped
    t0 = time.monotonic()
    applied: dict = {}
    with ctx.clock.in_stage(info.name):
        if not verify_only:
            ctx.ui.step(f"{label}: {info.summary}")
            applied = stage.apply(ctx) or {}
        with ctx.clock.phase("verify"):
            checks = tuple(safe_verify(stage, ctx))
    result = StageResult(info.number, info.name, applied, checks, time.monotonic() - t0)
    timings = ctx.state.get("timings")
    timings[info.name] = round(result.seconds, 2)
    ctx.state.put("timings", timings)
    for c in checks:
        (ctx.ui.success if c.ok else ctx.ui.error)(f"{label} · {c.name}: {c.detail}")
    return result


def run_stages(ctx: Context, infos: Iterable[StageInfo], verify_only: bool = False) -> list[StageResult]:
    """Run each stage; raise ``StageFailed`` naming the first failed check."""
    results: list[StageResult] = []
    for info in infos:
        r = run_stage(ctx, info, verify_only=verify_only)
        results.append(r)
        bad = r.first_failure
        if bad is not None:
            raise StageFailed(f"{info.number} {info.name}", bad.name, bad.detail,
                              bad.hint or "see `raylab status` and the logs under .raylab/")
    return results
