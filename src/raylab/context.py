"""What every command and stage receives: target, lab id, paths, output, state.

The base layer: it imports nothing above it. The target is handed in (``cli.options.make_context``
passes ``raylab.targets.get_target`` so a target is built only when something asks for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raylab.errors import RaylabError
from raylab.labid import names
from raylab.options import Detected, LabOptions
from raylab.phases import PhaseClock
from raylab.state import State
from raylab.ui import UI

if TYPE_CHECKING:
    from raylab.target import Target

TARGETS = ("local", "aws")
SCENARIOS = ("static", "autoscale", "spot", "mixed")


def project_root() -> Path:
    """The folder holding configs/, infra/ and workloads/ (the repo, or the cwd if it has them)."""
    here = Path(__file__).resolve()
    for p in (Path.cwd(), *here.parents):
        if (p / "configs" / "ray-cluster.yaml").exists() and (p / "infra").is_dir():
            return p
    return Path.cwd()


@dataclass
class Context:
    target_name: str
    lab: str
    ui: UI
    workdir: Path = field(default_factory=lambda: Path.cwd() / ".raylab")
    yes: bool = False
    scenario: str = "autoscale"
    options: LabOptions = field(default_factory=LabOptions)  # what the command asked for (frozen)
    detected: Detected = field(default_factory=Detected)  # what the preflight found this run
    clock: PhaseClock = field(default_factory=PhaseClock)  # where this run's time goes, by stage and phase
    _target: Target | None = None
    make_target: Callable[[str], Target] | None = None  # builds ``target`` from ``target_name`` on first use
    owns_workdir: bool = True  # its state writes name this lab as the directory's owner (not the room's)

    @property
    def state(self) -> State:
        owner = {"id": self.lab, "target": self.target_name} if self.owns_workdir else None
        return State(self.workdir, owner=owner)

    @property
    def names(self) -> dict[str, str]:
        return names(self.lab)

    @property
    def root(self) -> Path:
        return project_root()

    @property
    def target(self) -> Target:
        if self._target is None:
            if self.make_target is None:
                raise RaylabError(f"no {self.target_name!r} target was handed to this context",
                                  "build contexts with raylab.cli.options.make_context, or pass _target=")
            self._target = self.make_target(self.target_name)
        return self._target
