"""`raylab room status` decisions (pure): every lab of an account and region, found by raylab's tag.

In: EC2 instances and CloudFormation stacks as boto3 returns them (``describe_instances``'
``Instances``, ``describe_stacks``' ``Stacks``), the account's vCPU quotas, a clock. Out: one row per
lab (its id, owner, age, stack, instances and Ray workers by market, vCPUs by quota) and the room's
totals against each quota. A lab is anything tagged ``raylab-lab``; untagged instances are another
tool's: never listed as a lab, only counted where they take the same quota. A ``raylab-lab`` value that
is not a valid lab id is listed with a finding (a tag edited by hand?), and nothing here acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from raylab.aws.ec2 import LAB_TAG
from raylab.aws.quotas import quota_code_for
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA
from raylab.errors import RaylabError
from raylab.labid import check_lab_id

OWNER_TAG = "raylab-owner"  # not written by raylab yet: shown when someone sets it
QUOTA_STATES = ("pending", "running")  # what EC2 counts against the vCPU quotas
MARKETS = ("ondemand", "spot")


@dataclass(frozen=True)
class Instance:
    id: str
    type: str
    state: str
    market: str  # "ondemand" | "spot"
    tags: Mapping[str, str]
    launched: datetime | None

    @property
    def lab(self) -> str | None:
        return self.tags.get(LAB_TAG)

    @property
    def ray_kind(self) -> str:  # "head" | "worker" | "" (the bastion, or not Ray's)
        return self.tags.get("ray-node-type", "")

    @property
    def counts(self) -> bool:
        return self.state in QUOTA_STATES


@dataclass(frozen=True)
class Stack:
    name: str
    status: str
    tags: Mapping[str, str]
    created: datetime | None

    @property
    def lab(self) -> str | None:
        return self.tags.get(LAB_TAG)


def _tags(raw: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or ()}


def instances_from(described: Iterable[Mapping[str, Any]]) -> list[Instance]:
    """EC2's instance dicts (``Reservations[].Instances[]``) -> ``Instance``; terminated ones dropped."""
    out = []
    for i in described:
        state = (i.get("State") or {}).get("Name", "")
        if state in ("terminated", "shutting-down"):
            continue
        out.append(Instance(id=i["InstanceId"], type=i.get("InstanceType", ""), state=state,
                            market="spot" if i.get("InstanceLifecycle") == "spot" else "ondemand",
                            tags=_tags(i.get("Tags")), launched=i.get("LaunchTime")))
    return out


def stacks_from(described: Iterable[Mapping[str, Any]]) -> list[Stack]:
    return [Stack(name=s["StackName"], status=s.get("StackStatus", ""), tags=_tags(s.get("Tags")),
                  created=s.get("CreationTime"))
            for s in described if s.get("StackStatus") != "DELETE_COMPLETE"]


@dataclass
class LabRow:
    lab: str
    owner: str | None = None
    created: datetime | None = None
    stacks: list[str] = field(default_factory=list)
    instances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKETS, 0))
    ray_workers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKETS, 0))
    vcpus: dict[str, int] = field(default_factory=lambda: {ON_DEMAND_QUOTA: 0, SPOT_QUOTA: 0})
    findings: list[str] = field(default_factory=list)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {"lab": self.lab, "owner": self.owner,
                "created": self.created.isoformat() if self.created else None,
                "age_s": round((now - self.created).total_seconds()) if self.created else None,
                "stacks": self.stacks, "instances": self.instances, "ray_workers": self.ray_workers,
                "vcpus_by_quota": self.vcpus, "findings": self.findings}


def _older(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def room_status(instances: Iterable[Instance], stacks: Iterable[Stack], *, now: datetime,
                quotas: Mapping[str, float | None], vcpus_of: Callable[[str], int | None]) -> dict[str, Any]:
    """The room: one row per lab, and each quota's use by raylab's labs and by everything else."""
    rows: dict[str, LabRow] = {}
    used = {ON_DEMAND_QUOTA: {"labs": 0, "other": 0}, SPOT_QUOTA: {"labs": 0, "other": 0}}
    unknown_types: set[str] = set()

    def row(lab: str) -> LabRow:
        if lab not in rows:
            rows[lab] = r = LabRow(lab)
            try:
                check_lab_id(lab)
            except RaylabError:
                r.findings.append(f"tag {LAB_TAG}={lab!r} is not a raylab lab id (edited by hand?): listed, "
                                  "never swept by id")
        return rows[lab]

    for s in stacks:
        if s.lab is None:
            continue
        r = row(s.lab)
        r.stacks.append(f"{s.name} {s.status}")
        r.created = _older(r.created, s.created)
        r.owner = r.owner or s.tags.get(OWNER_TAG)
        if s.status.endswith("_FAILED") or s.status.startswith("ROLLBACK"):
            r.findings.append(f"stack {s.name} is {s.status}")
    for i in instances:
        n = vcpus_of(i.type)
        code = quota_code_for(i.type, "spot" if i.market == "spot" else "on-demand")
        if n is None:
            unknown_types.add(i.type)
        if i.lab is None:
            if i.counts and code and n:
                used[code]["other"] += n
            continue
        r = row(i.lab)
        r.instances[i.market] += 1
        r.owner = r.owner or i.tags.get(OWNER_TAG)
        r.created = _older(r.created, i.launched)
        if i.ray_kind == "worker":
            r.ray_workers[i.market] += 1
        if i.counts and code and n:
            r.vcpus[code] += n
            used[code]["labs"] += n
        if n is None:
            r.findings.append(f"{i.id}: type {i.type!r} unknown to raylab's table, vCPUs not counted")
    totals = []
    for code in (ON_DEMAND_QUOTA, SPOT_QUOTA):
        q = quotas.get(code)
        u = used[code]["labs"] + used[code]["other"]
        totals.append({"quota_code": code, "market": "ondemand" if code == ON_DEMAND_QUOTA else "spot",
                       "labs_vcpus": used[code]["labs"], "other_vcpus": used[code]["other"], "used_vcpus": u,
                       "quota_vcpus": q, "free_vcpus": None if q is None else int(q - u),
                       "used_pct": None if not q else round(100.0 * u / q, 1)})
    return {"now": now.isoformat(), "labs": [rows[k].as_dict(now) for k in sorted(rows)], "totals": totals,
            "unknown_instance_types": sorted(unknown_types)}


def age_text(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    h, rem = divmod(max(0, seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m"
