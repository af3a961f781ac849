"""What a command asked for, typed: one frozen record per run, read by the stages and targets.

Base layer (imports nothing of raylab). Each key is declared once here with its type and default;
the CLI (``raylab.cli``) checks the values and builds the record, everything below only reads it
(``ctx.options.scale``). ``Detected`` is the other half: what a target's preflight found during
this run for the stages after it (the operator's IP, the AZs, the key pair), never a user's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Scaling:
    """`raylab scale`'s knobs (None: leave the YAML's value)."""

    upscaling_speed: float | None = None
    idle_timeout_minutes: float | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    quota: int | None = None
    node_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class LabOptions:
    """Every option a command may hand down (None: the target's or the plan's default)."""

    # where: lab, up, stage, preflight
    region: str | None = None  # --region (AWS); else the saved or the environment's region
    allow_ssh_from: str | None = None  # --allow-ssh-from, a checked IPv4 CIDR (never 0.0.0.0/0)
    operator_ip: str | None = None  # preflight --operator-ip
    node_python: str | None = None  # --node-python, a checked minor such as "3.11"
    # the cluster YAML: preflight checks it; scale edits it (default: the lab's working copy)
    config: Path | None = None
    # workload: lab --scale, stress, scale
    scale: int | None = None
    tasks: int | None = None
    duration: float | None = None
    # scale (stage 5)
    scaling: Scaling | None = None
    no_run: bool = False
    # the lab's expiry (`lab`, `up`, `stage` --ttl, parsed): stage 1 tags the stack with it
    ttl_s: int | None = None
    # not on the command line: tests and slow machines
    bastion_port: int = 22  # the bastion's SSH port (tests/aws: a local sshd)
    spot_drill: Mapping[str, Any] = field(default_factory=dict)  # stage 6's drill sizes, over the defaults
    quota_on_demand: int | None = None  # the twin's vCPU quotas at its start (a room's test: one
    quota_spot: int | None = None  # shared, smaller quota); None: the plan's 160


@dataclass
class Detected:
    """What the target's preflight found, for the stages later in the same run (AWS)."""

    operator_ip: str | None = None  # the operator's public IPv4 (stage 1's SSH rule)
    availability_zones: list[str] | None = None
    key_name: str | None = None  # the lab's EC2 key pair for the bastion
