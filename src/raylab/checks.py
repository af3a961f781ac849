"""What a verification finds: a ``Check`` (name, ok, detail, hint).

Shared by the stages (``verify``), the targets (``preflight``) and the CLI, so it sits in the base
layer: stages import targets, targets never import stages, and both import this.

Imports: nothing of raylab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}
