"""Teardown: undo every stage in reverse order, stop raylab's processes, then list what is left.

Each stage that creates something defines ``destroy(ctx)``; teardown calls them 7 -> 1, keeps
going when one fails (so a half-broken lab still gets cleaned), and reports every failure.
``verify`` asks the target what is left (instances by the cluster tag, the stack, the
profiles, raylab's processes): it is a check, not an assumption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.signals import note_stage
from raylab.stages import BY_NAME, STAGES, load
from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.context import Context


def applied_json(errors: list[str]) -> dict[str, Any]:
    """Teardown's result as `raylab lab --json` reports it: what failed to go (pure)."""
    return {"errors": errors}


class Teardown:
    number, name, summary, verified_by = BY_NAME["teardown"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        note_stage(ctx.workdir, "teardown")  # `raylab down` runs no stage runner: where a kill lands
        errors: list[str] = []
        for info in sorted((s for s in STAGES if s.number), key=lambda s: -s.number):
            try:
                stage = load(info)
            except Exception:  # noqa: BLE001 - a stage not built yet created nothing
                continue
            destroy = getattr(stage, "destroy", None)
            if destroy is None:
                continue
            try:
                with ctx.clock.phase(f"undo stage {info.number} {info.name}"):
                    destroy(ctx)
            except Exception as e:  # noqa: BLE001 - keep cleaning, report at the end
                why = e.one_line() if isinstance(e, RaylabError) else str(e)
                errors.append(f"stage {info.number} {info.name}: {why}")
                ctx.ui.error(f"teardown of stage {info.number} {info.name} failed: {why}")
        try:
            with ctx.clock.phase(f"stop the {ctx.target_name} target"):
                ctx.target.stop(ctx)
        except Exception as e:  # noqa: BLE001
            errors.append(f"target stop: {e}")
            ctx.ui.error(f"stopping the {ctx.target_name} target failed: {e}")
        return applied_json(errors)

    def verify(self, ctx: Context) -> list[Check]:
        left = ctx.target.leftovers(ctx)
        if left:
            return [Check("nothing left", False, "; ".join(left), "re-run `raylab down`")]
        return [Check("nothing left", True, "no instance, stack, profile or process of this lab")]


STAGE = Teardown()
