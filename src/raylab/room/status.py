"""`raylab room status` decisions (pure): every lab of an account and region, found by raylab's tag.

In: EC2 instances, CloudFormation stacks, VPCs and NAT gateways as boto3 returns them, the account's
vCPU quotas, prices, a clock. Out: one row per lab (its id, owner, age, stack, last stage, instances and
Ray workers by market, vCPUs by quota, cost so far and per hour, expiry, busy) and the room's totals
against each quota. Expiry, owner, busy and last stage are tags (``raylab.room.expiry``). A lab is
anything tagged ``raylab-lab``; untagged instances are another
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
from raylab.plan.bill import BillPrices, Usage, UsedInstance, UsedNat, bill
from raylab.room.expiry import OWNER_TAG, PROGRESS_TAG, busy_of, expiry_of

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


@dataclass(frozen=True)
class Vpc:
    id: str
    tags: Mapping[str, str]

    @property
    def lab(self) -> str | None:
        return self.tags.get(LAB_TAG)


@dataclass(frozen=True)
class Nat:
    id: str
    vpc: str
    state: str
    tags: Mapping[str, str]
    created: datetime | None


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


def vpcs_from(described: Iterable[Mapping[str, Any]]) -> list[Vpc]:
    return [Vpc(v["VpcId"], _tags(v.get("Tags"))) for v in described]


def nats_from(described: Iterable[Mapping[str, Any]]) -> list[Nat]:
    """NAT gateways that still bill (not deleted/deleting/failed)."""
    return [Nat(n["NatGatewayId"], n.get("VpcId", ""), n.get("State", ""), _tags(n.get("Tags")),
                n.get("CreateTime"))
            for n in described if n.get("State") not in ("deleted", "deleting", "failed")]


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
    stack_tags: dict[str, str] = field(default_factory=dict)
    vpc_tags: dict[str, str] = field(default_factory=dict)
    used: list[UsedInstance] = field(default_factory=list)
    nats: list[UsedNat] = field(default_factory=list)

    def as_dict(self, now: datetime, prices: BillPrices | None) -> dict[str, Any]:
        exp = expiry_of(self.stack_tags, now)
        busy = busy_of(self.vpc_tags, self.stacks, now)
        cost: dict[str, Any] = {"so_far_usd": None, "per_hour_usd": None}
        if prices is not None:
            b = bill(Usage(tuple(self.used), tuple(self.nats)), prices, now)
            cost = {"so_far_usd": round(b.total_usd, 2), "per_hour_usd": round(b.per_hour_now, 4)}
        return {"lab": self.lab, "owner": self.owner,
                "created": self.created.isoformat() if self.created else None,
                "age_s": round((now - self.created).total_seconds()) if self.created else None,
                "stacks": self.stacks, "last_stage": self.vpc_tags.get(PROGRESS_TAG),
                "instances": self.instances, "ray_workers": self.ray_workers,
                "vcpus_by_quota": self.vcpus, "cost": cost, "nat_gateways": len(self.nats),
                "expires": exp.expires, "expired": exp.expired, "busy": busy.busy, "busy_by": busy.by,
                "findings": self.findings + ([exp.finding] if exp.finding else [])}


def _older(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def room_status(instances: Iterable[Instance], stacks: Iterable[Stack], *, now: datetime,
                quotas: Mapping[str, float | None], vcpus_of: Callable[[str], int | None],
                vpcs: Iterable[Vpc] = (), nats: Iterable[Nat] = (),
                prices: BillPrices | None = None) -> dict[str, Any]:
    """The room: one row per lab, and each quota's use by raylab's labs and by everything else.
    Cost is what runs now, billed from its launch (``raylab.plan.bill``), plus the NAT gateways: an
    instance already terminated is in its lab's `raylab down` bill, not here."""
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
        r.stack_tags = {**s.tags, **r.stack_tags}
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
        if i.counts and i.launched is not None:
            r.used.append(UsedInstance(i.id, i.type, "spot" if i.market == "spot" else "on-demand",
                                       i.launched))
        if n is None:
            r.findings.append(f"{i.id}: type {i.type!r} unknown to raylab's table, vCPUs not counted")
    vpc_lab = {}
    for v in vpcs:
        if v.lab is not None:
            vpc_lab[v.id] = v.lab
            row(v.lab).vpc_tags.update(v.tags)
    for g in nats:
        lab = g.tags.get(LAB_TAG) or vpc_lab.get(g.vpc)
        if lab is not None and g.created is not None:
            row(lab).nats.append(UsedNat(g.id, g.created))
    totals = []
    for code in (ON_DEMAND_QUOTA, SPOT_QUOTA):
        q = quotas.get(code)
        u = used[code]["labs"] + used[code]["other"]
        totals.append({"quota_code": code, "market": "ondemand" if code == ON_DEMAND_QUOTA else "spot",
                       "labs_vcpus": used[code]["labs"], "other_vcpus": used[code]["other"], "used_vcpus": u,
                       "quota_vcpus": q, "free_vcpus": None if q is None else int(q - u),
                       "used_pct": None if not q else round(100.0 * u / q, 1)})
    labs = [rows[k].as_dict(now, prices) for k in sorted(rows)]
    known = [x["cost"] for x in labs if x["cost"]["so_far_usd"] is not None]
    cost = {"so_far_usd": round(sum(c["so_far_usd"] for c in known), 2) if prices else None,
            "per_hour_usd": round(sum(c["per_hour_usd"] for c in known), 4) if prices else None,
            "prices": prices.note if prices else None}
    return {"now": now.isoformat(), "labs": labs, "totals": totals, "cost": cost,
            "expired": [x["lab"] for x in labs if x["expired"]],
            "busy": [x["lab"] for x in labs if x["busy"]],
            "unknown_instance_types": sorted(unknown_types)}


def age_text(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    h, rem = divmod(max(0, seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m"
