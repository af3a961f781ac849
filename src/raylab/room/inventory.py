"""What `raylab room status` reads from the account: clients are passed in (as ``plan.cost.live_prices``),
so tests hand it moto's. Reads only; nothing here changes the account."""

from __future__ import annotations

from typing import Any

from raylab.aws.ec2 import LAB_TAG
from raylab.aws.quotas import quota_value
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA
from raylab.room.status import (
    QUOTA_STATES,
    Instance,
    Nat,
    Stack,
    Vpc,
    instances_from,
    nats_from,
    stacks_from,
    vpcs_from,
)


def instances(ec2: Any) -> list[Instance]:
    """Every live instance of the region (raylab's and others': others take the same quota)."""
    found: list[dict[str, Any]] = []
    states = [*QUOTA_STATES, "stopping", "stopped"]
    for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": states}]):
        for r in page.get("Reservations", []):
            found += r.get("Instances", [])
    return instances_from(found)


def stacks(cfn: Any) -> list[Stack]:
    found: list[dict[str, Any]] = []
    for page in cfn.get_paginator("describe_stacks").paginate():
        found += page.get("Stacks", [])
    return stacks_from(found)


def vpcs(ec2: Any) -> list[Vpc]:
    """The VPCs carrying raylab's tag (their tags hold the busy lease and the last stage)."""
    return vpcs_from(ec2.describe_vpcs(Filters=[{"Name": "tag-key", "Values": [LAB_TAG]}])["Vpcs"])


def nat_gateways(ec2: Any) -> list[Nat]:
    found: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_nat_gateways").paginate():
        found += page.get("NatGateways", [])
    return nats_from(found)


def quotas(sq: Any) -> tuple[dict[str, float | None], list[str]]:
    """The on-demand and spot vCPU quotas (applied, else AWS's default, as the preflight reads them);
    one unreadable is None, with a line saying why."""
    out: dict[str, float | None] = {}
    notes: list[str] = []
    for code in (ON_DEMAND_QUOTA, SPOT_QUOTA):
        try:
            out[code] = quota_value(sq, code)
        except Exception as e:  # noqa: BLE001 - no permission, or a backend without the quota
            out[code] = None
            notes.append(f"quota {code} unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return out, notes
