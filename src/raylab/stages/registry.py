"""The stage registry: one descriptor per lab stage, the only place a stage is described.

``raylab stages``, ``raylab lab`` (every numbered stage, in order), ``raylab up`` (the stages marked
``in_up``), the runner's step lines and ``raylab --help``'s stage list all read ``STAGES``. A stage's
code lives in ``stage<N>_<name>.py`` (teardown: ``teardown.py``) and exposes ``STAGE``; its number,
name, summary and verified_by come from here (a unit test holds them equal).

Import-light on purpose: ``--help`` reads it without importing boto3, Ray or moto.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylab.stages.base import Stage


@dataclass(frozen=True)
class StageInfo:
    number: int  # as the trainee guide (docs/lab/ko/) numbers it; 0: teardown
    name: str
    summary: str  # `raylab stages`: what it does
    verified_by: str  # `raylab stages`: how raylab proves it worked
    in_up: bool = False  # `raylab up` runs it
    headline: str = ""  # its line in `raylab --help` (numbered stages)

    @property
    def described(self) -> tuple[int, str, str, str]:
        """A stage class's ``number, name, summary, verified_by``, as the registry has them."""
        return self.number, self.name, self.summary, self.verified_by

    @property
    def module(self) -> str:
        return f"raylab.stages.stage{self.number}_{self.name}" if self.number else "raylab.stages.teardown"


STAGES: tuple[StageInfo, ...] = (
    StageInfo(1, "network", "CloudFormation VPC: public subnet + bastion, private subnets for Ray",
              "describe_stacks outputs; describe_vpcs/subnets/security_groups", in_up=True,
              headline="CloudFormation VPC: bastion in a public subnet, Ray in private subnets"),
    StageInfo(2, "identity", "Terraform IAM: ray-instance-profile for the head, worker profile",
              "terraform output; iam get_instance_profile and the head policy's actions", in_up=True,
              headline="Terraform IAM: ray-instance-profile, so the head can launch/terminate workers"),
    StageInfo(3, "cluster", "`ray up` through the bastion (local: head + autoscaler v2 on the twin)",
              "Ray's cluster status and describe_instances by the ray-cluster-name tag agree", in_up=True,
              headline="`ray up` through the bastion (ProxyJump, never ssh -A)"),
    StageInfo(4, "stress", "the plan's 480 x 1-CPU job; the autoscaler meets the vCPU quota wall",
              "all tasks complete; peak workers capped by the quota; VcpuLimitExceeded recorded",
              headline="480 one-CPU tasks: watch the autoscaler hit the vCPU quota wall"),
    StageInfo(5, "scaling", "edit upscaling_speed / idle_timeout / min,max workers; watch downscaling",
              "idle workers removed after the timeout down to min_workers (measured)",
              headline="upscaling_speed, idle_timeout_minutes, min/max workers, downscaling"),
    StageInfo(6, "spot", "spot and on-demand/spot mixes; reclaim drills; the capacity guard",
              "every task completes through reclaims; replacements launched; the guard keeps a spot "
              "outage within 1.5x the makespan; spot again after",
              headline="spot and on-demand mixes, reclaims, the capacity guard"),
    StageInfo(7, "data", "Ray Data over Common Voice 17 parquet (local: a generated sample)",
              "features parquet written; counts and durations consistent",
              headline="Ray Data over Common Voice 17"),
    StageInfo(0, "teardown", "ray down, terraform destroy, delete the stack, stop local processes",
              "no instance, stack, profile or process left (listed, not assumed)"),
)

BY_NAME = {s.name: s for s in STAGES}
BY_NUMBER = {s.number: s for s in STAGES}
UP_STAGES = tuple(s.name for s in STAGES if s.in_up)  # `raylab up`
LAB_STAGES = tuple(s.name for s in sorted(STAGES, key=lambda s: s.number) if s.number)  # `raylab lab`


def help_lines(indent: str = "  ") -> str:
    """The numbered stages as `raylab --help` lists them, one line each."""
    width = max(len(s.name) for s in STAGES if s.number)
    return "\n".join(f"{indent}{s.number} {s.name:<{width + 1}} {s.headline or s.summary}"
                     for s in STAGES if s.number)


def find(key: str | int) -> StageInfo:
    from raylab.errors import RaylabError

    k = str(key).strip().lower()
    if k.isdigit() and int(k) in BY_NUMBER:
        return BY_NUMBER[int(k)]
    if k in BY_NAME:
        return BY_NAME[k]
    known = ", ".join(f"{s.number} {s.name}" for s in STAGES if s.number)
    raise RaylabError(f"no stage {key!r}", f"stages are: {known}, teardown")


def load(info: StageInfo) -> Stage:
    """Import a stage's module and return its ``STAGE`` object."""
    from raylab.errors import RaylabError

    try:
        mod = importlib.import_module(info.module)
    except ModuleNotFoundError as e:
        if e.name == info.module:
            raise RaylabError(
                f"stage {info.number} {info.name} is not built yet in this raylab version",
                "run the stages before it; see `raylab stages`",
            ) from None
        raise
    stage: Stage = mod.STAGE
    return stage
