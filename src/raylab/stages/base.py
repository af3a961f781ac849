"""The stage contract: every numbered lab stage has ``apply`` and ``verify``.

- ``apply(ctx)`` reads the current state and does only what is still needed (idempotent, the
  pyinfra way); it returns a small dict of what it created or found (kept in ``.raylab/``)
  and says "noop: ..." through ``ctx.ui`` when there was nothing to do.
- ``verify(ctx)`` asks the cloud (boto3) and Ray itself whether the stage holds, and returns
  checks. It never raises: a check that cannot run is a failed check with a hint.

``Check`` itself lives in ``raylab.checks`` (targets use it too, and never import stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from raylab.checks import Check  # the stages' vocabulary; it lives below targets (raylab.checks)

if TYPE_CHECKING:
    from raylab.context import Context


@dataclass(frozen=True)
class StageResult:
    number: int
    name: str
    applied: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "applied": self.applied,
            "checks": [c.as_dict() for c in self.checks],
        }


class Stage(Protocol):
    number: int
    name: str
    summary: str  # one line: what it does
    verified_by: str  # one line: how it is verified

    def apply(self, ctx: Context) -> dict[str, Any]: ...

    def verify(self, ctx: Context) -> list[Check]: ...

    # Optional: ``destroy(ctx) -> None`` removes what ``apply`` created (idempotent; teardown
    # calls it in reverse stage order). Stages that create nothing do not define it.


def safe_verify(stage: Stage, ctx: Context) -> list[Check]:
    """Run ``verify``; a crash becomes a failed check (verify never raises to the runner)."""
    try:
        return list(stage.verify(ctx))
    except Exception as e:  # noqa: BLE001 - reported as a finding
        return [Check("verify", False, f"{type(e).__name__}: {e}", "see the logs under .raylab/")]
